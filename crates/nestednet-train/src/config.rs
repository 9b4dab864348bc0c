//! The configuration of a training run, saved as `config.json` in the run folder.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use nestednet_data::DatasetKind;
use nestednet_models::ModelConfig;
#[cfg(test)]
use nestednet_models::NestedMnistCnnConfig;
use serde::{Deserialize, Serialize};

// `Result` stays qualified: `#[derive(Config)]` expands to code naming the prelude's `Result`.
use crate::{HierarchyConfig, LevelLabels, MaskingConfig, Phase, TrainError};

/// Version of the run-folder layout and record paths; bumped whenever an old run folder could
/// no longer be loaded.
///
/// - 1: channel scheduling only.
/// - 2: weight masks (`masked_layers`, `masking`, level maps in the records), coarse-to-fine
///   heads (`level_classes`, `hierarchy`), `fc2` optional.
pub const FORMAT_VERSION: u32 = 3;

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

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> crate::Result<()> {
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
    pub fn validate(&self) -> crate::Result<()> {
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

impl core::str::FromStr for LrSchedule {
    type Err = TrainError;

    /// `constant`, `step:EVERY:GAMMA` (e.g. `step:30:0.1`) or `cosine[:MIN_LR]`.
    fn from_str(s: &str) -> crate::Result<Self> {
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
/// [`LevelLabels::lift_logits`](crate::LevelLabels::lift_logits)).
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
    pub fn validate(&self) -> crate::Result<()> {
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

/// Everything that defines a training run. Saved as `config.json` in the run folder.
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// The nested model (including its levels).
    pub model: ModelConfig,
    /// The data set it trains on.
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
    /// Nested unstructured masks (weight connection learning or a baseline); `None` for
    /// channel scheduling alone. The masked layers are named in the model configuration.
    pub masking: Option<MaskingConfig>,
    /// Coarse-to-fine classification: the class hierarchy and the depth each level predicts
    /// (the model's `level_classes` must match it). `None`: every level predicts the data
    /// set's labels.
    pub hierarchy: Option<HierarchyConfig>,
    /// Knowledge distillation on top of the joint loss: lower levels learn the full level's
    /// softened outputs (in-place), or every level learns an external teacher's. `None`: the
    /// paper's setting, all levels trained jointly from their labels alone.
    pub distillation: Option<DistillationConfig>,
    /// Layout version of the run folder.
    #[config(default = 3)]
    pub format_version: u32,
}

impl TrainingConfig {
    /// Checks every setting that does not need the data.
    pub fn validate(&self) -> crate::Result<()> {
        self.model.validate()?;
        self.optimizer.validate()?;
        self.lr_schedule.validate()?;
        nestednet_heads::JointLoss::new(self.model.num_levels(), self.level_loss_weights.as_deref())?;
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
        if let Some(masking) = &self.masking {
            masking.validate(self.model.num_levels())?;
            if self.model.masked_layers().is_empty() {
                return Err(TrainError::Invalid(
                    "masks were requested but the model masks no layer (set masked_layers)".into(),
                ));
            }
        }
        if let Some(h) = &self.hierarchy {
            h.validate(self.model.num_levels())?;
            if self.model.level_classes() != h.level_classes() {
                return Err(TrainError::Invalid(format!(
                    "the hierarchy gives the levels {:?} classes but the model's level_classes are {:?}",
                    h.level_classes(),
                    self.model.level_classes()
                )));
            }
        }
        if let Some(d) = &self.distillation {
            d.validate()?;
        }
        if self.format_version != FORMAT_VERSION {
            return Err(TrainError::Invalid(format!(
                "run format version {} is not supported (this build reads version {FORMAT_VERSION})",
                self.format_version
            )));
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
                    crate::MaskMethod::Learned => "weights",
                    crate::MaskMethod::Random => "random",
                    crate::MaskMethod::Magnitude => "magnitude",
                };
                format!("{method}, {}", m.targets)
            }
        }
    }

    /// What each level is trained and scored against.
    pub fn level_labels(&self) -> LevelLabels {
        match &self.hierarchy {
            Some(h) => LevelLabels::from_hierarchy(h),
            None => LevelLabels::fine(self.model.num_levels()),
        }
    }

    /// The phase of every epoch of the run, in order.
    pub fn epoch_plan(&self) -> Vec<Phase> {
        crate::epoch_plan(self.masking.as_ref(), self.model.num_levels(), self.epochs)
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
        let config =
            TrainingConfig::new(NestedMnistCnnConfig::new().into()).with_optimizer(OptimizerConfig::sgd());
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
        assert!(config.clone().with_level_loss_weights(Some(vec![1.0])).validate().is_err());
        assert!(
            TrainingConfig::new(NestedMnistCnnConfig::new().into())
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
