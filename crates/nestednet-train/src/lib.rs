//! Training, evaluation, checkpoints, per-level reports and export for nestednet, for any
//! nested network (a built-in model or a user's own, through
//! [`NestedNetwork`](nestednet_models::NestedNetwork)).
//!
//! - [`train`] trains every level jointly (paper, Eq. 5): each batch runs every level, the
//!   loss is the weighted mean of the level losses, and one `backward()` updates the shared
//!   weights. Adam or SGD with momentum and weight decay, constant, step or cosine learning
//!   rate, weight masks (learned, random, magnitude), coarse-to-fine labels, distillation,
//!   everything seeded.
//! - [`RunDir`] is the run folder: one atomic checkpoint for all levels per epoch, resumable;
//!   [`RunConfig`] its `config.json`.
//! - [`build_report`] measures every level: accuracy, parameters, MACs, exported bytes and
//!   latency at batch 1 and 256; [`Report`] writes `report.json`, a table and a plot.
//! - [`export_level`] writes one level as a compact standalone model (burnpack or safetensors
//!   with PyTorch names, dense or sparse) and checks the file against the nested level.
//! - [`TrainSettings`] are the settings as flags, config files and recorded runs know them;
//!   [`TrainSettings::resolve`] makes them a [`TrainJob`] of a built-in model.
//! - [`Backend`] picks a compiled-in backend at run time.
#![warn(missing_docs)]

mod anytime;
mod compression;
mod config;
mod data;
mod device;
mod error;
mod export;
mod job;
mod labels;
mod metrics;
mod nestify;
mod parallel;
mod plot;
mod report;
mod run;
mod search;
mod select;
mod settings;
mod step;
mod trainer;

pub use anytime::{EarlyExit, LevelOutputs, level_outputs, train_learned_consensus};
pub use compression::{
    LayerDensity, MaskMethod, MaskingConfig, Phase, binarise_level, check_reachable, enable_masks,
    epoch_plan, layer_densities, level_threshold, prune_by_magnitude, randomize_masks, set_soft_threshold,
};
pub use config::{
    DistillationConfig, FORMAT_VERSION, LrSchedule, OptimizerConfig, RunConfig, TrainingConfig,
};
pub use data::{Batch, BatchOrder, Batches, ImageData, InputOf, LabelledSet, check_compatible};
pub use device::{Backend, cpu_pool_threads, join_cpu_thread_pool};
pub use error::{Result, TrainError};
pub use export::{
    ConsensusManifest, ConsensusMethod, ConsensusModel, EXPORT_TOLERANCE, ExportFormat, ExportInfo,
    LevelExport, LevelNetwork, burnpack_config_path, export_consensus, export_level, export_mix,
    export_sizes, load_consensus_export, load_dense_weights, load_level, load_level_as,
};
pub use job::{
    JobOutcome, LevelAlone, TrainJob, run_job, run_job_with_data, run_magnitude_jobs, train_level_alone,
};
pub use labels::{HierarchyConfig, LevelLabels};
pub use metrics::{BarProgress, EpochMetrics, LevelTally, Progress, QuietProgress, format_levels};
pub use nestednet_alloc::{PeakAllocator, peak_bytes_during, peak_memory_measured};
pub use nestify::{Nestified, NestifyRecord, nestify};
pub use parallel::{DeviceList, DeviceSpec, TrainDevices};
pub use plot::{plot_accuracy_vs_macs, plot_early_exit};
pub use report::{
    EARLY_EXIT_SWEEP, LevelReport, LevelsTogether, Report, ReportContext, anytime_figures, build_report,
    latency_samples_ms, measure_latency, median_latency_ms, probe_input,
};
pub use run::{
    CheckpointState, MAX_NETWORK_PARAMS, RunDir, RunLock, load_record, record_bytes, skeleton,
    with_stable_ids, write_atomic,
};
pub use search::{
    MixPoint, SearchResults, SearchSettings, calibrated_mix, calibration_batches, export_front, mix_name,
    pareto_front, parse_mix, search_mixes,
};
pub use select::{
    Budget, BudgetKind, Candidate, MeasuredCandidate, Measurement, MeasurementCache, Selection,
    candidates_table, device_description, measure_candidates, measure_network, run_candidates, select_in_run,
    select_within,
};
pub use settings::{ImageSize, Method, OptimizerKind, ResolvedRun, Task, TrainSettings, UnnestedLayer};
pub use step::{DistillStep, JointStep, StepStats, level_gradients, train_step};
pub use trainer::{
    Teacher, TrainData, TrainOutcome, evaluate, seeded_model, train, train_on, with_init_lock,
};
