//! Nested layers for nested sparse networks (NestedNet, Kim, Ahn & Oh, CVPR 2018).
//!
//! Every layer here owns **one** parameter tensor that all levels share. Level `k` runs on the
//! top-left block of that tensor (its leading input and output channels), sliced on the fly in
//! `forward(x, level)`: no level owns a copy, so an optimizer step on the shared parameter
//! updates every level at once, and a small level really computes on small tensors.
//!
//! - [`NestedLinear`]: weight `[d_input, d_output]` (Burn's layout), level `k` uses
//!   `weight[..in_k, ..out_k]`.
//! - [`NestedConv2d`]: weight `[c_out, c_in, kh, kw]`, level `k` uses
//!   `weight[..out_k, ..in_k, :, :]`.
//! - [`LevelBatchNorm`]: switchable batch norm, one private affine transform and one set of
//!   running statistics per level (the activations of different widths have different
//!   statistics, as Slimmable Networks showed).
//!
//! [`NestedLinear`] and [`NestedConv2d`] can also carry a [`NestedMask`] (weight connection
//! learning): level `k` then uses only the weights of its block whose map value is `<= k`, so
//! a level can be both narrower and sparser. The [`Maskable`] trait is what mask learning sees
//! of a layer.
//!
//! Each layer can also be turned into the plain Burn layer of one level with `extract_level`,
//! whose tensors are compact copies of the level's block (used for export).
//!
//! [`LevelConv2d`] is a convolution that is either nested or private per level (the paper's
//! "un-nested" first layer). While [`record_costs`] runs a forward pass, every nested layer
//! records the parameters and multiply-accumulates it used, so a network built from these
//! layers gets its per-level costs without counting them by hand.
//!
//! Transformer layers nest the same way (DynaBERT, MatFormer, HAT):
//!
//! - [`NestedMultiHeadAttention`]: level `k` uses the first `h_k` heads, the head size fixed
//!   across levels; Q, K and V keep the columns of those heads, the output projection their
//!   rows; padding and causal masks as Burn's `MhaInput`.
//! - [`NestedFeedForward`] (MatFormer): level `k` uses the first `m_k` hidden units.
//! - [`NestedEmbedding`] and [`NestedLayerNorm`]: a nested model width (level `k` uses the
//!   leading `d_k` features of every residual stream; layer norm computes its statistics over
//!   the level's width only).
//! - [`NestedTransformer`]: pre-norm blocks, level `k` running the first `depths[k]` of them;
//!   `forward_lattice` runs any width level at any depth, and `single_block` per layer gives
//!   Mix'n'Match sub-models.
//!
//! Configs of these layers have a `check` returning [`NnError`], so a model config a user
//! wrote gets a clear error before `init` (which panics on the same problems, as Burn does).
#![warn(missing_docs)]

mod attention;
mod batch_norm;
mod conv;
mod embedding;
mod error;
mod feed_forward;
mod layer_norm;
mod level_conv;
mod linear;
mod probe;
mod reorder;
mod transformer;
mod widths;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_transformer;

pub use attention::{NestedMhaInput, NestedMultiHeadAttention, NestedMultiHeadAttentionConfig};
pub use batch_norm::{LevelBatchNorm, LevelBatchNormConfig};
pub use conv::{NestedConv2d, NestedConv2dConfig};
pub use embedding::{NestedEmbedding, NestedEmbeddingConfig};
pub use error::NnError;
pub use feed_forward::{FeedForwardActivation, NestedFeedForward, NestedFeedForwardConfig};
pub use layer_norm::{NestedLayerNorm, NestedLayerNormConfig};
pub use level_conv::{LevelConv2d, LevelConv2dConfig};
pub use linear::{NestedLinear, NestedLinearConfig};
pub use nestednet_prune::{NestedMask, PruneError};
pub use probe::{
    RecordedCost, recalibrate_batch_norms, recalibrated_batch_norms, recalibrating, record_costs,
};
pub use reorder::{
    ChannelImportance, batch_norm_gamma, conv_filter_l1, importance_order, linear_unit_l1,
    permute_batch_norm, permute_conv_inputs, permute_conv_outputs, permute_linear_inputs,
    permute_linear_outputs,
};
pub use transformer::{AttentionMasks, NestedTransformer, NestedTransformerBlock, NestedTransformerConfig};
pub use widths::{check_level_widths, level_widths_problem};

