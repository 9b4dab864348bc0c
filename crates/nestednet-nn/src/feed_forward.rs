//! Nested position-wise feed-forward (MatFormer): level `k` uses the first `m_k` hidden units.
//!
//! Two [`NestedLinear`](crate::NestedLinear)s (sibling `linear`) around an activation.

use burn::module::Module;
use burn::nn::activation::{Activation, Gelu, Relu};
use burn::nn::transformer::PositionWiseFeedForward;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear};
use burn::prelude::*;
use burn::tensor::activation;

use crate::error::first_problem;
use crate::widths::level_widths_problem;
use crate::{NestedLinear, NestedLinearConfig, NnError};

/// The activation between a feed-forward's two projections: parameter-free ones only, since
/// every level shares it.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FeedForwardActivation {
    /// GELU (erf form, Burn's and PyTorch's default), as in BERT, ViT and MatFormer.
    Gelu,
    /// ReLU, as in the original transformer.
    Relu,
}

impl FeedForwardActivation {
    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => activation::gelu(x),
            Self::Relu => activation::relu(x),
        }
    }

    /// Burn's activation module of the same function.
    fn burn_activation(self) -> Activation {
        match self {
            Self::Gelu => Activation::Gelu(Gelu::new()),
            Self::Relu => Activation::Relu(Relu::new()),
        }
    }
}

/// Configuration of a [`NestedFeedForward`].
#[derive(Config, Debug)]
pub struct NestedFeedForwardConfig {
    /// Model width of the full level.
    pub d_model: usize,
    /// Hidden units of the full level.
    pub d_ff: usize,
    /// Model width each level reads and writes, core first (`[d_model; n]` unless the
    /// embedding width is nested).
    pub model_widths: Vec<usize>,
    /// Hidden units each level uses, core first, the last `d_ff` (MatFormer's `h/8, h/4, h/2,
    /// h`, say).
    pub hidden_widths: Vec<usize>,
    /// Dropout after the activation (training only).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The activation.
    #[config(default = "FeedForwardActivation::Gelu")]
    pub activation: FeedForwardActivation,
    /// Initializer of both projections (Burn's default); fans are the full layer's.
    #[config(default = "Initializer::KaimingUniform{gain: 0.5773502691896258, fan_out_only: false}")]
    pub initializer: Initializer,
    /// Whether the projections' weights carry nested unstructured masks.
    #[config(default = false)]
    pub masked: bool,
}

impl NestedFeedForwardConfig {
    /// What `init` would panic on, as an error.
    pub fn check(&self) -> Result<(), NnError> {
        first_problem(
            "NestedFeedForward",
            [
                level_widths_problem("model widths", &self.model_widths, self.d_model),
                level_widths_problem("hidden widths", &self.hidden_widths, self.d_ff),
                (self.model_widths.len() != self.hidden_widths.len()).then(|| {
                    format!(
                        "{} model widths but {} hidden widths (one of each per level)",
                        self.model_widths.len(),
                        self.hidden_widths.len()
                    )
                }),
            ],
        )
    }

    /// Initializes the layer on `device`. Panics with [`check`](Self::check)'s message if the
    /// configuration is invalid.
    pub fn init(&self, device: &Device) -> NestedFeedForward {
        if let Err(e) = self.check() {
            panic!("{e}");
        }
        let projection = |d_in, d_out, inputs: &[usize], outputs: &[usize]| {
            NestedLinearConfig::new(d_in, d_out, inputs.to_vec(), outputs.to_vec())
                .with_initializer(self.initializer.clone())
                .with_masked(self.masked)
                .init(device)
        };
        NestedFeedForward {
            inner: projection(self.d_model, self.d_ff, &self.model_widths, &self.hidden_widths),
            outer: projection(self.d_ff, self.d_model, &self.hidden_widths, &self.model_widths),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: self.activation,
        }
    }
}

/// A position-wise feed-forward whose levels use the leading hidden units of two shared
/// projections: `outer(dropout(act(inner(x))))`. At the full level it computes exactly what
/// Burn's `PositionWiseFeedForward` computes with the same weights.
#[derive(Module, Debug)]
pub struct NestedFeedForward {
    /// `model width → hidden`.
    pub inner: NestedLinear,
    /// `hidden → model width`.
    pub outer: NestedLinear,
    /// Dropout after the activation.
    pub dropout: Dropout,
    /// The activation.
    #[module(skip)]
    pub activation: FeedForwardActivation,
}

impl NestedFeedForward {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.inner.num_levels()
    }

    /// Hidden units level `level` uses.
    pub fn level_hidden(&self, level: usize) -> usize {
        self.inner.level_dims(level).1
    }

    /// Level `level` on `x` `[..., level width]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, level: usize) -> Tensor<D> {
        let x = self.activation.apply(self.inner.forward(x, level));
        self.outer.forward(self.dropout.forward(x), level)
    }

    /// The leading `hidden` units over the input's width (any counts up to the full layer's):
    /// the training forward pass of a Mix'n'Match block, sharing the parameters. The layer
    /// must not be masked.
    pub fn forward_block<const D: usize>(&self, x: Tensor<D>, hidden: usize) -> Tensor<D> {
        let width = x.dims()[D - 1];
        let x = self.activation.apply(self.inner.forward_block(x, hidden));
        self.outer.forward_block(self.dropout.forward(x), width)
    }

    /// Level `level` as a one-level layer with compact copies of its weights (masks applied).
    pub fn single_level(&self, level: usize) -> Self {
        Self {
            inner: self.inner.single_level(level),
            outer: self.outer.single_level(level),
            dropout: self.dropout.clone(),
            activation: self.activation,
        }
    }

    /// The leading `hidden` units over a model width of `width` as a one-level layer with
    /// compact copies: a block of a Mix'n'Match sub-network. The layer must not be masked.
    pub fn single_block(&self, hidden: usize, width: usize) -> Self {
        Self {
            inner: self.inner.single_block(width, hidden),
            outer: self.outer.single_block(hidden, width),
            dropout: self.dropout.clone(),
            activation: self.activation,
        }
    }

    /// Burn's `PositionWiseFeedForward` of level `level`, with compact copies of its weights.
    pub fn extract_level(&self, level: usize) -> PositionWiseFeedForward {
        let plain = |linear: &NestedLinear| -> Linear { linear.extract_level(level) };
        PositionWiseFeedForward {
            linear_inner: plain(&self.inner),
            linear_outer: plain(&self.outer),
            dropout: self.dropout.clone(),
            activation: self.activation.burn_activation(),
        }
    }

    /// Parameters level `level` uses.
    pub fn level_num_params(&self, level: usize) -> usize {
        self.inner.level_num_params(level) + self.outer.level_num_params(level)
    }

    /// Sets the full shared weights from Burn's feed-forward of the full level's size
    /// (parameter ids kept).
    pub fn load_full(&mut self, dense: &PositionWiseFeedForward) {
        self.inner.load_full(&dense.linear_inner);
        self.outer.load_full(&dense.linear_outer);
    }
}
