//! The configuration of a training run, saved as `config.json` in the run folder.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use nestednet_data::{Augmentation, DatasetKind};
use nestednet_models::{NestedNetwork, NestedNetworkConfig};
use serde::{Deserialize, Serialize};

// `Result` stays qualified: `#[derive(Config)]` expands to code naming the prelude's `Result`.
use crate::error::TrainError;
use crate::trainer::labels::{HierarchyConfig, LevelLabels};
use crate::trainer::masks::MaskingConfig;
use crate::trainer::metrics::Phase;

/// Version of the run-folder layout and record paths; bumped whenever an old run folder could
/// no longer be loaded.
///
/// - 1: channel scheduling only.
/// - 2: weight masks (`masked_layers`, `masking`, level maps in the records), coarse-to-fine
///   heads (`level_classes`, `hierarchy`), `fc2` optional.
/// - 3: residual networks (lattice levels).
/// - 4: `config.json` = model + training + settings; masks chosen by the trainer
///   (`masking.masked_layers`); heads and first convolutions as `NestedHead` / `LevelConv2d`.
/// - 5: the model's family beside its bare configuration (`family`, `model`), where 4 wrapped
///   the configuration in the built-in models' enum (whose variant also prefixed every record
///   path); where the data came from (`data`).
pub const FORMAT_VERSION: u32 = 5;

/// The optimizer and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Adam (Kingma & Ba), with PyTorch's defaults.
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator term.
        epsilon: f32,
        /// L2 penalty added to the gradient (0 disables it).
        weight_decay: f32,
    },
    /// Stochastic gradient descent with momentum (PyTorch's formulation: no dampening).
    Sgd {
        /// Momentum factor (0 disables momentum).
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient (0 disables it).
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    /// Adam with β = (0.9, 0.999), ε = 1e-8 and no weight decay, as `torch.optim.Adam`.
    pub fn adam() -> Self {
        Self::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0 }
    }

    /// SGD with the usual CIFAR settings: momentum 0.9, weight decay 5e-4.
    pub fn sgd() -> Self {
        Self::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 }
    }

    /// Its name: `adam` or `sgd` (what [`FromStr`](core::str::FromStr) reads).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Adam { .. } => "adam",
            Self::Sgd { .. } => "sgd",
        }
    }

    /// The learning rate it is usually trained with when none is given: Adam 1e-3, SGD 0.1.
    pub fn usual_learning_rate(&self) -> f64 {
        match self {
            Self::Adam { .. } => 1e-3,
            Self::Sgd { .. } => 0.1,
        }
    }

    /// Its L2 weight decay.
    pub fn weight_decay(&self) -> f32 {
        match *self {
            Self::Adam { weight_decay, .. } | Self::Sgd { weight_decay, .. } => weight_decay,
        }
    }

    /// Its momentum (SGD's; Adam has none).
    pub fn momentum(&self) -> Option<f64> {
        match *self {
            Self::Adam { .. } => None,
            Self::Sgd { momentum, .. } => Some(momentum),
        }
    }

    /// The same optimizer with L2 weight decay `weight_decay`.
    pub fn with_weight_decay(mut self, decay: f32) -> Self {
        match &mut self {
            Self::Adam { weight_decay, .. } | Self::Sgd { weight_decay, .. } => *weight_decay = decay,
        }
        self
    }

    /// The same optimizer with momentum `momentum` (SGD; Adam is unchanged).
    pub fn with_momentum(mut self, value: f64) -> Self {
        if let Self::Sgd { momentum, .. } = &mut self {
            *momentum = value;
        }
        self
    }

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> crate::error::Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        match *self {
            Self::Adam { beta1, beta2, epsilon, weight_decay } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    return bad(format!("Adam betas must be in [0, 1), got ({beta1}, {beta2})"));
                }
                if epsilon.is_nan() || epsilon <= 0.0 {
                    return bad(format!("Adam epsilon must be positive, got {epsilon}"));
                }
                if weight_decay.is_nan() || weight_decay < 0.0 {
                    return bad(format!("weight decay must be non-negative, got {weight_decay}"));
                }
            }
            Self::Sgd { momentum, weight_decay, .. } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("SGD momentum must be in [0, 1), got {momentum}"));
                }
                if weight_decay.is_nan() || weight_decay < 0.0 {
                    return bad(format!("weight decay must be non-negative, got {weight_decay}"));
                }
            }
        }
        Ok(())
    }

    /// The Burn optimizer.
    pub fn init(&self) -> ModuleOptimizer {
        let decay = |wd: f32| (wd > 0.0).then(|| WeightDecayConfig::new(wd));
        match *self {
            Self::Adam { beta1, beta2, epsilon, weight_decay } => AdamConfig::new()
                .with_beta_1(beta1)
                .with_beta_2(beta2)
                .with_epsilon(epsilon)
                .with_weight_decay(decay(weight_decay))
                .init(),
            Self::Sgd { momentum, nesterov, weight_decay } => SgdConfig::new()
                .with_momentum((momentum > 0.0).then(|| {
                    MomentumConfig::new().with_momentum(momentum).with_dampening(0.0).with_nesterov(nesterov)
                }))
                .with_weight_decay(decay(weight_decay))
                .init(),
        }
    }
}

