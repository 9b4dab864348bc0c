use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{DataError, ImageSet, Result, SplitMix64};

/// Training-time augmentation: zero-padded random crop and random horizontal flip (the
/// standard CIFAR recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Pixels of zero padding on each side before cropping back to the original size
    /// (0 disables cropping).
    pub crop_padding: usize,
    /// Flip left–right with probability 1/2.
    pub horizontal_flip: bool,
}

/// One normalised image and its labels.
#[derive(Debug, Clone)]
pub struct ImageItem {
    /// Normalised pixels, `[channel, height, width]` row-major.
    pub pixels: Vec<f32>,
    /// Fine label.
    pub label: usize,
    /// Coarse label, for hierarchical data sets.
    pub coarse_label: Option<usize>,
}

/// One epoch's view of an [`ImageSet`]: a seeded order and seeded augmentation.
///
/// Item `i` of epoch `e` is a pure function of `(seed, e, i)`, so the same epoch is reproduced
/// exactly by a resumed run, whatever happened before.
#[derive(Debug, Clone)]
pub struct EpochDataset {
    set: Arc<ImageSet>,
    order: Option<Vec<usize>>,
    augment: Option<Augment>,
    seed: u64,
    epoch: u64,
}

impl EpochDataset {
    /// The view of `set` for `epoch`: shuffled when `shuffle` is set, augmented when `augment`
    /// is given; `seed` fixes both.
    pub fn new(set: Arc<ImageSet>, seed: u64, epoch: u64, shuffle: bool, augment: Option<Augment>) -> Self {
        let order = shuffle.then(|| SplitMix64::for_stream(&[seed, epoch, 0x5_u64]).permutation(set.len()));
        Self { set, order, augment, seed, epoch }
    }

    /// The item at `index` of this epoch.
    pub fn item(&self, index: usize) -> Option<ImageItem> {
        let source = *self.order.as_ref().map_or(Some(&index), |o| o.get(index))?;
        if source >= self.set.len() {
            return None;
        }
        let set = &*self.set;
        let (c, h, w) = (set.channels, set.height, set.width);
        let raw = set.image(source);
        let (dy, dx, flip) = match self.augment {
            Some(a) => {
                let mut rng = SplitMix64::for_stream(&[self.seed, self.epoch, 0xa_u64, index as u64]);
                let span = 2 * a.crop_padding + 1;
                let dy = rng.below(span) as isize - a.crop_padding as isize;
                let dx = rng.below(span) as isize - a.crop_padding as isize;
                (dy, dx, a.horizontal_flip && rng.below(2) == 1)
            }
            None => (0, 0, false),
        };
        let mut pixels = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            let (mean, std) = (set.normalization.mean[ch], set.normalization.std[ch]);
            let plane = &raw[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let x = if flip { w - 1 - x } else { x };
                    let (sy, sx) = (y as isize + dy, x as isize + dx);
                    // Zero padding happens on the raw pixels, before normalisation, as
                    // torchvision's RandomCrop(padding=..) does.
                    let v = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                        plane[sy as usize * w + sx as usize]
                    } else {
                        0
                    };
                    pixels.push((v as f32 / 255.0 - mean) / std);
                }
            }
        }
        Some(ImageItem {
            pixels,
            label: set.labels[source],
            coarse_label: set.coarse_labels.as_ref().map(|l| l[source]),
        })
    }
}

impl Dataset<ImageItem> for EpochDataset {
    fn get(&self, index: usize) -> core::result::Result<ImageItem, DatasetError> {
        self.item(index).ok_or_else(|| {
            DatasetError::new(DataError::Invalid(format!(
                "item {index} is out of range for a data set of {} images",
                self.set.len()
            )))
        })
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

/// A batch of images on a device.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// `[batch, channels, height, width]`, normalised.
    pub images: Tensor<4>,
    /// Fine labels, `[batch]`.
    pub labels: Tensor<1, Int>,
    /// Coarse labels, `[batch]`, for hierarchical data sets.
    pub coarse_labels: Option<Tensor<1, Int>>,
}

/// Stacks [`ImageItem`]s into an [`ImageBatch`].
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    shape: [usize; 3],
}

impl ImageBatcher {
    /// A batcher for images of `[channels, height, width]`.
    pub fn new(shape: [usize; 3]) -> Self {
        Self { shape }
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let [c, h, w] = self.shape;
        let n = items.len();
        let mut pixels = Vec::with_capacity(n * c * h * w);
        let mut labels = Vec::with_capacity(n);
        let mut coarse = Vec::with_capacity(n);
        for item in items {
            pixels.extend_from_slice(&item.pixels);
            labels.push(item.label as i64);
            coarse.extend(item.coarse_label.map(|l| l as i64));
        }
        let images = Tensor::from_data(TensorData::new(pixels, [n, c, h, w]), device);
        let labels = Tensor::from_data(TensorData::new(labels, [n]), device);
        let coarse_labels =
            (coarse.len() == n && n > 0).then(|| Tensor::from_data(TensorData::new(coarse, [n]), device));
        ImageBatch { images, labels, coarse_labels }
    }
}

/// Burn's data loader over one epoch of `set`, in batches of `batch_size` (the last batch may be
/// smaller), on `device`. Loading runs on the calling thread, so batches come in a fixed order.
pub fn epoch_loader(
    set: Arc<ImageSet>,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    shuffle: bool,
    augment: Option<Augment>,
    device: &Device,
) -> Result<Arc<dyn DataLoader<ImageBatch>>> {
    if batch_size == 0 {
        return Err(DataError::Invalid("batch size must be at least 1".into()));
    }
    set.validate()?;
    let shape = [set.channels, set.height, set.width];
    let dataset = EpochDataset::new(set, seed, epoch, shuffle, augment);
    Ok(DataLoaderBuilder::new(ImageBatcher::new(shape))
        .batch_size(batch_size)
        .set_device(device.clone())
        .build(dataset))
}

