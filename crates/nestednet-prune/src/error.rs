use thiserror::Error;

/// Errors raised when building or applying nested masks.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PruneError {
    /// No level was given.
    #[error("a nested mask needs at least one level")]
    NoLevels,
    /// Level `level`'s mask keeps weights that level `level + 1` drops.
    #[error(
        "masks are not nested: level {level} keeps {count} weights that level {} drops",
        level + 1
    )]
    NotNested {
        /// The lower level.
        level: usize,
        /// How many weights break the nesting.
        count: usize,
    },
    /// Shapes of a mask and a weight (or of two masks) differ.
    #[error("{what}: expected shape {expected:?}, got {found:?}")]
    ShapeMismatch {
        /// What was being compared.
        what: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A level map holds a value that is neither a level nor the "pruned" marker.
    #[error("level map value {value} is outside 0..={num_levels} ({num_levels} means pruned)")]
    LevelMapOutOfRange {
        /// The bad value.
        value: i64,
        /// Number of levels.
        num_levels: usize,
    },
    /// Pruning thresholds grow from the core towards the full level.
    #[error(
        "threshold of level {level} ({threshold}) is larger than level {}'s ({previous}): \
         thresholds must not grow from the core (sparsest) to the full level",
        level - 1
    )]
    ThresholdsNotDecreasing {
        /// The level whose threshold is too large.
        level: usize,
        /// Its threshold.
        threshold: f64,
        /// The threshold of the level below.
        previous: f64,
    },
    /// A level index is out of range.
    #[error("level {level} does not exist: the mask has levels 0..={}", num_levels - 1)]
    LevelOutOfRange {
        /// The requested level.
        level: usize,
        /// Number of levels.
        num_levels: usize,
    },
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, PruneError>;
