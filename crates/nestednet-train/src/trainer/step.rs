//! One joint training step (paper, Eq. 5): every trained level's loss on one batch, their
//! gradients summed, one optimizer step. The network decides what a batch is and what it
//! outputs ([`NestedNetwork::Input`], [`NestedNetwork::Output`]); each output row is scored
//! against its target class.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use nestednet_heads::{JointLoss, correct_count, cross_entropy, distillation_loss, soft_targets};
use nestednet_models::{NestedNetwork, NetworkInput, NetworkOutput};

use crate::trainer::init::Materialize;
use crate::trainer::labels::LevelLabels;

/// What a training step distils from, besides the labels (see
/// [`DistillationConfig`](crate::trainer::config::DistillationConfig)).
#[derive(Clone)]
pub struct DistillStep<'a> {
    /// Temperature `T`.
    pub temperature: f64,
    /// Weight `α` of the distillation term.
    pub alpha: f64,
    /// An external teacher's logits on the batch (`[rows, classes]`, over the data set's
    /// classes); `None` for in-place distillation from the model's full level (when that level
    /// is trained).
    pub teacher_logits: Option<Tensor<2>>,
    /// Maps the teacher's probabilities to each level's classes.
    pub labels: &'a LevelLabels,
}

/// Everything one joint step computes its loss from: the batch, the trained levels with their
/// targets and weights, and any distillation or Mix'n'Match sub-networks.
#[derive(Clone)]
pub struct JointStep<'a, I> {
    /// The network's input.
    pub input: I,
    /// The target classes of each trained level (`targets[i]` for `levels[i]`): a mask-learning
    /// stage trains one level alone, and coarse-to-fine levels each have their own granularity.
    pub targets: Vec<Tensor<1, Int>>,
    /// The trained levels.
    pub levels: &'a [usize],
    /// How their losses are weighed (in the order of `levels`).
    pub joint: &'a JointLoss,
    /// Distillation: each student level's loss becomes `(1 − α)·CE + α·T²·KL` against the
    /// teacher.
    pub distill: Option<&'a DistillStep<'a>>,
    /// Mix'n'Match sub-networks trained beside the levels (see
    /// [`TrainingConfig::sample_mixes`](crate::trainer::config::TrainingConfig::sample_mixes)).
    pub mixes: &'a [Vec<usize>],
}

impl<'a, I: NetworkInput> JointStep<'a, I> {
    /// A step of `levels` on `input`, every level against the same `targets`, weighed by
    /// `joint`; no distillation, no sub-networks.
    pub fn new(input: I, targets: Tensor<1, Int>, levels: &'a [usize], joint: &'a JointLoss) -> Self {
        Self { input, targets: vec![targets; levels.len()], levels, joint, distill: None, mixes: &[] }
    }

    /// The same step, each level against its own targets (`targets[i]` for `levels[i]`).
    pub fn with_targets(mut self, targets: Vec<Tensor<1, Int>>) -> Self {
        self.targets = targets;
        self
    }

    /// The same step, distilled.
    pub fn with_distill(mut self, distill: Option<&'a DistillStep<'a>>) -> Self {
        self.distill = distill;
        self
    }

    /// The same step, with Mix'n'Match sub-networks.
    pub fn with_mixes(mut self, mixes: &'a [Vec<usize>]) -> Self {
        self.mixes = mixes;
        self
    }

    /// Output rows the targets score (the batch's samples for a classifier).
    fn rows(&self) -> usize {
        self.targets.first().map_or(0, |t| t.dims()[0])
    }
}

/// Per-level statistics of training steps, still on the device: summing them there and reading
/// them once every few steps keeps the host from waiting on the device after every batch.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Each trained level's cross-entropy summed over the rows (each batch's mean loss times
    /// its rows).
    pub loss_sums: Tensor<1>,
    /// Each trained level's correct predictions, summed.
    pub correct: Tensor<1, Int>,
    /// Rows added (samples, for a classifier).
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

    /// Per level, the mean loss and the correct count.
    pub fn means(self) -> Vec<(f64, usize)> {
        let n = self.samples as f64;
        self.read().into_iter().map(|(sum, correct)| (sum / n, correct)).collect()
    }
}

