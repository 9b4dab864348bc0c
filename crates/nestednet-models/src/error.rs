use thiserror::Error;

/// Errors raised when building models.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    /// The level specification does not fit the model.
    #[error(transparent)]
    Schedule(#[from] nestednet_schedule::ScheduleError),
    /// A model dimension is invalid.
    #[error("invalid model configuration: {0}")]
    Invalid(String),
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, ModelError>;
