//! Nested multi-head attention: level `k` uses the first `h_k` heads, the head size fixed.
//!
//! Built from four [`NestedLinear`](crate::NestedLinear)s (sibling `linear`), so the
//! projections slice, mask and count their costs as every nested linear does.

use burn::module::Module;
use burn::nn::attention::MhaOutput;
use burn::nn::{Dropout, DropoutConfig, Initializer};
use burn::prelude::*;
use burn::tensor::Bool;
use burn::tensor::activation::quiet_softmax;

use crate::error::first_problem;
use crate::widths::{assert_level, level_widths_problem};
use crate::{NestedLinear, NestedLinearConfig, NnError};

/// Configuration of a [`NestedMultiHeadAttention`].
#[derive(Config, Debug)]
pub struct NestedMultiHeadAttentionConfig {
    /// Model width of the full level (input and output features).
    pub d_model: usize,
    /// Heads of the full level; the head size is `d_model / n_heads` at every level.
    pub n_heads: usize,
    /// Heads each level uses, core first, the last `n_heads`.
    pub head_counts: Vec<usize>,
    /// Model width each level reads and writes, core first: `[d_model; n]` unless the
    /// embedding width is nested too.
    pub model_widths: Vec<usize>,
    /// Dropout on the attention weights (active only in training, on an autodiff device).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The score a masked position gets before the softmax (Burn's default).
    #[config(default = -1.0e4)]
    pub min_float: f64,
    /// Whether the softmax is the "quiet" one (`exp / (1 + Σ exp)`), as in Burn.
    #[config(default = false)]
    pub quiet_softmax: bool,
    /// Whether the four projections have biases.
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the projections (Burn's `MultiHeadAttention` default); fans are the
    /// full layer's.
    #[config(default = "Initializer::KaimingUniform{gain: 0.5773502691896258, fan_out_only: false}")]
    pub initializer: Initializer,
    /// Whether the projections' weights carry nested unstructured masks.
    #[config(default = false)]
    pub masked: bool,
}

impl NestedMultiHeadAttentionConfig {
    /// What `init` would panic on, as an error: a head count that does not divide the model
    /// width, head counts or widths that are not nested, or a level count that differs.
    pub fn check(&self) -> Result<(), NnError> {
        let layer = "NestedMultiHeadAttention";
        first_problem(
            layer,
            [
                (self.n_heads == 0).then(|| "0 heads".to_string()),
                (self.n_heads > 0 && !self.d_model.is_multiple_of(self.n_heads)).then(|| {
                    format!("{} heads do not divide the model width {}", self.n_heads, self.d_model)
                }),
                level_widths_problem("head counts", &self.head_counts, self.n_heads),
                level_widths_problem("model widths", &self.model_widths, self.d_model),
                (self.head_counts.len() != self.model_widths.len()).then(|| {
                    format!(
                        "{} head counts but {} model widths (one of each per level)",
                        self.head_counts.len(),
                        self.model_widths.len()
                    )
                }),
            ],
        )
    }

