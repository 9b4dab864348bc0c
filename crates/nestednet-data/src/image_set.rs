use serde::{Deserialize, Serialize};

use crate::{DataError, Result};

/// Per-channel normalisation `(x / 255 - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each channel, on the `[0, 1]` scale.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel, on the `[0, 1]` scale.
    pub std: Vec<f32>,
}

impl Normalization {
    /// MNIST's usual statistics.
    pub fn mnist() -> Self {
        Self { mean: vec![0.1307], std: vec![0.3081] }
    }

    /// CIFAR-10's usual statistics.
    pub fn cifar10() -> Self {
        Self { mean: vec![0.4914, 0.4822, 0.4465], std: vec![0.2470, 0.2435, 0.2616] }
    }

    /// CIFAR-100's usual statistics.
    pub fn cifar100() -> Self {
        Self { mean: vec![0.5071, 0.4865, 0.4409], std: vec![0.2673, 0.2564, 0.2762] }
    }

    /// Per-channel mean and standard deviation of images `[channels, height, width]` stored
    /// back to back, `plane = height · width` bytes per channel, on the `[0, 1]` scale. A
    /// channel without spread gets std 1, so normalising it stays finite.
    pub fn measure(pixels: &[u8], channels: usize, plane: usize) -> Self {
        let mut sum = vec![0f64; channels];
        let mut sum_sq = vec![0f64; channels];
        if channels > 0 && plane > 0 {
            for (i, chunk) in pixels.chunks_exact(plane).enumerate() {
                let c = i % channels;
                for &p in chunk {
                    let x = f64::from(p) / 255.0;
                    sum[c] += x;
                    sum_sq[c] += x * x;
                }
            }
        }
        let n = (pixels.len() / channels.max(1)).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sum_sq
            .iter()
            .zip(&mean)
            .map(|(sq, m)| {
                let var = (sq / n - m * m).max(0.0);
                if var > 1e-12 { var.sqrt() } else { 1.0 }
            })
            .collect::<Vec<f64>>();
        Self { mean: mean.iter().map(|&m| m as f32).collect(), std: std.iter().map(|&s| s as f32).collect() }
    }
}

