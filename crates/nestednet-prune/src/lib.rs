//! Pruning and mask learning for nested sparse networks.
//!
//! - [`NestedMask`]: for one weight tensor, a map that stores, per weight, the **lowest level
//!   that uses it** (or "pruned"). Level `k`'s binary mask is then `level_map <= k`, so the
//!   masks of all levels nest (`mask_0 ⊆ mask_1 ⊆ … ⊆ mask_full`) by construction, and one
//!   small integer tensor replaces `n` boolean masks. The map is a recorded parameter, so it is
//!   saved in checkpoints and survives a reload.
//! - [`SoftThreshold`]: the relaxed mask `tanh(γ · relu(|w| − τ))` of the paper's Eq. (3),
//!   used while a level's connections are learned, and [`threshold_keeping`], which finds the
//!   τ that reaches a requested density.
//! - [`MaskTargets`]: what the user asks of each level (densities, compression ratios or
//!   thresholds), validated.
//! - [`SparseTensor`]: compressed sparse storage (CSR or CSC) of a pruned weight, with the
//!   smallest index types its shape allows.
#![warn(missing_docs)]

mod error;
mod mask;
mod sparse;
mod target;

pub use error::{PruneError, Result};
pub use mask::NestedMask;
pub use sparse::{IndexArray, SparseLayout, SparseOrientation, SparseTensor};
pub use target::{
    BINARY_MASK_THRESHOLD, DEFAULT_GAMMA, MaskTargets, SoftThreshold, binarisation_offset, threshold_keeping,
};
