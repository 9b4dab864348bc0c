//! Training, evaluation, checkpoints, per-level reports, export and serving for nestednet, for
//! any nested network (a built-in model or a user's own, through
//! [`NestedNetwork`](nestednet_models::NestedNetwork)) on any input it takes.
//!
//! Four layers, each using only the ones before it (`scripts/check_structure.py` checks it):
//!
//! - [`trainer`], the generic core: [`trainer::train`] trains every level jointly (paper, Eq. 5)
//!   on any [`LabelledSet`](trainer::LabelledSet); [`RunDir`](trainer::RunDir) is the run folder
//!   (one atomic checkpoint for all levels per epoch, resumable); weight masks, devices,
//!   configuration and metrics.
//! - [`export`]: one level (or a Mix'n'Match sub-network) as a compact standalone model
//!   (burnpack, or safetensors with PyTorch names, dense or sparse), checked against the nested
//!   level; nestify (a dense network into the levels).
//! - [`serve`]: the levels together (consensus, early exit), reports and plots, latency,
//!   budgets, `select` and Mix'n'Match `search`.
//! - [`jobs`]: settings as flags and files, recipes, the backend chosen at run time, whole
//!   jobs: the only layer that names the built-in models.
#![warn(missing_docs)]

mod error;
pub mod export;
pub mod jobs;
pub mod serve;
pub mod trainer;

pub use error::{Result, TrainError};
pub use nestednet_alloc::{PeakAllocator, peak_bytes_during, peak_memory_measured};
