use thiserror::Error;

/// Errors raised when building models.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    /// The level specification does not fit the model.
    #[error(transparent)]
    Schedule(#[from] nestednet_schedule::ScheduleError),
    /// The output head's configuration is invalid.
    #[error(transparent)]
    Head(#[from] nestednet_heads::HeadError),
    /// A model dimension is invalid.
    #[error("invalid model configuration: {0}")]
    Invalid(String),
    /// The network does not offer this.
    #[error("this network does not support {0}")]
    Unsupported(String),
    /// No model family answers to this name.
    #[error("unknown model `{name}` (known: {known})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names the families answer to.
        known: String,
    },
    /// No level of the network is called this.
    #[error("no level `{key}`: the levels are {levels}")]
    UnknownLevel {
        /// What was asked for.
        key: String,
        /// The levels, by number and name.
        levels: String,
    },
    /// The images do not fit the model.
    #[error("{model} cannot take images of {channels}x{height}x{width}: {reason}")]
    InputSize {
        /// The model.
        model: String,
        /// Image channels.
        channels: usize,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// Why not.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, ModelError>;
