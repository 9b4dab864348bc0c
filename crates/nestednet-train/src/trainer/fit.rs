//! The fit loop: every level trained jointly (paper, Eq. 5), epoch by epoch, on any labelled
//! data a network takes ([`LabelledSet`]), with a checkpoint after every epoch; and per-level
//! evaluation.
//!
//! The loop knows nothing of images, masks or models: a batch is the network's input and its
//! targets ([`crate::step`] computes the step), and what differs between the phases of a run
//! (mask stages, dense pre-training, joint training) is done by phase hooks
//! ([`PhaseHooks`]; weight masks are `crate::trainer::masks`'s).

use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use nestednet_heads::JointLoss;
use nestednet_models::{NestedNetwork, NestedNetworkConfig, NetworkInput, NetworkOutput};

use crate::error::{Result, TrainError};
use crate::trainer::config::RunConfig;
use crate::trainer::data::{BatchOrder, InputOf, LabelledSet, check_compatible};
use crate::trainer::devices::{ShardedStep, TrainDevices};
use crate::trainer::evaluate::evaluate;
use crate::trainer::init::seeded_model;
use crate::trainer::labels::LevelLabels;
use crate::trainer::masks::MaskStages;
use crate::trainer::metrics::Phase;
use crate::trainer::metrics::{EpochMetrics, LevelTally, Progress};
use crate::trainer::phases::{CheckpointState, EpochPhase, PhaseHooks};
use crate::trainer::record::load_record;
use crate::trainer::run::RunDir;
use crate::trainer::step::{DistillStep, JointStep, StepStats, train_step};

/// Training steps between two reads of the level statistics (see [`StepStats`]).
const READ_EVERY: usize = 16;

/// What a finished training run returns.
#[derive(Debug)]
pub struct TrainOutcome<M> {
    /// The trained network, in evaluation mode on the plain (non-autodiff) device.
    pub model: M,
    /// Metrics of every completed epoch, including epochs done before a resume.
    pub history: Vec<EpochMetrics>,
    /// The run stopped after `max_steps` steps, inside an epoch: nothing was checkpointed.
    pub stopped_early: bool,
}

/// An external distillation teacher: the logits `[rows, classes]` of a trained network's full
/// level for a batch of inputs, on the plain (non-autodiff) device.
#[derive(Clone)]
pub struct Teacher<I> {
    name: String,
    forward: Arc<dyn Fn(I) -> Tensor<2>>,
}

impl<I> core::fmt::Debug for Teacher<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Teacher").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<I: NetworkInput> Teacher<I> {
    /// A teacher computing `forward` (named `name` in messages).
    pub fn new(name: impl Into<String>, forward: impl Fn(I) -> Tensor<2> + 'static) -> Self {
        Self { name: name.into(), forward: Arc::new(forward) }
    }

    /// The full level of the trained run in `folder`, a run of model configuration `C`, in
    /// evaluation mode on `device`, checked to take samples of `shape` and to predict `classes`
    /// classes.
    pub fn from_run<C>(
        folder: &std::path::Path,
        shape: &I::Shape,
        classes: usize,
        device: &Device,
    ) -> Result<Self>
    where
        C: NestedNetworkConfig,
        C::Network: NestedNetwork<Input = I> + 'static,
    {
        let cannot = |e: TrainError| {
            TrainError::Invalid(format!(
                "the distillation teacher {} could not be loaded: {e}",
                folder.display()
            ))
        };
        let (_, teacher) = RunDir::new(folder).load_model::<C>(device).map_err(cannot)?;
        let full = teacher.num_levels() - 1;
        if &teacher.input_shape() != shape || teacher.level_classes(full) != classes {
            return Err(TrainError::Invalid(format!(
                "the distillation teacher {} takes {} and predicts {} classes, but the data have {} and {classes} classes",
                folder.display(),
                I::describe(&teacher.input_shape()),
                teacher.level_classes(full),
                I::describe(shape),
            )));
        }
        let teacher = teacher.valid();
        Ok(Self::new(folder.display().to_string(), move |input| {
            teacher.forward_level(input, full).into_logits()
        }))
    }

    /// The teacher's logits for `input`.
    pub fn logits(&self, input: I) -> Tensor<2> {
        (self.forward)(input)
    }
}

/// The data of a training run: a training set, an optional test set evaluated after every
/// epoch, and an optional external distillation teacher.
#[derive(Debug, Clone)]
pub struct TrainData<S: LabelledSet = crate::trainer::data::ImageData> {
    /// The training set.
    pub train: S,
    /// The test set, evaluated after every epoch when given.
    pub test: Option<S>,
    /// The teacher of external distillation; `None`: the configuration's `teacher_run`, loaded
    /// as a run of the student's own model configuration.
    pub teacher: Option<Teacher<S::Input>>,
}

