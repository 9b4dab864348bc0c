//! The built-in models, registered in one place.
//!
//! [`model_registry!`] turns one list of `Variant(Config => Network, Level)` entries into
//! [`ModelConfig`] (what a run folder stores), [`NestedModel`] (what training holds) and
//! [`LevelModel`] (one exported level), with every trait implementation delegating to the
//! entries. Adding a model is one file (its configuration implementing [`ModelFamily`] and
//! [`NestedNetworkConfig`], its network implementing [`NestedNetwork`]) plus one line in the
//! list at the bottom of this file. Nothing else in the workspace names a model.

use burn::module::Module;
use burn::prelude::*;
use nestednet_nn::Maskable;
use nestednet_schedule::{LatticeSpec, LevelSpec};
use serde::{Deserialize, Serialize};

use crate::{
    ChannelImportance, LevelCost, MixableLayer, ModelError, NestedNetwork, NestedNetworkConfig, Recipe,
    RecipeContext,
};
use crate::{MnistCnn, NestedMnistCnn, NestedMnistCnnConfig, NestedResNet, NestedResNetConfig};

/// How the levels of a requested model are laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum LevelRequest {
    /// Channel scheduling: width ratios (`0.25,0.5,1`) or explicit per-layer channel counts.
    Channels(LevelSpec),
    /// Channel and layer scheduling: a lattice of (width, blocks per stage) pairs (residual
    /// networks).
    Lattice(LatticeSpec),
}

impl LevelRequest {
    /// Number of levels requested.
    pub fn num_levels(&self) -> usize {
        match self {
            Self::Channels(spec) => spec.num_levels(),
            Self::Lattice(lattice) => lattice.num_levels(),
        }
    }
}

/// Everything the registry needs to build a model: which one, for what data, with which
/// levels and heads. The data decide the input shape and the classes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    /// Registry name (`mnist-cnn`, `mnist-resnet`, `resnet-56`, `wrn-32-4`, `resnet-18`, …).
    pub name: String,
    /// Images `[channels, height, width]`, from the data set.
    pub input_shape: [usize; 3],
    /// Classes of the data set (what the full level predicts).
    pub num_classes: usize,
    /// Classes each level predicts, core first (coarse-to-fine levels); empty: every level
    /// predicts `num_classes`.
    pub level_classes: Vec<usize>,
    /// The levels.
    pub levels: LevelRequest,
    /// Give every level its own first convolution (the paper's un-nested first layer).
    pub unnested_first_conv: bool,
    /// Give every level its own output layer (the paper's un-nested output layer).
    pub unnested_output: bool,
}

impl ModelRequest {
    /// The model `name` for images of `input_shape` and `num_classes` classes, with `levels`,
    /// every level predicting every class, nothing un-nested.
    pub fn new(
        name: impl Into<String>,
        input_shape: [usize; 3],
        num_classes: usize,
        levels: LevelRequest,
    ) -> Self {
        Self {
            name: name.into(),
            input_shape,
            num_classes,
            level_classes: Vec::new(),
            levels,
            unnested_first_conv: false,
            unnested_output: false,
        }
    }

