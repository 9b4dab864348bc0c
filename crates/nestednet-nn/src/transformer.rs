//! Nested transformer blocks and a depth-nested stack of them.
//!
//! A block is pre-norm (ViT, GPT-2): `x + attention(norm(x))`, then `x + feed_forward(norm(x))`,
//! each part nested in width (siblings `attention`, `feed_forward`, `layer_norm`). The stack
//! nests depth as the residual networks do: level `k` runs its first `L_k` blocks, at level
//! `k`'s widths; any (width level, depth) pair of the lattice can run.

use burn::module::Module;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderLayer};
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;
use burn::tensor::Bool;

use crate::error::first_problem;
use crate::widths::assert_level;
use crate::{
    FeedForwardActivation, Maskable, NestedFeedForward, NestedFeedForwardConfig, NestedLayer,
    NestedLayerNorm, NestedLayerNormConfig, NestedMhaInput, NestedMultiHeadAttention,
    NestedMultiHeadAttentionConfig, NnError, weight_name, weight_name_under,
};

/// Configuration of a [`NestedTransformer`] (and of each of its blocks).
#[derive(Config, Debug)]
pub struct NestedTransformerConfig {
    /// Model width of the full level.
    pub d_model: usize,
    /// Attention heads of the full level.
    pub n_heads: usize,
    /// Feed-forward hidden units of the full level.
    pub d_ff: usize,
    /// Blocks of the full level.
    pub n_blocks: usize,
    /// Heads each level uses, core first.
    pub head_counts: Vec<usize>,
    /// Feed-forward hidden units each level uses, core first.
    pub hidden_widths: Vec<usize>,
    /// Model width each level uses, core first (`[d_model; n]` unless the embedding width is
    /// nested).
    pub model_widths: Vec<usize>,
    /// Blocks each level runs, core first, never decreasing, the last `n_blocks`
    /// (`[n_blocks; n]` nests width only).
    pub depths: Vec<usize>,
    /// Dropout of the attention weights, the feed-forward and both residual branches.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The feed-forward's activation.
    #[config(default = "FeedForwardActivation::Gelu")]
    pub activation: FeedForwardActivation,
    /// Layer norms' epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Whether the attention and feed-forward weights carry nested unstructured masks.
    #[config(default = false)]
    pub masked: bool,
}

impl NestedTransformerConfig {
    /// What `init` would panic on, as an error (the blocks' own checks included).
    pub fn check(&self) -> Result<(), NnError> {
        self.attention().check()?;
        self.feed_forward().check()?;
        let levels = self.head_counts.len();
        first_problem(
            "NestedTransformer",
            [
                (self.n_blocks == 0).then(|| "0 blocks".to_string()),
                (self.depths.len() != levels)
                    .then(|| format!("{} depths for {levels} levels", self.depths.len())),
                self.depths.iter().position(|&d| d == 0).map(|l| format!("level {l} runs 0 blocks")),
                self.depths.windows(2).position(|w| w[1] < w[0]).map(|l| {
                    format!(
                        "level {} runs fewer blocks ({}) than level {l} ({})",
                        l + 1,
                        self.depths[l + 1],
                        self.depths[l]
                    )
                }),
                (self.depths.last().is_some_and(|&d| d != self.n_blocks)).then(|| {
                    format!(
                        "the full level must run all {} blocks, got {:?}",
                        self.n_blocks,
                        self.depths.last()
                    )
                }),
            ],
        )
    }

    fn attention(&self) -> NestedMultiHeadAttentionConfig {
        NestedMultiHeadAttentionConfig::new(
            self.d_model,
            self.n_heads,
            self.head_counts.clone(),
            self.model_widths.clone(),
        )
        .with_dropout(self.dropout)
        .with_masked(self.masked)
    }

    fn feed_forward(&self) -> NestedFeedForwardConfig {
        NestedFeedForwardConfig::new(
            self.d_model,
            self.d_ff,
            self.model_widths.clone(),
            self.hidden_widths.clone(),
        )
        .with_dropout(self.dropout)
        .with_activation(self.activation)
        .with_masked(self.masked)
    }

