//! Joint training of all levels (paper, Eq. 5) and per-level evaluation.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use nestednet_data::{ImageSet, epoch_loader, prefetch};
use nestednet_heads::{JointLoss, correct_count, cross_entropy, distillation_loss, soft_targets};
use nestednet_models::{ModelConfig, NestedNetwork, NestedNetworkConfig};

use nestednet_prune::{MaskTargets, SoftThreshold};

use crate::parallel::{DeviceWorkers, MarkDistributed, TrainDevices, gather_and_sum};
use crate::{
    CheckpointState, EpochMetrics, LevelLabels, LevelTally, MaskMethod, MaskingConfig, Phase, Progress,
    Result, RunConfig, RunDir, TrainError, binarise_level, check_reachable, enable_masks, level_threshold,
    load_record, prune_by_magnitude, randomize_masks, set_soft_threshold,
};
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};

/// Checks that a data set fits a model: image shape, and that every level predicts as many
/// classes as its labels have (the data set's, or its depth's of the hierarchy).
pub fn check_compatible<M: NestedNetwork>(
    model: &M,
    set: &ImageSet,
    labels: &LevelLabels,
    what: &str,
) -> Result<()> {
    let input_shape = model.input_shape();
    let shape = [set.channels, set.height, set.width];
    if shape != input_shape {
        return Err(TrainError::Invalid(format!(
            "the {what} set has images of {}x{}x{} (channels x height x width) but the model expects {}x{}x{}",
            shape[0], shape[1], shape[2], input_shape[0], input_shape[1], input_shape[2]
        )));
    }
    if labels.num_levels() != model.num_levels() {
        return Err(TrainError::Invalid(format!(
            "labels are given for {} levels but the model has {}",
            labels.num_levels(),
            model.num_levels()
        )));
    }
    for level in 0..model.num_levels() {
        let classes = model.level_classes(level);
        match labels.classes(level) {
            None if classes != set.num_classes => {
                return Err(TrainError::Invalid(format!(
                    "level {level} predicts {classes} classes but the {what} set has {} (a split output layer needs per-level labels)",
                    set.num_classes
                )));
            }
            Some(expected) if expected != classes => {
                return Err(TrainError::Invalid(format!(
                    "level {level} predicts {classes} classes but its depth of the hierarchy has {expected}"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

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

/// The data of a training run.
#[derive(Debug, Clone)]
pub struct TrainData {
    /// The training set.
    pub train: Arc<ImageSet>,
    /// The test set, evaluated after every epoch when given.
    pub test: Option<Arc<ImageSet>>,
}

impl TrainData {
    /// Training data, with a test set.
    pub fn new(train: Arc<ImageSet>, test: Option<Arc<ImageSet>>) -> Self {
        Self { train, test }
    }
}

/// One optimizer step on a batch: the gradient of the joint loss (every level's forward and
/// backward pass, see [`level_gradients`]), then **one** optimizer step. Returns the model and
/// each level's (mean loss, correct).
pub fn train_step<M: NestedNetwork>(
    model: M,
    optim: &mut ModuleOptimizer,
    joint: &JointLoss,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    learning_rate: f64,
) -> (M, Vec<(f64, usize)>) {
    let levels: Vec<usize> = (0..model.num_levels()).collect();
    let labels = vec![labels; levels.len()];
    train_step_levels(model, optim, joint, images, labels, learning_rate, &levels, None)
}

/// What a training step distils from, besides the labels (see
/// [`DistillationConfig`](crate::DistillationConfig)).
#[derive(Clone)]
pub struct DistillStep<'a> {
    /// Temperature `T`.
    pub temperature: f64,
    /// Weight `α` of the distillation term.
    pub alpha: f64,
    /// An external teacher's logits on the batch, over the data set's classes; `None` for
    /// in-place distillation from the model's full level (when that level is trained).
    pub teacher_logits: Option<Tensor<2>>,
    /// Maps the teacher's probabilities to each level's classes.
    pub labels: &'a LevelLabels,
}

/// [`train_step`] on some of the levels only, each with its own labels (`labels[i]` for
/// `levels[i]`; `joint` weighs their losses in that order): a mask-learning stage trains one
/// level alone, and coarse-to-fine levels each have their own granularity. With `distill`,
/// each student level's loss becomes `(1 − α)·CE + α·T²·KL` against the teacher.
///
/// The returned losses are the levels' cross-entropies (comparable with and without
/// distillation).
#[allow(clippy::too_many_arguments)]
pub fn train_step_levels<M: NestedNetwork>(
    model: M,
    optim: &mut ModuleOptimizer,
    joint: &JointLoss,
    images: Tensor<4>,
    labels: Vec<Tensor<1, Int>>,
    learning_rate: f64,
    levels: &[usize],
    distill: Option<&DistillStep<'_>>,
) -> (M, Vec<(f64, usize)>) {
    let (model, stats) =
        train_step_levels_deferred(model, optim, joint, images, labels, learning_rate, levels, distill, &[]);
    let n = stats.samples as f64;
    (model, stats.read().into_iter().map(|(sum, correct)| (sum / n, correct)).collect())
}

/// Per-level statistics of training steps, still on the device: summing them there and reading
/// them once every few steps keeps the host from waiting on the device after every batch.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Each trained level's cross-entropy summed over the samples (each batch's mean loss
    /// times its size).
    pub loss_sums: Tensor<1>,
    /// Each trained level's correct predictions, summed.
    pub correct: Tensor<1, Int>,
    /// Samples added.
    pub samples: usize,
}

impl StepStats {
    /// Adds `other` (same levels) to these statistics, on the device.
    pub fn merge(self, other: StepStats) -> StepStats {
        StepStats {
            loss_sums: self.loss_sums + other.loss_sums,
            correct: self.correct + other.correct,
            samples: self.samples + other.samples,
        }
    }

    /// These statistics on `device`.
    pub fn to_device(self, device: &Device) -> StepStats {
        StepStats {
            loss_sums: self.loss_sums.to_device(device),
            correct: self.correct.to_device(device),
            samples: self.samples,
        }
    }

    /// Reads the statistics (one transfer each): per level, the summed loss and correct count.
    pub fn read(self) -> Vec<(f64, usize)> {
        let losses = self.loss_sums.into_data().convert::<f64>().try_to_vec::<f64>().expect("f64 losses");
        let correct = self.correct.into_data().convert::<i64>().try_to_vec::<i64>().expect("counts");
        losses.into_iter().zip(correct.into_iter().map(|c| c as usize)).collect()
    }
}

/// [`train_step_levels`] without reading anything back: the level statistics stay on the
/// device as a [`StepStats`] of one batch. The gradients are [`level_gradients`]'s, bit for
/// bit; on `flex`, for a network whose levels may train side by side
/// ([`NestedNetwork::levels_train_side_by_side`]), the levels after the first run side by side
/// on the CPU pool's threads. The batch norms' running statistics are up to date when it
/// returns, on every backend (Burn otherwise keeps the last update per thread until the next
/// one reads it).
#[allow(clippy::too_many_arguments)]
pub fn train_step_levels_deferred<M: NestedNetwork>(
    model: M,
    optim: &mut ModuleOptimizer,
    joint: &JointLoss,
    images: Tensor<4>,
    labels: Vec<Tensor<1, Int>>,
    learning_rate: f64,
    levels: &[usize],
    distill: Option<&DistillStep<'_>>,
    mixes: &[Vec<usize>],
) -> (M, StepStats) {
    let run = if side_by_side(&model, images.device()) { LevelRun::SideBySide } else { LevelRun::InTurn };
    let (grads, stats) = joint_gradients(&model, joint, images, labels, levels, distill, mixes, 1.0, run);
    (optim.step(learning_rate, model, grads), stats)
}

/// The gradients of [`train_step_levels_deferred`]'s joint loss on `images`, times
/// `loss_scale`, and the batch's level statistics; no optimizer step. Data-parallel training
/// calls it once per device on that device's shard of the batch, with the shard's part of the
/// batch as `loss_scale`, so that the summed gradients are the whole batch's.
///
/// The joint loss is a weighted sum of terms that share nothing but the parameters (each
/// level's forward pass, and each Mix'n'Match sub-network's, is a graph of its own), so its
/// gradient is the sum of the terms' gradients: each term runs forward and backward on its
/// own and its graph is freed before the next one starts. Peak memory is then one level's
/// activations, not every level's, and the step is faster (each level's activations are
/// still warm when its backward pass reads them; measured in the README's speed section).
/// The terms run in the order in which one backward pass of the summed loss would have
/// reached the parameters (the last term first: Mix'n'Match sub-networks from the last, then
/// the levels from the last), and their gradients are added in that order, so the levels'
/// sums are the single backward pass's, bit for bit (the trained weights are byte-identical
/// for channel levels, weight masks, residual lattices, distillation and coarse-to-fine
/// heads). With Mix'n'Match sub-networks the weights differ in the last bits (measured: the
/// single pass did not add their gradients in this order). The in-place distillation
/// teacher (the full level) runs first, since the other levels learn from its output.
#[allow(clippy::too_many_arguments)]
pub fn level_gradients<M: NestedNetwork>(
    model: &M,
    joint: &JointLoss,
    images: Tensor<4>,
    labels: Vec<Tensor<1, Int>>,
    levels: &[usize],
    distill: Option<&DistillStep<'_>>,
    mixes: &[Vec<usize>],
    loss_scale: f64,
) -> (GradientsParams, StepStats) {
    joint_gradients(model, joint, images, labels, levels, distill, mixes, loss_scale, LevelRun::Shard)
}

/// How [`joint_gradients`] runs the levels, and whether it owns the running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LevelRun {
    /// One device's shard of a data-parallel step ([`level_gradients`]): the levels in turn,
    /// and the batch norms' running statistics left as Burn keeps them, one pending update
    /// per thread, which the devices' forks share and Burn averages when they are read.
    Shard,
    /// A whole step on one device: the levels in turn, the running statistics gathered after.
    InTurn,
    /// A whole step on one device, the levels after the first side by side, one per thread of
    /// the CPU pool (the first one alone, since it may be the distillation teacher); the
    /// running statistics gathered after.
    SideBySide,
}

/// One term of the joint loss, run: its gradients (none for a level of weight 0), the level's
/// cross-entropy (detached) and correct predictions.
struct LevelTerm {
    grads: Option<GradientsParams>,
    cross_entropy: Tensor<1>,
    correct: Tensor<1, Int>,
    /// The level's logits, detached: kept only for the in-place distillation teacher.
    logits: Option<Tensor<2>>,
}

/// What the students of a distilled step learn from: the teacher's logits (detached) and its
/// soft targets over the data set's classes.
type SoftTeacher = (Tensor<2>, Tensor<2>);

/// Whether a step on `device` may run `model`'s levels side by side: the network says so
/// ([`NestedNetwork::levels_train_side_by_side`]), the device is the CPU backend whose kernels
/// are deterministic under it (`flex`; a GPU's queue is per thread), and the CPU pool has
/// two threads or more.
fn side_by_side<M: NestedNetwork>(model: &M, device: Device) -> bool {
    #[cfg(feature = "flex")]
    return model.levels_train_side_by_side()
        && device.inner() == Device::flex()
        && rayon::current_num_threads() > 1;
    #[cfg(not(feature = "flex"))]
    {
        let _ = (model, device);
        false
    }
}

/// [`level_gradients`], the levels run as `run` says. Side by side, their gradients are still
/// added in the same order, and the batch norms' running statistics are gathered after them:
/// Burn keeps a pending update per thread and a batch norm reads only its own thread's, so a
/// level that ran on the other thread in the last step would otherwise start from stale
/// statistics. The result is the sequential one bit for bit. Not for data-parallel workers:
/// their forks share those running statistics, and gathering them would mix the devices'
/// updates in an order that depends on timing.
#[allow(clippy::too_many_arguments)]
fn joint_gradients<M: NestedNetwork>(
    model: &M,
    joint: &JointLoss,
    images: Tensor<4>,
    labels: Vec<Tensor<1, Int>>,
    levels: &[usize],
    distill: Option<&DistillStep<'_>>,
    mixes: &[Vec<usize>],
    loss_scale: f64,
    run: LevelRun,
) -> (GradientsParams, StepStats) {
    assert_eq!(labels.len(), levels.len(), "one label tensor per trained level");
    let weights = joint.weights();
    assert_eq!(
        weights.len(),
        levels.len(),
        "JointLoss: {} weights for {} levels",
        weights.len(),
        levels.len()
    );
    let samples = images.dims()[0];
    let term_gradients = |model: &M, loss: Tensor<1>, weight: f64| {
        let mut loss = loss.mul_scalar(weight);
        if loss_scale != 1.0 {
            loss = loss.mul_scalar(loss_scale);
        }
        GradientsParams::from_grads(loss.backward(), model)
    };
    let mut summed = GradientsAccumulator::<M>::new();
    // Mix'n'Match sub-networks (the sandwich rule): each weighs what one level weighs in a mean,
    // against the labels of the last trained level (the data set's classes: mixes need them).
    if let Some(fine) = labels.last().filter(|_| !mixes.is_empty()) {
        let weight = 1.0 / model.num_levels() as f64;
        for choice in mixes.iter().rev() {
            let logits = model.forward_mix(images.clone(), choice).expect("mixable: checked before training");
            summed.accumulate(model, term_gradients(model, cross_entropy(logits, fine.clone()), weight));
        }
    }
    let full = model.num_levels() - 1;
    let in_place_teacher =
        distill.filter(|d| d.teacher_logits.is_none()).and_then(|_| levels.iter().position(|&k| k == full));
    let mut order: Vec<usize> = (0..levels.len()).rev().collect();
    if let Some(teacher) = in_place_teacher {
        order.retain(|&i| i != teacher);
        order.insert(0, teacher);
    }
    let run_level = |model: &M, i: usize, teacher: Option<&SoftTeacher>| {
        let k = levels[i];
        let logits = model.forward_level(images.clone(), k);
        let level_ce = cross_entropy(logits.clone(), labels[i].clone());
        let loss = match (distill, teacher) {
            (Some(d), Some((teacher, fine_target))) => {
                let target = if d.labels.is_lifted(k) {
                    soft_targets(d.labels.lift_logits(teacher.clone(), k), d.temperature)
                } else {
                    fine_target.clone()
                };
                let kd = distillation_loss(logits.clone(), target, d.temperature);
                level_ce.clone().mul_scalar(1.0 - d.alpha) + kd.mul_scalar(d.alpha)
            }
            _ => level_ce.clone(),
        };
        let logits = logits.detach();
        LevelTerm {
            correct: correct_count(logits.clone(), labels[i].clone()),
            // The statistics leave the graph before it is consumed.
            cross_entropy: level_ce.detach(),
            logits: (Some(i) == in_place_teacher).then_some(logits),
            grads: (weights[i] > 0.0).then(|| term_gradients(model, loss, weights[i])),
        }
    };
    let external: Option<SoftTeacher> = distill.and_then(|d| {
        d.teacher_logits.as_ref().map(|t| (t.clone().detach(), soft_targets(t.clone(), d.temperature)))
    });
    let first = run_level(model, order[0], external.as_ref());
    // The in-place teacher is the first level run: the others learn from its logits.
    let teacher = match (distill, &first.logits) {
        (Some(d), Some(logits)) => Some((logits.clone(), soft_targets(logits.clone(), d.temperature))),
        _ => external,
    };
    let rest: Vec<LevelTerm> = if run == LevelRun::SideBySide && order.len() > 2 {
        use rayon::prelude::*;
        // Each thread runs whole levels (one job per level) on its own handle of the model,
        // whose parameters must be drawn first: a lazy parameter cloned before its first use
        // would be drawn once per handle.
        model.visit(&mut Materialize);
        let runs: Vec<(M, usize)> = order[1..].iter().map(|&i| (model.clone(), i)).collect();
        runs.into_par_iter().with_max_len(1).map(|(m, i)| run_level(&m, i, teacher.as_ref())).collect()
    } else {
        order[1..].iter().map(|&i| run_level(model, i, teacher.as_ref())).collect()
    };
    let mut ce: Vec<Option<Tensor<1>>> = vec![None; levels.len()];
    let mut correct: Vec<Option<Tensor<1, Int>>> = vec![None; levels.len()];
    for (i, term) in order.into_iter().zip(std::iter::once(first).chain(rest)) {
        if let Some(grads) = term.grads {
            summed.accumulate(model, grads);
        }
        ce[i] = Some(term.cross_entropy);
        correct[i] = Some(term.correct);
    }
    let ce: Vec<Tensor<1>> = ce.into_iter().map(|l| l.expect("every level ran")).collect();
    let correct: Vec<Tensor<1, Int>> = correct.into_iter().map(|c| c.expect("every level ran")).collect();
    let loss_sums = Tensor::from_inner(Tensor::cat(ce, 0).inner()).mul_scalar(samples as f64);
    let correct = Tensor::from_inner(Tensor::cat(correct, 0).inner());
    if run != LevelRun::Shard {
        // `valid` gathers every running statistic's pending updates (one per thread that ran a
        // level) into its value; the copy it returns is not needed.
        let _ = model.valid();
    }
    (summed.grads(), StepStats { loss_sums, correct, samples })
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
pub fn train<C: NestedNetworkConfig>(
    config: &RunConfig<C>,
    data: TrainData,
    device: &Device,
    run: &RunDir,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome<C::Network>> {
    train_on(config, data, &TrainDevices::single(device.clone()), run, resume, progress)
}

/// [`train`] on several devices: data-parallel, each batch cut into one shard per device (see
/// [`TrainDevices`]), the gradients gathered and summed on the main (first) device, one
/// optimizer step. Checkpoints, resume, reports, masks, heads and distillation are those of
/// one device; the network, the data and the evaluation live on the main device. With one
/// device this is [`train`].
pub fn train_on<C: NestedNetworkConfig>(
    config: &RunConfig<C>,
    data: TrainData,
    devices: &TrainDevices,
    run: &RunDir,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<TrainOutcome<C::Network>> {
    let device = devices.main();
    let training = &config.training;
    training.validate()?;
    let train = match training.train_limit {
        Some(n) => Arc::new(data.train.take(n)),
        None => data.train,
    };
    let test = data.test;
    if train.is_empty() {
        return Err(TrainError::Invalid("the training set is empty".into()));
    }
    let train_device = device.clone().autodiff();

    // One process per folder. A folder that does not exist yet is only created (and taken)
    // once everything is checked, below.
    let early_lock = if run.path().is_dir() { Some(run.lock()?) } else { None };
    let resumable = run.has_checkpoint();
    if resumable && !resume {
        return Err(TrainError::Run {
            path: run.path().to_path_buf(),
            reason:
                "already holds a training run; pass --resume to continue it, or choose another output folder"
                    .into(),
        });
    }
    let (mut model, mut optim, mut state) = if resumable {
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
        match run.load_checkpoint(config, &train_device)? {
            Some((state, model, optim)) => {
                progress.message(&format!(
                    "resuming after epoch {} of {}",
                    state.epochs_completed,
                    training.epoch_plan(model.num_levels()).len()
                ));
                (model, optim, state)
            }
            None => fresh(config, &train_device)?,
        }
    } else {
        fresh(config, &train_device)?
    };
    training.validate_for(&model)?;
    let num_levels = model.num_levels();
    let joint = JointLoss::new(num_levels, training.level_loss_weights.as_deref())?;
    let level_labels = training.level_labels(num_levels);
    check_compatible(&model, &train, &level_labels, "training")?;
    if let Some(test) = &test {
        check_compatible(&model, test, &level_labels, "test")?;
    }
    if let Some(masking) = &training.masking {
        check_reachable(&model, masking)?;
    }
    let plain = device.clone().inner();
    let teacher = match training.distillation.as_ref().and_then(|d| d.teacher_run.as_ref()) {
        Some(folder) => Some(load_teacher::<C>(folder, &train, &plain)?),
        None => None,
    };
    // Everything checked: only now does the folder get its configuration.
    // Held until training ends.
    let _lock = match early_lock {
        Some(lock) => lock,
        None => {
            let lock = run.lock()?;
            // Another process may have made a run here while this one was checking.
            if run.has_checkpoint() {
                return Err(TrainError::Run {
                    path: run.path().to_path_buf(),
                    reason: "was made into a training run by another process meanwhile; choose another output folder"
                        .into(),
                });
            }
            lock
        }
    };
    run.create(config)?;

    let sharded = match devices.len() {
        1 => None,
        n => {
            progress.message(&format!("data-parallel on {n} devices: {}", devices.names().join(", ")));
            Some(ShardedStep::new(devices)?)
        }
    };
    let mix_widths: Vec<usize> = model.mixable_layers().iter().map(|l| l.widths.len()).collect();
    let plan = training.epoch_plan(num_levels);
    let batches_per_epoch = train.len().div_ceil(training.batch_size);
    let total_steps = batches_per_epoch * plan.len();
    let augment = training.train_augment();
    for epoch in state.epochs_completed..plan.len() {
        let phase = plan[epoch];
        let starts_phase = epoch == 0 || plan[epoch - 1] != phase;
        let ends_phase = epoch + 1 == plan.len() || plan[epoch + 1] != phase;
        if starts_phase {
            progress.message(&format!("epoch {}: {phase}", epoch + 1));
            if epoch > 0 {
                // Each phase optimises a different objective: its own optimizer state.
                optim = training.optimizer.init();
            }
        }
        let masking = training.masking.as_ref();
        if let (Some(m), Phase::Joint, true) = (masking, phase, starts_phase)
            && m.method == MaskMethod::Magnitude
            && epoch > 0
        {
            prune_by_magnitude(&mut model, m)?;
            progress.message(&format!("pruned by magnitude to {}", m.targets));
        }
        let mut soft = match (masking, phase) {
            (Some(m), Phase::Mask(level)) => {
                let soft = SoftThreshold { level, tau: level_threshold(&model, m, level)?, gamma: m.gamma };
                set_soft_threshold(&mut model, Some(soft));
                Some(soft)
            }
            _ => None,
        };
        let levels = phase.levels(num_levels);
        let phase_joint = match phase {
            Phase::Mask(_) => JointLoss::new(1, None)?,
            _ => joint.clone(),
        };
        progress.epoch_start(epoch, plan.len(), batches_per_epoch);
        let loader = epoch_loader(
            train.clone(),
            training.batch_size,
            training.seed,
            epoch as u64,
            true,
            augment,
            &train_device,
        )?;
        let mut tallies = vec![LevelTally::default(); num_levels];
        let mut lr = training.learning_rate;
        let start = Instant::now();
        // Level statistics stay on the device and are read every `READ_EVERY` steps, so the
        // host never waits for the device after a single batch; batches are prefetched.
        let mut pending: Option<StepStats> = None;
        let mut steps = 0usize;
        let mut batches = prefetch(loader, 2).peekable();
        while let Some(batch) = batches.next() {
            let batch =
                batch.map_err(|e| TrainError::Invalid(format!("loading a training batch failed: {e}")))?;
            lr = training.lr_schedule.learning_rate(
                training.learning_rate,
                epoch,
                state.global_step,
                total_steps,
            );
            let labels = levels.iter().map(|&k| level_labels.labels(&batch.labels, k)).collect();
            // Distillation belongs to joint training; a stage that trains one level alone
            // (mask learning, dense pre-training) learns from the labels only.
            let distill =
                training.distillation.as_ref().filter(|_| phase == Phase::Joint).map(|d| DistillStep {
                    temperature: d.temperature,
                    alpha: d.alpha,
                    teacher_logits: teacher
                        .as_ref()
                        .map(|t| Tensor::from_inner(t(batch.images.clone().inner()))),
                    labels: &level_labels,
                });
            let mixes = match phase {
                Phase::Joint => training.sample_mixes(&mix_widths, state.global_step),
                _ => Vec::new(),
            };
            let (next, stats) = match &sharded {
                None => train_step_levels_deferred(
                    model,
                    &mut optim,
                    &phase_joint,
                    batch.images,
                    labels,
                    lr,
                    &levels,
                    distill.as_ref(),
                    &mixes,
                ),
                Some(sharded) => {
                    let (grads, stats) = sharded.gradients(
                        &model,
                        &phase_joint,
                        batch.images,
                        labels,
                        &levels,
                        distill.as_ref(),
                        &mixes,
                    )?;
                    (optim.step(lr, model, grads), stats)
                }
            };
            model = next;
            pending = Some(match pending.take() {
                Some(p) => p.merge(stats),
                None => stats,
            });
            state.global_step += 1;
            steps += 1;
            let stop = training.max_steps.is_some_and(|max| state.global_step >= max);
            if steps.is_multiple_of(READ_EVERY) || batches.peek().is_none() || stop {
                let p = pending.take().expect("statistics of this step");
                let samples = p.samples;
                for (&level, (loss_sum, correct)) in levels.iter().zip(p.read()) {
                    if !loss_sum.is_finite() {
                        return Err(TrainError::Invalid(format!(
                            "the training loss diverged (not finite) at epoch {}, by step {}; lower the learning rate",
                            epoch + 1,
                            state.global_step
                        )));
                    }
                    let tally = &mut tallies[level];
                    tally.loss_sum += loss_sum;
                    tally.correct += correct;
                    tally.total += samples;
                }
            }
            if stop {
                progress.batch_done(&tallies);
                progress.message(&format!(
                    "stopped after {} step(s), as asked (max_steps): no checkpoint, no report",
                    state.global_step
                ));
                return Ok(TrainOutcome {
                    model: model.valid(),
                    history: state.history,
                    stopped_early: true,
                });
            }
            // With density targets, τ follows the weights as they move.
            if let (Some(m), Some(s)) = (masking, soft.as_mut())
                && matches!(m.targets, MaskTargets::Densities(_))
                && state.global_step.is_multiple_of(m.recalibrate_every)
            {
                s.tau = level_threshold(&model, m, s.level)?;
                set_soft_threshold(&mut model, Some(*s));
            }
            progress.batch_done(&tallies);
        }
        if let (Some(m), Some(mut s), true) = (masking, soft, ends_phase) {
            if matches!(m.targets, MaskTargets::Densities(_)) {
                s.tau = level_threshold(&model, m, s.level)?;
            }
            let dropped = binarise_level(&mut model, s)?;
            if s.tau.is_finite() {
                progress.message(&format!(
                    "level {}: binarised the mask at tau = {:.6} ({dropped} weights dropped)",
                    s.level, s.tau
                ));
                state.thresholds.push((s.level, s.tau));
            } else {
                progress.message(&format!("level {}: every weight kept (density 1)", s.level));
            }
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let test_accuracy = match &test {
            Some(test) => {
                let eval_model = model.valid();
                let accs = evaluate(&eval_model, test.clone(), 256, &plain, &level_labels)?;
                Some(accs.iter().map(LevelTally::accuracy).collect())
            }
            None => None,
        };
        let metrics = EpochMetrics {
            epoch,
            train_loss: tallies.iter().map(LevelTally::loss).collect(),
            train_accuracy: tallies.iter().map(LevelTally::accuracy).collect(),
            test_accuracy,
            train_seconds,
            learning_rate: lr,
            phase,
            trained_levels: levels,
        };
        state.epochs_completed = epoch + 1;
        state.dir = format!("checkpoints/epoch-{:04}", epoch + 1);
        state.history.push(metrics.clone());
        // `valid()` first folds the batch norms' pending running-statistics updates into their
        // values (a record of the training model would miss the last batch's update).
        run.save_checkpoint(&model.valid(), &optim, &state).map_err(|e| TrainError::Run {
            path: run.path().to_path_buf(),
            reason: format!(
                "could not write the checkpoint of epoch {} ({e}); {}: free space or fix the folder's permissions, then resume with --resume",
                epoch + 1,
                match epoch {
                    0 => "no earlier checkpoint exists, nothing was lost but this epoch".to_string(),
                    done => format!("the checkpoint of epoch {done} is intact"),
                }
            ),
        })?;
        progress.epoch_end(&metrics);
    }
    Ok(TrainOutcome { model: model.valid(), history: state.history, stopped_early: false })
}

/// The per-device half of a data-parallel step: the batch's shards, their gradients on their
/// devices' worker threads, gathered and summed on the main device.
struct ShardedStep {
    devices: TrainDevices,
    autodiff: Vec<Device>,
    workers: DeviceWorkers,
    /// Burn's communication servers, while DDP trains (dropping it tears them down).
    _ddp: Option<DistributedContext>,
}

impl ShardedStep {
    fn new(devices: &TrainDevices) -> Result<Self> {
        devices.check_ddp()?;
        let ddp = devices.ddp().then(|| {
            DistributedContext::init(
                devices.devices().to_vec(),
                DistributedConfig { all_reduce_op: ReduceOperation::Sum },
            )
        });
        Ok(Self {
            devices: devices.clone(),
            autodiff: devices.devices().iter().map(|d| d.clone().autodiff()).collect(),
            workers: DeviceWorkers::spawn(devices.len())?,
            _ddp: ddp,
        })
    }

    /// The gradients of the whole batch's joint loss (each shard's loss weighted by its part
    /// of the batch), on the main device, and the batch's statistics there.
    #[allow(clippy::too_many_arguments)]
    fn gradients<M: NestedNetwork + 'static>(
        &self,
        model: &M,
        joint: &JointLoss,
        images: Tensor<4>,
        labels: Vec<Tensor<1, Int>>,
        levels: &[usize],
        distill: Option<&DistillStep<'_>>,
        mixes: &[Vec<usize>],
    ) -> Result<(GradientsParams, StepStats)> {
        type ShardJob = Box<dyn FnOnce() -> (GradientsParams, StepStats) + Send>;
        let samples = images.dims()[0];
        let ranges = self.devices.shard_ranges(samples);
        let ddp = self.devices.ddp();
        let jobs: Vec<Option<ShardJob>> = ranges
            .iter()
            .zip(&self.autodiff)
            .map(|(range, device)| {
                // Every device takes part in DDP's all-reduce: one left without samples (a
                // small last batch) computes the first sample's gradient with weight 0.
                let (start, len, weight) = match (range.is_empty(), ddp) {
                    (true, false) => return None,
                    (true, true) => (0, 1, 0),
                    (false, _) => (range.start, range.len(), range.len()),
                };
                let model = model.clone();
                let device = device.clone();
                let images = images.clone().narrow(0, start, len);
                let labels: Vec<Tensor<1, Int>> =
                    labels.iter().map(|l| l.clone().narrow(0, start, len)).collect();
                let joint = joint.clone();
                let levels = levels.to_vec();
                let mixes = mixes.to_vec();
                let distill = distill.map(|d| {
                    let teacher = d.teacher_logits.as_ref().map(|t| t.clone().narrow(0, start, len));
                    (d.temperature, d.alpha, teacher, d.labels.clone())
                });
                let scale = weight as f64 / samples as f64;
                let job: ShardJob = Box::new(move || {
                    let model = model.fork(&device);
                    let model = if ddp { model.map(&mut MarkDistributed) } else { model };
                    let images = images.to_device(&device);
                    let labels = labels.into_iter().map(|l| l.to_device(&device)).collect();
                    let distill = distill.as_ref().map(|(temperature, alpha, teacher, labels)| DistillStep {
                        temperature: *temperature,
                        alpha: *alpha,
                        teacher_logits: teacher.clone().map(|t| t.to_device(&device)),
                        labels,
                    });
                    let out = level_gradients(
                        &model,
                        &joint,
                        images,
                        labels,
                        &levels,
                        distill.as_ref(),
                        &mixes,
                        scale,
                    );
                    // The gradients are read on the main thread next: wait until this thread's
                    // queued work is done. (Without it, two workers on one wgpu device trained
                    // to garbage: the fusion streams are per thread.)
                    if let Err(e) = device.clone().inner().sync() {
                        panic!("the device failed: {e:?}");
                    }
                    out
                });
                Some(job)
            })
            .collect();
        // The last optimizer step's writes must be done before other threads read the weights.
        self.devices
            .main()
            .sync()
            .map_err(|e| TrainError::Device(format!("the main device failed: {e:?}")))?;
        let results = self.workers.run(jobs, self.devices.names())?;
        let main = self.devices.main();
        let main_autodiff = &self.autodiff[0];
        let mut grads = Vec::with_capacity(results.len());
        let mut stats: Option<StepStats> = None;
        for ((g, s), range) in results.into_iter().zip(&ranges).filter_map(|(r, range)| Some((r?, range))) {
            // Under DDP every device holds the all-reduced sum already: the main device's is
            // the step's gradient.
            if !ddp || grads.is_empty() {
                grads.push(g);
            }
            if range.is_empty() {
                continue; // a DDP device's stand-in sample
            }
            let s = s.to_device(main_autodiff);
            stats = Some(match stats {
                Some(total) => total.merge(s),
                None => s,
            });
        }
        let stats = stats.ok_or_else(|| TrainError::Invalid("an empty batch".into()))?;
        Ok((gather_and_sum(model, grads, main), stats))
    }
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

/// A teacher's full level, as a function of a batch of images.
type Teacher = Box<dyn Fn(Tensor<4>) -> Tensor<2>>;

/// The trained network of `folder` (a built-in model's run, or one of the student's own
/// model type), in evaluation mode, checked to take `set`'s images and predict its classes
/// with its full level.
fn load_teacher<C: NestedNetworkConfig>(folder: &str, set: &ImageSet, device: &Device) -> Result<Teacher> {
    fn checked<M: NestedNetwork + 'static>(teacher: M, folder: &str, set: &ImageSet) -> Result<Teacher> {
        let full = teacher.num_levels() - 1;
        let shape = [set.channels, set.height, set.width];
        if teacher.input_shape() != shape || teacher.level_classes(full) != set.num_classes {
            return Err(TrainError::Invalid(format!(
                "the distillation teacher {folder} takes {:?} images and predicts {} classes, but the data has {shape:?} images and {} classes",
                teacher.input_shape(),
                teacher.level_classes(full),
                set.num_classes
            )));
        }
        let teacher = teacher.valid();
        Ok(Box::new(move |images| teacher.forward_level(images, full)))
    }
    let run = RunDir::new(folder);
    let cannot = |e: TrainError| {
        TrainError::Invalid(format!("the distillation teacher {folder} could not be loaded: {e}"))
    };
    match run.load_model::<ModelConfig>(device) {
        Ok((_, teacher)) => checked(teacher, folder, set),
        // Not a built-in model: perhaps one of the student's own type.
        Err(builtin) => match run.load_model::<C>(device) {
            Ok((_, teacher)) => checked(teacher, folder, set),
            Err(_) => Err(cannot(builtin)),
        },
    }
}

/// Draws every parameter of `module` now. Burn initializes parameters lazily, on first use,
/// from the device's random generator; drawing them all right after seeding makes the weights
/// a function of the seed alone, whatever else later uses the generator.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Serialises "seed the device, draw the weights" across threads: the device's generator is
/// shared by everything in the process (parallel tests, several trainers).
static SEEDED_INIT: Mutex<()> = Mutex::new(());

/// Runs `build` while no other thread seeds the device and draws weights. Building a network
/// lazily draws nothing, but reading a lazily initialised parameter's shape (turning a mask
/// on, counting a level's costs) draws that parameter from the device's shared generator:
/// outside this lock that could shift the weights of a seeded run in another thread.
pub fn with_init_lock<T>(build: impl FnOnce() -> T) -> T {
    let _guard = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
    build()
}

/// A freshly initialized network whose weights depend only on `seed`, with the nested masks
/// of `masking` (dense) on its masked layers.
pub fn seeded_model<C: NestedNetworkConfig>(
    config: &C,
    masking: Option<&MaskingConfig>,
    seed: u64,
    device: &Device,
) -> Result<C::Network> {
    with_init_lock(|| {
        device.seed(seed);
        let mut model = config.init_network(device)?;
        // Masks first: turning one on reads its weight's shape, which draws that weight, in
        // the layers' order (as masked runs always have: their published figures depend on it).
        if let Some(masking) = masking {
            enable_masks(&mut model, masking)?;
        }
        model.visit(&mut Materialize);
        crate::run::with_stable_ids(model)
    })
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
    if let Some(m) = training.masking.as_ref().filter(|m| m.method == MaskMethod::Random) {
        randomize_masks(&mut model, m, training.seed)?;
    }
    let state = CheckpointState {
        epochs_completed: 0,
        global_step: 0,
        dir: String::new(),
        history: Vec::new(),
        thresholds: Vec::new(),
    };
    Ok((model, training.optimizer.init(), state))
}

/// Accuracy (and mean loss) of every level of `model` on `set`, in batches of `batch_size`,
/// each level against its own labels. `model` should be in evaluation mode (`valid()`) and
/// `device` a plain device.
pub fn evaluate<M: NestedNetwork>(
    model: &M,
    set: Arc<ImageSet>,
    batch_size: usize,
    device: &Device,
    labels: &LevelLabels,
) -> Result<Vec<LevelTally>> {
    let loader = epoch_loader(set, batch_size, 0, 0, false, None, device)?;
    // Sums stay on the device; they are read once, after the last batch.
    let mut sums: Vec<Option<(Tensor<1>, Tensor<1, Int>)>> = vec![None; model.num_levels()];
    let mut total = 0;
    for batch in prefetch(loader, 2) {
        let batch = batch.map_err(|e| TrainError::Invalid(format!("loading a test batch failed: {e}")))?;
        let [n, _, _, _] = batch.images.dims();
        total += n;
        for (level, sum) in sums.iter_mut().enumerate() {
            let logits = model.forward_level(batch.images.clone(), level);
            let y = labels.labels(&batch.labels, level);
            let loss = cross_entropy(logits.clone(), y.clone()).mul_scalar(n as f64);
            let correct = correct_count(logits, y);
            *sum = Some(match sum.take() {
                Some((l, c)) => (l + loss, c + correct),
                None => (loss, correct),
            });
        }
    }
    Ok(sums
        .into_iter()
        .map(|sum| match sum {
            Some((loss, correct)) => LevelTally {
                loss_sum: loss.into_scalar::<f64>(),
                correct: correct.into_scalar::<i64>() as usize,
                total,
            },
            None => LevelTally::default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestednet_data::{ImageSet, Normalization};

    fn set(channels: usize, side: usize, classes: usize) -> ImageSet {
        ImageSet {
            pixels: vec![0; 4 * channels * side * side],
            labels: vec![0; 4],
            coarse_labels: None,
            channels,
            height: side,
            width: side,
            num_classes: classes,
            num_coarse_classes: 0,
            normalization: Normalization { mean: vec![0.5; channels], std: vec![0.5; channels] },
            class_names: Vec::new(),
        }
    }

    /// Compares two gradients of every parameter of a module, bit for bit.
    struct SameGradients<'a> {
        ours: &'a GradientsParams,
        reference: &'a GradientsParams,
        compared: usize,
    }

    impl ModuleVisitor for SameGradients<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let bits = |grads: &GradientsParams| {
                grads.get::<D>(param.id).map(|g| {
                    g.into_data()
                        .try_to_vec::<f32>()
                        .expect("f32")
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<u32>>()
                })
            };
            let (ours, reference) = (bits(self.ours), bits(self.reference));
            assert!(ours == reference, "parameter {}: the gradients differ", param.id);
            self.compared += usize::from(ours.is_some());
        }
    }

    /// A 3-level `mnist-cnn` on 8×8 images, small enough for bit-for-bit checks in a test.
    fn small_cnn() -> nestednet_models::NestedMnistCnnConfig {
        nestednet_models::NestedMnistCnnConfig::new()
            .with_height(8)
            .with_width(8)
            .with_conv1_channels(8)
            .with_conv2_channels(16)
            .with_hidden(32)
    }

    /// 16 random 8×8 images and their labels, drawn from `seed`.
    fn small_batch(seed: u64, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let batch = 16;
        let pixels = nestednet_data::SplitMix64::new(seed).uniform_f32(batch * 64, -1.0, 1.0);
        let images = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 1, 8, 8]), device);
        let labels: Vec<i64> = (0..batch as i64).map(|i| (i * 7 + seed as i64) % 10).collect();
        (images, Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), device))
    }

    /// Each level's own backward pass, the gradients summed last level first, gives one
    /// backward pass of the summed loss bit for bit (what keeps the trained networks
    /// byte-identical); the levels' weights are unequal so that each term is scaled.
    #[test]
    fn level_by_level_gradients_are_the_single_backward_pass_bit_for_bit() {
        let device = Device::flex().autodiff();
        let model = small_cnn().init(&device);
        let (images, labels) = small_batch(7, &device);
        let levels = [0, 1, 2];
        let joint = JointLoss::new(3, Some(&[1.0, 2.0, 3.0])).unwrap();
        let (ours, _) =
            level_gradients(&model, &joint, images.clone(), vec![labels.clone(); 3], &levels, None, &[], 0.5);
        let losses = levels
            .iter()
            .map(|&k| cross_entropy(model.forward_level(images.clone(), k), labels.clone()))
            .collect();
        let reference = GradientsParams::from_grads(joint.combine(losses).mul_scalar(0.5).backward(), &model);
        let mut same = SameGradients { ours: &ours, reference: &reference, compared: 0 };
        model.visit(&mut same);
        assert!(same.compared >= 8, "only {} parameters compared", same.compared);
    }

    /// Every float a module holds (parameters and running statistics), as bits, in order.
    struct AllBits(Vec<u32>);

    impl ModuleVisitor for AllBits {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let values = param.val().into_data().try_to_vec::<f32>().expect("f32");
            self.0.extend(values.iter().map(|v| v.to_bits()));
        }
    }

    /// The levels run side by side give the sequential step's gradients bit for bit, and the
    /// same running statistics after several steps (each level's thread may change between
    /// steps).
    #[test]
    fn levels_side_by_side_give_the_sequential_step_bit_for_bit() {
        let device = Device::flex().autodiff();
        let config = small_cnn();
        let sequential = seeded_model(&config, None, 3, &device).unwrap();
        let side_by_side = seeded_model(&config, None, 3, &device).unwrap();
        assert!(side_by_side.levels_train_side_by_side());
        let joint = JointLoss::mean(3);
        for step in 0..4u64 {
            let (images, labels) = small_batch(step, &device);
            let labels = vec![labels; 3];
            let (ours, _) = joint_gradients(
                &side_by_side,
                &joint,
                images.clone(),
                labels.clone(),
                &[0, 1, 2],
                None,
                &[],
                1.0,
                LevelRun::SideBySide,
            );
            let (reference, _) =
                level_gradients(&sequential, &joint, images, labels, &[0, 1, 2], None, &[], 1.0);
            let mut same = SameGradients { ours: &ours, reference: &reference, compared: 0 };
            side_by_side.visit(&mut same);
            assert!(same.compared >= 8, "only {} parameters compared", same.compared);
        }
        let bits = |model: &nestednet_models::NestedMnistCnn| {
            let mut all = AllBits(Vec::new());
            model.valid().visit(&mut all);
            all.0
        };
        assert!(bits(&side_by_side) == bits(&sequential), "the running statistics differ");
    }

    #[test]
    fn data_that_does_not_fit_the_model_is_a_clear_error() {
        let device = Device::flex();
        let model = nestednet_models::NestedMnistCnnConfig::new().init(&device);
        let fine = LevelLabels::fine(3);
        check_compatible(&model, &set(1, 28, 10), &fine, "test").unwrap();
        let err = check_compatible(&model, &set(3, 32, 10), &fine, "test").unwrap_err().to_string();
        assert!(err.contains("3x32x32") && err.contains("1x28x28"), "{err}");
        let err = check_compatible(&model, &set(1, 28, 100), &fine, "training").unwrap_err().to_string();
        assert!(err.contains("level 0 predicts 10 classes but the training set has 100"), "{err}");
    }
}