    /// Channel scheduling by parameter budget: width ratios (one per level, core first) whose
    /// levels hold, as nearly as whole channels allow, the fractions `densities` of the full
    /// level's parameters (`0.5, 1.0` = "2 levels at 2× and 1× compression"), for the model
    /// this request names. Densities must lie in (0, 1], grow strictly and end at 1. Only
    /// shapes are used: nothing is drawn on `device`.
    pub fn ratios_for_densities(&self, densities: &[f64], device: &Device) -> crate::Result<LevelSpec> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if densities.is_empty() {
            return bad("give at least one density".into());
        }
        for (level, &d) in densities.iter().enumerate() {
            if !(d > 0.0 && d <= 1.0) {
                return bad(format!("density of level {level} is {d}: it must be in (0, 1]"));
            }
            if level > 0 && d <= densities[level - 1] {
                return bad(format!(
                    "density of level {level} ({d}) is not larger than level {}'s ({}): channel levels must grow",
                    level - 1,
                    densities[level - 1]
                ));
            }
        }
        if densities[densities.len() - 1] != 1.0 {
            return bad("the full (last) level has density 1".into());
        }
        // Plain levels: per-level heads or stems would change what a level holds.
        let with_levels = |ratios: Vec<f64>| ModelRequest {
            levels: LevelRequest::Channels(LevelSpec::Ratios(ratios)),
            level_classes: Vec::new(),
            unnested_first_conv: false,
            unnested_output: false,
            ..self.clone()
        };
        // The core's parameters of a 2-level network at ratio r, over the full network's
        // (None if r leaves a layer empty).
        let fraction = |r: f64| {
            let config = ModelConfig::from_request(&with_levels(vec![r, 1.0])).ok()?;
            let network = config.init_network(device).ok()?;
            Some(network.level_cost(0).params as f64 / network.level_cost(1).params as f64)
        };
        let mut ratios = Vec::new();
        for &d in &densities[..densities.len() - 1] {
            // The level's parameters grow with r: bisect for the smallest r reaching d.
            let (mut lo, mut hi) = (0.0f64, 1.0f64);
            for _ in 0..50 {
                let mid = 0.5 * (lo + hi);
                match fraction(mid) {
                    Some(f) if f >= d => hi = mid,
                    _ => lo = mid,
                }
            }
            // Whole channels: take whichever neighbour of the crossing is closer to d.
            let below = fraction(lo).map_or(f64::INFINITY, |f| (f - d).abs());
            let above = fraction(hi).map_or(f64::INFINITY, |f| (f - d).abs());
            ratios.push(if below < above { lo } else { hi });
        }
        ratios.push(1.0);
        let spec = LevelSpec::Ratios(ratios);
        ModelConfig::from_request(&with_levels(match &spec {
            LevelSpec::Ratios(r) => r.clone(),
            LevelSpec::Channels(_) => unreachable!("ratios"),
        }))?;
        Ok(spec)
    }

    /// The input-size error for `model` with `reason`.
    pub fn input_error(&self, model: &str, reason: impl Into<String>) -> ModelError {
        let [channels, height, width] = self.input_shape;
        ModelError::InputSize { model: model.into(), channels, height, width, reason: reason.into() }
    }
}

/// A model family the registry can build by name.
pub trait ModelFamily: NestedNetworkConfig + Sized {
    /// The names it answers to, for help texts and errors (`resnet-N`, `wrn-D-K`, …).
    fn names() -> &'static [&'static str];

    /// The configuration `request` asks for, or `None` when `request.name` is not one of this
    /// family's names. Images the model cannot take are an error naming the size.
    fn from_request(request: &ModelRequest) -> Option<crate::Result<Self>>;

    /// The training recipes this family offers (see [`Recipe`]); none by default.
    fn recipes() -> &'static [Recipe] {
        &[]
    }

    /// The recipe the model `name` trains with when the user gives none, or `None` when
    /// `name` is not one of this family's (or the family has no recipe: [`Recipe::PLAIN`]).
    fn default_recipe(name: &str, context: RecipeContext) -> Option<&'static Recipe> {
        let _ = (name, context);
        None
    }
}