/// An optimizer by name, with its usual hyper-parameters ([`OptimizerConfig::adam`],
/// [`OptimizerConfig::sgd`]).
impl core::str::FromStr for OptimizerConfig {
    type Err = TrainError;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "adam" => Ok(Self::adam()),
            "sgd" => Ok(Self::sgd()),
            other => Err(TrainError::Invalid(format!("unknown optimizer `{other}` (use adam or sgd)"))),
        }
    }
}

/// Its name (the hyper-parameters are settings of their own).
impl core::fmt::Display for OptimizerConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the learning rate changes over training. Computed from the step index alone, so a
/// resumed run follows exactly the same schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LrSchedule {
    /// The base learning rate throughout.
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate down to `min_lr` over all training steps.
    Cosine {
        /// Final learning rate.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// Checks the schedule.
    pub fn validate(&self) -> crate::error::Result<()> {
        match *self {
            Self::Constant => Ok(()),
            Self::Step { every_epochs, gamma } if every_epochs > 0 && gamma > 0.0 && gamma <= 1.0 => Ok(()),
            Self::Step { every_epochs, gamma } => Err(TrainError::Invalid(format!(
                "step schedule needs every_epochs ≥ 1 and gamma in (0, 1], got {every_epochs} and {gamma}"
            ))),
            Self::Cosine { min_lr } if min_lr >= 0.0 => Ok(()),
            Self::Cosine { min_lr } => {
                Err(TrainError::Invalid(format!("cosine min_lr must be ≥ 0, got {min_lr}")))
            }
        }
    }

    /// Learning rate at global step `step` (0-based) of `total_steps`, in epoch `epoch`.
    pub fn learning_rate(&self, base: f64, epoch: usize, step: usize, total_steps: usize) -> f64 {
        match *self {
            Self::Constant => base,
            Self::Step { every_epochs, gamma } => base * gamma.powi((epoch / every_epochs) as i32),
            Self::Cosine { min_lr } => {
                let t = step as f64 / total_steps.max(1) as f64;
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// The textual form [`FromStr`](core::str::FromStr) reads.
impl core::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Constant => write!(f, "constant"),
            Self::Step { every_epochs, gamma } => write!(f, "step:{every_epochs}:{gamma}"),
            Self::Cosine { min_lr: 0.0 } => write!(f, "cosine"),
            Self::Cosine { min_lr } => write!(f, "cosine:{min_lr}"),
        }
    }
}

impl core::str::FromStr for LrSchedule {
    type Err = TrainError;

    /// `constant`, `step:EVERY:GAMMA` (e.g. `step:30:0.1`) or `cosine[:MIN_LR]`.
    fn from_str(s: &str) -> crate::error::Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| {
            p.parse::<f64>()
                .map_err(|_| TrainError::Invalid(format!("`{p}` in schedule `{s}` is not a number")))
        };
        let schedule = match parts.as_slice() {
            ["constant"] => Self::Constant,
            ["cosine"] => Self::Cosine { min_lr: 0.0 },
            ["cosine", m] => Self::Cosine { min_lr: num(m)? },
            ["step", e, g] => Self::Step {
                every_epochs: e.parse().map_err(|_| {
                    TrainError::Invalid(format!("`{e}` in schedule `{s}` is not an epoch count"))
                })?,
                gamma: num(g)?,
            },
            _ => {
                return Err(TrainError::Invalid(format!(
                    "unknown learning-rate schedule `{s}` (use constant, step:EVERY:GAMMA or cosine[:MIN_LR])"
                )));
            }
        };
        schedule.validate()?;
        Ok(schedule)
    }
}

