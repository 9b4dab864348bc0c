//! Nested layer norm: level `k` normalises over its own leading `e_k` features.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::module::layer_norm;

use crate::compact_copy;
use crate::widths::{assert_level, check_level_widths};

/// Configuration of a [`NestedLayerNorm`].
#[derive(Config, Debug)]
pub struct NestedLayerNormConfig {
    /// Features of the full level.
    pub d_model: usize,
    /// Features each level normalises, core first (`[d_model; n]` when the width is not
    /// nested).
    pub widths: Vec<usize>,
    /// Added to the variance (Burn's and PyTorch's default).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Whether it has a learned shift.
    #[config(default = true)]
    pub bias: bool,
}

impl NestedLayerNormConfig {
    /// Initializes the layer (scale 1, shift 0). Panics if the widths are not nested.
    pub fn init(&self, device: &Device) -> NestedLayerNorm {
        check_level_widths("NestedLayerNorm", &self.widths, self.d_model);
        NestedLayerNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: self.bias.then(|| Initializer::Zeros.init([self.d_model], device)),
            widths: self.widths.clone(),
            epsilon: self.epsilon,
        }
    }
}

/// A layer norm whose levels share the leading entries of one scale and shift: level `k`
/// normalises `x[..., ..e_k]` with its own mean and variance (a narrower level's statistics
/// are those of its own features, as HAT's elastic embedding does), then applies
/// `gamma[..e_k]` and `beta[..e_k]`.
#[derive(Module, Debug)]
pub struct NestedLayerNorm {
    /// Shared scale, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// Shared shift, `[d_model]`.
    pub beta: Option<Param<Tensor<1>>>,
    /// Features of each level.
    pub widths: Vec<usize>,
    /// Added to the variance.
    pub epsilon: f64,
}

impl NestedLayerNorm {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.widths.len()
    }

    /// Features level `level` normalises.
    pub fn level_width(&self, level: usize) -> usize {
        assert_level("NestedLayerNorm", level, self.num_levels());
        self.widths[level]
    }

    fn level_tensors(&self, level: usize) -> (Tensor<1>, Option<Tensor<1>>) {
        let width = self.level_width(level);
        let full = *self.widths.last().unwrap();
        let narrow = |t: Tensor<1>| if width == full { t } else { t.narrow(0, 0, width) };
        (narrow(self.gamma.val()), self.beta.as_ref().map(|b| narrow(b.val())))
    }

    /// Level `level` on `x` `[..., level width]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, level: usize) -> Tensor<D> {
        let width = self.level_width(level);
        let got = x.dims()[D - 1];
        assert_eq!(got, width, "NestedLayerNorm level {level}: expected {width} features, got {got}");
        if crate::probe::recording() {
            // Scale and shift are parameters; the normalisation multiplies nothing weighted.
            crate::probe::record(self.gamma.id, self.level_num_params(level), 0);
        }
        let (gamma, beta) = self.level_tensors(level);
        layer_norm(x, gamma, beta, self.epsilon)
    }

    /// Level `level` as a one-level layer with compact copies of its scale and shift.
    pub fn single_level(&self, level: usize) -> Self {
        self.single_block(self.level_width(level))
    }

    /// The leading `width` features (any count up to the full layer's) as a one-level layer
    /// with compact copies: a layer of a Mix'n'Match sub-network.
    pub fn single_block(&self, width: usize) -> Self {
        let narrow = |t: Tensor<1>| compact_copy(t.narrow(0, 0, width));
        Self {
            gamma: Param::from_tensor(narrow(self.gamma.val())),
            beta: self.beta.as_ref().map(|b| Param::from_tensor(narrow(b.val()))),
            widths: vec![width],
            epsilon: self.epsilon,
        }
    }

    /// Burn's `LayerNorm` of level `level`, with compact copies.
    pub fn extract_level(&self, level: usize) -> LayerNorm {
        let width = self.level_width(level);
        let (gamma, beta) = self.level_tensors(level);
        let device = gamma.device();
        let mut plain =
            LayerNormConfig::new(width).with_epsilon(self.epsilon).with_bias(beta.is_some()).init(&device);
        plain.gamma = Param::from_tensor(compact_copy(gamma));
        plain.beta = beta.map(|b| Param::from_tensor(compact_copy(b)));
        plain
    }

    /// Parameters level `level` uses.
    pub fn level_num_params(&self, level: usize) -> usize {
        self.level_width(level) * if self.beta.is_some() { 2 } else { 1 }
    }
}