/// Defines the registry enums from a list of `Variant(Config => Network, Level)` entries.
macro_rules! model_registry {
    ($($(#[$doc:meta])* $variant:ident($config:ty => $network:ty, $level:ty)),+ $(,)?) => {
        /// The configuration of a built-in model (see the list in `registry.rs`).
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ModelConfig {
            $($(#[$doc])* $variant($config),)+
        }

        /// A built-in nested model.
        // One model is held at a time: the variants' size difference costs nothing worth a box.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum NestedModel {
            $($(#[$doc])* $variant($network),)+
        }

        /// One level of a built-in model as a standalone network.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum LevelModel {
            $($(#[$doc])* $variant($level),)+
        }

        $(impl From<$config> for ModelConfig {
            fn from(config: $config) -> Self {
                Self::$variant(config)
            }
        })+

        impl ModelConfig {
            /// Every name the registry answers to.
            pub fn names() -> Vec<&'static str> {
                let mut names = Vec::new();
                $(names.extend(<$config as ModelFamily>::names());)+
                names
            }

            /// Every named training recipe: [`Recipe::PLAIN`] and each family's.
            pub fn recipes() -> Vec<&'static Recipe> {
                let mut recipes = vec![&Recipe::PLAIN];
                $(recipes.extend(<$config as ModelFamily>::recipes());)+
                recipes
            }

            /// The recipe called `name`.
            pub fn recipe(name: &str) -> crate::Result<&'static Recipe> {
                Self::recipes().into_iter().find(|r| r.name == name).ok_or_else(|| ModelError::UnknownRecipe {
                    name: name.to_string(),
                    known: Self::recipes().iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
                })
            }

            /// The recipe the model called `model` trains with when the user gives none
            /// ([`Recipe::PLAIN`] for names no family claims).
            pub fn default_recipe(model: &str, context: RecipeContext) -> &'static Recipe {
                $(if let Some(recipe) = <$config as ModelFamily>::default_recipe(model, context) {
                    return recipe;
                })+
                &Recipe::PLAIN
            }

            /// The built-in model `request` asks for.
            pub fn from_request(request: &ModelRequest) -> crate::Result<Self> {
                $(if let Some(config) = <$config as ModelFamily>::from_request(request) {
                    return config.map(Self::$variant);
                })+
                Err(ModelError::UnknownModel { name: request.name.clone(), known: Self::names().join(", ") })
            }
        }

        impl NestedNetworkConfig for ModelConfig {
            type Network = NestedModel;

            fn init_network(&self, device: &Device) -> crate::Result<NestedModel> {
                match self {
                    $(Self::$variant(c) => c.init_network(device).map(NestedModel::$variant),)+
                }
            }

            fn name(&self) -> String {
                match self {
                    $(Self::$variant(c) => c.name(),)+
                }
            }

            fn level_alone(&self, level: usize) -> Option<Self> {
                match self {
                    $(Self::$variant(c) => c.level_alone(level).map(Self::$variant),)+
                }
            }
        }

        model_registry!(@delegate NestedModel, LevelModel, $($variant),+);
        model_registry!(@delegate LevelModel, LevelModel, $($variant),+);
    };

    (@delegate $enum:ident, $level_enum:ident, $($variant:ident),+) => {
        impl NestedNetwork for $enum {
            type Level = $level_enum;
            // Every built-in model classifies images.
            type Input = Tensor<4>;
            type Output = Tensor<2>;

            fn num_levels(&self) -> usize {
                match self { $(Self::$variant(m) => m.num_levels(),)+ }
            }

            fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
                match self { $(Self::$variant(m) => m.forward_level(images, level),)+ }
            }

            fn input_shape(&self) -> [usize; 3] {
                match self { $(Self::$variant(m) => m.input_shape(),)+ }
            }

            fn extract_level(&self, level: usize) -> $level_enum {
                match self { $(Self::$variant(m) => $level_enum::$variant(m.extract_level(level)),)+ }
            }

            fn level_name(&self, level: usize) -> String {
                match self { $(Self::$variant(m) => m.level_name(level),)+ }
            }

            fn find_level(&self, key: &str) -> crate::Result<usize> {
                match self { $(Self::$variant(m) => m.find_level(key),)+ }
            }

            fn level_cost(&self, level: usize) -> LevelCost {
                match self { $(Self::$variant(m) => m.level_cost(level),)+ }
            }

            fn level_classes(&self, level: usize) -> usize {
                match self { $(Self::$variant(m) => m.level_classes(level),)+ }
            }

            fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
                match self { $(Self::$variant(m) => m.level_widths(level),)+ }
            }

            fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
                match self { $(Self::$variant(m) => m.weight_layers(),)+ }
            }

            fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
                match self { $(Self::$variant(m) => m.weight_layers_mut(),)+ }
            }

            fn level_uses_layer(&self, layer: &str, level: usize) -> bool {
                match self { $(Self::$variant(m) => m.level_uses_layer(layer, level),)+ }
            }

            fn levels_train_side_by_side(&self) -> bool {
                match self { $(Self::$variant(m) => m.levels_train_side_by_side(),)+ }
            }

            fn export_name(&self, path: &str) -> String {
                match self { $(Self::$variant(m) => m.export_name(path),)+ }
            }

            fn mixable_layers(&self) -> Vec<MixableLayer> {
                match self { $(Self::$variant(m) => m.mixable_layers(),)+ }
            }

            fn mixed(&self, choice: &[usize]) -> crate::Result<Self> {
                match self { $(Self::$variant(m) => m.mixed(choice).map(Self::$variant),)+ }
            }

            fn forward_mix(&self, images: Tensor<4>, choice: &[usize]) -> crate::Result<Tensor<2>> {
                match self { $(Self::$variant(m) => m.forward_mix(images, choice),)+ }
            }

            fn reorder_channels(&self, importance: ChannelImportance) -> crate::Result<(Self, crate::ChannelOrders)> {
                match self {
                    $(Self::$variant(m) => m.reorder_channels(importance).map(|(m, o)| (Self::$variant(m), o)),)+
                }
            }

            fn load_dense(&mut self, dense: &$level_enum) -> crate::Result<()> {
                match (self, dense) {
                    $((Self::$variant(m), $level_enum::$variant(d)) => m.load_dense(d),)+
                    #[allow(unreachable_patterns)]
                    _ => Err(ModelError::Invalid("the dense network is another model than the nested one".into())),
                }
            }
        }
    };
}

