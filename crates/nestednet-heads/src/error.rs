use thiserror::Error;

/// Errors raised by task heads and losses.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum HeadError {
    /// The number of loss weights differs from the number of levels.
    #[error("{found} level-loss weights given for {expected} levels")]
    WeightCount {
        /// Number of levels.
        expected: usize,
        /// Number of weights given.
        found: usize,
    },
    /// A loss weight is negative or not finite.
    #[error("level {level}: loss weight {weight} must be finite and non-negative")]
    BadWeight {
        /// The level.
        level: usize,
        /// Its weight.
        weight: f64,
    },
    /// A class hierarchy is invalid or does not fit the data.
    #[error("invalid class hierarchy: {0}")]
    Hierarchy(String),
    /// All loss weights are zero.
    #[error("level-loss weights sum to zero: at least one level must be trained")]
    ZeroWeights,
    /// An output head's per-level classes or widths are invalid.
    #[error("invalid output head: {0}")]
    Head(String),
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, HeadError>;
