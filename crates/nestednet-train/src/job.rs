//! The whole job behind `nestednet train` and the examples: load data, train, report.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{Backend, Progress, Report, Result, RunDir, TrainOutcome, TrainingConfig, build_report, train};

/// A complete training job.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// What to train.
    pub config: TrainingConfig,
    /// Folder holding the data set's files.
    pub data_dir: PathBuf,
    /// Where the run goes.
    pub run: RunDir,
    /// Backend to train and measure on.
    pub backend: Backend,
    /// Continue the run in `run` instead of starting a new one.
    pub resume: bool,
}

/// Loads the data, trains every level jointly, then measures every level and writes
/// `report.json` and `accuracy_vs_macs.png` into the run folder.
pub fn run_job(job: &TrainJob, progress: &mut dyn Progress) -> Result<(TrainOutcome, Report)> {
    job.config.validate()?;
    let device = job.backend.device()?;
    let (train_set, test_set) = job.config.dataset.load(&job.data_dir)?;
    let (train_set, test_set) = (Arc::new(train_set), Arc::new(test_set));
    progress.message(&format!(
        "training {} levels of mnist-cnn ({}) on {} ({} train / {} test images) with {}",
        job.config.model.levels.num_levels(),
        job.config.model.levels,
        job.config.dataset,
        job.config.train_limit.map_or(train_set.len(), |n| n.min(train_set.len())),
        test_set.len(),
        job.backend
    ));
    let outcome =
        train(&job.config, train_set, Some(test_set.clone()), &device, &job.run, job.resume, progress)?;
    let seconds: Vec<f64> = outcome.history.iter().map(|m| m.train_seconds).collect();
    let per_epoch = (!seconds.is_empty()).then(|| seconds.iter().sum::<f64>() / seconds.len() as f64);
    progress.message("measuring every level (accuracy, size, latency)...");
    let report = build_report(
        &outcome.model,
        "mnist-cnn",
        &job.config.dataset.to_string(),
        job.backend.name(),
        test_set,
        &device,
        per_epoch,
    )?;
    report.write_to_run(&job.run)?;
    Ok((outcome, report))
}
