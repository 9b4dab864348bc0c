//! CIFAR-10 and CIFAR-100 in their published binary format
//! (<https://www.cs.toronto.edu/~kriz/cifar.html>, "binary version").
//!
//! - CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`; each record is
//!   1 label byte (0–9) followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each
//!   32×32 row-major).
//! - CIFAR-100: `train.bin` and `test.bin`; each record is 1 coarse label byte (0–19), 1 fine
//!   label byte (0–99) and 3072 pixel bytes.

use std::path::{Path, PathBuf};

use crate::mnist::DataFile;
use crate::{DataError, ImageSet, Normalization, Result};

/// Pixel bytes per CIFAR image (3 × 32 × 32).
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;

/// The most records one CIFAR binary file may hold (the published CIFAR-100 `train.bin` has
/// 50,000).
pub const MAX_RECORDS_PER_FILE: usize = 50_000;

/// Label bytes and class counts of one CIFAR variant.
struct Layout {
    /// `(num_classes, name)` of each label byte, in record order; the last is the fine label.
    labels: &'static [(usize, &'static str)],
}

impl Layout {
    fn record_bytes(&self) -> usize {
        self.labels.len() + CIFAR_IMAGE_BYTES
    }
}

const CIFAR10: Layout = Layout { labels: &[(10, "label")] };
const CIFAR100: Layout = Layout { labels: &[(20, "coarse label"), (100, "fine label")] };

/// Reads CIFAR record files into one set (files in the given order).
fn read_records(paths: &[PathBuf], layout: &Layout, normalization: Normalization) -> Result<ImageSet> {
    let record = layout.record_bytes();
    let mut pixels = Vec::new();
    let mut per_label: Vec<Vec<usize>> = vec![Vec::new(); layout.labels.len()];
    for path in paths {
        if !path.is_file() {
            return Err(DataError::Missing { tried: vec![path.clone()] });
        }
        // The format has no header to announce a size: a file may hold at most as many records
        // as the largest published one (CIFAR-100's train.bin, 50,000), and reading stops one
        // byte past that, so a compressed file inflating without end is refused early.
        let mut file = DataFile::open(path)?;
        let limit = (MAX_RECORDS_PER_FILE * record) as u64;
        let bytes =
            file.read_at_most(limit, &format!("of {MAX_RECORDS_PER_FILE} records a CIFAR file may hold"))?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(DataError::BadSize {
                path: path.clone(),
                reason: format!(
                    "{} bytes is not a whole number of {record}-byte records (truncated or not a CIFAR binary file)",
                    bytes.len()
                ),
            });
        }
        for (index, rec) in bytes.chunks_exact(record).enumerate() {
            for (slot, &(num_classes, _)) in layout.labels.iter().enumerate() {
                let label = rec[slot] as usize;
                if label >= num_classes {
                    return Err(DataError::LabelOutOfRange { path: path.clone(), index, label, num_classes });
                }
                per_label[slot].push(label);
            }
            pixels.extend_from_slice(&rec[layout.labels.len()..]);
        }
    }
    let fine = per_label.pop().expect("at least one label");
    let num_classes = layout.labels.last().expect("at least one label").0;
    let (coarse, num_coarse) = match per_label.pop() {
        Some(c) => (Some(c), layout.labels[0].0),
        None => (None, 0),
    };
    Ok(ImageSet {
        pixels,
        labels: fine,
        coarse_labels: coarse,
        channels: 3,
        height: 32,
        width: 32,
        num_classes,
        num_coarse_classes: num_coarse,
        normalization,
        class_names: Vec::new(),
    })
}

/// CIFAR-10, binary version.
pub struct Cifar10;

impl Cifar10 {
    /// Loads the 5 training batches and the test batch from `dir` (the folder holding
    /// `data_batch_1.bin`, usually `cifar-10-batches-bin/`).
    pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet)> {
        let train: Vec<PathBuf> = (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect();
        Ok((
            read_records(&train, &CIFAR10, Normalization::cifar10())?,
            read_records(&[dir.join("test_batch.bin")], &CIFAR10, Normalization::cifar10())?,
        ))
    }

    /// Loads arbitrary CIFAR-10 record files.
    pub fn load_files(paths: &[PathBuf]) -> Result<ImageSet> {
        read_records(paths, &CIFAR10, Normalization::cifar10())
    }
}

/// CIFAR-100, binary version, keeping both the 20 coarse and the 100 fine labels.
pub struct Cifar100;

