//! Default training recipes: how a model is trained when the user gives no recipe settings.
//!
//! A recipe belongs to a model the way timm's pretrained configurations carry theirs: each
//! [`ModelFamily`](crate::ModelFamily) lists its recipes and says which one a model name
//! trains with by default ([`ModelConfig::default_recipe`](crate::ModelConfig::default_recipe)).
//! Every field can be overridden on its own by a flag or a config file; the run records the
//! recipe's name and every resolved value. How each default was chosen is in
//! [`Recipe::chosen_by`] and, with the measurements, in `docs/RECIPES.md`.

use nestednet_data::Augmentation;
use serde::{Deserialize, Serialize};

/// A recipe's optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipeOptimizer {
    /// Adam (β = 0.9, 0.999; ε = 1e-8).
    Adam,
    /// SGD with momentum.
    Sgd,
}

/// A recipe's learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipeSchedule {
    /// The base learning rate throughout.
    Constant,
    /// Cosine annealing from the base rate to zero over all training steps.
    Cosine,
}

/// How a recipe weighs the levels' losses in the joint objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    /// The optimizer.
    pub optimizer: RecipeOptimizer,
    /// Base learning rate.
    pub learning_rate: f64,
    /// SGD momentum (unused by Adam).
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub lr_schedule: RecipeSchedule,
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

impl Recipe {
    /// The library's plain [`TrainingConfig`]-style defaults (Adam 1e-3, constant rate, batch
    /// 64, 2 epochs): the recipe of a model that declares none, and of every run made before
    /// recipes existed.
    pub const PLAIN: Recipe = Recipe {
        name: "plain",
        description: "Adam 1e-3 at a constant rate: the library's TrainingConfig defaults",
        optimizer: RecipeOptimizer::Adam,
        learning_rate: 1e-3,
        momentum: 0.9,
        weight_decay: 0.0,
        lr_schedule: RecipeSchedule::Constant,
        batch_size: 64,
        epochs: 2,
        augmentation: Augmentation::Usual,
        level_weights: RecipeLevelWeights::Mean,
        chosen_by: "not tuned: the defaults before recipes existed",
    };

    /// One line: optimizer, learning rate and schedule, batch size, epochs, augmentation.
    pub fn summary(&self) -> String {
        let optimizer = match self.optimizer {
            RecipeOptimizer::Adam => format!("adam lr {}", self.learning_rate),
            RecipeOptimizer::Sgd => format!("sgd lr {} momentum {}", self.learning_rate, self.momentum),
        };
        let schedule = match self.lr_schedule {
            RecipeSchedule::Constant => "constant",
            RecipeSchedule::Cosine => "cosine",
        };
        let weights = match self.level_weights {
            RecipeLevelWeights::Mean => "",
            RecipeLevelWeights::SmallerFirst => ", level losses weighted n-k (smaller levels first)",
        };
        format!(
            "{optimizer}, weight decay {}, {schedule} schedule, batch {}, {} epochs, augmentation {}{weights}",
            self.weight_decay, self.batch_size, self.epochs, self.augmentation
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