/// Knowledge distillation from softened outputs (Hinton et al.), applied during joint training.
///
/// A student level `k` minimises `(1 − α)·CE_k + α·T²·KL(p_teacher^T ‖ p_k^T)` where `p^T` is
/// the softmax at temperature `T` and the KL is averaged over the batch; the joint objective
/// then weighs the levels with `level_loss_weights` (Eq. 5). The teacher's outputs are
/// detached. A coarse-to-fine level learns the teacher's probability of each of its classes
/// (the sum over the class's fine classes), softened at `T` afterwards (see
/// [`LevelLabels::lift_logits`](crate::trainer::labels::LevelLabels::lift_logits)).
///
/// - **In-place** (`teacher_run: None`): the full level teaches every lower level, from the
///   same forward pass; the full level itself learns from its labels only.
/// - **External** (`teacher_run: Some(folder)`): the full level of a trained run teaches every
///   level, the full one included. The teacher must take the same images and predict the data
///   set's classes.
///
/// Mask-learning stages and dense pre-training train one level alone and do not distil.
#[derive(Config, Debug, PartialEq)]
pub struct DistillationConfig {
    /// Temperature `T` of the softened outputs (> 0).
    #[config(default = 4.0)]
    pub temperature: f64,
    /// Weight `α` of the distillation term in a student's loss, in `[0, 1]`.
    #[config(default = 0.5)]
    pub alpha: f64,
    /// Run folder of an external teacher; `None` for in-place distillation.
    pub teacher_run: Option<String>,
}

impl DistillationConfig {
    /// Checks `T > 0` and `α ∈ [0, 1]`.
    pub fn validate(&self) -> crate::error::Result<()> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(TrainError::Invalid(format!(
                "the distillation temperature must be positive, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(TrainError::Invalid(format!(
                "the distillation weight alpha must lie in [0, 1], got {}",
                self.alpha
            )));
        }
        Ok(())
    }
}

