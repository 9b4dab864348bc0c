use thiserror::Error;

/// Errors raised when building, learning, applying or storing nested masks.
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
    /// A threshold is negative or not a number.
    #[error("threshold of level {level} is {value}: thresholds must be finite and ≥ 0")]
    InvalidThreshold {
        /// The level.
        level: usize,
        /// The bad value.
        value: f64,
    },
    /// A density is not in (0, 1].
    #[error("density of level {level} is {value}: a density is the fraction of weights kept, in (0, 1]")]
    InvalidDensity {
        /// The level.
        level: usize,
        /// The bad value.
        value: f64,
    },
    /// A compression ratio is below 1.
    #[error("compression of level {level} is {value}: a compression ratio is ≥ 1 (1 = dense)")]
    InvalidCompression {
        /// The level.
        level: usize,
        /// The bad value.
        value: f64,
    },
    /// Densities shrink from the core towards the full level.
    #[error(
        "density of level {level} ({density}) is smaller than level {}'s ({previous}): \
         densities must not shrink from the core (sparsest) to the full level",
        level - 1
    )]
    DensitiesNotIncreasing {
        /// The level whose density is too small.
        level: usize,
        /// Its density.
        density: f64,
        /// The density of the level below.
        previous: f64,
    },
    /// The number of per-level targets differs from the number of levels.
    #[error("{what} gives {found} values but the model has {expected} levels")]
    LevelCountMismatch {
        /// What was given (densities, thresholds).
        what: String,
        /// Levels of the model.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A density cannot be reached because the layers that stay dense already exceed it.
    #[error(
        "density {density} of level {level} cannot be reached: the parameters that are never \
         pruned (dense layers, biases, batch norms) alone make {minimum:.4} of the level"
    )]
    DensityUnreachable {
        /// The level.
        level: usize,
        /// The requested density.
        density: f64,
        /// The smallest reachable density.
        minimum: f64,
    },
    /// A level index is out of range.
    #[error("level {level} does not exist: the mask has levels 0..={}", num_levels - 1)]
    LevelOutOfRange {
        /// The requested level.
        level: usize,
        /// Number of levels.
        num_levels: usize,
    },
    /// A sparse (CSR/CSC) tensor is malformed.
    #[error("corrupt sparse tensor `{name}`: {reason}")]
    CorruptSparse {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, PruneError>;
