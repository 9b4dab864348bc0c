//! Exporting one level as a compact standalone model, for any nested network.
//!
//! A level is extracted ([`NestedNetwork::extract_level`]: compact copies of the level's
//! weights, masks applied), written, read back and checked against the nested level before
//! the export reports success. Three formats:
//!
//! - **burnpack** (`FILE`, Burn's record format) plus `FILE` with extension `.json`, a
//!   [`LevelExport`]: the nested model's configuration and the level, which rebuild the
//!   level's network to load the record into.
//! - **safetensors** with PyTorch's names and layouts, so that `torch.nn.Module.load_state_dict`
//!   (`strict=True`) takes it: Burn's own PyTorch adapter (`BurnToPyTorchAdapter`: linear
//!   weights transposed to `[out, in]`, batch norms' `gamma`/`beta` as `weight`/`bias`), the
//!   same transposition for nested linear layers, the network's own names
//!   ([`NestedNetwork::export_name`]: torchvision's for the residual networks), and
//!   `num_batches_tracked` beside every batch norm. The [`LevelExport`] is in the metadata under
//!   `nestednet.export`. `scripts/load_exported.py` shows the PyTorch side.
//! - **sparse safetensors** (`FILE.sparse.safetensors`): the same, except that every weight of
//!   two or more dimensions that is smaller so is stored in compressed sparse form as
//!   `W.values` (`float32`), `W.indices` and `W.pointers` (`uint8`, `uint16` or `uint32`, the
//!   smallest the shape allows), with its layout (dense shape in PyTorch's layout, split
//!   axis, `csr` or `csc`) as JSON in the metadata under `nestednet.sparse.W`. See
//!   [`nestednet_prune::SparseTensor`].

pub(crate) mod level;
pub use level::{
    EXPORT_TOLERANCE, ExportFormat, ExportInfo, LevelExport, LevelNetwork, burnpack_config_path,
    export_level, export_mix, export_sizes, load_dense_weights, load_level, load_level_as,
};
pub(crate) mod nestify;
pub use nestify::{Nestified, NestifyRecord, nestify};
pub(crate) mod safetensors;
