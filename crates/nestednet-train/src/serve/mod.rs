//! Serving levels: what they give together (consensus, early exit), reports and plots,
//! latency, budgets, `select` and Mix'n'Match `search`. Built on [`crate::trainer`] and
//! [`crate::export`].

pub(crate) mod anytime;
pub use anytime::{EarlyExit, LevelOutputs, level_outputs, takes_level_outputs, train_learned_consensus};
pub(crate) mod budget;
pub use budget::{Budget, BudgetKind};
pub(crate) mod consensus;
pub use consensus::{
    ConsensusManifest, ConsensusMethod, ConsensusModel, export_consensus, load_consensus_export,
};
pub(crate) mod latency;
pub use latency::{latency_samples_ms, measure_latency, median_latency_ms};
pub(crate) mod plot;
pub use plot::{plot_accuracy_vs_macs, plot_early_exit};
pub(crate) mod report;
pub use report::{
    EARLY_EXIT_SWEEP, LevelReport, LevelsTogether, Report, ReportContext, anytime_figures, build_report,
};
pub(crate) mod search;
pub use search::{
    MixPoint, SearchResults, SearchSettings, calibrated_mix, calibration_batches, export_front, mix_name,
    pareto_front, parse_mix, search_mixes,
};
pub(crate) mod select;
pub use select::{
    Candidate, MeasuredCandidate, Measurement, MeasurementCache, Selection, candidates_table,
    device_description, measure_candidates, measure_network, run_candidates, select_in_run, select_within,
};
