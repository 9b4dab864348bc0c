//! The whole job behind `nestednet train` and the examples: load data, train, report.

use std::path::PathBuf;
use std::sync::Arc;

use nestednet_models::NestedClassifier;

use crate::{
    Backend, Progress, Report, Result, RunDir, TrainOutcome, TrainingConfig, build_report, level_outputs,
    train, train_learned_consensus,
};

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
        "training {} levels of {} ({}; {}) on {} ({} train / {} test images) with {}",
        job.config.model.num_levels(),
        job.config.model.name(),
        job.config.model.describe_levels(),
        job.config.method_name(),
        job.config.dataset,
        job.config.train_limit.map_or(train_set.len(), |n| n.min(train_set.len())),
        test_set.len(),
        job.backend
    ));
    let train_for_consensus = match job.config.train_limit {
        Some(n) => Arc::new(train_set.take(n)),
        None => train_set.clone(),
    };
    let outcome =
        train(&job.config, train_set, Some(test_set.clone()), &device, &job.run, job.resume, progress)?;
    let seconds: Vec<f64> =
        outcome.history.iter().filter(|m| m.phase == crate::Phase::Joint).map(|m| m.train_seconds).collect();
    let per_epoch = (!seconds.is_empty()).then(|| seconds.iter().sum::<f64>() / seconds.len() as f64);
    // NestedNet-L: a layer on all levels' outputs, trained after them on the training set.
    let consensus = if outcome.model.num_levels() > 1 {
        progress.message("training the learned consensus of the levels (NestedNet-L)...");
        let train_outputs = level_outputs(&outcome.model, train_for_consensus, 256, &device)?;
        let layer = train_learned_consensus(&train_outputs, 300, &device)?;
        job.run.save_consensus(&layer)?;
        Some(layer)
    } else {
        None
    };
    progress.message("measuring every level (accuracy, size, latency)...");
    let report = build_report(
        &outcome.model,
        crate::ReportContext {
            model: &job.config.model.name(),
            dataset: &job.config.dataset.to_string(),
            backend: job.backend.name(),
            method: &job.config.method_name(),
            train_seconds_per_epoch: per_epoch,
            labels: &job.config.level_labels(),
            hierarchy: job.config.hierarchy.as_ref(),
            consensus_layer: consensus.as_ref(),
        },
        test_set,
        &device,
    )?;
    report.write_to_run(&job.run)?;
    Ok((outcome, report))
}

/// Han et al.'s baseline, one network per ratio: for each density of the job's magnitude
/// masks, a single-level network is trained densely, pruned by magnitude and fine-tuned in its
/// own run folder `RUN/density-D/` (a normal run: `eval`, `export` and `inspect` work on it).
/// The networks' reports are then put side by side, one line per density, in `RUN/report.json`.
pub fn run_magnitude_jobs(job: &TrainJob, progress: &mut dyn Progress) -> Result<Report> {
    let Some(masking) = job.config.masking.clone().filter(|m| m.method == crate::MaskMethod::Magnitude)
    else {
        return Err(crate::TrainError::Invalid("run_magnitude_jobs needs magnitude masks".into()));
    };
    let nestednet_prune::MaskTargets::Densities(densities) = masking.targets.clone() else {
        return Err(crate::TrainError::Invalid("magnitude pruning is given by densities".into()));
    };
    job.config.validate()?;
    let mut combined: Option<Report> = None;
    for (index, &density) in densities.iter().enumerate() {
        let mut config = job.config.clone();
        let Some(model) = config.model.as_mnist_cnn_mut() else {
            return Err(crate::TrainError::Invalid("magnitude pruning needs masks: mnist-cnn only".into()));
        };
        model.levels = nestednet_schedule::LevelSpec::Ratios(vec![1.0]);
        config.level_loss_weights = None;
        config.masking = Some(crate::MaskingConfig {
            targets: nestednet_prune::MaskTargets::Densities(vec![density]),
            ..masking.clone()
        });
        let run = RunDir::new(job.run.path().join(format!("density-{density:.4}")));
        progress.message(&format!(
            "magnitude pruning baseline: network {} of {} (density {density:.4})",
            index + 1,
            densities.len()
        ));
        let sub = TrainJob { config, run, ..job.clone() };
        let (_, report) = run_job(&sub, progress)?;
        let mut line = report.levels[0].clone();
        line.level = index;
        match combined.as_mut() {
            Some(c) => c.levels.push(line),
            None => combined = Some(Report { levels: vec![line], ..report }),
        }
    }
    let mut combined = combined.ok_or_else(|| crate::TrainError::Invalid("no densities given".into()))?;
    combined.method = format!("magnitude (one network per ratio), {}", masking.targets);
    // Densities relative to the densest network of the comparison.
    let full = combined.levels.iter().map(|l| l.params).max().unwrap_or(1).max(1);
    for l in &mut combined.levels {
        l.density = l.params as f64 / full as f64;
    }
    std::fs::create_dir_all(job.run.path()).map_err(crate::TrainError::io(job.run.path()))?;
    combined.write_to_run(&job.run)?;
    Ok(combined)
}