model_registry! {
    /// `mnist-cnn`: two convolutions and two linear layers (the project's benchmark model).
    MnistCnn(NestedMnistCnnConfig => NestedMnistCnn, MnistCnn),
    /// Residual networks: `mnist-resnet`, `resnet-N`, `wrn-D-K`, `resnet-18`.
    ResNet(NestedResNetConfig => NestedResNet, NestedResNet),
}

impl NestedModel {
    /// The `mnist-cnn`, if this is one.
    pub fn as_mnist_cnn(&self) -> Option<&NestedMnistCnn> {
        match self {
            Self::MnistCnn(m) => Some(m),
            _ => None,
        }
    }

    /// The residual network, if this is one.
    pub fn as_resnet(&self) -> Option<&NestedResNet> {
        match self {
            Self::ResNet(m) => Some(m),
            _ => None,
        }
    }
}

impl LevelModel {
    /// Logits `[batch, classes]` of the level for images `[batch, c, h, w]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_level(images, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure_level;
    use nestednet_schedule::LevelSpec;

    fn request(name: &str, shape: [usize; 3], levels: LevelRequest) -> ModelRequest {
        ModelRequest::new(name, shape, 10, levels)
    }

    fn ratios(r: &[f64]) -> LevelRequest {
        LevelRequest::Channels(LevelSpec::Ratios(r.to_vec()))
    }

    /// The costs the layers record during a forward pass (what a user's network gets for
    /// free) equal the built-in models' own counts, which other tests check against hand
    /// counts, in every head and stem form.
    #[test]
    fn measured_costs_equal_the_models_own_counts() {
        let device = Device::flex();
        let lattice = LevelRequest::Lattice("0.5,1;1,2".parse().unwrap());
        let mut requests = vec![
            request("mnist-cnn", [1, 28, 28], ratios(&[0.25, 0.5, 1.0])),
            request("mnist-resnet", [1, 28, 28], lattice.clone()),
            request("wrn-16-2", [3, 32, 32], ratios(&[0.5, 1.0])),
            request("resnet-18", [3, 64, 64], ratios(&[0.25, 1.0])),
        ];
        for mut r in requests.clone() {
            r.unnested_first_conv = true;
            r.unnested_output = true;
            requests.push(r);
        }
        let mut coarse = request("mnist-resnet", [1, 28, 28], lattice);
        coarse.level_classes = vec![2, 3, 5, 10];
        requests.push(coarse);
        for r in requests {
            let model = ModelConfig::from_request(&r).unwrap().init_network(&device).unwrap();
            for level in 0..model.num_levels() {
                let (measured, classes) = measure_level(&model, level);
                let what = format!("{} level {level} (unnested {})", r.name, r.unnested_output);
                assert_eq!(measured, model.level_cost(level), "{what}");
                assert_eq!(classes, model.level_classes(level), "{what}");
            }
        }
    }

    #[test]
    fn channel_levels_from_parameter_budgets() {
        let device = Device::flex();
        for name in ["mnist-cnn", "mnist-resnet"] {
            let r = request(name, [1, 28, 28], ratios(&[1.0]));
            let spec = r.ratios_for_densities(&[0.25, 0.5, 1.0], &device).unwrap();
            let model = ModelConfig::from_request(&ModelRequest {
                levels: LevelRequest::Channels(spec),
                ..r.clone()
            })
            .unwrap()
            .init_network(&device)
            .unwrap();
            let full = model.level_cost(2).params as f64;
            for (level, d) in [(0, 0.25), (1, 0.5)] {
                let got = model.level_cost(level).params as f64 / full;
                assert!((got - d).abs() < 0.02, "{name} level {level}: {got}");
            }
            for bad in [&[0.5, 0.5, 1.0][..], &[0.0, 1.0], &[0.5, 0.9], &[]] {
                assert!(r.ratios_for_densities(bad, &device).is_err(), "{bad:?}");
            }
        }
    }

