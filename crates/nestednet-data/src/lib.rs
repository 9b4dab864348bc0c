//! Data for nestednet: MNIST-style idx files (any image size), CIFAR-10 and CIFAR-100
//! (binary), folders of images (one sub-folder per class), normalisation, random crop and
//! flip, and batching on Burn's data loader; byte-level text: folders of text documents (one
//! sub-folder per class, an optional coarse class per class) and corpora for language models.
//!
//! Loaders read files in their published formats and check them: magic numbers, sizes, counts,
//! label ranges and that images and labels agree. A missing, truncated or mismatched file is a
//! [`DataError`] that names the file and says what is wrong. The images' shape and the number
//! of classes come from the files; models are built to fit them.
//!
//! Images are kept as raw `u8` in `[channel, height, width]` order ([`ImageSet`]); each epoch
//! gets a [`EpochDataset`] view (a seeded permutation plus seeded augmentation) that Burn's
//! `DataLoader` turns into [`ImageBatch`]es. Every random choice is a pure function of
//! `(seed, epoch, index)`, so an epoch is reproduced exactly when a run resumes.
#![warn(missing_docs)]

mod batch;
mod cifar;
mod error;
mod image_folder;
mod image_set;
mod mnist;
mod rng;
mod text;

pub use batch::{Augment, EpochDataset, ImageBatch, ImageBatcher, ImageItem, epoch_loader, prefetch};
pub use cifar::{CIFAR_IMAGE_BYTES, Cifar10, Cifar100, MAX_RECORDS_PER_FILE};
pub use error::{DataError, Result};
pub use image_folder::{IMAGE_EXTENSIONS, ImageFolder};
pub use image_set::{ImageSet, Normalization};
pub use mnist::{IdxArray, Mnist, read_idx};
pub use rng::SplitMix64;
pub use text::{
    COARSE_CLASSES_FILE, MAX_TEXT_FILE_BYTES, MAX_TEXT_SPLIT_BYTES, SEPARATOR_TOKEN, TextCorpus, TextFolder,
    TextSet, TextStream, TextTokenizer,
};

use serde::{Deserialize, Serialize};

/// The data set formats nestednet knows how to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// MNIST-style idx files (`train-images-idx3-ubyte[.gz]`, ...), any image size.
    Mnist,
    /// CIFAR-10 binary version (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10,
    /// CIFAR-100 binary version (`train.bin`, `test.bin`), coarse and fine labels.
    Cifar100,
    /// A folder of images, one sub-folder per class (`DIR/train/<class>/*.png|jpg`,
    /// `DIR/test/<class>/*`), see [`ImageFolder`].
    ImageFolder,
    /// A folder of text documents, one sub-folder per class (`DIR/train/<class>/*`,
    /// `DIR/test/<class>/*`, optional `DIR/coarse-classes.tsv`), see [`TextFolder`]: windows of
    /// the model's context, for text classifiers.
    TextFolder,
    /// A text corpus (`DIR/train` and `DIR/test`, each a file or a folder of files), see
    /// [`TextCorpus`]: one stream of tokens per split, for language models.
    TextCorpus,
}

impl DatasetKind {
    /// Every kind, for help texts.
    pub const ALL: [DatasetKind; 6] =
        [Self::Mnist, Self::Cifar10, Self::Cifar100, Self::ImageFolder, Self::TextFolder, Self::TextCorpus];

    /// Loads the training and test sets of this kind from `dir` (image folders at the first
    /// image's size); text is an error (see [`DataSource::load_text_folder`]).
    pub fn load(self, dir: &std::path::Path) -> Result<(ImageSet, ImageSet)> {
        DataSource::new(self, dir).load()
    }

    /// Whether its samples are text (token ids), not images.
    pub fn is_text(self) -> bool {
        matches!(self, Self::TextFolder | Self::TextCorpus)
    }

    /// The augmentation the usual recipe applies to this kind's training set: none for MNIST
    /// and image folders, 4-pixel padded random crop and horizontal flip for CIFAR.
    pub fn train_augment(self) -> Option<Augment> {
        match self {
            Self::Mnist | Self::ImageFolder | Self::TextFolder | Self::TextCorpus => None,
            Self::Cifar10 | Self::Cifar100 => Some(Augment { crop_padding: 4, horizontal_flip: true }),
        }
    }
}

/// Which training-time augmentation a run applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augmentation {
    /// The data set's usual one ([`DatasetKind::train_augment`]): none for MNIST and image
    /// folders, 4-pixel padded crop and horizontal flip for CIFAR.
    #[default]
    Usual,
    /// None.
    None,
    /// 4-pixel zero-padded random crop (no flip: digits and text must not be mirrored).
    Crop,
    /// 4-pixel zero-padded random crop and random horizontal flip.
    CropFlip,
}

impl Augmentation {
    /// Every choice, for help texts.
    pub const ALL: [Augmentation; 4] = [Self::Usual, Self::None, Self::Crop, Self::CropFlip];

    /// The augmentation this choice applies to `kind`'s training set.
    pub fn for_dataset(self, kind: DatasetKind) -> Option<Augment> {
        match self {
            Self::Usual => kind.train_augment(),
            Self::None => None,
            Self::Crop => Some(Augment { crop_padding: 4, horizontal_flip: false }),
            Self::CropFlip => Some(Augment { crop_padding: 4, horizontal_flip: true }),
        }
    }
}

