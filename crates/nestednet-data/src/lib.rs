//! Data for nestednet: MNIST (idx), CIFAR-10 and CIFAR-100 (binary) loaders, normalisation,
//! random crop and flip, and batching on Burn's data loader.
//!
//! Loaders read files in their published formats and check them: magic numbers, sizes, counts,
//! label ranges and that images and labels agree. A missing, truncated or mismatched file is a
//! [`DataError`] that names the file and says what is wrong.
//!
//! Images are kept as raw `u8` in `[channel, height, width]` order ([`ImageSet`]); each epoch
//! gets a [`EpochDataset`] view (a seeded permutation plus seeded augmentation) that Burn's
//! `DataLoader` turns into [`ImageBatch`]es. Every random choice is a pure function of
//! `(seed, epoch, index)`, so an epoch is reproduced exactly when a run resumes.
#![warn(missing_docs)]

mod batch;
mod cifar;
mod error;
mod image_set;
mod mnist;
mod rng;

pub use batch::{Augment, EpochDataset, ImageBatch, ImageBatcher, ImageItem, epoch_loader, prefetch};
pub use cifar::{CIFAR_IMAGE_BYTES, Cifar10, Cifar100};
pub use error::{DataError, Result};
pub use image_set::{ImageSet, Normalization};
pub use mnist::{IdxArray, Mnist, read_idx};
pub use rng::SplitMix64;

use serde::{Deserialize, Serialize};

/// The data sets nestednet knows how to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// MNIST in idx format (`train-images-idx3-ubyte[.gz]`, ...).
    Mnist,
    /// CIFAR-10 binary version (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10,
    /// CIFAR-100 binary version (`train.bin`, `test.bin`), coarse and fine labels.
    Cifar100,
}

impl DatasetKind {
    /// Loads the training and test sets of this kind from `dir`.
    pub fn load(self, dir: &std::path::Path) -> Result<(ImageSet, ImageSet)> {
        match self {
            Self::Mnist => Mnist::load(dir),
            Self::Cifar10 => Cifar10::load(dir),
            Self::Cifar100 => Cifar100::load(dir),
        }
    }

    /// The augmentation the usual recipe applies to this kind's training set: none for MNIST,
    /// 4-pixel padded random crop and horizontal flip for CIFAR.
    pub fn train_augment(self) -> Option<Augment> {
        match self {
            Self::Mnist => None,
            Self::Cifar10 | Self::Cifar100 => Some(Augment { crop_padding: 4, horizontal_flip: true }),
        }
    }
}

impl core::str::FromStr for DatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mnist" => Ok(Self::Mnist),
            "cifar10" | "cifar-10" => Ok(Self::Cifar10),
            "cifar100" | "cifar-100" => Ok(Self::Cifar100),
            other => Err(DataError::UnknownDataset(other.to_string())),
        }
    }
}

impl core::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Mnist => "mnist",
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
        })
    }
}