impl Cifar100 {
    /// Loads `train.bin` and `test.bin` from `dir` (usually `cifar-100-binary/`).
    pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet)> {
        Ok((
            read_records(&[dir.join("train.bin")], &CIFAR100, Normalization::cifar100())?,
            read_records(&[dir.join("test.bin")], &CIFAR100, Normalization::cifar100())?,
        ))
    }

    /// Loads arbitrary CIFAR-100 record files.
    pub fn load_files(paths: &[PathBuf]) -> Result<ImageSet> {
        read_records(paths, &CIFAR100, Normalization::cifar100())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes records in the published layout: label bytes, then R, G, B planes.
    fn record(labels: &[u8], seed: u8) -> Vec<u8> {
        let mut r = labels.to_vec();
        for channel in 0..3u8 {
            for i in 0..1024u32 {
                r.push(seed.wrapping_mul(31).wrapping_add(channel * 85).wrapping_add((i % 7) as u8));
            }
        }
        r
    }

    #[test]
    fn cifar10_reads_generated_batches() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=5u8 {
            let bytes: Vec<u8> = (0..3).flat_map(|j| record(&[(i + j) % 10], i * 3 + j)).collect();
            std::fs::write(dir.path().join(format!("data_batch_{i}.bin")), bytes).unwrap();
        }
        std::fs::write(dir.path().join("test_batch.bin"), record(&[7], 99)).unwrap();
        let (train, test) = Cifar10::load(dir.path()).unwrap();
        assert_eq!(train.len(), 15);
        assert_eq!(&train.labels[..4], &[1, 2, 3, 2]);
        assert_eq!(test.labels, vec![7]);
        assert!(train.coarse_labels.is_none());
        // First pixel of the green plane of the test image.
        assert_eq!(test.image(0)[1024], 99u8.wrapping_mul(31).wrapping_add(85));
        train.validate().unwrap();
    }

    #[test]
    fn cifar100_keeps_coarse_and_fine_labels() {
        let dir = tempfile::tempdir().unwrap();
        let train: Vec<u8> =
            [(3u8, 17u8), (19, 99), (0, 0)].iter().flat_map(|&(c, f)| record(&[c, f], f)).collect();
        std::fs::write(dir.path().join("train.bin"), train).unwrap();
        std::fs::write(dir.path().join("test.bin"), record(&[4, 42], 1)).unwrap();
        let (train, test) = Cifar100::load(dir.path()).unwrap();
        assert_eq!(train.labels, vec![17, 99, 0]);
        assert_eq!(train.coarse_labels.as_deref(), Some(&[3, 19, 0][..]));
        assert_eq!((train.num_classes, train.num_coarse_classes), (100, 20));
        assert_eq!(test.coarse_labels.as_deref(), Some(&[4][..]));
    }

    /// A small gzip file that inflates past the records a CIFAR file may hold is refused one
    /// byte past that bound, not read to its end.
    #[test]
    fn a_compressed_file_inflating_past_the_largest_cifar_file_is_refused() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.bin");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 3074 * 1000];
        for _ in 0..(MAX_RECORDS_PER_FILE / 1000 + 1) {
            enc.write_all(&zeros).unwrap();
        }
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        let err = Cifar100::load_files(std::slice::from_ref(&p)).unwrap_err().to_string();
        assert!(
            err.contains("train.bin") && err.contains("more data than") && err.contains("50000 records"),
            "{err}"
        );
    }

    #[test]
    fn broken_cifar_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = Cifar10::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("data_batch_1.bin"), "{err}");

        let p = dir.path().join("train.bin");
        let mut bytes = record(&[1, 2], 0);
        bytes.truncate(1000);
        std::fs::write(&p, &bytes).unwrap();
        let err = Cifar100::load_files(std::slice::from_ref(&p)).unwrap_err().to_string();
        assert!(err.contains("train.bin") && err.contains("3074-byte records"), "{err}");

        std::fs::write(&p, record(&[20, 2], 0)).unwrap();
        let err = Cifar100::load_files(std::slice::from_ref(&p)).unwrap_err();
        assert!(matches!(err, DataError::LabelOutOfRange { label: 20, num_classes: 20, .. }), "{err}");

        std::fs::write(&p, record(&[10], 0)).unwrap();
        let err = Cifar10::load_files(&[p]).unwrap_err();
        assert!(matches!(err, DataError::LabelOutOfRange { label: 10, num_classes: 10, .. }), "{err}");
    }
}