/// How a run trains: optimizer, schedule, epochs, masks, hierarchy, distillation. With the
/// model's configuration it makes a [`RunConfig`], the run folder's `config.json`.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// The data set kind it trains on (decides the augmentation).
    #[config(default = "DatasetKind::Mnist")]
    pub dataset: DatasetKind,
    /// Optimizer.
    #[config(default = "OptimizerConfig::adam()")]
    pub optimizer: OptimizerConfig,
    /// Base learning rate.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Learning-rate schedule.
    #[config(default = "LrSchedule::Constant")]
    pub lr_schedule: LrSchedule,
    /// Number of epochs of joint training (after the mask stages or dense pre-training, when
    /// masks are learned or pruned: see [`epoch_plan`](Self::epoch_plan)).
    #[config(default = 2)]
    pub epochs: usize,
    /// Batch size.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Seed of the weights' initialisation, the data order and augmentation.
    #[config(default = 42)]
    pub seed: u64,
    /// Weight of each level's loss in the joint objective (Eq. 5); `None` = `1/n` each.
    pub level_loss_weights: Option<Vec<f64>>,
    /// Use only the first `train_limit` training images (quick runs and tests).
    pub train_limit: Option<usize>,
    /// Stop after this many optimizer steps, without a checkpoint or report (a smoke test
    /// of a configuration: it builds, loads the data and takes a step).
    pub max_steps: Option<usize>,
    /// Nested unstructured masks (weight connection learning or a baseline) on the layers it
    /// names; `None` for channel scheduling alone.
    pub masking: Option<MaskingConfig>,
    /// Coarse-to-fine classification: the class hierarchy and the depth each level predicts
    /// (the model's per-level classes must match it). `None`: every level predicts the data
    /// set's labels.
    pub hierarchy: Option<HierarchyConfig>,
    /// Training-time augmentation; `None`: the data set's usual one (none for MNIST, crop and
    /// flip for CIFAR).
    pub augmentation: Option<Augmentation>,
    /// Knowledge distillation on top of the joint loss: lower levels learn the full level's
    /// softened outputs (in-place), or every level learns an external teacher's. `None`: the
    /// paper's setting, all levels trained jointly from their labels alone.
    pub distillation: Option<DistillationConfig>,
    /// Weights to start from instead of the seeded draw: a record (burnpack) of this run's
    /// nested model, e.g. a dense network nested by `nestednet nestify`, or another run's
    /// `model.bpk` to fine-tune. `None`: drawn from the seed.
    pub initial_weights: Option<String>,
    /// Mix'n'Match training (the sandwich rule of US-Nets): this many random sub-networks,
    /// each mixable layer at a random level's width, are trained in every joint step beside the
    /// levels, so that `nestednet search` finds sub-networks worth serving. `None` or 0: the
    /// paper's joint training of the levels alone.
    pub mix_samples: Option<usize>,
}

impl TrainingConfig {
    /// The augmentation this run applies to its training images.
    pub fn train_augment(&self) -> Option<nestednet_data::Augment> {
        self.augmentation.unwrap_or_default().for_dataset(self.dataset)
    }