/// A layer whose weight can carry a nested unstructured mask: what mask learning, pruning and
/// sparse export need to see of it.
pub trait Maskable {
    /// The mask, if the layer is masked.
    fn mask(&self) -> Option<&NestedMask>;
    /// The mask, mutably.
    fn mask_mut(&mut self) -> Option<&mut NestedMask>;
    /// The full shared weight as host values (flat, row-major, the mask's order).
    fn weight_values(&self) -> Vec<f32>;
    /// Replaces the full shared weight with `values` (flat, row-major, the order of
    /// [`weight_values`](Self::weight_values)); the parameter keeps its id and gradient state.
    fn set_weight_values(&mut self, values: &[f32]) -> Result<(), nestednet_prune::PruneError>;
    /// Weights in level `level`'s channel block (what the level would use unmasked).
    fn block_weights(&self, level: usize) -> usize;
    /// Sets the weights no level uses to exactly zero (they get no gradient once masked, but
    /// keep their old values until then).
    fn zero_pruned(&mut self);
    /// Whether the layer can carry a nested mask at all (a layer whose levels share no
    /// weight cannot).
    fn can_mask(&self) -> bool {
        true
    }
    /// Turns the nested mask on, dense (every level uses its whole block), if it is off.
    fn enable_mask(&mut self);
}

/// A layer of a nested network, as the `#[derive(NestedNetwork)]` macro (`nestednet-derive`)
/// sees a field: how many levels it has, its copy for one level, its width at a level (for
/// reports) and its weight mask, if it can carry one. Implemented by every nested layer of
/// this crate and by `nestednet-heads`' `NestedHead`.
pub trait NestedLayer: Sized {
    /// Number of levels (level 0 = core).
    fn layer_levels(&self) -> usize;

    /// The layer of level `level` alone: a one-level layer with compact copies of the level's
    /// weights (masks applied).
    fn layer_for_level(&self, level: usize) -> Self;

    /// Its output width at `level` (channels, units, classes), for reports; `None` when it
    /// has none of its own (a batch norm follows the width of the layer before it).
    fn layer_width(&self, level: usize) -> Option<usize> {
        let _ = level;
        None
    }

    /// Its weight, as mask learning sees it, if it can carry a nested mask.
    fn as_maskable(&self) -> Option<&dyn Maskable> {
        None
    }

    /// The same, mutably.
    fn as_maskable_mut(&mut self) -> Option<&mut dyn Maskable> {
        None
    }

    /// Every weight inside it that can carry a nested mask, in forward order, named relative
    /// to the layer: `""` for the layer's own weight ([`as_maskable`](Self::as_maskable), the
    /// default), `"query"` or `"3.feed_forward.inner"` for a part of a composite layer. A
    /// network names them `field` or `field.part`.
    fn layer_weights(&self) -> Vec<(String, &dyn Maskable)> {
        self.as_maskable().map(|m| vec![(String::new(), m)]).unwrap_or_default()
    }

    /// The same weights, mutably, in the same order.
    fn layer_weights_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        self.as_maskable_mut().map(|m| vec![(String::new(), m)]).unwrap_or_default()
    }

    /// Whether level `level` runs the weight `name` (as [`layer_weights`](Self::layer_weights)
    /// names it): a depth-nested stack skips its blocks beyond the level's depth.
    fn layer_runs(&self, name: &str, level: usize) -> bool {
        let _ = (name, level);
        true
    }
}

/// `prefix.name`, or `prefix` for a layer's own weight (`name` empty).
pub fn weight_name(prefix: &str, name: &str) -> String {
    if name.is_empty() { prefix.to_string() } else { format!("{prefix}.{name}") }
}

/// The part of `name` under `prefix` (`"query"` of `"attention.query"` under `"attention"`,
/// `""` for `prefix` itself), or `None` if `name` is not under it.
pub fn weight_name_under<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    if rest.is_empty() { Some("") } else { rest.strip_prefix('.') }
}