impl core::fmt::Display for Augmentation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Usual => "usual",
            Self::None => "none",
            Self::Crop => "crop",
            Self::CropFlip => "crop-flip",
        })
    }
}

impl core::str::FromStr for Augmentation {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|a| a.to_string() == s).ok_or_else(|| {
            DataError::Invalid(format!("unknown augmentation `{s}`: give usual, none, crop or crop-flip"))
        })
    }
}

impl core::str::FromStr for DatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mnist" | "idx" => Ok(Self::Mnist),
            "cifar10" | "cifar-10" => Ok(Self::Cifar10),
            "cifar100" | "cifar-100" => Ok(Self::Cifar100),
            "image-folder" | "imagefolder" | "folder" => Ok(Self::ImageFolder),
            "text-folder" | "textfolder" => Ok(Self::TextFolder),
            "text-corpus" | "textcorpus" | "corpus" => Ok(Self::TextCorpus),
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
            Self::ImageFolder => "image-folder",
            Self::TextFolder => "text-folder",
            Self::TextCorpus => "text-corpus",
        })
    }
}

/// Where a data set is and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    /// The format.
    pub kind: DatasetKind,
    /// The folder holding the files.
    pub dir: std::path::PathBuf,
    /// Image folders: the size every image is resized to, `[height, width]` (default: the
    /// first training image's). Other formats have a fixed size and refuse this.
    pub image_size: Option<[usize; 2]>,
    /// Hold out this fraction of the training set (the last images of idx and CIFAR files,
    /// images spread over an image folder's classes; for text, documents spread evenly over
    /// the set, or the end of a corpus) as the evaluation set in place of the test
    /// set, to choose settings without looking at the test set.
    #[serde(default)]
    pub validation_split: Option<f64>,
    /// Text: tokens per sample (the model's context). Text folders are cut into windows of it;
    /// image formats refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
}

impl DataSource {
    /// The data set of `kind` in `dir`, read at its own size, with its own test set.
    pub fn new(kind: DatasetKind, dir: impl Into<std::path::PathBuf>) -> Self {
        Self { kind, dir: dir.into(), image_size: None, validation_split: None, context: None }
    }

    /// The same source with `context` tokens per sample (text).
    pub fn with_context(mut self, context: Option<usize>) -> Self {
        self.context = context;
        self
    }

    /// Loads the training and test sets of images.
    pub fn load(&self) -> Result<(ImageSet, ImageSet)> {
        if self.kind.is_text() {
            return Err(DataError::Invalid(format!(
                "{} data are text, not images: they feed text models (text-*, lm-*)",
                self.kind
            )));
        }
        if self.context.is_some() {
            return Err(DataError::Invalid(format!(
                "a context (tokens per sample) is given, but {} data are images",
                self.kind
            )));
        }
        if self.image_size.is_some() && self.kind != DatasetKind::ImageFolder {
            return Err(DataError::Invalid(format!(
                "an image size is given, but {} files have a fixed size (only image folders are resized)",
                self.kind
            )));
        }
        let (train, test) = match self.kind {
            DatasetKind::Mnist => Mnist::load(&self.dir)?,
            DatasetKind::Cifar10 => Cifar10::load(&self.dir)?,
            DatasetKind::Cifar100 => Cifar100::load(&self.dir)?,
            DatasetKind::ImageFolder => ImageFolder::load(&self.dir, self.image_size)?,
            DatasetKind::TextFolder | DatasetKind::TextCorpus => unreachable!("refused above"),
        };
        match self.validation_split {
            None => Ok((train, test)),
            Some(fraction) => train.split_validation(fraction),
        }
    }

    /// The context text is read at: given, and text only.
    fn text_context(&self, expected: DatasetKind) -> Result<usize> {
        if self.kind != expected {
            let what = if self.kind.is_text() { "other text" } else { "images" };
            return Err(DataError::Invalid(format!(
                "{} data are {what}: this reads {expected} data",
                self.kind
            )));
        }
        if self.image_size.is_some() {
            return Err(DataError::Invalid(format!(
                "an image size is given, but {} data are text",
                self.kind
            )));
        }
        self.context.ok_or_else(|| {
            DataError::Invalid(format!(
                "{} data need a context: the tokens per sample of the model",
                self.kind
            ))
        })
    }

    /// Loads a text folder's training and test windows of `context` tokens.
    pub fn load_text_folder(&self) -> Result<(TextSet, TextSet)> {
        let context = self.text_context(DatasetKind::TextFolder)?;
        let (train, test) = TextFolder::load(&self.dir, context)?;
        match self.validation_split {
            None => Ok((train, test)),
            Some(fraction) => train.split_validation(fraction),
        }
    }

    /// Loads a text corpus's training and test streams (read in windows of the context, which
    /// must leave at least one window in each).
    pub fn load_corpus(&self) -> Result<(TextStream, TextStream)> {
        let context = self.text_context(DatasetKind::TextCorpus)?;
        text::check_context(context)?;
        let (train, test) = TextCorpus::load(&self.dir)?;
        let (train, test) = match self.validation_split {
            None => (train, test),
            Some(fraction) => train.split_validation(fraction)?,
        };
        for (split, stream) in [("training", &train), ("evaluation", &test)] {
            if stream.num_windows(context) == 0 {
                return Err(DataError::Invalid(format!(
                    "the {split} text of {} holds {} tokens: fewer than one window of the context ({context}) and its next token",
                    self.dir.display(),
                    stream.tokens.len()
                )));
            }
        }
        Ok((train, test))
    }
}