    /// Initializes the layer on `device`. Panics with [`check`](Self::check)'s message if the
    /// configuration is invalid.
    pub fn init(&self, device: &Device) -> NestedMultiHeadAttention {
        if let Err(e) = self.check() {
            panic!("{e}");
        }
        let d_head = self.d_model / self.n_heads;
        let head_widths: Vec<usize> = self.head_counts.iter().map(|h| h * d_head).collect();
        let projection = |inputs: &[usize], outputs: &[usize]| {
            let (d_input, d_output) = (*inputs.last().unwrap(), *outputs.last().unwrap());
            NestedLinearConfig::new(d_input, d_output, inputs.to_vec(), outputs.to_vec())
                .with_bias(self.bias)
                .with_initializer(self.initializer.clone())
                .with_masked(self.masked)
                .init(device)
        };
        NestedMultiHeadAttention {
            query: projection(&self.model_widths, &head_widths),
            key: projection(&self.model_widths, &head_widths),
            value: projection(&self.model_widths, &head_widths),
            output: projection(&head_widths, &self.model_widths),
            dropout: DropoutConfig::new(self.dropout).init(),
            d_head,
            min_float: self.min_float,
            quiet_softmax: self.quiet_softmax,
        }
    }
}

/// Multi-head attention whose levels use the leading heads of shared projections.
///
/// The projections' output features are head-major (feature `h · d_head + j` is dimension `j`
/// of head `h`, as in Burn and PyTorch), so level `k`'s `h_k` heads are the leading
/// `h_k · d_head` features of the query, key and value projections and the leading input
/// features of the output projection. At the full level it computes exactly what Burn's
/// `MultiHeadAttention` computes with the same weights.
#[derive(Module, Debug)]
pub struct NestedMultiHeadAttention {
    /// Query projection, `model width → heads · d_head`.
    pub query: NestedLinear,
    /// Key projection.
    pub key: NestedLinear,
    /// Value projection.
    pub value: NestedLinear,
    /// Output projection, `heads · d_head → model width`.
    pub output: NestedLinear,
    /// Dropout on the attention weights.
    pub dropout: Dropout,
    /// Features per head (the same at every level).
    pub d_head: usize,
    /// Score of masked positions.
    pub min_float: f64,
    /// Whether the softmax is the quiet one.
    pub quiet_softmax: bool,
}

/// The inputs of a [`NestedMultiHeadAttention`]: query, key and value `[batch, length,
/// level width]`, and optional masks (`true` = masked), as Burn's `MhaInput`.
#[derive(Debug, Clone)]
pub struct NestedMhaInput {
    query: Tensor<3>,
    key: Tensor<3>,
    value: Tensor<3>,
    mask_pad: Option<Tensor<2, Bool>>,
    mask_attn: Option<Tensor<3, Bool>>,
}

impl NestedMhaInput {
    /// Self-attention: query, key and value are `tensor`.
    pub fn self_attn(tensor: Tensor<3>) -> Self {
        Self::new(tensor.clone(), tensor.clone(), tensor)
    }

    /// Attention of `query` over `key` and `value`.
    pub fn new(query: Tensor<3>, key: Tensor<3>, value: Tensor<3>) -> Self {
        Self { query, key, value, mask_pad: None, mask_attn: None }
    }

    /// Padding mask `[batch, key length]`: `true` where a key position is padding.
    pub fn mask_pad(mut self, mask_pad: Tensor<2, Bool>) -> Self {
        self.mask_pad = Some(mask_pad);
        self
    }

    /// Attention mask `[batch, query length, key length]`: `true` where a query may not look
    /// (Burn's `generate_autoregressive_mask` gives the causal one).
    pub fn mask_attn(mut self, mask_attn: Tensor<3, Bool>) -> Self {
        self.mask_attn = Some(mask_attn);
        self
    }
}

impl NestedMultiHeadAttention {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.query.num_levels()
    }

    /// Heads level `level` uses.
    pub fn level_heads(&self, level: usize) -> usize {
        assert_level("NestedMultiHeadAttention", level, self.num_levels());
        self.query.level_dims(level).1 / self.d_head
    }

    /// Model width level `level` reads and writes.
    pub fn level_width(&self, level: usize) -> usize {
        assert_level("NestedMultiHeadAttention", level, self.num_levels());
        self.query.level_dims(level).0
    }

    /// Level `level` of the attention on `input`: the context `[batch, query length, level
    /// width]` and the attention weights `[batch, level heads, query length, key length]`.
    pub fn forward(&self, input: NestedMhaInput, level: usize) -> MhaOutput {
        let heads = self.level_heads(level);
        let width = self.level_width(level);
        for (what, x) in [("query", &input.query), ("key", &input.key), ("value", &input.value)] {
            let got = x.dims()[2];
            assert_eq!(
                got, width,
                "NestedMultiHeadAttention level {level}: the {what} has {got} features, the level reads {width}"
            );
        }
        let [batch, query_length, _] = input.query.dims();
        let key_length = input.key.dims()[1];
        if crate::probe::recording() {
            // The two products over positions (scores and context), per sample: parameter-free
            // work the projections' own records do not see.
            crate::probe::record_macs(2 * heads * query_length * key_length * self.d_head);
        }
        let query = self.split_heads(self.query.forward(input.query, level), heads);
        let key = self.split_heads(self.key.forward(input.key, level), heads);
        let value = self.split_heads(self.value.forward(input.value, level), heads);

        let scores = query.matmul(key.transpose()).div_scalar((self.d_head as f32).sqrt());
        let weights = self.attention_weights(scores, input.mask_pad, input.mask_attn);
        let context =
            weights.clone().matmul(value).swap_dims(1, 2).reshape([batch, query_length, heads * self.d_head]);
        MhaOutput { weights, context: self.output.forward(context, level) }
    }

