//! Training, evaluation, checkpoints, per-level reports and export for nestednet.
//!
//! - [`train`] trains every level jointly (paper, Eq. 5): each batch runs every level, the
//!   loss is the weighted mean of the level losses, and one `backward()` updates the shared
//!   weights. Adam or SGD with momentum and weight decay, constant, step or cosine learning
//!   rate, everything seeded.
//! - [`RunDir`] is the run folder: one atomic checkpoint for all levels per epoch, resumable.
//! - [`build_report`] measures every level: accuracy, parameters, MACs, exported bytes and
//!   latency at batch 1 and 256; [`Report`] writes `report.json`, a table and a plot.
//! - [`export_level`] writes one level as a compact standalone model (burnpack or safetensors).
//! - [`Backend`] picks a compiled-in backend at run time.
#![warn(missing_docs)]

mod anytime;
mod compression;
mod config;
mod device;
mod error;
mod export;
mod job;
mod labels;
mod metrics;
mod plot;
mod report;
mod run;
mod trainer;

pub use anytime::{EarlyExit, LevelOutputs, level_outputs, train_learned_consensus};
pub use compression::{
    LayerDensity, MaskMethod, MaskingConfig, Phase, binarise_level, check_reachable, epoch_plan,
    layer_densities, level_threshold, prune_by_magnitude, randomize_masks, set_soft_threshold,
};
pub use config::{DistillationConfig, FORMAT_VERSION, LrSchedule, OptimizerConfig, TrainingConfig};
pub use device::Backend;
pub use error::{Result, TrainError};
pub use export::{
    ConsensusManifest, ConsensusMethod, ConsensusModel, ExportFormat, ExportInfo, ResNetExportInfo,
    burnpack_config_path, export_consensus, export_level, export_resnet_level, export_sizes,
    load_burnpack_level, load_consensus_export, load_resnet_level, load_safetensors_level,
};
pub use job::{TrainJob, run_job, run_magnitude_jobs};
pub use labels::{HierarchyConfig, LevelLabels};
pub use metrics::{BarProgress, EpochMetrics, LevelTally, Progress, QuietProgress, format_levels};
pub use plot::{plot_accuracy_vs_macs, plot_early_exit};
pub use report::{
    EARLY_EXIT_SWEEP, LevelReport, LevelsTogether, Report, ReportContext, anytime_figures, build_report,
    measure_latency, median_latency_ms,
};
pub use run::{CheckpointState, RunDir, load_record, record_bytes, write_atomic};
pub use trainer::{
    DistillStep, StepStats, TrainOutcome, check_compatible, evaluate, seeded_model, train, train_step,
    train_step_levels, train_step_levels_deferred,
};