/// One optimizer step on a batch: the gradient of the joint loss (every level's forward and
/// backward pass, see [`level_gradients`]), then **one** optimizer step. Returns the model and
/// the batch's level statistics, still on the device. The returned losses are the levels'
/// cross-entropies (comparable with and without distillation).
///
/// On `flex`, for a network whose levels may train side by side
/// ([`NestedNetwork::levels_train_side_by_side`]), the levels after the first run side by side
/// on the CPU pool's threads; the gradients are [`level_gradients`]'s bit for bit. The batch
/// norms' running statistics are up to date when it returns, on every backend (Burn otherwise
/// keeps the last update per thread until the next one reads it).
pub fn train_step<M: NestedNetwork>(
    model: M,
    optim: &mut ModuleOptimizer,
    step: JointStep<'_, M::Input>,
    learning_rate: f64,
) -> (M, StepStats) {
    let run = if side_by_side(&model, &step.input) { LevelRun::SideBySide } else { LevelRun::InTurn };
    let (grads, stats) = joint_gradients(&model, step, 1.0, run);
    (optim.step(learning_rate, model, grads), stats)
}

/// The gradients of [`train_step`]'s joint loss, times `loss_scale`, and the batch's level
/// statistics; no optimizer step. Data-parallel training calls it once per device on that
/// device's shard of the batch, with the shard's part of the batch as `loss_scale`, so that
/// the summed gradients are the whole batch's.
///
/// The joint loss is a weighted sum of terms that share nothing but the parameters (each
/// level's forward pass, and each Mix'n'Match sub-network's, is a graph of its own), so its
/// gradient is the sum of the terms' gradients: each term runs forward and backward on its
/// own and its graph is freed before the next one starts. Peak memory is then one level's
/// activations, not every level's, and the step is faster (each level's activations are
/// still warm when its backward pass reads them; docs/PERFORMANCE.md).
/// The terms run in the order in which one backward pass of the summed loss would have
/// reached the parameters (the last term first: Mix'n'Match sub-networks from the last, then
/// the levels from the last), and their gradients are added in that order, so the levels'
/// sums are the single backward pass's, bit for bit (the trained weights are byte-identical
/// for channel levels, weight masks, residual lattices, distillation and coarse-to-fine
/// heads). With Mix'n'Match sub-networks the weights differ in the last bits (measured: the
/// single pass did not add their gradients in this order). The in-place distillation
/// teacher (the full level) runs first, since the other levels learn from its output.
pub fn level_gradients<M: NestedNetwork>(
    model: &M,
    step: JointStep<'_, M::Input>,
    loss_scale: f64,
) -> (GradientsParams, StepStats) {
    joint_gradients(model, step, loss_scale, LevelRun::Shard)
}

/// How [`joint_gradients`] runs the levels, and whether it owns the running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LevelRun {
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

/// Whether a step may run `model`'s levels side by side: the network says so
/// ([`NestedNetwork::levels_train_side_by_side`]), the batch is on the CPU backend whose
/// kernels are deterministic under it (`flex`; a GPU's queue is per thread), and the CPU pool
/// has two threads or more.
fn side_by_side<M: NestedNetwork>(model: &M, input: &M::Input) -> bool {
    #[cfg(feature = "flex")]
    return model.levels_train_side_by_side()
        && input.device().inner() == Device::flex()
        && rayon::current_num_threads() > 1;
    #[cfg(not(feature = "flex"))]
    {
        let _ = (model, input);
        false
    }
}

/// The weighted loss of one term, its gradients.
fn term_gradients<M: Module>(model: &M, loss: Tensor<1>, weight: f64, loss_scale: f64) -> GradientsParams {
    let mut loss = loss.mul_scalar(weight);
    if loss_scale != 1.0 {
        loss = loss.mul_scalar(loss_scale);
    }
    GradientsParams::from_grads(loss.backward(), model)
}