/// The batches of `loader`, in the loader's order, produced up to `depth` batches ahead on a
/// background thread, so that reading, augmenting and uploading the next batch overlaps with
/// the training step on the current one. Dropping the iterator early stops the thread after
/// the batch it is working on.
pub fn prefetch<B: Send + 'static>(
    loader: Arc<dyn DataLoader<B>>,
    depth: usize,
) -> impl Iterator<Item = std::result::Result<B, DatasetError>> + Send {
    let (sender, receiver) = std::sync::mpsc::sync_channel(depth.max(1));
    let worker = std::thread::Builder::new()
        .name("nestednet-prefetch".into())
        .spawn(move || {
            for batch in loader.iter() {
                if sender.send(batch).is_err() {
                    break; // the consumer is gone
                }
            }
        })
        .expect("spawning the prefetch thread");
    Prefetch { receiver, worker: Some(worker) }
}

struct Prefetch<B> {
    receiver: std::sync::mpsc::Receiver<std::result::Result<B, DatasetError>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl<B> Iterator for Prefetch<B> {
    type Item = std::result::Result<B, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.receiver.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                // The worker finished (or panicked: re-raise its panic here, not silently end
                // the epoch early).
                if let Some(worker) = self.worker.take()
                    && let Err(panic) = worker.join()
                {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Normalization;

    fn tiny_set(n: usize) -> ImageSet {
        ImageSet {
            pixels: (0..n * 2 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect(),
            labels: (0..n).map(|i| i % 4).collect(),
            coarse_labels: Some((0..n).map(|i| i % 2).collect()),
            channels: 2,
            height: 3,
            width: 3,
            num_classes: 4,
            num_coarse_classes: 2,
            normalization: Normalization { mean: vec![0.5, 0.25], std: vec![0.5, 0.25] },
            class_names: Vec::new(),
        }
    }

    #[test]
    fn loader_batches_normalised_images_in_a_seeded_order() {
        let device = Device::flex();
        let set = Arc::new(tiny_set(10));
        let loader = epoch_loader(set.clone(), 4, 1, 0, false, None, &device).unwrap();
        let batches: Vec<ImageBatch> = loader.iter().map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].images.dims(), [4, 2, 3, 3]);
        assert_eq!(batches[2].images.dims(), [2, 2, 3, 3]);
        let first = batches[0].images.clone().into_data().try_to_vec::<f32>().unwrap();
        assert!((first[0] - (0.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
        assert!((first[9] - (63.0 / 255.0 - 0.25) / 0.25).abs() < 1e-6);
        batches[1]
            .coarse_labels
            .clone()
            .unwrap()
            .into_data()
            .assert_eq(&TensorData::from([0i64, 1, 0, 1]), false);

        let order = |epoch| {
            let ds = EpochDataset::new(set.clone(), 9, epoch, true, None);
            (0..10).map(|i| ds.item(i).unwrap().pixels[0]).collect::<Vec<_>>()
        };
        assert_eq!(order(3), order(3));
        assert_ne!(order(3), order(4));
        assert!(epoch_loader(set, 0, 1, 0, false, None, &device).is_err());
    }

    #[test]
    fn augmentation_is_seeded_and_keeps_shape() {
        let set = Arc::new(tiny_set(4));
        let aug = Some(Augment { crop_padding: 1, horizontal_flip: true });
        let a = EpochDataset::new(set.clone(), 5, 0, false, aug);
        let b = EpochDataset::new(set.clone(), 5, 0, false, aug);
        for i in 0..4 {
            assert_eq!(a.item(i).unwrap().pixels, b.item(i).unwrap().pixels);
            assert_eq!(a.item(i).unwrap().pixels.len(), 18);
        }
        // Over many epochs some crop or flip must change the image.
        let plain = EpochDataset::new(set.clone(), 5, 0, false, None).item(0).unwrap().pixels;
        let changed = (0..20)
            .any(|e| EpochDataset::new(set.clone(), 5, e, false, aug).item(0).unwrap().pixels != plain);
        assert!(changed);
    }

    #[test]
    fn flip_mirrors_rows() {
        let mut set = tiny_set(1);
        set.channels = 1;
        set.pixels = vec![0, 1, 2, 3, 4, 5, 6, 7, 8];
        set.normalization = Normalization { mean: vec![0.0], std: vec![1.0 / 255.0] };
        let set = Arc::new(set);
        let aug = Some(Augment { crop_padding: 0, horizontal_flip: true });
        let flipped = (0..40)
            .map(|e| EpochDataset::new(set.clone(), 1, e, false, aug).item(0).unwrap().pixels)
            .find(|p| p[0] != 0.0)
            .expect("a flip within 40 epochs");
        let expected = [2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0];
        for (a, b) in flipped.iter().zip(expected) {
            assert!((a - b).abs() < 1e-3, "{flipped:?}");
        }
    }

    #[test]
    fn prefetch_keeps_the_loader_order() {
        let device = Device::flex();
        let set = Arc::new(tiny_set(10));
        let loader = epoch_loader(set, 3, 7, 1, true, None, &device).unwrap();
        let direct: Vec<Vec<i64>> = loader
            .iter()
            .map(|b| b.unwrap().labels.into_data().convert::<i64>().try_to_vec::<i64>().unwrap())
            .collect();
        let prefetched: Vec<Vec<i64>> = prefetch(loader, 2)
            .map(|b| b.unwrap().labels.into_data().convert::<i64>().try_to_vec::<i64>().unwrap())
            .collect();
        assert_eq!(direct.len(), 4);
        assert_eq!(prefetched, direct);
    }
}
