//! `tiny-mlp`: a nested two-hidden-layer perceptron over images, a model family of this
//! crate's own. Level `k` uses the leading units of both hidden layers; Mix'n'Match
//! sub-networks take each hidden layer's width from any level.

use burn::prelude::*;
use burn::tensor::activation::relu;
use nestednet::models::{
    LevelRequest, MixableLayer, ModelError, ModelFamily, ModelRequest, NestedNetwork, NestedNetworkConfig,
};
use nestednet::nn::{Maskable, NestedLinear, NestedLinearConfig};
use nestednet::schedule::{ChannelSchedule, LevelSpec, ScheduledLayer};
use nestednet::train::jobs::{FamilyRecipes, Recipe, RecipeLevelWeights};
use nestednet::train::trainer::{LrSchedule, OptimizerConfig};

/// Configuration of [`TinyMlp`].
#[derive(Config, Debug)]
pub struct TinyMlpConfig {
    /// Images `[channels, height, width]`.
    pub input_shape: [usize; 3],
    /// Classes.
    pub classes: usize,
    /// Width ratio of every level, core first (the last 1).
    pub ratios: Vec<f64>,
    /// Units of the two hidden layers at the full level.
    #[config(default = "[64, 32]")]
    pub hidden: [usize; 2],
}

/// Flattened image → hidden → hidden → classes, nested in the hidden units.
#[derive(Module, Debug)]
pub struct TinyMlp {
    fc1: NestedLinear,
    fc2: NestedLinear,
    fc3: NestedLinear,
    input_shape: [usize; 3],
}

impl NestedNetworkConfig for TinyMlpConfig {
    type Network = TinyMlp;

    fn init_network(&self, device: &Device) -> Result<TinyMlp, ModelError> {
        let [h1, h2] = self.hidden;
        let layers = [ScheduledLayer::split("fc1", h1), ScheduledLayer::split("fc2", h2)];
        let schedule = ChannelSchedule::new(&LevelSpec::Ratios(self.ratios.clone()), &layers)?;
        let widths = |name: &str| schedule.widths(name).expect("a scheduled layer").to_vec();
        let (n, d_in) = (schedule.num_levels(), self.input_shape.iter().product::<usize>());
        Ok(TinyMlp {
            fc1: NestedLinearConfig::new(d_in, h1, vec![d_in; n], widths("fc1")).init(device),
            fc2: NestedLinearConfig::new(h1, h2, widths("fc1"), widths("fc2")).init(device),
            fc3: NestedLinearConfig::new(h2, self.classes, widths("fc2"), vec![self.classes; n]).init(device),
            input_shape: self.input_shape,
        })
    }

    fn name(&self) -> String {
        "tiny-mlp".into()
    }
}

impl ModelFamily for TinyMlpConfig {
    const FAMILY: &'static str = "tiny-mlp";

    fn names() -> &'static [&'static str] {
        &["tiny-mlp"]
    }

    fn claims(name: &str) -> bool {
        name == "tiny-mlp"
    }

    fn from_request(request: &ModelRequest) -> Option<Result<Self, ModelError>> {
        if !Self::claims(&request.name) {
            return None;
        }
        let invalid = |why: &str| Some(Err(ModelError::Invalid(format!("tiny-mlp {why}"))));
        if !request.level_classes.is_empty() || request.unnested_first_conv || request.unnested_output {
            return invalid(
                "has one output layer for every level (no per-level classes or un-nested layers)",
            );
        }
        match &request.levels {
            LevelRequest::Channels(LevelSpec::Ratios(ratios)) => {
                Some(Ok(Self::new(request.input_shape, request.num_classes, ratios.clone())))
            }
            _ => invalid("takes its levels as width ratios"),
        }
    }
}

/// `tiny-mlp`'s own recipe: Adam at a cosine rate.
pub const TINY_MLP_RECIPE: Recipe = Recipe {
    name: "tiny-mlp",
    description: "tiny-mlp on small images",
    optimizer: OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weight_decay: 0.0 },
    learning_rate: 3e-3,
    lr_schedule: LrSchedule::Cosine { min_lr: 0.0 },
    batch_size: 32,
    epochs: 8,
    augmentation: nestednet::data::Augmentation::Usual,
    level_weights: RecipeLevelWeights::Mean,
    chosen_by: "not tuned: a test fixture",
};

/// The family's recipes, for its registration.
pub const RECIPES: FamilyRecipes = FamilyRecipes {
    recipes: &[TINY_MLP_RECIPE],
    default: |name, _| (name == "tiny-mlp").then_some(&TINY_MLP_RECIPE),
};

impl TinyMlp {
    fn mixable(&self) -> Vec<MixableLayer> {
        let n = self.num_levels();
        let layer = |name: &str, l: &NestedLinear| MixableLayer {
            name: name.into(),
            widths: (0..n).map(|k| l.level_dims(k).1).collect(),
        };
        vec![layer("fc1", &self.fc1), layer("fc2", &self.fc2)]
    }
}

impl NestedNetwork for TinyMlp {
    type Level = TinyMlp;
    type Input = Tensor<4>;
    type Output = Tensor<2>;

    fn num_levels(&self) -> usize {
        self.fc1.num_levels()
    }

    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        let x = relu(self.fc1.forward(images.flatten::<2>(1, 3), level));
        self.fc3.forward(relu(self.fc2.forward(x, level)), level)
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn extract_level(&self, level: usize) -> TinyMlp {
        TinyMlp {
            fc1: self.fc1.single_level(level),
            fc2: self.fc2.single_level(level),
            fc3: self.fc3.single_level(level),
            input_shape: self.input_shape,
        }
    }

    fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
        vec![("fc1".into(), self.fc1.level_dims(level).1), ("fc2".into(), self.fc2.level_dims(level).1)]
    }

    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2), ("fc3".into(), &self.fc3)]
    }

    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        vec![("fc1".into(), &mut self.fc1), ("fc2".into(), &mut self.fc2), ("fc3".into(), &mut self.fc3)]
    }

    fn mixable_layers(&self) -> Vec<MixableLayer> {
        match self.weight_layers().iter().any(|(_, l)| l.mask().is_some()) {
            true => Vec::new(),
            false => self.mixable(),
        }
    }

    fn mixed(&self, choice: &[usize]) -> Result<Self, ModelError> {
        let layers = self.mixable_layers();
        if layers.is_empty() || choice.len() != layers.len() || choice.iter().any(|&k| k >= self.num_levels())
        {
            return Err(ModelError::Invalid(format!("{choice:?} is not a sub-network of tiny-mlp's levels")));
        }
        let (w1, w2) = (layers[0].widths[choice[0]], layers[1].widths[choice[1]]);
        let d_in = self.input_shape.iter().product();
        Ok(TinyMlp {
            fc1: self.fc1.single_block(d_in, w1),
            fc2: self.fc2.single_block(w1, w2),
            fc3: self.fc3.single_block(w2, self.fc3.level_dims(0).1),
            input_shape: self.input_shape,
        })
    }

    fn forward_mix(&self, images: Tensor<4>, choice: &[usize]) -> Result<Tensor<2>, ModelError> {
        let layers = self.mixable_layers();
        if layers.is_empty() || choice.len() != layers.len() {
            return Err(ModelError::Invalid(format!("{choice:?} is not a sub-network of tiny-mlp's levels")));
        }
        let x = relu(self.fc1.forward_block(images.flatten::<2>(1, 3), layers[0].widths[choice[0]]));
        let x = relu(self.fc2.forward_block(x, layers[1].widths[choice[1]]));
        Ok(self.fc3.forward_block(x, self.fc3.level_dims(0).1))
    }
}
