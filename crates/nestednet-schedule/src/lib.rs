//! Level specifications and scheduling strategies for nested networks.
//!
//! A nested network holds `n ≥ 1` networks ("levels") in one set of weights. Level 0 is the
//! *core* (the smallest network) and level `n - 1` the *full* network; every level's weights are
//! a subset of the next level's.
//!
//! This crate turns a user's description of the levels ([`LevelSpec`]: width ratios such as
//! `0.25,0.5,1.0`, or explicit per-layer channel counts) into a validated [`ChannelSchedule`]:
//! for every scheduled layer, how many leading channels each level uses. Validation happens here,
//! before any tensor is allocated, and every error names the layer and level at fault.
//!
//! Residual networks add layer scheduling: a [`LatticeSpec`] makes each level a (width, depth)
//! pair, the depth being how many leading blocks of every stage the level runs.
#![warn(missing_docs)]

mod channel;
mod error;
mod lattice;
mod level;

pub use channel::{ChannelSchedule, LayerWidths, ScheduledLayer};
pub use error::{Result, ScheduleError};
pub use lattice::{LatticeLevel, LatticeSpec};
pub use level::{LayerChannels, LevelSpec};

/// Checks that `level` names one of `num_levels` levels.
///
/// Every crate that takes a level index at an I/O boundary (CLI, export, evaluation) calls this
/// so a bad `--level` is a clear error instead of an out-of-range panic deep in a layer.
pub fn check_level(level: usize, num_levels: usize) -> Result<()> {
    if level < num_levels { Ok(()) } else { Err(ScheduleError::LevelOutOfRange { level, num_levels }) }
}
