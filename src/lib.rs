//! **nestednet**: nested sparse networks (NestedNet, Kim, Ahn & Oh, CVPR 2018) on Burn.
//!
//! One set of weights holds `n` nested networks ("levels"): level 0 (the core) is the smallest,
//! the last level is the full network, and every level's weights are a subset of the next
//! level's. All levels train jointly from scratch; one trained model then serves many budgets.
//!
//! This facade re-exports the workspace crates:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`schedule`] | `nestednet-schedule` | [`LevelSpec`](schedule::LevelSpec), [`ChannelSchedule`](schedule::ChannelSchedule), [`LatticeSpec`](schedule::LatticeSpec): validated level descriptions |
//! | [`nn`] | `nestednet-nn` | `NestedLinear`, `NestedConv2d`, `LevelConv2d`, `LevelBatchNorm`, the cost probe |
//! | [`prune`] | `nestednet-prune` | `NestedMask`: nested unstructured masks as one level map |
//! | [`heads`] | `nestednet-heads` | joint loss (Eq. 5), losses, hierarchies, `NestedHead` |
//! | [`models`] | `nestednet-models` | the [`NestedNetwork`](models::NestedNetwork) trait every network implements (a user's own too), and the built-in models' registry |
//! | [`data`] | `nestednet-data` | idx / CIFAR / image-folder loaders, augmentation, batching |
//! | [`train`] | `nestednet-train` | training, settings, checkpoints, reports, export, backends |
//!
//! Backends are Cargo features of this crate: `flex` (default), `ndarray`, `wgpu`, `tch`,
//! `cuda`. The code itself is backend-agnostic: everything takes a `&Device`.
#![warn(missing_docs)]

pub use burn;
pub use nestednet_data as data;
pub use nestednet_heads as heads;
pub use nestednet_kernels as kernels;
pub use nestednet_models as models;
pub use nestednet_nn as nn;
pub use nestednet_prune as prune;
pub use nestednet_schedule as schedule;
pub use nestednet_train as train;

/// `#[derive(NestedNetwork)]`: a nested network's levels, level extraction, weight layers and
/// widths from its fields (see the `nestednet-derive` crate).
pub use nestednet_derive::NestedNetwork;

/// The process's allocator: mimalloc, counted for `select`'s memory budgets and tuned for
/// training loops (the `mimalloc` feature, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: nestednet_alloc::NestednetAllocator = nestednet_alloc::NestednetAllocator::new();

/// Where the repository's vendored copy of `mnist10k` lives (real MNIST, 8,000 training and
/// 2,000 test digits; see `data/mnist10k/README.md`).
pub fn vendored_mnist_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join("mnist10k")
}