    /// `[batch, length, heads · d_head]` as `[batch, heads, length, d_head]`.
    fn split_heads(&self, x: Tensor<3>, heads: usize) -> Tensor<4> {
        let [batch, length, _] = x.dims();
        x.reshape([batch, length, heads, self.d_head]).swap_dims(1, 2)
    }

    /// The softmax of the scores over the key positions, masked positions first set to
    /// `min_float` (as Burn does), then dropout.
    fn attention_weights(
        &self,
        mut scores: Tensor<4>,
        mask_pad: Option<Tensor<2, Bool>>,
        mask_attn: Option<Tensor<3, Bool>>,
    ) -> Tensor<4> {
        if let Some(mask) = mask_pad {
            let [batch, key_length] = mask.dims();
            scores = scores.mask_fill(mask.reshape([batch, 1, 1, key_length]), self.min_float);
        }
        if let Some(mask) = mask_attn {
            let [batch, query_length, key_length] = mask.dims();
            scores = scores.mask_fill(mask.reshape([batch, 1, query_length, key_length]), self.min_float);
        }
        let weights = if self.quiet_softmax { quiet_softmax(scores, 3) } else { clamped_softmax(scores) };
        self.dropout.forward(weights)
    }

    /// Level `level` as a one-level attention holding compact copies of its heads' weights
    /// (masks applied).
    pub fn single_level(&self, level: usize) -> Self {
        self.with_projections(|linear| linear.single_level(level))
    }

    /// The sub-layer of the leading `heads` heads over a model width of `width` (any counts
    /// up to the full layer's, not only a level's): a block of a Mix'n'Match sub-network, as
    /// a one-level layer with compact copies. The layer must not be masked.
    pub fn single_block(&self, heads: usize, width: usize) -> Self {
        let features = heads * self.d_head;
        Self {
            query: self.query.single_block(width, features),
            key: self.key.single_block(width, features),
            value: self.value.single_block(width, features),
            output: self.output.single_block(features, width),
            dropout: self.dropout.clone(),
            d_head: self.d_head,
            min_float: self.min_float,
            quiet_softmax: self.quiet_softmax,
        }
    }

    fn with_projections(&self, f: impl Fn(&NestedLinear) -> NestedLinear) -> Self {
        Self {
            query: f(&self.query),
            key: f(&self.key),
            value: f(&self.value),
            output: f(&self.output),
            dropout: self.dropout.clone(),
            d_head: self.d_head,
            min_float: self.min_float,
            quiet_softmax: self.quiet_softmax,
        }
    }

    /// Parameters level `level` uses (its projections' blocks, masks counted).
    pub fn level_num_params(&self, level: usize) -> usize {
        self.projections().iter().map(|p| p.level_num_params(level)).sum()
    }

    /// The four projections, query, key, value, output.
    pub fn projections(&self) -> [&NestedLinear; 4] {
        [&self.query, &self.key, &self.value, &self.output]
    }

    /// The four projections, mutably (mask learning and pruning go through them).
    pub fn projections_mut(&mut self) -> [&mut NestedLinear; 4] {
        [&mut self.query, &mut self.key, &mut self.value, &mut self.output]
    }

    /// Sets the full shared weights from Burn's attention of the full level's size (parameter
    /// ids kept): to start from a dense model, or to compare with Burn.
    pub fn load_full(&mut self, dense: &burn::nn::attention::MultiHeadAttention) {
        assert_eq!(dense.d_k, self.d_head, "NestedMultiHeadAttention: the dense layer's head size differs");
        self.query.load_full(&dense.query);
        self.key.load_full(&dense.key);
        self.value.load_full(&dense.value);
        self.output.load_full(&dense.output);
    }
}

/// Burn's softmax over the key positions (the last axis), with the scores less their row's
/// maximum clamped at −80 before the exponential. A masked score (−1e4) or one far below the
/// maximum then takes the exponential's ordinary path, not libm's underflow handling, which
/// took a tenth of a causal language model's training step (perf, `lm-tiny`); it still weighs
/// under 2e-35 against the maximum's 1, where Burn's weighs 0.
fn clamped_softmax(scores: Tensor<4>) -> Tensor<4> {
    let shifted = (scores.clone() - scores.detach().max_dim(3)).clamp_min(-80.0);
    let exp = shifted.exp();
    exp.clone() / exp.sum_dim(3)
}
