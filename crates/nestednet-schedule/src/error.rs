use thiserror::Error;

/// Errors raised while validating a level specification.
///
/// Levels are numbered from 0 (the core) to `n - 1` (the full network).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ScheduleError {
    /// The specification has no level at all.
    #[error("a level specification needs at least one level")]
    Empty,
    /// A width × depth lattice of levels is invalid (the message says why).
    #[error("invalid level lattice: {0}")]
    Lattice(String),
    /// A width ratio is not in `(0, 1]`.
    #[error("level {level}: width ratio {ratio} is outside (0, 1]")]
    RatioOutOfRange {
        /// The offending level.
        level: usize,
        /// Its ratio.
        ratio: f64,
    },
    /// Width ratios shrink from the core to the full level.
    #[error(
        "level {level}: width ratio {ratio} is smaller than level {}'s ratio {previous} \
         (levels go from the core, smallest, to the full network, largest)",
        level - 1
    )]
    RatiosNotIncreasing {
        /// The offending level.
        level: usize,
        /// Its ratio.
        ratio: f64,
        /// The ratio of the level below.
        previous: f64,
    },
    /// The last level does not use the whole network.
    #[error("level {level} is the full level and must have ratio 1.0, got {ratio}")]
    LastRatioNotFull {
        /// The last level.
        level: usize,
        /// Its ratio.
        ratio: f64,
    },
    /// A layer has fewer channels than there are levels.
    #[error("layer `{layer}`: {levels} levels cannot nest in {channels} channels")]
    TooManyLevels {
        /// The layer.
        layer: String,
        /// Number of levels asked for.
        levels: usize,
        /// Channels of the layer.
        channels: usize,
    },
    /// A level would use no channel of a layer.
    #[error("layer `{layer}`, level {level}: a level must use at least one channel (got 0)")]
    ZeroChannels {
        /// The layer.
        layer: String,
        /// The level.
        level: usize,
    },
    /// A layer's widths shrink from one level to the next.
    #[error(
        "layer `{layer}`, level {level}: {width} channels is fewer than level {}'s {previous} \
         (each level must contain the one below it)",
        level - 1
    )]
    NotIncreasing {
        /// The layer.
        layer: String,
        /// The level.
        level: usize,
        /// Its width.
        width: usize,
        /// The width of the level below.
        previous: usize,
    },
    /// A level asks for more channels than the layer has.
    #[error("layer `{layer}`, level {level}: {width} channels exceeds the layer's {channels}")]
    ExceedsChannels {
        /// The layer.
        layer: String,
        /// The level.
        level: usize,
        /// The requested width.
        width: usize,
        /// Channels of the layer.
        channels: usize,
    },
    /// The last level does not use all channels of a layer.
    #[error("layer `{layer}`, level {level}: the full level must use all {channels} channels, got {width}")]
    LastLevelNotFull {
        /// The layer.
        layer: String,
        /// The last level.
        level: usize,
        /// Its width.
        width: usize,
        /// Channels of the layer.
        channels: usize,
    },
    /// Explicit channel counts give a different number of levels for different layers.
    #[error("layer `{layer}`: {found} levels given, but other layers have {expected}")]
    LevelCountMismatch {
        /// The layer.
        layer: String,
        /// Levels of the first layer.
        expected: usize,
        /// Levels of this layer.
        found: usize,
    },
    /// Explicit channel counts name a layer the model does not schedule.
    #[error("layer `{layer}` is not a scheduled layer of this model (known: {known})")]
    UnknownLayer {
        /// The unknown name.
        layer: String,
        /// The names the model does schedule.
        known: String,
    },
    /// Explicit channel counts leave out a scheduled layer.
    #[error("layer `{layer}` is scheduled by the model but has no channel counts")]
    MissingLayer {
        /// The layer left out.
        layer: String,
    },
    /// The same layer is listed twice.
    #[error("layer `{layer}` is listed twice")]
    DuplicateLayer {
        /// The repeated layer.
        layer: String,
    },
    /// Two consecutive levels are the same network.
    #[error(
        "level {level} uses exactly the same channels as level {} in every layer \
         (levels of equal width must differ by their weight masks: mask some layers)",
        level - 1
    )]
    DuplicateLevel {
        /// The level that repeats the one below.
        level: usize,
    },
    /// A level index is out of range.
    #[error("level {level} does not exist: this model has levels 0..={}", num_levels.saturating_sub(1))]
    LevelOutOfRange {
        /// The requested level.
        level: usize,
        /// Number of levels.
        num_levels: usize,
    },
    /// The textual form of a specification could not be parsed.
    #[error("cannot parse level specification `{input}`: {reason}")]
    Parse {
        /// The text.
        input: String,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = core::result::Result<T, ScheduleError>;