/// The weight layers: each has its levels, a one-level copy, an output width per level and a
/// mask.
macro_rules! maskable_nested_layer {
    ($($layer:ty),*) => {$(
        impl NestedLayer for $layer {
            fn layer_levels(&self) -> usize {
                self.num_levels()
            }

            fn layer_for_level(&self, level: usize) -> Self {
                self.single_level(level)
            }

            fn layer_width(&self, level: usize) -> Option<usize> {
                Some(self.level_dims(level).1)
            }

            fn as_maskable(&self) -> Option<&dyn Maskable> {
                Some(self)
            }

            fn as_maskable_mut(&mut self) -> Option<&mut dyn Maskable> {
                Some(self)
            }
        }
    )*};
}

maskable_nested_layer!(NestedLinear, NestedConv2d, LevelConv2d);

impl NestedLayer for LevelBatchNorm {
    fn layer_levels(&self) -> usize {
        self.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }
}

/// Implements [`Maskable`] for a nested layer with `weight: Param<Tensor<_>>`, `mask:
/// Option<NestedMask>` and `dense_mask(&Device)`; `$block` gives the weights in a level's block.
macro_rules! maskable_layer {
    ($layer:ty, $block:expr) => {
        impl $crate::Maskable for $layer {
            fn mask(&self) -> Option<&$crate::NestedMask> {
                self.mask.as_ref()
            }

            fn mask_mut(&mut self) -> Option<&mut $crate::NestedMask> {
                self.mask.as_mut()
            }

            fn weight_values(&self) -> Vec<f32> {
                $crate::host_values(self.weight.val())
            }

            fn set_weight_values(&mut self, values: &[f32]) -> Result<(), $crate::PruneError> {
                self.weight = $crate::replace_values(self.weight.clone(), values)?;
                Ok(())
            }

            fn block_weights(&self, level: usize) -> usize {
                let block: fn(&$layer, usize) -> usize = $block;
                block(self, level)
            }

            fn zero_pruned(&mut self) {
                if let Some(mask) = &self.mask {
                    self.weight =
                        mask.zero_unused(self.weight.clone()).expect("the mask has the weight's shape");
                }
            }

            fn enable_mask(&mut self) {
                if self.mask.is_none() {
                    self.mask = Some(self.dense_mask(&self.weight.device()));
                }
            }
        }
    };
}

pub(crate) use maskable_layer;

/// `param` with its values replaced by `values` (same shape), id and gradient state kept.
pub(crate) fn replace_values<const D: usize>(
    param: burn::module::Param<burn::tensor::Tensor<D>>,
    values: &[f32],
) -> Result<burn::module::Param<burn::tensor::Tensor<D>>, nestednet_prune::PruneError> {
    let dims = param.dims();
    if dims.iter().product::<usize>() != values.len() {
        return Err(nestednet_prune::PruneError::ShapeMismatch {
            what: "weight values".into(),
            expected: dims.to_vec(),
            found: vec![values.len()],
        });
    }
    Ok(param.map(|w| {
        let device = w.device();
        burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(values.to_vec(), dims), &device)
    }))
}

/// Sets the weights of `layers` (per-level private copies) from their values one after
/// another, as their owner's [`Maskable::weight_values`] lists them.
pub fn set_concatenated_weights<L: Maskable>(
    layers: &mut [L],
    values: &[f32],
) -> Result<(), nestednet_prune::PruneError> {
    let sizes: Vec<usize> = layers.iter().map(|l| l.weight_values().len()).collect();
    if sizes.iter().sum::<usize>() != values.len() {
        return Err(nestednet_prune::PruneError::ShapeMismatch {
            what: "weight values of the per-level copies".into(),
            expected: sizes,
            found: vec![values.len()],
        });
    }
    let mut rest = values;
    for (layer, size) in layers.iter_mut().zip(sizes) {
        let (mine, tail) = rest.split_at(size);
        layer.set_weight_values(mine)?;
        rest = tail;
    }
    Ok(())
}

/// Host values of a float tensor.
pub(crate) fn host_values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 tensor data")
}

/// Makes a compact, standalone copy of a (sliced) tensor: fresh storage of exactly the slice's
/// size, detached from any autodiff graph. Exports go through this so that an exported level is
/// physically the level's size and never aliases the nested model's buffers.
pub fn compact_copy<const D: usize>(tensor: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
    let device = tensor.device().inner();
    burn::tensor::Tensor::from_data(tensor.into_data(), &device)
}
