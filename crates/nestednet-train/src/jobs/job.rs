//! The whole job behind `nestednet train` and the examples: load data, train, report.

use nestednet_data::DataSource;
use nestednet_models::{NestedNetwork, NestedNetworkConfig};

use crate::error::{Result, TrainError};
use crate::jobs::backend::{Backend, DeviceList};
use crate::jobs::data::{SetOf, SourcedInput, SourcedSet};
use crate::serve::anytime::{level_outputs, takes_level_outputs, train_learned_consensus};
use crate::serve::report::{Report, ReportContext, build_report};
use crate::trainer::config::RunConfig;
use crate::trainer::data::{InputOf, LabelledSet};
use crate::trainer::fit::{Teacher, TrainData, TrainOutcome, train, train_on};
use crate::trainer::metrics::{Phase, Progress};
use crate::trainer::run::RunDir;

/// A complete training job, for any nested network `C` (a built-in family's configuration or
/// a user's own).
#[derive(Debug, Clone)]
pub struct TrainJob<C: NestedNetworkConfig> {
    /// What to train.
    pub config: RunConfig<C>,
    /// Where the data are (`None`: data given to [`run_job_with_data`] directly, recorded as
    /// the configuration's `data` says, if at all).
    pub data: Option<DataSource>,
    /// Where the run goes.
    pub run: RunDir,
    /// Backend to train and measure on.
    pub backend: Backend,
    /// Data-parallel training on these devices (the first, of `backend`, holds the network,
    /// evaluates and measures); `None` trains on `backend`'s device alone.
    pub devices: Option<DeviceList>,
    /// Continue the run in `run` instead of starting a new one.
    pub resume: bool,
    /// The external distillation teacher; `None`: the configuration's `teacher_run`, if any,
    /// loaded as a run of `C` (a teacher of another family must be given here).
    pub teacher: Option<Teacher<InputOf<C>>>,
}

impl<C: NestedNetworkConfig> TrainJob<C> {
    /// Training `config` on the data in `data` into `run` on `backend`'s device: a new run, no
    /// data parallelism, the teacher (if any) loaded as a run of `C`.
    pub fn new(config: RunConfig<C>, data: DataSource, run: RunDir, backend: Backend) -> Self {
        Self { config, data: Some(data), run, backend, devices: None, resume: false, teacher: None }
    }

    /// Training `config` on data given to [`run_job_with_data`] directly (no [`DataSource`]
    /// recorded unless the configuration has one), into `run` on `backend`'s device.
    pub fn on_given_data(config: RunConfig<C>, run: RunDir, backend: Backend) -> Self {
        Self { config, data: None, run, backend, devices: None, resume: false, teacher: None }
    }

    /// The same job, data-parallel on `devices` (`None`: one device).
    pub fn with_devices(mut self, devices: Option<DeviceList>) -> Self {
        self.devices = devices;
        self
    }