/// A labelled image set held in memory as raw bytes.
///
/// Images are `u8`, `[channel, height, width]` per image, stored back to back; normalisation is
/// applied when items are read, so the set stays 4× smaller than float storage.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Raw pixels of all images, `len = count · channels · height · width`.
    pub pixels: Vec<u8>,
    /// Fine label of every image.
    pub labels: Vec<usize>,
    /// Coarse label of every image, for hierarchical data sets (CIFAR-100 super-classes).
    pub coarse_labels: Option<Vec<usize>>,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Number of fine classes.
    pub num_classes: usize,
    /// Number of coarse classes (0 when there are none).
    pub num_coarse_classes: usize,
    /// Normalisation applied when reading items.
    pub normalization: Normalization,
    /// Name of every class, in label order (empty when the format has none).
    pub class_names: Vec<String>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_size(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Raw bytes of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let size = self.image_size();
        &self.pixels[index * size..(index + 1) * size]
    }

    /// `n` images (all of them if `n` is larger), e.g. for quick runs and tests: the first `n`,
    /// or, for a set stored class by class (an image folder), `n` spread evenly over it
    /// (image `⌊i·len/n⌋`), whose first images would be its first classes only.
    pub fn take(&self, n: usize) -> Self {
        let (n, len) = (n.min(self.len()), self.len());
        match self.stored_by_class() {
            true => self.select((0..n).map(|i| i * len / n)),
            false => self.select(0..n),
        }
    }

    /// Whether the images are stored class by class (labels never decreasing, at least two
    /// classes), as an image folder is read; MNIST and CIFAR files are in random order.
    fn stored_by_class(&self) -> bool {
        self.labels.windows(2).all(|w| w[0] <= w[1]) && self.labels.first() != self.labels.last()
    }

    /// The images at `indices`, in their order.
    fn select(&self, indices: impl Iterator<Item = usize>) -> Self {
        let size = self.image_size();
        let mut out = self.clone_meta();
        let mut coarse = self.coarse_labels.as_ref().map(|_| Vec::new());
        for i in indices {
            out.pixels.extend_from_slice(&self.pixels[i * size..(i + 1) * size]);
            out.labels.push(self.labels[i]);
            if let (Some(all), Some(kept)) = (&self.coarse_labels, coarse.as_mut()) {
                kept.push(all[i]);
            }
        }
        out.coarse_labels = coarse;
        out
    }

    /// The first images for training and the last `fraction` of them for validation (the
    /// order of the files: MNIST and CIFAR are stored in random order); for a set stored class
    /// by class (an image folder), a `fraction` of the images spread evenly over it. Both parts keep this
    /// set's normalisation, and neither may be empty.
    pub fn split_validation(self, fraction: f64) -> crate::Result<(Self, Self)> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(crate::DataError::Invalid(format!(
                "validation split {fraction}: give a fraction of the training set between 0 and 1 (e.g. 0.125)"
            )));
        }
        let held = (self.len() as f64 * fraction).round() as usize;
        if held == 0 || held >= self.len() {
            return Err(crate::DataError::Invalid(format!(
                "a validation split of {fraction} of {} training images leaves an empty part",
                self.len()
            )));
        }
        let len = self.len();
        let mut is_held = vec![false; len];
        match self.stored_by_class() {
            // Spread over the classes (distinct, since `held < len`).
            true => (0..held).for_each(|j| is_held[j * len / held] = true),
            false => is_held[len - held..].fill(true),
        }
        let validation = self.select((0..len).filter(|&i| is_held[i]));
        Ok((self.select((0..len).filter(|&i| !is_held[i])), validation))
    }

    /// The same images with every label `l` replaced by `map[l]`, out of `num_classes` classes
    /// (e.g. digits mapped to their shape groups, to train a network on coarse labels).
    pub fn relabel(&self, map: &[usize], num_classes: usize) -> crate::Result<Self> {
        if map.len() != self.num_classes {
            return Err(crate::DataError::Invalid(format!(
                "a relabelling maps {} classes but the set has {}",
                map.len(),
                self.num_classes
            )));
        }
        if let Some(&bad) = map.iter().find(|&&c| c >= num_classes) {
            return Err(crate::DataError::Invalid(format!("relabelling to class {bad} of {num_classes}")));
        }
        Ok(Self {
            pixels: self.pixels.clone(),
            labels: self.labels.iter().map(|&l| map[l]).collect(),
            coarse_labels: self.coarse_labels.clone(),
            num_classes,
            class_names: Vec::new(),
            ..self.clone_meta()
        })
    }

    fn clone_meta(&self) -> Self {
        Self {
            pixels: Vec::new(),
            labels: Vec::new(),
            coarse_labels: None,
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            num_coarse_classes: self.num_coarse_classes,
            normalization: self.normalization.clone(),
            class_names: self.class_names.clone(),
        }
    }

    /// Checks internal consistency: pixel count, normalisation per channel, label ranges.
    pub fn validate(&self) -> Result<()> {
        let expected = self.len() * self.image_size();
        if self.pixels.len() != expected {
            return Err(DataError::Invalid(format!(
                "image set holds {} pixel bytes, expected {} ({} images of {}x{}x{})",
                self.pixels.len(),
                expected,
                self.len(),
                self.channels,
                self.height,
                self.width
            )));
        }
        let n = &self.normalization;
        if n.mean.len() != self.channels || n.std.len() != self.channels {
            return Err(DataError::Invalid(format!(
                "normalisation has {} means and {} stds for {} channels",
                n.mean.len(),
                n.std.len(),
                self.channels
            )));
        }
        if n.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(DataError::Invalid("normalisation std must be positive".into()));
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.num_classes {
            return Err(DataError::Invalid(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            )));
        }
        if let Some((index, &label)) = self.labels.iter().enumerate().find(|(_, l)| **l >= self.num_classes) {
            return Err(DataError::Invalid(format!(
                "image {index} has label {label} but there are {} classes",
                self.num_classes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabelling_maps_labels_and_checks_the_map() {
        let set = ImageSet {
            pixels: vec![0; 3 * 4],
            labels: vec![0, 2, 1],
            coarse_labels: None,
            channels: 1,
            height: 2,
            width: 2,
            num_classes: 3,
            num_coarse_classes: 0,
            normalization: Normalization { mean: vec![0.5], std: vec![0.5] },
            class_names: Vec::new(),
        };
        let coarse = set.relabel(&[0, 1, 1], 2).unwrap();
        assert_eq!((coarse.labels.clone(), coarse.num_classes, coarse.len()), (vec![0, 1, 1], 2, 3));
        assert!(
            set.relabel(&[0, 1], 2).unwrap_err().to_string().contains("maps 2 classes but the set has 3")
        );
        assert!(set.relabel(&[0, 1, 2], 2).is_err());
    }
}

#[cfg(test)]
mod measure_tests {
    use super::*;

    #[test]
    fn validation_split_holds_out_the_last_images() {
        let set = ImageSet {
            pixels: (0..10u8).collect(),
            labels: (0..10).map(|l| l % 3).collect(),
            coarse_labels: None,
            channels: 1,
            height: 1,
            width: 1,
            num_classes: 3,
            num_coarse_classes: 0,
            normalization: Normalization::mnist(),
            class_names: Vec::new(),
        };
        let (train, validation) = set.clone().split_validation(0.2).unwrap();
        assert_eq!((train.pixels, validation.pixels), ((0..8).collect(), vec![8, 9]));
        assert_eq!(validation.labels, vec![2, 0]);
        for bad in [0.0, 1.0, -0.5, f64::NAN, 0.01] {
            let e = set.clone().split_validation(bad).unwrap_err().to_string();
            assert!(e.contains("validation split"), "{e}");
        }
    }

    #[test]
    fn a_set_stored_class_by_class_is_taken_and_split_over_every_class() {
        // An image folder's order: 3 classes of 4 images, image i holding the byte i.
        let set = ImageSet {
            pixels: (0..12u8).collect(),
            labels: (0..12).map(|i| i / 4).collect(),
            coarse_labels: Some((0..12).map(|i| i / 8).collect()),
            channels: 1,
            height: 1,
            width: 1,
            num_classes: 3,
            num_coarse_classes: 2,
            normalization: Normalization::mnist(),
            class_names: Vec::new(),
        };
        let taken = set.take(3);
        assert_eq!((taken.pixels, taken.labels), (vec![0, 4, 8], vec![0, 1, 2]), "not the first class only");
        assert_eq!(taken.coarse_labels, Some(vec![0, 0, 1]));
        let (train, validation) = set.clone().split_validation(0.25).unwrap();
        assert_eq!((validation.pixels, validation.labels), (vec![0, 4, 8], vec![0, 1, 2]));
        assert_eq!(train.len(), 9);
        assert!(train.labels.windows(2).all(|w| w[0] <= w[1]) && !train.pixels.contains(&4));
    }

    #[test]
    fn statistics_are_measured_per_channel() {
        // Two images of 2 channels x 2 pixels: channel 0 is 0 and 255, channel 1 constant.
        let pixels = [0, 255, 51, 51, 255, 0, 51, 51];
        let n = Normalization::measure(&pixels, 2, 2);
        assert!((n.mean[0] - 0.5).abs() < 1e-6 && (n.std[0] - 0.5).abs() < 1e-6, "{n:?}");
        assert!((n.mean[1] - 0.2).abs() < 1e-6 && n.std[1] == 1.0, "{n:?}");
    }
}
