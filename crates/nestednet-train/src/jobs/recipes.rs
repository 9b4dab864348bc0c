//! Default training recipes: how a model is trained when the user gives no recipe settings.
//!
//! A recipe belongs to a model family the way timm's pretrained configurations carry theirs:
//! the [`Registry`](crate::jobs::registry::Registry) holds each family's recipes and the rule
//! that says which one a model name trains with by default. Every field can be overridden on its
//! own by a flag or a config file; the run records the recipe's name and every resolved value.
//! How each default was chosen is in [`Recipe::chosen_by`] and, with the measurements, in
//! `docs/RECIPES.md`.

use nestednet_data::Augmentation;

use crate::trainer::config::{LrSchedule, OptimizerConfig, TrainingConfig};

/// How a recipe weighs the levels' losses in the joint objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeLevelWeights {
    /// The paper's Eq. 5: the mean, `1/n` each.
    Mean,
    /// Smaller levels first: level `k` of `n` weighs `(n − k) / Σ`, so the core weighs `n` times
    /// the full level (for fine-tuning, when the full level starts trained).
    SmallerFirst,
}

impl RecipeLevelWeights {
    /// The weights of `levels` levels, core first; `None` for the mean (the default of
    /// [`JointLoss`](nestednet_heads::JointLoss)).
    pub fn weights(self, levels: usize) -> Option<Vec<f64>> {
        match self {
            Self::Mean => None,
            Self::SmallerFirst => {
                let total = (levels * (levels + 1) / 2) as f64;
                Some((0..levels).map(|k| (levels - k) as f64 / total).collect())
            }
        }
    }
}

/// How a model is trained by default.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The name runs record and `--recipe` takes.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// The optimizer, with its hyper-parameters (momentum, weight decay).
    pub optimizer: OptimizerConfig,
    /// Base learning rate.
    pub learning_rate: f64,
    /// Learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Batch size.
    pub batch_size: usize,
    /// Epochs of joint training (after any mask stages).
    pub epochs: usize,
    /// Training-time augmentation.
    pub augmentation: Augmentation,
    /// How the levels' losses are weighed.
    pub level_weights: RecipeLevelWeights,
    /// How the values were chosen (a measurement on a validation split, or the literature).
    pub chosen_by: &'static str,
}

/// Adam with PyTorch's β and ε, and `weight_decay`.
const fn adam(weight_decay: f32) -> OptimizerConfig {
    OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay }
}

/// SGD with `momentum` (no dampening, no Nesterov) and `weight_decay`.
const fn sgd(momentum: f64, weight_decay: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd { momentum, nesterov: false, weight_decay }
}

/// Cosine annealing to zero.
const COSINE: LrSchedule = LrSchedule::Cosine { min_lr: 0.0 };

impl Recipe {
    /// The library's plain [`TrainingConfig`] defaults (Adam 1e-3, constant rate, batch 64,
    /// 2 epochs): the recipe of a model that declares none, and of every run made before
    /// recipes existed.
    pub const PLAIN: Recipe = Recipe {
        name: "plain",
        description: "Adam 1e-3 at a constant rate: the library's TrainingConfig defaults",
        optimizer: adam(0.0),
        learning_rate: 1e-3,
        lr_schedule: LrSchedule::Constant,
        batch_size: 64,
        epochs: 2,
        augmentation: Augmentation::Usual,
        level_weights: RecipeLevelWeights::Mean,
        chosen_by: "not tuned: the defaults before recipes existed",
    };

    /// The recipe as a training configuration: its optimizer, learning rate and schedule,
    /// batch size, epochs and augmentation, the other settings at their defaults.
    pub fn training(&self) -> TrainingConfig {
        TrainingConfig::new()
            .with_optimizer(self.optimizer.clone())
            .with_learning_rate(self.learning_rate)
            .with_lr_schedule(self.lr_schedule.clone())
            .with_batch_size(self.batch_size)
            .with_epochs(self.epochs)
            .with_augmentation(Some(self.augmentation))
    }