    /// The same job, continuing the run in its folder if `resume`.
    pub fn resuming(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The same job, distilled from `teacher`.
    pub fn with_teacher(mut self, teacher: Option<Teacher<InputOf<C>>>) -> Self {
        self.teacher = teacher;
        self
    }
}

/// What a job gives: the trained network and its history, and the report (`None` when the
/// run stopped early at `max_steps`).
#[derive(Debug)]
pub struct JobOutcome<M> {
    /// The training outcome.
    pub training: TrainOutcome<M>,
    /// The per-level report written to the run folder.
    pub report: Option<Report>,
}

/// Loads the data, trains every level jointly, then measures every level and writes
/// `report.json` and `accuracy_vs_macs.png` into the run folder.
pub fn run_job<C>(job: &TrainJob<C>, progress: &mut dyn Progress) -> Result<JobOutcome<C::Network>>
where
    C: NestedNetworkConfig,
    InputOf<C>: SourcedInput,
{
    let source = job.data.as_ref().ok_or_else(|| {
        TrainError::Invalid("the job names no data to load: give them to run_job_with_data".into())
    })?;
    let (train_set, test_set) = SetOf::<InputOf<C>>::load(source)?;
    run_job_with_data(job, train_set, test_set, progress)
}

/// [`run_job`] on data already loaded (from `job.data`, or any labelled data the network
/// takes).
pub fn run_job_with_data<C, S>(
    job: &TrainJob<C>,
    train_set: S,
    test_set: S,
    progress: &mut dyn Progress,
) -> Result<JobOutcome<C::Network>>
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = InputOf<C>>,
{
    let device = job.backend.device()?;
    // Everything that needs no data is checked before the data are touched.
    let network = job.config.validate(&device)?;
    progress.message(&job_line(job, &network, &train_set, &test_set));
    let training = &job.config.training;
    let train_for_consensus = match training.train_limit {
        Some(n) => train_set.take(n),
        None => train_set.clone(),
    };
    let mut data = TrainData::of(train_set, Some(test_set.clone()));
    data.teacher = job.teacher.clone();
    // The run folder records where its data came from, for `eval`, `export` and `select`.
    let config = job.config.clone().with_data(job.config.data.clone().or_else(|| job.data.clone()));
    let outcome = match &job.devices {
        Some(list) => {
            if list.main_backend() != job.backend {
                return Err(TrainError::Device(format!(
                    "the first of the devices ({list}) must be of the job's backend, {}",
                    job.backend
                )));
            }
            train_on(&config, data, &list.devices()?, &job.run, job.resume, progress)?
        }
        None => train(&config, data, &device, &job.run, job.resume, progress)?,
    };
    if outcome.stopped_early {
        return Ok(JobOutcome { training: outcome, report: None });
    }
    let report = report_job(job, &outcome, &train_for_consensus, &test_set, progress)?;
    Ok(JobOutcome { training: outcome, report: Some(report) })
}

/// What a job trains, for the user.
fn job_line<C, S>(job: &TrainJob<C>, network: &C::Network, train_set: &S, test_set: &S) -> String
where
    C: NestedNetworkConfig,
    S: LabelledSet,
{
    let training = &job.config.training;
    let names: Vec<String> = (0..network.num_levels()).map(|k| network.level_name(k)).collect();
    format!(
        "training {} levels of {} ({}; {}) on {} ({} train / {} test {}) with {}",
        names.len(),
        job.config.model.name(),
        names.join(","),
        training.method_name(),
        training.dataset,
        training.train_limit.map_or(train_set.len(), |n| n.min(train_set.len())),
        test_set.len(),
        test_set.sample_name(),
        job.devices.as_ref().map_or_else(|| job.backend.to_string(), |list| format!("devices {list}"))
    )
}

/// After training: the learned consensus (NestedNet-L, on the training set), then every
/// level measured on the test set; `report.json` and the plots written to the run folder.
fn report_job<C, S>(
    job: &TrainJob<C>,
    outcome: &TrainOutcome<C::Network>,
    train_set: &S,
    test_set: &S,
    progress: &mut dyn Progress,
) -> Result<Report>
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = InputOf<C>>,
{
    let device = job.backend.device()?;
    let training = &job.config.training;
    let seconds: Vec<f64> =
        outcome.history.iter().filter(|m| m.phase == Phase::Joint).map(|m| m.train_seconds).collect();
    let per_epoch = (!seconds.is_empty()).then(|| seconds.iter().sum::<f64>() / seconds.len() as f64);
    let model = &outcome.model;
    // The learned consensus is per sample: none for a language model's per-position outputs.
    let consensus = if model.num_levels() > 1 && takes_level_outputs(train_set) {
        progress.message("training the learned consensus of the levels (NestedNet-L)...");
        let train_outputs = level_outputs(model, train_set, 256, &device)?;
        let layer = train_learned_consensus(&train_outputs, 300, &device)?;
        job.run.save_consensus(&layer)?;
        Some(layer)
    } else {
        None
    };
    progress.message("measuring every level (accuracy, size, latency)...");
    let context = ReportContext {
        model: &job.config.model.name(),
        dataset: &training.dataset.to_string(),
        backend: job.backend.name(),
        method: &training.method_name(),
        train_seconds_per_epoch: per_epoch,
        labels: &training.level_labels(model.num_levels()),
        hierarchy: training.hierarchy.as_ref(),
        consensus_layer: consensus.as_ref(),
    };
    let report = build_report(model, &job.config.model, context, test_set, &device)?;
    report.write_to_run(&job.run)?;
    Ok(report)
}

/// Trains level `level` of `config`'s model as a network of its own
/// ([`NestedNetworkConfig::level_alone`]: the level's widths, depth and classes, one level)
/// with the same optimizer, schedule, epochs, batch size and seed, on the level's own labels
/// (its depth of the hierarchy, if any), without masks or distillation, into `run`; returns
/// its tally on `test` and training time. This is the baseline a nested level is measured
/// against.
pub fn train_level_alone<C, S>(
    config: &RunConfig<C>,
    level: usize,
    (train_set, test_set): (S, S),
    device: &burn::prelude::Device,
    run: &RunDir,
    progress: &mut dyn Progress,
) -> Result<LevelAlone>
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = InputOf<C>>,
{
    let alone = config.model.level_alone(level).ok_or_else(|| {
        TrainError::Invalid(format!("{} cannot make level {level} a network of its own", config.model.name()))
    })?;
    let (train_set, test_set) = match &config.training.hierarchy {
        Some(h) => {
            let depth = *h.level_depths.get(level).ok_or_else(|| {
                TrainError::Invalid(format!("the hierarchy gives no depth to level {level}"))
            })?;
            let (map, classes) = (&h.hierarchy.depths[depth].of_fine, h.hierarchy.num_classes(depth));
            (train_set.relabel(map, classes)?, test_set.relabel(map, classes)?)
        }
        None => (train_set, test_set),
    };
    let mut training = config.training.clone();
    training.masking = None;
    training.hierarchy = None;
    training.distillation = None;
    training.level_loss_weights = None;
    let alone = RunConfig::new(alone, training);
    let outcome = train(&alone, TrainData::of(train_set, None), device, run, false, progress)?;
    let tallies = crate::trainer::evaluate::evaluate(
        &outcome.model,
        &test_set,
        500,
        device,
        &crate::trainer::labels::LevelLabels::fine(1),
    )?;
    Ok(LevelAlone {
        tally: tallies.into_iter().next().expect("one level"),
        train_seconds: outcome.history.iter().map(|m| m.train_seconds).sum(),
    })
}

/// A level trained as a network of its own ([`train_level_alone`]).
#[derive(Debug, Clone)]
pub struct LevelAlone {
    /// Its test tally.
    pub tally: crate::trainer::metrics::LevelTally,
    /// Seconds of training.
    pub train_seconds: f64,
}

impl LevelAlone {
    /// Its test accuracy.
    pub fn accuracy(&self) -> f64 {
        self.tally.accuracy()
    }
}

/// Han et al.'s baseline, one network per ratio: for each density of the job's magnitude
/// masks, a single-level network of the full level's architecture
/// ([`NestedNetworkConfig::level_alone`]) is trained densely, pruned by magnitude and
/// fine-tuned in its own run folder `RUN/density-D/` (a normal run: `eval`, `export` and
/// `inspect` work on it). The networks' reports are then put side by side, one line per
/// density, in `RUN/report.json`.
pub fn run_magnitude_jobs<C, S>(
    job: &TrainJob<C>,
    train_set: S,
    test_set: S,
    progress: &mut dyn Progress,
) -> Result<Report>
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = InputOf<C>>,
{
    let training = &job.config.training;
    let Some(masking) =
        training.masking.clone().filter(|m| m.method == crate::trainer::masks::MaskMethod::Magnitude)
    else {
        return Err(TrainError::Invalid("run_magnitude_jobs needs magnitude masks".into()));
    };
    let nestednet_prune::MaskTargets::Densities(densities) = masking.targets.clone() else {
        return Err(TrainError::Invalid("magnitude pruning is given by densities".into()));
    };
    training.validate()?;
    let num_levels = densities.len();
    let single = job.config.model.level_alone(num_levels - 1).ok_or_else(|| {
        TrainError::Invalid(format!(
            "{} cannot be made a one-level network, which magnitude pruning trains per density",
            job.config.model.name()
        ))
    })?;
    let mut combined: Option<Report> = None;
    for (index, &density) in densities.iter().enumerate() {
        let mut config = RunConfig::new(single.clone(), training.clone())
            .with_family(job.config.family.clone())
            .with_settings(job.config.settings.clone());
        config.training.level_loss_weights = None;
        config.training.masking = Some(crate::trainer::masks::MaskingConfig {
            targets: nestednet_prune::MaskTargets::Densities(vec![density]),
            ..masking.clone()
        });
        let run = RunDir::new(job.run.path().join(format!("density-{density:.4}")));
        progress.message(&format!(
            "magnitude pruning baseline: network {} of {} (density {density:.4})",
            index + 1,
            densities.len()
        ));
        let sub = TrainJob { data: job.data.clone(), ..TrainJob::on_given_data(config, run, job.backend) }
            .with_devices(job.devices.clone())
            .resuming(job.resume);
        let Some(report) = run_job_with_data(&sub, train_set.clone(), test_set.clone(), progress)?.report
        else {
            return Err(TrainError::Invalid(
                "the magnitude baseline stopped before its report (max_steps)".into(),
            ));
        };
        let mut line = report.levels[0].clone();
        line.level = index;
        match combined.as_mut() {
            Some(c) => c.levels.push(line),
            None => combined = Some(Report { levels: vec![line], ..report }),
        }
    }
    let mut combined = combined.ok_or_else(|| TrainError::Invalid("no densities given".into()))?;
    combined.method = format!("magnitude (one network per ratio), {}", masking.targets);
    // Densities relative to the densest network of the comparison.
    let full = combined.levels.iter().map(|l| l.params).max().unwrap_or(1).max(1);
    for l in &mut combined.levels {
        l.density = l.params as f64 / full as f64;
    }
    std::fs::create_dir_all(job.run.path()).map_err(TrainError::io(job.run.path()))?;
    combined.write_to_run(&job.run)?;
    Ok(combined)
}