/// The order the level terms run in: the last first, except an in-place distillation teacher
/// (the full level), which runs before every other level; and that teacher's index, if any.
fn term_order<I>(model_levels: usize, step: &JointStep<'_, I>) -> (Vec<usize>, Option<usize>) {
    let full = model_levels - 1;
    let in_place_teacher = step
        .distill
        .filter(|d| d.teacher_logits.is_none())
        .and_then(|_| step.levels.iter().position(|&k| k == full));
    let mut order: Vec<usize> = (0..step.levels.len()).rev().collect();
    if let Some(teacher) = in_place_teacher {
        order.retain(|&i| i != teacher);
        order.insert(0, teacher);
    }
    (order, in_place_teacher)
}

/// Runs the `i`-th trained level of `step` forward and backward: its loss (cross-entropy, or
/// with `teacher` the distilled loss), gradients and statistics.
fn run_level<M: NestedNetwork>(
    model: &M,
    step: &JointStep<'_, M::Input>,
    i: usize,
    teacher: Option<&SoftTeacher>,
    keep_logits: bool,
    loss_scale: f64,
) -> LevelTerm {
    let k = step.levels[i];
    let weight = step.joint.weights()[i];
    let logits = model.forward_level(step.input.clone(), k).into_logits();
    let level_ce = cross_entropy(logits.clone(), step.targets[i].clone());
    let loss = match (step.distill, teacher) {
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
        correct: correct_count(logits.clone(), step.targets[i].clone()),
        // The statistics leave the graph before it is consumed.
        cross_entropy: level_ce.detach(),
        logits: keep_logits.then_some(logits),
        grads: (weight > 0.0).then(|| term_gradients(model, loss, weight, loss_scale)),
    }
}

/// [`level_gradients`], the levels run as `run` says. Side by side, their gradients are still
/// added in the same order, and the batch norms' running statistics are gathered after them:
/// Burn keeps a pending update per thread and a batch norm reads only its own thread's, so a
/// level that ran on the other thread in the last step would otherwise start from stale
/// statistics. The result is the sequential one bit for bit. Not for data-parallel workers:
/// their forks share those running statistics, and gathering them would mix the devices'
/// updates in an order that depends on timing.
pub(crate) fn joint_gradients<M: NestedNetwork>(
    model: &M,
    step: JointStep<'_, M::Input>,
    loss_scale: f64,
    run: LevelRun,
) -> (GradientsParams, StepStats) {
    assert_eq!(step.targets.len(), step.levels.len(), "one target tensor per trained level");
    let weights = step.joint.weights();
    assert_eq!(
        weights.len(),
        step.levels.len(),
        "JointLoss: {} weights for {} levels",
        weights.len(),
        step.levels.len()
    );
    let rows = step.rows();
    let mut summed = GradientsAccumulator::<M>::new();
    accumulate_mixes(model, &step, loss_scale, &mut summed);
    let (order, in_place_teacher) = term_order(model.num_levels(), &step);
    let external: Option<SoftTeacher> = step.distill.and_then(|d| {
        d.teacher_logits.as_ref().map(|t| (t.clone().detach(), soft_targets(t.clone(), d.temperature)))
    });
    let first =
        run_level(model, &step, order[0], external.as_ref(), in_place_teacher == Some(order[0]), loss_scale);
    // The in-place teacher is the first level run: the others learn from its logits.
    let teacher = match (step.distill, &first.logits) {
        (Some(d), Some(logits)) => Some((logits.clone(), soft_targets(logits.clone(), d.temperature))),
        _ => external,
    };
    let rest: Vec<LevelTerm> = if run == LevelRun::SideBySide && order.len() > 2 {
        use rayon::prelude::*;
        // Each thread runs whole levels (one job per level) on its own fork of the model: the
        // same parameter values and ids, as leaves of an autodiff graph of its own. Levels
        // that shared the leaves would put their graphs into one (Burn merges the graphs of
        // tensors an operation combines), and a thread that, inside a level's backward pass
        // (which holds that graph's lock), takes another level's job from the pool while it
        // waits for a kernel, then deadlocked on the merge (seen in tests running two
        // trainings at once). The parameters are drawn first: a lazy parameter cloned before
        // its first use would be drawn once per handle.
        model.visit(&mut Materialize);
        let device = model.devices().into_iter().next().expect("a model on a device");
        let runs: Vec<(M, usize)> = order[1..].iter().map(|&i| (model.clone().fork(&device), i)).collect();
        let step = &step;
        runs.into_par_iter()
            .with_max_len(1)
            .map(|(m, i)| run_level(&m, step, i, teacher.as_ref(), false, loss_scale))
            .collect()
    } else {
        order[1..].iter().map(|&i| run_level(model, &step, i, teacher.as_ref(), false, loss_scale)).collect()
    };
    let stats = gather_terms(model, &mut summed, order, std::iter::once(first).chain(rest), rows);
    if run != LevelRun::Shard {
        // `valid` gathers every running statistic's pending updates (one per thread that ran a
        // level) into its value; the copy it returns is not needed.
        let _ = model.valid();
    }
    (summed.grads(), stats)
}