    /// Checks every setting that needs neither the model nor the data.
    pub fn validate(&self) -> crate::error::Result<()> {
        self.optimizer.validate()?;
        self.lr_schedule.validate()?;
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(TrainError::Invalid(format!(
                "learning rate must be positive, got {}",
                self.learning_rate
            )));
        }
        if self.epochs == 0 {
            return Err(TrainError::Invalid("epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(TrainError::Invalid("batch size must be at least 1".into()));
        }
        if self.max_steps == Some(0) {
            return Err(TrainError::Invalid("max_steps must be at least 1".into()));
        }
        if let Some(d) = &self.distillation {
            d.validate()?;
        }
        Ok(())
    }

    /// Checks the settings against the network they train: level counts of the loss weights,
    /// masks and hierarchy, the masked layers, the hierarchy's classes against the levels',
    /// and that consecutive levels differ (by widths, depth or masks).
    pub fn validate_for<M: NestedNetwork>(&self, network: &M) -> crate::error::Result<()> {
        self.validate()?;
        let n = network.num_levels();
        if self.mix_samples.unwrap_or(0) > 0 && network.mixable_layers().is_empty() {
            return Err(TrainError::Invalid(
                "mix training needs a model whose layers mix (channel levels of unmasked, shared layers predicting the same classes at every level)"
                    .into(),
            ));
        }
        nestednet_heads::JointLoss::new(n, self.level_loss_weights.as_deref())?;
        if let Some(masking) = &self.masking {
            masking.validate(n)?;
            masking.check_layers(network)?;
        }
        if let Some(h) = &self.hierarchy {
            h.validate(n)?;
            let classes: Vec<usize> = (0..n).map(|k| network.level_classes(k)).collect();
            if classes != h.level_classes() {
                return Err(TrainError::Invalid(format!(
                    "the hierarchy gives the levels {:?} classes but the model's levels predict {:?}",
                    h.level_classes(),
                    classes
                )));
            }
        }
        if self.masking.is_none() {
            for level in 1..n {
                if network.level_cost(level) == network.level_cost(level - 1)
                    && network.level_classes(level) == network.level_classes(level - 1)
                    && network.level_widths(level) == network.level_widths(level - 1)
                {
                    return Err(TrainError::Invalid(format!(
                        "levels {} and {level} are the same network: give them different widths or depths, or make them differ by their weight masks",
                        level - 1
                    )));
                }
            }
        }
        Ok(())
    }

    /// How the levels are made, for reports: `channels`, or the mask method and its targets
    /// (e.g. `weights, densities 0.33,0.5,1`).
    pub fn method_name(&self) -> String {
        match &self.masking {
            None => "channels".into(),
            Some(m) => {
                let method = match m.method {
                    crate::trainer::masks::MaskMethod::Learned => "weights",
                    crate::trainer::masks::MaskMethod::Random => "random",
                    crate::trainer::masks::MaskMethod::Magnitude => "magnitude",
                };
                format!("{method}, {}", m.targets)
            }
        }
    }

    /// What each of `num_levels` levels is trained and scored against.
    pub fn level_labels(&self, num_levels: usize) -> LevelLabels {
        match &self.hierarchy {
            Some(h) => LevelLabels::from_hierarchy(h),
            None => LevelLabels::fine(num_levels),
        }
    }

    /// The Mix'n'Match sub-networks trained at step `step` (see
    /// [`mix_samples`](Self::mix_samples)): for mixable layers of `levels[i]` levels each,
    /// random choices that are not a trained level (when another exists), a function of the
    /// seed and the step only, so a resumed run draws what the uninterrupted one would.
    pub fn sample_mixes(&self, levels: &[usize], step: usize) -> Vec<Vec<usize>> {
        let count = self.mix_samples.unwrap_or(0);
        if count == 0 || levels.is_empty() {
            return Vec::new();
        }
        let mut rng = nestednet_data::SplitMix64::for_stream(&[self.seed, 0x006d_6978, step as u64]);
        let any_mix = levels.len() > 1 && levels.iter().all(|&n| n > 1);
        (0..count)
            .map(|_| {
                loop {
                    let choice: Vec<usize> = levels.iter().map(|&n| rng.below(n)).collect();
                    if !any_mix || choice.iter().any(|&k| k != choice[0]) {
                        break choice;
                    }
                }
            })
            .collect()
    }

    /// The phase of every epoch of a run of `num_levels` levels, in order.
    pub fn epoch_plan(&self, num_levels: usize) -> Vec<Phase> {
        crate::trainer::masks::epoch_plan(self.masking.as_ref(), num_levels, self.epochs)
    }
}

/// Everything that defines a run, saved as the run folder's `config.json`: the model's
/// configuration (`C`: a built-in family's, such as [`NestedMnistCnnConfig`](nestednet_models::NestedMnistCnnConfig), or a user's own
/// [`NestedNetworkConfig`]), the training configuration, and, for runs started from settings
/// (the CLI, a config file), those settings with every value resolved, so that the file given
/// back to `nestednet train --config` reproduces the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(deserialize = "C: NestedNetworkConfig"))]
pub struct RunConfig<C> {
    /// Layout version of the run folder ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The model's family ([`ModelFamily::FAMILY`](nestednet_models::ModelFamily::FAMILY)),
    /// which a registry finds the configuration's type by; `None` for a network of the
    /// library's caller that belongs to no registered family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The model.
    pub model: C,
    /// How it trains.
    pub training: TrainingConfig,
    /// Where the data came from (a library run records it too, so that `eval` and `export`
    /// find them); `None` when the caller gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<nestednet_data::DataSource>,
    /// The settings the run was made from, every value resolved, as the jobs layer records
    /// them ([`TrainSettings`](crate::jobs::TrainSettings)); `None` for runs made through the
    /// library directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
}

impl<C: NestedNetworkConfig> RunConfig<C> {
    /// A run of `model` trained as `training`.
    pub fn new(model: C, training: TrainingConfig) -> Self {
        Self { format_version: FORMAT_VERSION, family: None, model, training, data: None, settings: None }
    }

