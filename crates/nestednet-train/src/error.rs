use std::path::PathBuf;

use thiserror::Error;

/// Errors raised while training, evaluating, checkpointing, reporting or exporting.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Loading data failed.
    #[error(transparent)]
    Data(#[from] nestednet_data::DataError),
    /// The model configuration or level specification is invalid.
    #[error(transparent)]
    Model(#[from] nestednet_models::ModelError),
    /// A level specification or level index is invalid.
    #[error(transparent)]
    Schedule(#[from] nestednet_schedule::ScheduleError),
    /// Level-loss weights or a class hierarchy are invalid.
    #[error(transparent)]
    Head(#[from] nestednet_heads::HeadError),
    /// A mask request or mask operation is invalid.
    #[error(transparent)]
    Prune(#[from] nestednet_prune::PruneError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A Burn record could not be read, written or applied.
    #[error("{}: {message}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// What Burn reported.
        message: String,
    },
    /// A JSON file could not be parsed.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A safetensors file could not be read or written.
    #[error("{}: safetensors: {message}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A run folder is missing, incomplete or holds something else.
    #[error("run folder {}: {reason}", path.display())]
    Run {
        /// The run folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The requested backend is not compiled in or cannot start.
    #[error("{0}")]
    Device(String),
    /// No training recipe has this name.
    #[error("unknown recipe `{name}` (known: {known})")]
    UnknownRecipe {
        /// The name asked for.
        name: String,
        /// The recipes the registry knows.
        known: String,
    },
    /// A training or evaluation setting is invalid.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// No level or sub-network fits a budget.
    #[error("{0}")]
    Budget(String),
    /// Writing the plot failed.
    #[error("{}: cannot draw plot: {message}", path.display())]
    Plot {
        /// The image file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn record(path: impl Into<PathBuf>) -> impl FnOnce(burn::store::RecordError) -> Self {
        let path = path.into();
        move |e| Self::Record { path, message: e.to_string() }
    }
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, TrainError>;