    /// One line: optimizer, learning rate and schedule, batch size, epochs, augmentation.
    pub fn summary(&self) -> String {
        let (optimizer, weight_decay) = match self.optimizer {
            OptimizerConfig::Adam { weight_decay, .. } => {
                (format!("adam lr {}", self.learning_rate), weight_decay)
            }
            OptimizerConfig::Sgd { momentum, weight_decay, .. } => {
                (format!("sgd lr {} momentum {momentum}", self.learning_rate), weight_decay)
            }
        };
        let schedule = match self.lr_schedule {
            LrSchedule::Constant => "constant".to_string(),
            ref other => other.to_string(),
        };
        let weights = match self.level_weights {
            RecipeLevelWeights::Mean => "",
            RecipeLevelWeights::SmallerFirst => ", level losses weighted n-k (smaller levels first)",
        };
        format!(
            "{optimizer}, weight decay {weight_decay}, {schedule} schedule, batch {}, {} epochs, augmentation {}{weights}",
            self.batch_size, self.epochs, self.augmentation
        )
    }
}

impl core::fmt::Display for Recipe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.name, self.summary())
    }
}

/// What a default recipe may depend on besides the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecipeContext {
    /// The levels differ by learned or random weight masks (their stages come on top of the
    /// recipe's epochs).
    pub weight_masks: bool,
    /// The run starts from given weights (`--init-from`, or a dense network `nestednet
    /// nestify` nested) instead of a random draw: a fine-tuning.
    pub fine_tune: bool,
}

/// A family's recipes and the rule that picks its default one for a model name (`None`: not
/// this family's name, or the family has no default: [`Recipe::PLAIN`]).
#[derive(Debug, Clone, Copy)]
pub struct FamilyRecipes {
    /// The recipes.
    pub recipes: &'static [Recipe],
    /// The default rule.
    pub default: fn(&str, RecipeContext) -> Option<&'static Recipe>,
}

impl FamilyRecipes {
    /// No recipe of its own: every model of the family trains with [`Recipe::PLAIN`].
    pub const NONE: FamilyRecipes = FamilyRecipes { recipes: &[], default: |_, _| None };
}

/// `mnist-cnn`'s default recipe, for channel levels and weight masks alike (chosen on a
/// validation split of mnist10k's training set: `docs/RECIPES.md`).
pub const MNIST_CNN_RECIPE: Recipe = Recipe {
    name: "mnist-cnn",
    description: "mnist-cnn on small grey-scale images (channel levels, weight masks, hierarchies)",
    optimizer: adam(0.0),
    learning_rate: 1e-3,
    lr_schedule: COSINE,
    batch_size: 32,
    epochs: 4,
    augmentation: Augmentation::Usual,
    level_weights: RecipeLevelWeights::Mean,
    chosen_by: "validation split of mnist10k (7,000 / 1,000), docs/RECIPES.md",
};

/// `mnist-cnn` fine-tuned from given weights (a dense network nestified, `--init-from`): one
/// epoch at a higher learning rate than from scratch, the smaller levels' losses weighing
/// more, since the full level starts trained and the small ones from pruned weights (chosen on
/// a validation split: `docs/RECIPES.md`).
pub const MNIST_CNN_FINE_TUNE_RECIPE: Recipe = Recipe {
    name: "mnist-cnn-fine-tune",
    description: "mnist-cnn fine-tuned from given weights (nestify, --init-from)",
    optimizer: adam(0.0),
    learning_rate: 3e-3,
    lr_schedule: COSINE,
    batch_size: 32,
    epochs: 1,
    augmentation: Augmentation::Usual,
    level_weights: RecipeLevelWeights::SmallerFirst,
    chosen_by: "validation split of mnist10k (7,000 / 1,000), nestified dense networks, docs/RECIPES.md",
};

/// `mnist-cnn`'s recipes.
pub const MNIST_CNN_RECIPES: FamilyRecipes = FamilyRecipes {
    recipes: &[MNIST_CNN_RECIPE, MNIST_CNN_FINE_TUNE_RECIPE],
    default: |name, context| {
        let recipe = if context.fine_tune { &MNIST_CNN_FINE_TUNE_RECIPE } else { &MNIST_CNN_RECIPE };
        (name == "mnist-cnn").then_some(recipe)
    },
};