/// Mix'n'Match sub-networks (the sandwich rule): each weighs what one level weighs in a mean,
/// against the targets of the last trained level (the data set's classes: mixes need them).
fn accumulate_mixes<M: NestedNetwork>(
    model: &M,
    step: &JointStep<'_, M::Input>,
    loss_scale: f64,
    summed: &mut GradientsAccumulator<M>,
) {
    let Some(fine) = step.targets.last().filter(|_| !step.mixes.is_empty()) else { return };
    let weight = 1.0 / model.num_levels() as f64;
    for choice in step.mixes.iter().rev() {
        let logits = model
            .forward_mix(step.input.clone(), choice)
            .expect("mixable: checked before training")
            .into_logits();
        summed.accumulate(
            model,
            term_gradients(model, cross_entropy(logits, fine.clone()), weight, loss_scale),
        );
    }
}

/// Adds the terms' gradients in the order they ran and puts their statistics back in the
/// levels' order.
fn gather_terms<M: NestedNetwork>(
    model: &M,
    summed: &mut GradientsAccumulator<M>,
    order: Vec<usize>,
    terms: impl Iterator<Item = LevelTerm>,
    rows: usize,
) -> StepStats {
    let n = order.len();
    let mut ce: Vec<Option<Tensor<1>>> = vec![None; n];
    let mut correct: Vec<Option<Tensor<1, Int>>> = vec![None; n];
    for (i, term) in order.into_iter().zip(terms) {
        if let Some(grads) = term.grads {
            summed.accumulate(model, grads);
        }
        ce[i] = Some(term.cross_entropy);
        correct[i] = Some(term.correct);
    }
    let ce: Vec<Tensor<1>> = ce.into_iter().map(|l| l.expect("every level ran")).collect();
    let correct: Vec<Tensor<1, Int>> = correct.into_iter().map(|c| c.expect("every level ran")).collect();
    let loss_sums = Tensor::from_inner(Tensor::cat(ce, 0).inner()).mul_scalar(rows as f64);
    let correct = Tensor::from_inner(Tensor::cat(correct, 0).inner());
    StepStats { loss_sums, correct, samples: rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::init::seeded_model;
    use burn::module::{ModuleVisitor, Param};

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
            level_gradients(&model, JointStep::new(images.clone(), labels.clone(), &levels, &joint), 0.5);
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
            let levels = [0, 1, 2];
            let step = JointStep::new(images, labels, &levels, &joint);
            let (ours, _) = joint_gradients(&side_by_side, step.clone(), 1.0, LevelRun::SideBySide);
            let (reference, _) = level_gradients(&sequential, step, 1.0);
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
}