    /// The same run, recording the model's family (`ModelFamily::FAMILY`).
    pub fn with_family(mut self, family: Option<String>) -> Self {
        self.family = family;
        self
    }

    /// The same run, recording the settings it was made from (as the jobs layer writes them).
    pub fn with_settings(mut self, settings: Option<serde_json::Value>) -> Self {
        self.settings = settings;
        self
    }

    /// The same run, recording where its data come from.
    pub fn with_data(mut self, data: Option<nestednet_data::DataSource>) -> Self {
        self.data = data;
        self
    }

    /// Checks the configuration against the network it builds on `device` and returns that
    /// network (unseeded: use [`seeded_model`](crate::trainer::init::seeded_model) for weights to train).
    pub fn validate(&self, device: &Device) -> crate::error::Result<C::Network> {
        if self.format_version != FORMAT_VERSION {
            return Err(TrainError::Invalid(format!(
                "run format version {} is not supported (this build reads version {FORMAT_VERSION})",
                self.format_version
            )));
        }
        crate::trainer::init::with_init_lock(|| {
            let network = self.model.init_network(device)?;
            self.training.validate_for(&network)?;
            Ok(network)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_compute() {
        let step: LrSchedule = "step:2:0.1".parse().unwrap();
        assert!((step.learning_rate(1.0, 3, 0, 10) - 0.1).abs() < 1e-12);
        assert!((step.learning_rate(1.0, 4, 0, 10) - 0.01).abs() < 1e-12);
        let cos: LrSchedule = "cosine".parse().unwrap();
        assert!((cos.learning_rate(1.0, 0, 0, 10) - 1.0).abs() < 1e-12);
        assert!((cos.learning_rate(1.0, 0, 5, 10) - 0.5).abs() < 1e-12);
        assert!(cos.learning_rate(1.0, 0, 10, 10).abs() < 1e-12);
        assert!("step:0:0.1".parse::<LrSchedule>().is_err());
        assert!("linear".parse::<LrSchedule>().is_err());
    }

    #[test]
    fn config_round_trips_and_validates() {
        let config = TrainingConfig::new().with_optimizer(OptimizerConfig::sgd());
        config.validate().unwrap();
        let json = serde_json::to_string(&config).unwrap();
        let back: TrainingConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.optimizer, OptimizerConfig::sgd());
        assert!(config.clone().with_epochs(0).validate().is_err());
        let distil = |t: f64, a: f64| {
            let d = DistillationConfig::new().with_temperature(t).with_alpha(a);
            config.clone().with_distillation(Some(d)).validate().map_err(|e| e.to_string())
        };
        distil(4.0, 0.5).unwrap();
        assert!(distil(0.0, 0.5).unwrap_err().contains("temperature must be positive"));
        assert!(distil(2.0, 1.5).unwrap_err().contains("alpha must lie in [0, 1]"));
        let device = Device::flex();
        let network = nestednet_models::NestedMnistCnnConfig::new().init(&device);
        assert!(config.clone().with_level_loss_weights(Some(vec![1.0])).validate_for(&network).is_err());
        let same =
            nestednet_models::NestedMnistCnnConfig::new().with_levels("1,1".parse().unwrap()).init(&device);
        let e = config.validate_for(&same).unwrap_err().to_string();
        assert!(e.contains("levels 0 and 1 are the same network"), "{e}");
        assert!(
            TrainingConfig::new()
                .with_optimizer(OptimizerConfig::Adam {
                    beta1: 1.5,
                    beta2: 0.9,
                    epsilon: 1e-8,
                    weight_decay: 0.0
                })
                .validate()
                .is_err()
        );
    }
}
