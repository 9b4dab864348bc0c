//! The epochs of a run: where each stands in the plan of phases, the hooks that act at the
//! phase boundaries, and the state every completed epoch checkpoints.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::trainer::metrics::{EpochMetrics, Phase, Progress};

/// Where an epoch stands in the run's plan of phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPhase {
    /// The epoch (0-based).
    pub epoch: usize,
    /// What it trains.
    pub phase: Phase,
    /// Whether it is the first epoch of its phase.
    pub starts_phase: bool,
    /// Whether it is the last epoch of its phase.
    pub ends_phase: bool,
}

impl EpochPhase {
    /// Epoch `epoch` of the run whose epochs train `plan`.
    pub fn of(plan: &[Phase], epoch: usize) -> Self {
        let phase = plan[epoch];
        Self {
            epoch,
            phase,
            starts_phase: epoch == 0 || plan[epoch - 1] != phase,
            ends_phase: epoch + 1 == plan.len() || plan[epoch + 1] != phase,
        }
    }
}

/// What a part of training does at the loop's phase boundaries (weight masks:
/// `crate::trainer::masks::MaskStages`). The loop calls every hook in the order of its methods.
pub trait PhaseHooks<M> {
    /// Before the epoch's first batch.
    fn epoch_start(&mut self, model: &mut M, epoch: EpochPhase, progress: &mut dyn Progress) -> Result<()>;

    /// After every optimizer step (`global_step` steps taken).
    fn after_step(&mut self, model: &mut M, global_step: usize) -> Result<()>;

    /// After the epoch's last batch, before its evaluation and checkpoint.
    fn epoch_end(
        &mut self,
        model: &mut M,
        epoch: EpochPhase,
        state: &mut CheckpointState,
        progress: &mut dyn Progress,
    ) -> Result<()>;
}

/// The state saved with every completed epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Number of completed epochs.
    pub epochs_completed: usize,
    /// Optimizer steps taken so far.
    pub global_step: usize,
    /// Folder (relative to the run folder) holding this epoch's records.
    pub dir: String,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// `(level, τ)` at which each learned or pruned mask was binarised, in order.
    #[serde(default)]
    pub thresholds: Vec<(usize, f64)>,
}