    fn norm(&self) -> NestedLayerNormConfig {
        NestedLayerNormConfig::new(self.d_model, self.model_widths.clone()).with_epsilon(self.layer_norm_eps)
    }

    /// One block of this configuration.
    pub fn init_block(&self, device: &Device) -> NestedTransformerBlock {
        NestedTransformerBlock {
            norm_attention: self.norm().init(device),
            attention: self.attention().init(device),
            norm_feed_forward: self.norm().init(device),
            feed_forward: self.feed_forward().init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }

    /// Initializes the stack on `device`. Panics with [`check`](Self::check)'s message if the
    /// configuration is invalid.
    pub fn init(&self, device: &Device) -> NestedTransformer {
        if let Err(e) = self.check() {
            panic!("{e}");
        }
        NestedTransformer {
            blocks: (0..self.n_blocks).map(|_| self.init_block(device)).collect(),
            depths: self.depths.clone(),
        }
    }
}

/// The masks of a transformer's self-attention (`true` = masked): see [`NestedMhaInput`].
#[derive(Debug, Clone, Default)]
pub struct AttentionMasks {
    /// Padding `[batch, length]`.
    pub pad: Option<Tensor<2, Bool>>,
    /// Attention `[batch, length, length]` (the causal mask of a language model).
    pub attn: Option<Tensor<3, Bool>>,
}

impl AttentionMasks {
    fn input(&self, x: Tensor<3>) -> NestedMhaInput {
        let mut input = NestedMhaInput::self_attn(x);
        if let Some(pad) = &self.pad {
            input = input.mask_pad(pad.clone());
        }
        if let Some(attn) = &self.attn {
            input = input.mask_attn(attn.clone());
        }
        input
    }
}

/// A pre-norm transformer block nested in heads, feed-forward width and model width.
#[derive(Module, Debug)]
pub struct NestedTransformerBlock {
    /// Norm before the attention.
    pub norm_attention: NestedLayerNorm,
    /// Self-attention.
    pub attention: NestedMultiHeadAttention,
    /// Norm before the feed-forward.
    pub norm_feed_forward: NestedLayerNorm,
    /// Feed-forward.
    pub feed_forward: NestedFeedForward,
    /// Dropout of both residual branches.
    pub dropout: Dropout,
}

impl NestedTransformerBlock {
    /// Level `level` of the block on `x` `[batch, length, level width]`.
    pub fn forward(&self, x: Tensor<3>, masks: &AttentionMasks, level: usize) -> Tensor<3> {
        let attended =
            self.attention.forward(masks.input(self.norm_attention.forward(x.clone(), level)), level);
        let x = x + self.dropout.forward(attended.context);
        let fed = self.feed_forward.forward(self.norm_feed_forward.forward(x.clone(), level), level);
        x + self.dropout.forward(fed)
    }

    /// Level `level` as a one-level block with compact copies.
    pub fn single_level(&self, level: usize) -> Self {
        Self {
            norm_attention: self.norm_attention.single_level(level),
            attention: self.attention.single_level(level),
            norm_feed_forward: self.norm_feed_forward.single_level(level),
            feed_forward: self.feed_forward.single_level(level),
            dropout: self.dropout.clone(),
        }
    }

    /// The block with `heads` heads and `hidden` feed-forward units over a model width of
    /// `width` (any counts, not only a level's: every such block is a sub-block of weights some
    /// level trained): a block of a Mix'n'Match sub-network, as a one-level block with compact
    /// copies. The block must not be masked.
    pub fn single_block(&self, heads: usize, hidden: usize, width: usize) -> Self {
        Self {
            norm_attention: self.norm_attention.single_block(width),
            attention: self.attention.single_block(heads, width),
            norm_feed_forward: self.norm_feed_forward.single_block(width),
            feed_forward: self.feed_forward.single_block(hidden, width),
            dropout: self.dropout.clone(),
        }
    }

