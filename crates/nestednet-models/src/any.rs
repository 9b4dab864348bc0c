//! Any nested model of this crate, chosen by configuration: what training, reports and the
//! CLI hold.

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    LevelCost, Maskable, MnistCnn, NestedClassifier, NestedMnistCnn, NestedMnistCnnConfig, NestedResNet,
    NestedResNetConfig,
};

/// The configuration of a nested model: the `mnist-cnn`, or a residual network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelConfig {
    /// The nested `mnist-cnn` (channel scheduling, masks, per-level heads).
    MnistCnn(NestedMnistCnnConfig),
    /// A nested residual network (channel and layer scheduling on a lattice of levels).
    ResNet(NestedResNetConfig),
}

impl From<NestedMnistCnnConfig> for ModelConfig {
    fn from(config: NestedMnistCnnConfig) -> Self {
        Self::MnistCnn(config)
    }
}

impl From<NestedResNetConfig> for ModelConfig {
    fn from(config: NestedResNetConfig) -> Self {
        Self::ResNet(config)
    }
}

impl ModelConfig {
    /// The architecture's name (`mnist-cnn`, `resnet-20`, `wrn-32-4`, …).
    pub fn name(&self) -> String {
        match self {
            Self::MnistCnn(_) => "mnist-cnn".into(),
            Self::ResNet(c) => c.name.clone(),
        }
    }

    /// Number of levels the configuration describes.
    pub fn num_levels(&self) -> usize {
        match self {
            Self::MnistCnn(c) => c.levels.num_levels(),
            Self::ResNet(c) => c.lattice.num_levels(),
        }
    }

    /// The levels in words: the `mnist-cnn`'s level specification (`0.25,0.5,1`), a lattice's
    /// level names (`w0.25-d2,w1-d5`).
    pub fn describe_levels(&self) -> String {
        match self {
            Self::MnistCnn(c) => c.levels.to_string(),
            Self::ResNet(c) => c.lattice.to_string(),
        }
    }

    /// Each level's name: `L0`, `L1`, … for chains, `w0.25-d2`, … for lattices.
    pub fn level_names(&self) -> Vec<String> {
        match self {
            Self::MnistCnn(c) => (0..c.levels.num_levels()).map(|k| format!("L{k}")).collect(),
            Self::ResNet(c) => c.lattice.levels().iter().map(|l| l.name()).collect(),
        }
    }

    /// The number of the level called `key` (a number, or a lattice level's name or pair).
    pub fn find_level(&self, key: &str) -> crate::Result<usize> {
        match self {
            Self::ResNet(c) => Ok(c.lattice.find(key)?),
            Self::MnistCnn(_) => {
                let n = self.num_levels();
                let index = key.trim().trim_start_matches('L').parse::<usize>().map_err(|_| {
                    crate::ModelError::Invalid(format!("no level `{key}`: the levels are 0..={}", n - 1))
                })?;
                nestednet_schedule::check_level(index, n)?;
                Ok(index)
            }
        }
    }

    /// Layers carrying nested masks (only the `mnist-cnn` has them).
    pub fn masked_layers(&self) -> &[String] {
        match self {
            Self::MnistCnn(c) => &c.masked_layers,
            Self::ResNet(_) => &[],
        }
    }

    /// Per-level numbers of classes of coarse-to-fine heads (empty: every level predicts the
    /// same classes).
    pub fn level_classes(&self) -> &[usize] {
        match self {
            Self::MnistCnn(c) => &c.level_classes,
            Self::ResNet(_) => &[],
        }
    }

    /// The `mnist-cnn` configuration, if this is one.
    pub fn as_mnist_cnn(&self) -> Option<&NestedMnistCnnConfig> {
        match self {
            Self::MnistCnn(c) => Some(c),
            Self::ResNet(_) => None,
        }
    }

    /// The `mnist-cnn` configuration, mutably, if this is one.
    pub fn as_mnist_cnn_mut(&mut self) -> Option<&mut NestedMnistCnnConfig> {
        match self {
            Self::MnistCnn(c) => Some(c),
            Self::ResNet(_) => None,
        }
    }

