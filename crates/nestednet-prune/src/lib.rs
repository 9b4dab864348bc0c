//! Pruning and mask learning for nested sparse networks.
//!
//! The central type is [`NestedMask`]: for one weight tensor, a map that stores, per weight,
//! the **lowest level that uses it** (or "pruned"). Level `k`'s binary mask is then
//! `level_map <= k`, so the masks of all levels nest (`mask_0 ⊆ mask_1 ⊆ … ⊆ mask_full`) by
//! construction, and one small integer tensor replaces `n` boolean masks. The map is a recorded
//! parameter, so it is saved in checkpoints and survives a reload.
#![warn(missing_docs)]

mod error;
mod mask;

pub use error::{PruneError, Result};
pub use mask::NestedMask;