    /// Sets the full shared weights from Burn's pre-norm encoder layer (`norm_first`), whose
    /// `norm_2` comes before the attention and `norm_1` before the feed-forward.
    pub fn load_full(&mut self, dense: &TransformerEncoderLayer) {
        assert!(dense.norm_first, "NestedTransformerBlock is pre-norm: load a `norm_first` layer");
        let copy = |norm: &mut NestedLayerNorm, dense: &burn::nn::LayerNorm| {
            norm.gamma = norm.gamma.clone().map(|_| crate::compact_copy(dense.gamma.val()));
            if let (Some(beta), Some(dense)) = (norm.beta.take(), dense.beta.as_ref()) {
                norm.beta = Some(beta.map(|_| crate::compact_copy(dense.val())));
            }
        };
        copy(&mut self.norm_attention, &dense.norm_2);
        copy(&mut self.norm_feed_forward, &dense.norm_1);
        self.attention.load_full(&dense.mha);
        self.feed_forward.load_full(&dense.pwff);
    }
}

/// A stack of nested transformer blocks whose levels also nest depth: level `k` runs the first
/// `depths[k]` blocks.
#[derive(Module, Debug)]
pub struct NestedTransformer {
    /// The blocks, in order.
    pub blocks: Vec<NestedTransformerBlock>,
    /// Blocks each level runs.
    pub depths: Vec<usize>,
}

impl NestedTransformer {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.depths.len()
    }

    /// Blocks level `level` runs.
    pub fn level_depth(&self, level: usize) -> usize {
        assert_level("NestedTransformer", level, self.num_levels());
        self.depths[level]
    }

    /// Level `level` on `x` `[batch, length, level width]`.
    pub fn forward(&self, x: Tensor<3>, masks: &AttentionMasks, level: usize) -> Tensor<3> {
        self.forward_lattice(x, masks, level, self.level_depth(level))
    }

    /// The lattice point of width level `width_level` and `depth` blocks (any depth up to the
    /// stack's, as WRN-32-1 and WRN-14-4 are points of WRN-32-4's lattice).
    pub fn forward_lattice(
        &self,
        x: Tensor<3>,
        masks: &AttentionMasks,
        width_level: usize,
        depth: usize,
    ) -> Tensor<3> {
        assert!(
            (1..=self.blocks.len()).contains(&depth),
            "NestedTransformer: depth {depth} outside 1..={}",
            self.blocks.len()
        );
        self.blocks[..depth].iter().fold(x, |x, block| block.forward(x, masks, width_level))
    }

    /// Level `level` as a one-level stack: its blocks only, with compact copies.
    pub fn single_level(&self, level: usize) -> Self {
        self.single_lattice_point(level, self.level_depth(level))
    }

    /// The lattice point of width level `width_level` and `depth` blocks as a one-level stack
    /// (see [`forward_lattice`](Self::forward_lattice)): its blocks only, with compact copies.
    pub fn single_lattice_point(&self, width_level: usize, depth: usize) -> Self {
        Self {
            blocks: self.blocks[..depth].iter().map(|b| b.single_level(width_level)).collect(),
            depths: vec![depth],
        }
    }

    /// Sets the full shared weights from Burn's pre-norm encoder with as many layers.
    pub fn load_full(&mut self, dense: &TransformerEncoder) {
        assert_eq!(
            dense.layers.len(),
            self.blocks.len(),
            "NestedTransformer: the dense encoder's depth differs"
        );
        for (block, layer) in self.blocks.iter_mut().zip(&dense.layers) {
            block.load_full(layer);
        }
    }

    /// Parameters level `level` uses (its blocks' attention, feed-forward and norms).
    pub fn level_num_params(&self, level: usize) -> usize {
        self.blocks[..self.level_depth(level)]
            .iter()
            .map(|b| {
                b.attention.level_num_params(level)
                    + b.feed_forward.level_num_params(level)
                    + b.norm_attention.level_num_params(level)
                    + b.norm_feed_forward.level_num_params(level)
            })
            .sum()
    }
}