    /// Checks the configuration without allocating anything.
    pub fn validate(&self) -> crate::Result<()> {
        match self {
            Self::MnistCnn(c) => c.schedule().map(|_| ()),
            Self::ResNet(c) => c.validate(),
        }
    }

    /// Validates the configuration, then initializes the model on `device`.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedModel> {
        Ok(match self {
            Self::MnistCnn(c) => NestedModel::MnistCnn(c.try_init(device)?),
            Self::ResNet(c) => NestedModel::ResNet(c.try_init(device)?),
        })
    }

    /// [`try_init`](Self::try_init), panicking on an invalid configuration.
    pub fn init(&self, device: &Device) -> NestedModel {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Any nested model of this crate.
// One model is held at a time, so the variants' size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum NestedModel {
    /// The nested `mnist-cnn`.
    MnistCnn(NestedMnistCnn),
    /// A nested residual network.
    ResNet(NestedResNet),
}

impl NestedModel {
    /// The `mnist-cnn`, if this is one.
    pub fn as_mnist_cnn(&self) -> Option<&NestedMnistCnn> {
        match self {
            Self::MnistCnn(m) => Some(m),
            Self::ResNet(_) => None,
        }
    }

    /// The `mnist-cnn`, by value, if this is one.
    pub fn into_mnist_cnn(self) -> Option<NestedMnistCnn> {
        match self {
            Self::MnistCnn(m) => Some(m),
            Self::ResNet(_) => None,
        }
    }

    /// Level `level`'s name: `w0.25-d2` for a lattice level, `L0`, `L1`, … otherwise.
    pub fn level_name(&self, level: usize) -> String {
        match self {
            Self::ResNet(m) => m.level_name(level).to_string(),
            Self::MnistCnn(_) => format!("L{level}"),
        }
    }

    /// The residual network, if this is one.
    pub fn as_resnet(&self) -> Option<&NestedResNet> {
        match self {
            Self::ResNet(m) => Some(m),
            Self::MnistCnn(_) => None,
        }
    }

    /// Level `level` as a standalone network whose weights are the level's slices (masks
    /// applied), copied **once** into compact tensors.
    ///
    /// `forward_level` slices (and masks) every weight again on each call, which is what
    /// training needs, since the slices are views of the shared parameters. For inference the
    /// copies are cheaper: no slicing, no mask multiply and contiguous weights. The result
    /// equals `forward_level(·, level)` in evaluation mode; it is what exports hold.
    pub fn extract_level(&self, level: usize) -> LevelModel {
        match self {
            Self::MnistCnn(m) => LevelModel::MnistCnn(m.extract_level(level).1),
            Self::ResNet(m) => LevelModel::ResNet(m.extract_level(level).1),
        }
    }
}

/// One level of a nested model as a standalone network: the plain `mnist-cnn`, or a one-level
/// residual network. Built by [`NestedModel::extract_level`] or loaded from an export.
// A handful of levels is held at a time; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum LevelModel {
    /// A plain `mnist-cnn` level.
    MnistCnn(MnistCnn),
    /// A one-level residual network.
    ResNet(NestedResNet),
}

impl LevelModel {
    /// Logits `[batch, classes]` for images `[batch, c, h, w]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::MnistCnn(m) => m.forward(images),
            Self::ResNet(m) => m.forward_level(images, 0),
        }
    }
}

/// Calls `$body` with `$m` bound to the inner model, whatever its kind.
macro_rules! each {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            NestedModel::MnistCnn($m) => $body,
            NestedModel::ResNet($m) => $body,
        }
    };
}

impl NestedClassifier for NestedModel {
    fn num_levels(&self) -> usize {
        each!(self, m => m.num_levels())
    }

    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        each!(self, m => m.forward_level(images, level))
    }

    fn level_cost(&self, level: usize) -> LevelCost {
        each!(self, m => m.level_cost(level))
    }

    fn level_classes(&self, level: usize) -> usize {
        each!(self, m => m.level_classes(level))
    }

    fn input_shape(&self) -> [usize; 3] {
        each!(self, m => m.input_shape())
    }

    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        each!(self, m => m.weight_layers())
    }

    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        each!(self, m => m.weight_layers_mut())
    }
}