impl TrainData<crate::trainer::data::ImageData> {
    /// Image training data, with a test set.
    pub fn new(train: Arc<nestednet_data::ImageSet>, test: Option<Arc<nestednet_data::ImageSet>>) -> Self {
        Self::of(train.into(), test.map(Into::into))
    }
}

impl<S: LabelledSet> TrainData<S> {
    /// Training data of any kind, with a test set.
    pub fn of(train: S, test: Option<S>) -> Self {
        Self { train, test, teacher: None }
    }

    /// The same data with an external distillation teacher.
    pub fn with_teacher(mut self, teacher: Teacher<S::Input>) -> Self {
        self.teacher = Some(teacher);
        self
    }
}

/// Trains the run `config` on `data` (evaluating on the test set after each epoch when
/// given) into the run folder `run`.
///
/// Everything that can be checked is checked before the folder is written: the settings, the
/// network they build, the masked layers, that the data fit the network. A folder that holds
/// no completed epoch is not a run yet and is reused; one with a completed epoch needs
/// `resume`, which continues after the last completed epoch (the configuration must be the
/// stored one, except the number of epochs). Every epoch ends with an atomic checkpoint, so
/// a killed run loses at most the epoch in progress.
pub fn train<C, S>(
    config: &RunConfig<C>,
    data: TrainData<S>,
    device: &Device,
    run: &RunDir,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome<C::Network>>
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = InputOf<C>>,
{
    train_on(config, data, &TrainDevices::single(device.clone()), run, resume, progress)
}

/// [`train`] on several devices: data-parallel, each batch cut into one shard per device (see
/// [`TrainDevices`]), the gradients gathered and summed on the main (first) device, one
/// optimizer step. Checkpoints, resume, reports, masks, heads and distillation are those of
/// one device; the network, the data and the evaluation live on the main device. With one
/// device this is [`train`].
pub fn train_on<C, S>(
    config: &RunConfig<C>,
    data: TrainData<S>,
    devices: &TrainDevices,
    run: &RunDir,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome<C::Network>>
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = InputOf<C>>,
{
    config.training.validate()?;
    crate::trainer::devices::join_cpu_thread_pool_from_main();
    let data = prepared(data, config)?;
    let (mut fit, mut model) = Fit::open(config, &data, devices, run, resume, progress)?;
    for epoch in fit.state.epochs_completed..fit.plan.len() {
        let (trained, stopped) = fit.epoch(model, EpochPhase::of(&fit.plan, epoch), &data, progress)?;
        model = trained;
        if stopped {
            return Ok(fit.outcome(model, true));
        }
    }
    Ok(fit.outcome(model, false))
}

/// The data as this run reads them: the training set limited to `train_limit` and read as the
/// configuration says ([`LabelledSet::for_training`]).
fn prepared<C: NestedNetworkConfig, S: LabelledSet>(
    data: TrainData<S>,
    config: &RunConfig<C>,
) -> Result<TrainData<S>> {
    let training = &config.training;
    let train = match training.train_limit {
        Some(n) => data.train.take(n),
        None => data.train,
    };
    if train.is_empty() {
        return Err(TrainError::Invalid("the training set is empty".into()));
    }
    Ok(TrainData { train: train.for_training(training), ..data })
}

/// A training run in progress: its optimizer and checkpoint state, and what every step needs.
/// The network is passed through by value, so that each optimizer step holds its only handle
/// (Burn then updates the parameters in place).
struct Fit<'a, C: NestedNetworkConfig> {
    config: &'a RunConfig<C>,
    run: &'a RunDir,
    optim: ModuleOptimizer,
    state: CheckpointState,
    plan: Vec<Phase>,
    joint: JointLoss,
    level_labels: LevelLabels,
    teacher: Option<Teacher<InputOf<C>>>,
    sharded: Option<ShardedStep>,
    masks: MaskStages<'a>,
    mix_widths: Vec<usize>,
    train_device: Device,
    plain: Device,
    /// Held until training ends: one process per run folder.
    _lock: crate::trainer::run::RunLock,
}

impl<'a, C: NestedNetworkConfig> Fit<'a, C> {
    /// Checks everything, then takes the run folder: a fresh network or the checkpoint to
    /// resume from, the folder's configuration written.
    fn open<S: LabelledSet<Input = InputOf<C>>>(
        config: &'a RunConfig<C>,
        data: &TrainData<S>,
        devices: &TrainDevices,
        run: &'a RunDir,
        resume: bool,
        progress: &mut dyn Progress,
    ) -> Result<(Self, C::Network)> {
        let training = &config.training;
        let device = devices.main();
        let train_device = device.clone().autodiff();
        // One process per folder. A folder that does not exist yet is only created (and taken)
        // once everything is checked, below.
        let early_lock = if run.path().is_dir() { Some(run.lock()?) } else { None };
        let (model, optim, state) = start_or_resume(config, run, resume, &train_device, progress)?;
        training.validate_for(&model)?;
        let num_levels = model.num_levels();
        let level_labels = training.level_labels(num_levels);
        check_compatible(&model, &data.train, &level_labels, "training")?;
        if let Some(test) = &data.test {
            check_compatible(&model, test, &level_labels, "test")?;
        }
        let masks = MaskStages::new(training.masking.as_ref());
        masks.check(&model)?;
        let plain = device.clone().inner();
        let teacher =
            match (&data.teacher, training.distillation.as_ref().and_then(|d| d.teacher_run.as_ref())) {
                (Some(teacher), _) => Some(teacher.clone()),
                (None, Some(folder)) => Some(Teacher::from_run::<C>(
                    std::path::Path::new(folder),
                    &data.train.input_shape(),
                    data.train.num_classes(),
                    &plain,
                )?),
                (None, None) => None,
            };
        // Everything checked: only now does the folder get its configuration.
        let lock = take_folder(run, early_lock)?;
        run.create(config)?;
        let sharded = match devices.len() {
            1 => None,
            n => {
                progress.message(&format!("data-parallel on {n} devices: {}", devices.names().join(", ")));
                Some(ShardedStep::new(devices)?)
            }
        };
        let fit = Self {
            config,
            run,
            mix_widths: model.mixable_layers().iter().map(|l| l.widths.len()).collect(),
            plan: training.epoch_plan(num_levels),
            joint: JointLoss::new(num_levels, training.level_loss_weights.as_deref())?,
            optim,
            state,
            level_labels,
            teacher,
            sharded,
            masks,
            train_device,
            plain,
            _lock: lock,
        };
        Ok((fit, model))
    }

    /// Trains one epoch of `model`, evaluates it and checkpoints it; `true` if the run stopped
    /// inside it (`max_steps`).
    fn epoch<S: LabelledSet<Input = InputOf<C>>>(
        &mut self,
        mut model: C::Network,
        at: EpochPhase,
        data: &TrainData<S>,
        progress: &mut dyn Progress,
    ) -> Result<(C::Network, bool)> {
        let training = &self.config.training;
        if at.starts_phase {
            progress.message(&format!("epoch {}: {}", at.epoch + 1, at.phase));
            if at.epoch > 0 {
                // Each phase optimises a different objective: its own optimizer state.
                self.optim = training.optimizer.init();
            }
        }
        self.masks.epoch_start(&mut model, at, progress)?;
        let levels = at.phase.levels(model.num_levels());
        let batches_per_epoch = data.train.len().div_ceil(training.batch_size);
        progress.epoch_start(at.epoch, self.plan.len(), batches_per_epoch);
        let start = Instant::now();
        let (mut model, epoch) = self.steps(model, at, &levels, &data.train, batches_per_epoch, progress)?;
        let Some((tallies, lr)) = epoch else {
            return Ok((model, true));
        };
        self.masks.epoch_end(&mut model, at, &mut self.state, progress)?;
        let train_seconds = start.elapsed().as_secs_f64();
        let test_accuracy = match &data.test {
            Some(test) => {
                let accs = evaluate(&model.valid(), test, 256, &self.plain, &self.level_labels)?;
                Some(accs.iter().map(LevelTally::accuracy).collect())
            }
            None => None,
        };
        let metrics = EpochMetrics {
            epoch: at.epoch,
            train_loss: tallies.iter().map(LevelTally::loss).collect(),
            train_accuracy: tallies.iter().map(LevelTally::accuracy).collect(),
            test_accuracy,
            train_seconds,
            learning_rate: lr,
            phase: at.phase,
            trained_levels: levels,
        };
        self.checkpoint(&model, at.epoch, metrics.clone())?;
        progress.epoch_end(&metrics);
        Ok((model, false))
    }

    /// Every optimizer step of one epoch of `model`: the trained network, the levels' running
    /// tallies and the last learning rate (`None` if the run stopped at `max_steps`).
    #[allow(clippy::type_complexity)]
    fn steps<S: LabelledSet<Input = InputOf<C>>>(
        &mut self,
        mut model: C::Network,
        at: EpochPhase,
        levels: &[usize],
        train: &S,
        batches_per_epoch: usize,
        progress: &mut dyn Progress,
    ) -> Result<(C::Network, Option<(Vec<LevelTally>, f64)>)> {
        let training = &self.config.training;
        let order = BatchOrder::training(training.batch_size, training.seed, at.epoch as u64);
        let mut tallies = vec![LevelTally::default(); model.num_levels()];
        let mut lr = training.learning_rate;
        let total_steps = batches_per_epoch * self.plan.len();
        // Level statistics stay on the device and are read every `READ_EVERY` steps, so the
        // host never waits for the device after a single batch; batches are prefetched.
        let mut pending: Option<StepStats> = None;
        let mut steps = 0usize;
        let mut batches = train.batches(order, &self.train_device)?.peekable();
        while let Some(batch) = batches.next() {
            let batch = batch?;
            lr = training.lr_schedule.learning_rate(
                training.learning_rate,
                at.epoch,
                self.state.global_step,
                total_steps,
            );
            let (next, stats) = self.step(model, at.phase, levels, batch, lr)?;
            model = next;
            pending = Some(match pending.take() {
                Some(p) => p.merge(stats),
                None => stats,
            });
            self.state.global_step += 1;
            steps += 1;
            let stop = training.max_steps.is_some_and(|max| self.state.global_step >= max);
            if steps.is_multiple_of(READ_EVERY) || batches.peek().is_none() || stop {
                let p = pending.take().expect("statistics of this step");
                tally(&mut tallies, levels, p, at.epoch, self.state.global_step)?;
            }
            if stop {
                progress.batch_done(&tallies);
                progress.message(&format!(
                    "stopped after {} step(s), as asked (max_steps): no checkpoint, no report",
                    self.state.global_step
                ));
                return Ok((model, None));
            }
            self.masks.after_step(&mut model, self.state.global_step)?;
            progress.batch_done(&tallies);
        }
        Ok((model, Some((tallies, lr))))
    }

    /// One optimizer step of `model` on `batch`, on one device or data-parallel.
    fn step(
        &mut self,
        model: C::Network,
        phase: Phase,
        levels: &[usize],
        batch: crate::trainer::data::Batch<InputOf<C>>,
        lr: f64,
    ) -> Result<(C::Network, StepStats)> {
        let training = &self.config.training;
        let targets = levels.iter().map(|&k| self.level_labels.labels(&batch.targets, k)).collect();
        // Distillation belongs to joint training; a stage that trains one level alone (mask
        // learning, dense pre-training) learns from the labels only.
        let distill = training.distillation.as_ref().filter(|_| phase == Phase::Joint).map(|d| DistillStep {
            temperature: d.temperature,
            alpha: d.alpha,
            teacher_logits: self
                .teacher
                .as_ref()
                .map(|t| Tensor::from_inner(t.logits(batch.input.clone().without_autodiff()))),
            labels: &self.level_labels,
        });
        let mixes = match phase {
            Phase::Joint => training.sample_mixes(&self.mix_widths, self.state.global_step),
            _ => Vec::new(),
        };
        let joint = match phase {
            Phase::Mask(_) => JointLoss::new(1, None)?,
            _ => self.joint.clone(),
        };
        let step = JointStep::new(batch.input, batch.targets, levels, &joint)
            .with_targets(targets)
            .with_distill(distill.as_ref())
            .with_mixes(&mixes);
        Ok(match &self.sharded {
            None => train_step(model, &mut self.optim, step, lr),
            Some(sharded) => {
                let (grads, stats) = sharded.gradients(&model, step)?;
                (self.optim.step(lr, model, grads), stats)
            }
        })
    }

    /// Records epoch `epoch`'s metrics and writes its checkpoint of `model`.
    fn checkpoint(&mut self, model: &C::Network, epoch: usize, metrics: EpochMetrics) -> Result<()> {
        self.state.epochs_completed = epoch + 1;
        self.state.dir = format!("checkpoints/epoch-{:04}", epoch + 1);
        self.state.history.push(metrics);
        // `valid()` first folds the batch norms' pending running-statistics updates into their
        // values (a record of the training model would miss the last batch's update).
        self.run.save_checkpoint(&model.valid(), &self.optim, &self.state).map_err(|e| TrainError::Run {
            path: self.run.path().to_path_buf(),
            reason: format!(
                "could not write the checkpoint of epoch {} ({e}); {}: free space or fix the folder's permissions, then resume with --resume",
                epoch + 1,
                match epoch {
                    0 => "no earlier checkpoint exists, nothing was lost but this epoch".to_string(),
                    done => format!("the checkpoint of epoch {done} is intact"),
                }
            ),
        })
    }

    fn outcome(self, model: C::Network, stopped_early: bool) -> TrainOutcome<C::Network> {
        TrainOutcome { model: model.valid(), history: self.state.history, stopped_early }
    }
}

/// Adds one read of the level statistics to the epoch's tallies; a loss that is not finite is
/// an error.
fn tally(
    tallies: &mut [LevelTally],
    levels: &[usize],
    stats: StepStats,
    epoch: usize,
    step: usize,
) -> Result<()> {
    let samples = stats.samples;
    for (&level, (loss_sum, correct)) in levels.iter().zip(stats.read()) {
        if !loss_sum.is_finite() {
            return Err(TrainError::Invalid(format!(
                "the training loss diverged (not finite) at epoch {}, by step {step}; lower the learning rate",
                epoch + 1
            )));
        }
        let tally = &mut tallies[level];
        tally.loss_sum += loss_sum;
        tally.correct += correct;
        tally.total += samples;
    }
    Ok(())
}

/// The network, optimizer and state a run starts from: the folder's checkpoint when resuming
/// (its configuration must be `config`, but for the epochs), else fresh.
fn start_or_resume<C: NestedNetworkConfig>(
    config: &RunConfig<C>,
    run: &RunDir,
    resume: bool,
    train_device: &Device,
    progress: &mut dyn Progress,
) -> Result<(C::Network, ModuleOptimizer, CheckpointState)> {
    if !run.has_checkpoint() {
        return fresh(config, train_device);
    }
    if !resume {
        return Err(TrainError::Run {
            path: run.path().to_path_buf(),
            reason:
                "already holds a training run; pass --resume to continue it, or choose another output folder"
                    .into(),
        });
    }
    let stored: RunConfig<C> = run.load_config()?;
    let differing = differing_settings(&stored, config);
    if !differing.is_empty() {
        return Err(TrainError::Run {
            path: run.path().to_path_buf(),
            reason: format!(
                "holds a run with another {}; resume it with its own configuration (only the epochs may grow)",
                differing.join(", ")
            ),
        });
    }
    match run.load_checkpoint(config, train_device)? {
        Some((state, model, optim)) => {
            progress.message(&format!(
                "resuming after epoch {} of {}",
                state.epochs_completed,
                config.training.epoch_plan(model.num_levels()).len()
            ));
            Ok((model, optim, state))
        }
        None => fresh(config, train_device),
    }
}

/// The run folder's lock: the one taken early, or a new one for a folder made now (checked not
/// to have become a run meanwhile).
fn take_folder(
    run: &RunDir,
    early_lock: Option<crate::trainer::run::RunLock>,
) -> Result<crate::trainer::run::RunLock> {
    if let Some(lock) = early_lock {
        return Ok(lock);
    }
    let lock = run.lock()?;
    // Another process may have made a run here while this one was checking.
    if run.has_checkpoint() {
        return Err(TrainError::Run {
            path: run.path().to_path_buf(),
            reason: "was made into a training run by another process meanwhile; choose another output folder"
                .into(),
        });
    }
    Ok(lock)
}

/// What differs between a stored run and the configuration asked to resume it: `model`, or the
/// names of the training settings, except `epochs` (a resumed run may train longer).
fn differing_settings<C: NestedNetworkConfig>(stored: &RunConfig<C>, asked: &RunConfig<C>) -> Vec<String> {
    fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).expect("configurations serialize")
    }
    let mut out = Vec::new();
    if json(&stored.model) != json(&asked.model) {
        out.push("model".to_string());
    }
    if let (serde_json::Value::Object(old), serde_json::Value::Object(new)) =
        (json(&stored.training), json(&asked.training))
    {
        out.extend(
            old.iter().filter(|(k, v)| *k != "epochs" && new.get(*k) != Some(v)).map(|(k, _)| k.clone()),
        );
    }
    out
}

fn fresh<C: NestedNetworkConfig>(
    config: &RunConfig<C>,
    train_device: &Device,
) -> Result<(C::Network, ModuleOptimizer, CheckpointState)> {
    let training = &config.training;
    let mut model = seeded_model(&config.model, training.masking.as_ref(), training.seed, train_device)?;
    if let Some(path) = &training.initial_weights {
        model = load_record(model, std::path::Path::new(path))?;
    }
    MaskStages::new(training.masking.as_ref()).on_fresh(&mut model, training.seed)?;
    let state = CheckpointState {
        epochs_completed: 0,
        global_step: 0,
        dir: String::new(),
        history: Vec::new(),
        thresholds: Vec::new(),
    };
    Ok((model, training.optimizer.init(), state))
}
