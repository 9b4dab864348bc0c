//! Nested backbones built from `nestednet-nn` layers.
//!
//! Every model implements [`NestedClassifier`]: `forward_level(x, k)` runs level `k` on its own
//! slices of the shared weights, `level_cost(k)` reports what that level costs, and each model
//! can export a level as a plain, standalone Burn model whose tensors are physically the
//! level's size.
#![warn(missing_docs)]

mod any;
mod error;
mod fused;
mod mnist_cnn;
mod resnet;

pub use any::{LevelModel, ModelConfig, NestedModel};
pub use error::{ModelError, Result};
pub use mnist_cnn::{
    LAYERS as MNIST_CNN_LAYERS, MnistCnn, MnistCnnConfig, NestedMnistCnn, NestedMnistCnnConfig,
};
pub use nestednet_nn::Maskable;
pub use resnet::{NestedBasicBlock, NestedResNet, NestedResNetConfig, Shortcut, Stem};

use burn::module::Module;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// What one level costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCost {
    /// Trainable parameters the level uses (weights, biases and its batch-norm affine
    /// parameters; running statistics are buffers, not parameters, as in PyTorch).
    pub params: usize,
    /// Multiply-accumulates of the convolution and linear layers for one input sample.
    pub macs: usize,
}

/// A nested network whose levels all classify the same kind of input.
pub trait NestedClassifier: Module {
    /// Number of levels (level 0 = core, last = full).
    fn num_levels(&self) -> usize;

    /// Logits `[batch, classes_level]` of level `level` for images `[batch, c, h, w]`.
    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2>;

    /// Logits of every level, core first.
    fn forward_all(&self, images: Tensor<4>) -> Vec<Tensor<2>> {
        (0..self.num_levels()).map(|k| self.forward_level(images.clone(), k)).collect()
    }

    /// Parameters and MACs of level `level`.
    fn level_cost(&self, level: usize) -> LevelCost;

    /// Number of classes level `level` predicts.
    fn level_classes(&self, level: usize) -> usize;

    /// The images the model takes, `[channels, height, width]`.
    fn input_shape(&self) -> [usize; 3];

    /// Every layer holding a weight tensor that could be masked, by name, in forward order
    /// (masked or not: see [`Maskable::mask`]).
    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)>;

    /// The same layers, mutably.
    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)>;
}
