use std::path::PathBuf;

use thiserror::Error;

/// Errors raised while loading data. Every file error names the file.
#[derive(Debug, Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// None of the expected file names exist.
    #[error("missing data file: none of {} exists", list(.tried))]
    Missing {
        /// The paths that were tried.
        tried: Vec<PathBuf>,
    },
    /// The file does not start with the expected magic number.
    #[error("{}: bad magic number {found:#010x}, expected {expected:#010x} ({what})", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Magic expected.
        expected: u32,
        /// Magic found.
        found: u32,
        /// What the file should be.
        what: &'static str,
    },
    /// The file is shorter or longer than its header (or format) says.
    #[error("{}: {reason}", path.display())]
    BadSize {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Images and labels disagree.
    #[error("{} holds {images} images but {} holds {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// Number of images.
        images: usize,
        /// The labels file.
        labels_path: PathBuf,
        /// Number of labels.
        labels: usize,
    },
    /// A label is not a valid class.
    #[error("{}: record {index} has label {label}, but there are only {num_classes} classes", path.display())]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Index of the record.
        index: usize,
        /// The label.
        label: usize,
        /// Number of classes.
        num_classes: usize,
    },
    /// The data set name is not known.
    #[error("unknown data set `{0}` (known: mnist, cifar10, cifar100, image-folder)")]
    UnknownDataset(String),
    /// A request does not fit the data (e.g. a batch size of 0).
    #[error("{0}")]
    Invalid(String),
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, DataError>;