// --- what `#[derive(NestedNetwork)]` sees of these layers -------------------------------------

impl NestedLayer for NestedMultiHeadAttention {
    fn layer_levels(&self) -> usize {
        self.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }

    fn layer_width(&self, level: usize) -> Option<usize> {
        Some(self.level_width(level))
    }

    fn layer_weights(&self) -> Vec<(String, &dyn Maskable)> {
        let [q, k, v, o] = self.projections();
        vec![
            ("query".into(), q as &dyn Maskable),
            ("key".into(), k),
            ("value".into(), v),
            ("output".into(), o),
        ]
    }

    fn layer_weights_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        let [q, k, v, o] = self.projections_mut();
        vec![
            ("query".into(), q as &mut dyn Maskable),
            ("key".into(), k),
            ("value".into(), v),
            ("output".into(), o),
        ]
    }
}

impl NestedLayer for NestedFeedForward {
    fn layer_levels(&self) -> usize {
        self.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }

    fn layer_width(&self, level: usize) -> Option<usize> {
        Some(self.level_hidden(level))
    }

    fn layer_weights(&self) -> Vec<(String, &dyn Maskable)> {
        vec![("inner".into(), &self.inner as &dyn Maskable), ("outer".into(), &self.outer)]
    }

    fn layer_weights_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        vec![("inner".into(), &mut self.inner as &mut dyn Maskable), ("outer".into(), &mut self.outer)]
    }
}

impl NestedLayer for NestedLayerNorm {
    fn layer_levels(&self) -> usize {
        self.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }
}

impl NestedLayer for crate::NestedEmbedding {
    fn layer_levels(&self) -> usize {
        self.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }

    fn layer_width(&self, level: usize) -> Option<usize> {
        Some(self.level_width(level))
    }
}

impl NestedLayer for NestedTransformerBlock {
    fn layer_levels(&self) -> usize {
        self.attention.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }

    fn layer_weights(&self) -> Vec<(String, &dyn Maskable)> {
        let parts = [
            ("attention", self.attention.layer_weights()),
            ("feed_forward", self.feed_forward.layer_weights()),
        ];
        parts
            .into_iter()
            .flat_map(|(part, weights)| weights.into_iter().map(move |(n, w)| (weight_name(part, &n), w)))
            .collect()
    }

    fn layer_weights_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        let parts = [
            ("attention", self.attention.layer_weights_mut()),
            ("feed_forward", self.feed_forward.layer_weights_mut()),
        ];
        parts
            .into_iter()
            .flat_map(|(part, weights)| weights.into_iter().map(move |(n, w)| (weight_name(part, &n), w)))
            .collect()
    }
}

impl NestedLayer for NestedTransformer {
    fn layer_levels(&self) -> usize {
        self.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }

    fn layer_weights(&self) -> Vec<(String, &dyn Maskable)> {
        let blocks = self.blocks.iter().enumerate();
        blocks
            .flat_map(|(i, b)| {
                b.layer_weights().into_iter().map(move |(n, w)| (weight_name(&format!("blocks.{i}"), &n), w))
            })
            .collect()
    }

    fn layer_weights_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        let blocks = self.blocks.iter_mut().enumerate();
        blocks
            .flat_map(|(i, b)| {
                b.layer_weights_mut()
                    .into_iter()
                    .map(move |(n, w)| (weight_name(&format!("blocks.{i}"), &n), w))
            })
            .collect()
    }

    fn layer_runs(&self, name: &str, level: usize) -> bool {
        // `name` is `blocks.i.part...` (the module path): block `i` runs if it is within the
        // level's depth.
        let block =
            weight_name_under(name, "blocks").and_then(|rest| rest.split('.').next()?.parse::<usize>().ok());
        block.is_none_or(|b| b < self.level_depth(level))
    }
}