/// `mnist-resnet`'s recipe (chosen on a validation split of mnist10k's training set:
/// `docs/RECIPES.md`).
pub const MNIST_RESNET_RECIPE: Recipe = Recipe {
    name: "mnist-resnet",
    description: "mnist-resnet on small grey-scale images (channel and layer levels, weight masks, hierarchies)",
    optimizer: sgd(0.9, 5e-4),
    learning_rate: 0.3,
    lr_schedule: COSINE,
    batch_size: 32,
    epochs: 5,
    augmentation: Augmentation::Usual,
    level_weights: RecipeLevelWeights::Mean,
    chosen_by: "validation split of mnist10k (7,000 / 1,000), docs/RECIPES.md",
};

/// The CIFAR recipe of the literature the other residual networks train with.
pub const CIFAR_RESNET_RECIPE: Recipe = Recipe {
    name: "cifar-resnet",
    description: "resnet-N, wrn-D-K and resnet-18 on CIFAR-sized colour images",
    optimizer: sgd(0.9, 5e-4),
    learning_rate: 0.1,
    lr_schedule: COSINE,
    batch_size: 128,
    epochs: 200,
    augmentation: Augmentation::Usual,
    level_weights: RecipeLevelWeights::Mean,
    chosen_by: "the literature's CIFAR recipe (He et al. 2016, Zagoruyko & Komodakis 2016), not measured here: no CIFAR data on this machine",
};

/// The residual networks' recipes.
pub const RESNET_RECIPES: FamilyRecipes = FamilyRecipes {
    recipes: &[MNIST_RESNET_RECIPE, CIFAR_RESNET_RECIPE],
    default: |name, _| match name {
        "mnist-resnet" => Some(&MNIST_RESNET_RECIPE),
        _ if name.starts_with("resnet-") || name.starts_with("wrn-") => Some(&CIFAR_RESNET_RECIPE),
        _ => None,
    },
};

/// The ViTs' recipe: the usual small-ViT settings, not yet tuned on a validation split.
pub const VIT_RECIPE: Recipe = Recipe {
    name: "vit",
    description: "vit-tiny and vit-small on small images (heads, feed-forward, width and depth levels)",
    optimizer: adam(0.0),
    learning_rate: 1e-3,
    lr_schedule: COSINE,
    batch_size: 64,
    epochs: 10,
    augmentation: Augmentation::Usual,
    level_weights: RecipeLevelWeights::Mean,
    chosen_by: "the usual settings of small ViTs trained from scratch (Adam 1e-3, cosine schedule), not tuned on a validation split",
};

/// The ViTs' recipes.
pub const VIT_RECIPES: FamilyRecipes = FamilyRecipes {
    recipes: &[VIT_RECIPE],
    default: |name, _| name.starts_with("vit-").then_some(&VIT_RECIPE),
};

/// The text transformers' recipe (classifiers and language models): Adam at 1e-3 with a
/// cosine schedule, as for the ViTs; batch 32 windows, since a window of a corpus carries a
/// target per position.
pub const TEXT_RECIPE: Recipe = Recipe {
    name: "text",
    description: "text-tiny, text-small, lm-tiny and lm-small on byte windows (heads, feed-forward, width and depth levels)",
    optimizer: adam(0.0),
    learning_rate: 1e-3,
    lr_schedule: COSINE,
    batch_size: 32,
    epochs: 4,
    augmentation: Augmentation::None,
    level_weights: RecipeLevelWeights::Mean,
    chosen_by: "the usual settings of small transformers trained from scratch (Adam 1e-3, cosine schedule), not tuned on a validation split",
};

/// The text transformers' recipes (both families, classifier and language model).
pub const TEXT_RECIPES: FamilyRecipes = FamilyRecipes {
    recipes: &[TEXT_RECIPE],
    default: |name, _| (name.starts_with("text-") || name.starts_with("lm-")).then_some(&TEXT_RECIPE),
};
