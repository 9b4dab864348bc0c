//! The generic core: everything a run of any nested network needs, whatever its input and
//! output, and nothing that names a model, a file format for deployment or a command.
//!
//! - [`train`] / [`train_on`] (`fit`): the loop, every level trained jointly (Eq. 5), a
//!   checkpoint per epoch, resume; its phases' hooks ([`PhaseHooks`](fit::PhaseHooks)) run the
//!   weight masks (`masks`).
//! - [`JointStep`] and [`train_step`] (`step`): one step's joint loss and its gradients.
//! - [`LabelledSet`] (`data`): what a run trains on; [`ImageData`] for images, [`TextData`]
//!   (`text_data`) for text.
//! - [`TrainDevices`] (`devices`): one device or data-parallel.
//! - [`RunDir`] (`run`) and its records (`record`); [`seeded_model`] (`init`).
//! - [`TrainingConfig`], [`RunConfig`] (`config`); [`LevelLabels`] (`labels`);
//!   [`evaluate`]; [`EpochMetrics`], [`Progress`] (`metrics`).

pub(crate) mod config;
pub use config::{
    DistillationConfig, FORMAT_VERSION, LrSchedule, OptimizerConfig, RunConfig, TrainingConfig,
};
pub(crate) mod data;
pub use data::{Batch, BatchOrder, Batches, ImageData, InputOf, LabelledSet, check_compatible, probe_input};
pub(crate) mod text_data;
pub use text_data::TextData;
pub(crate) mod devices;
pub use devices::{TrainDevices, cpu_pool_threads, join_cpu_thread_pool, join_cpu_thread_pool_from_main};
pub(crate) mod evaluate;
pub use evaluate::evaluate;
pub(crate) mod fit;
pub use fit::{Teacher, TrainData, TrainOutcome, train, train_on};
pub(crate) mod init;
pub use init::{seeded_model, with_init_lock};
pub(crate) mod labels;
pub use labels::{HierarchyConfig, LevelLabels};
pub(crate) mod masks;
pub use masks::{
    LayerDensity, MaskMethod, MaskingConfig, binarise_level, check_reachable, enable_masks, epoch_plan,
    layer_densities, level_threshold, prune_by_magnitude, randomize_masks, set_soft_threshold,
};
pub(crate) mod metrics;
pub use metrics::{BarProgress, EpochMetrics, LevelTally, Phase, Progress, QuietProgress, format_levels};
pub(crate) mod phases;
pub use phases::{CheckpointState, EpochPhase, PhaseHooks};
pub(crate) mod record;
pub use record::{load_record, record_bytes, with_stable_ids, write_atomic};
pub(crate) mod run;
pub use run::{MAX_NETWORK_PARAMS, RunDir, RunLock, skeleton};
pub(crate) mod step;
pub use step::{DistillStep, JointStep, StepStats, level_gradients, train_step};