    #[test]
    fn the_data_decides_the_input_and_bad_requests_are_named() {
        let device = Device::flex();
        // 8x8 digits: mnist-cnn and the CIFAR-style residual networks take them.
        for name in ["mnist-cnn", "mnist-resnet", "resnet-20", "wrn-16-2"] {
            let model = ModelConfig::from_request(&request(name, [1, 8, 8], ratios(&[0.5, 1.0])))
                .unwrap()
                .init_network(&device)
                .unwrap();
            assert_eq!(model.input_shape(), [1, 8, 8]);
            let out = model.forward_level(Tensor::zeros([2, 1, 8, 8], &device), 0);
            assert_eq!(out.dims(), [2, 10], "{name}");
        }
        let err = |r: ModelRequest| ModelConfig::from_request(&r).unwrap_err().to_string();
        let e = err(request("resnet-18", [1, 8, 8], ratios(&[1.0])));
        assert!(e.contains("resnet-18 cannot take images of 1x8x8") && e.contains("32x32"), "{e}");
        let e = err(request("mnist-cnn", [1, 3, 3], ratios(&[1.0])));
        assert!(e.contains("at least 4x4"), "{e}");
        let e = err(request("wrn-16-2", [3, 32, 16], ratios(&[1.0])));
        assert!(e.contains("square"), "{e}");
        let e = err(request("vgg-16", [3, 32, 32], ratios(&[1.0])));
        assert!(
            e.contains("unknown model `vgg-16`") && e.contains("mnist-cnn") && e.contains("wrn-D-K"),
            "{e}"
        );
        let e = err(request("mnist-cnn", [1, 28, 28], LevelRequest::Lattice("1;1".parse().unwrap())));
        assert!(e.contains("no residual blocks"), "{e}");
    }

    #[test]
    fn residual_levels_export_under_torchvision_names_and_find_their_blocks() {
        let device = Device::flex();
        let model = ModelConfig::from_request(&request("resnet-18", [3, 64, 64], ratios(&[0.5, 1.0])))
            .unwrap()
            .init_network(&device)
            .unwrap();
        let level = model.extract_level(0);
        let name = |path: &str| level.export_name(path);
        assert_eq!(name("stem.shared.weight"), "conv1.weight");
        assert_eq!(name("stem_norm.norms.0.weight"), "bn1.weight");
        assert_eq!(name("blocks.2.conv1.weight"), "layer2.0.conv1.weight");
        assert_eq!(name("blocks.3.bn2.norms.0.running_var"), "layer2.1.bn2.running_var");
        assert_eq!(name("blocks.2.shortcut_conv.weight"), "layer2.0.downsample.0.weight");
        assert_eq!(name("blocks.2.shortcut_norm.norms.0.bias"), "layer2.0.downsample.1.bias");
        assert_eq!(name("fc.shared.weight"), "fc.weight");
        let mut lattice =
            request("mnist-resnet", [1, 28, 28], LevelRequest::Lattice("0.5,1;1,2".parse().unwrap()));
        lattice.num_classes = 10;
        let model = ModelConfig::from_request(&lattice).unwrap().init_network(&device).unwrap();
        assert!(model.level_uses_layer("stage2.block1.conv1", 0));
        assert!(!model.level_uses_layer("stage2.block2.conv1", 0));
        assert!(model.level_uses_layer("stage2.block2.conv1", 1));
        assert_eq!(model.find_level("w0.5-d2").unwrap(), 1);
        assert_eq!(model.find_level("1,1").unwrap(), 2);
        assert_eq!(model.find_level("3").unwrap(), 3);
        let e = model.find_level("w2-d1").unwrap_err().to_string();
        assert!(e.contains("no level `w2-d1`") && e.contains("w0.5-d1"), "{e}");
    }
}
