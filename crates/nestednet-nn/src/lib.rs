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
//! Each layer can also be turned into the plain Burn layer of one level with `extract_level`,
//! whose tensors are compact copies of the level's block (used for export).
#![warn(missing_docs)]

mod batch_norm;
mod conv;
mod linear;
mod widths;

#[cfg(test)]
mod tests;

pub use batch_norm::{LevelBatchNorm, LevelBatchNormConfig};
pub use conv::{NestedConv2d, NestedConv2dConfig};
pub use linear::{NestedLinear, NestedLinearConfig};
pub use widths::check_level_widths;

/// Makes a compact, standalone copy of a (sliced) tensor: fresh storage of exactly the slice's
/// size, detached from any autodiff graph. Exports go through this so that an exported level is
/// physically the level's size and never aliases the nested model's buffers.
pub fn compact_copy<const D: usize>(tensor: burn::tensor::Tensor<D>) -> burn::tensor::Tensor<D> {
    let device = tensor.device().inner();
    burn::tensor::Tensor::from_data(tensor.into_data(), &device)
}
