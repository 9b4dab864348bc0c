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

use std::collections::{BTreeMap, HashMap};

use crate::MAX_NETWORK_PARAMS;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot, PyTorchToBurnAdapter, bridge,
};
use burn::tensor::{Bytes, DType};
use nestednet_models::{InputShape, NestedNetwork, NestedNetworkConfig, NetworkOutput};
use nestednet_prune::{IndexArray, SparseLayout, SparseTensor};
use nestednet_schedule::check_level;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::InputOf;
use crate::{
    HierarchyConfig, LevelOutputs, Result, TrainError, load_record, probe_input, record_bytes, write_atomic,
};

/// File format of an exported level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Burn's record format (`.bpk`), with a `.json` [`LevelExport`] beside it.
    Burnpack,
    /// safetensors with PyTorch names and layouts.
    Safetensors,
    /// safetensors with the masked weights in compressed sparse form.
    SparseSafetensors,
}

impl ExportFormat {
    /// The format a file name suggests: `.sparse.safetensors` → sparse safetensors,
    /// `.safetensors` → safetensors, anything else → burnpack.
    pub fn from_path(path: &Path) -> Self {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".sparse.safetensors") {
            Self::SparseSafetensors
        } else if name.ends_with(".safetensors") {
            Self::Safetensors
        } else {
            Self::Burnpack
        }
    }
}

impl core::str::FromStr for ExportFormat {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "burnpack" | "bpk" => Ok(Self::Burnpack),
            "safetensors" => Ok(Self::Safetensors),
            "sparse" | "sparse-safetensors" => Ok(Self::SparseSafetensors),
            other => Err(TrainError::Invalid(format!(
                "unknown export format `{other}` (use burnpack, safetensors or sparse)"
            ))),
        }
    }
}

/// What an exported file holds besides its tensors: the nested model's configuration and the
/// level, which rebuild the level's network (a burnpack's `.json`, a safetensors file's
/// `nestednet.export` metadata).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "C: NestedNetworkConfig", deserialize = "C: NestedNetworkConfig"))]
pub struct LevelExport<C: NestedNetworkConfig> {
    /// The nested model's configuration.
    pub model: C,
    /// The exported level.
    pub level: usize,
    /// Its name.
    pub level_name: String,
    /// What one sample of its input looks like (images: `[channels, height, width]`).
    pub input_shape: InputShape<C::Network>,
    /// Classes it predicts.
    pub classes: usize,
    /// A Mix'n'Match sub-network instead of a trained level: the level whose width each
    /// mixable layer takes ([`NestedNetwork::mixed`]); `level` is then the highest of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<Vec<usize>>,
}

impl<C: NestedNetworkConfig> LevelExport<C> {
    /// The manifest of level `level` of `network`, built from `config`.
    fn of(network: &C::Network, config: &C, level: usize) -> Self {
        Self {
            model: config.clone(),
            level,
            level_name: network.level_name(level),
            input_shape: network.input_shape(),
            classes: network.level_classes(level),
            mix: None,
        }
    }
}

/// What an export wrote, and how well the file reproduces the nested level.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// The model file.
    pub path: PathBuf,
    /// The configuration file written beside it (burnpack only).
    pub config_path: Option<PathBuf>,
    /// Bytes of the model file.
    pub bytes: usize,
    /// The exported level.
    pub level: usize,
    /// Its name.
    pub level_name: String,
    /// Largest absolute difference between the reloaded file's logits and the nested
    /// level's on a fixed batch of 8 random images.
    pub max_abs_diff: f32,
}

/// The standalone network of one level of a `C` model.
pub type LevelNetwork<C> = <<C as NestedNetworkConfig>::Network as NestedNetwork>::Level;

/// Largest logit difference an export may show against the nested level.
pub const EXPORT_TOLERANCE: f32 = 1e-4;

/// Exports level `level` of `network` (in evaluation mode, built from `config`) to `path` in
/// `format`, then reads the file back and checks that it computes what the nested level
/// computes (within [`EXPORT_TOLERANCE`]).
pub fn export_level<C: NestedNetworkConfig>(
    network: &C::Network,
    config: &C,
    level: usize,
    path: &Path,
    format: ExportFormat,
) -> Result<ExportInfo> {
    check_level(level, network.num_levels())?;
    export_checked(network, level, LevelExport::of(network, config, level), path, format)
}

/// Exports `mixed`, the Mix'n'Match sub-network `choice` of a model built from `config`
/// ([`NestedNetwork::mixed`], its batch norms recalibrated: [`calibrated_mix`](crate::calibrated_mix)),
/// to `path` in `format` under the name `name`, then reads the file back and checks it
/// against `mixed` (within [`EXPORT_TOLERANCE`]). The file records `config` and `choice`.
pub fn export_mix<C: NestedNetworkConfig>(
    mixed: &C::Network,
    config: &C,
    choice: &[usize],
    name: &str,
    path: &Path,
    format: ExportFormat,
) -> Result<ExportInfo> {
    let manifest = LevelExport {
        model: config.clone(),
        level: choice.iter().copied().max().unwrap_or(0),
        level_name: name.to_string(),
        input_shape: mixed.input_shape(),
        classes: mixed.level_classes(0),
        mix: Some(choice.to_vec()),
    };
    let mut info = export_checked(mixed, 0, manifest, path, format)?;
    info.level = 0;
    Ok(info)
}

/// Writes level `level` of `network` with `manifest`, reads it back and compares.
fn export_checked<C: NestedNetworkConfig>(
    network: &C::Network,
    level: usize,
    manifest: LevelExport<C>,
    path: &Path,
    format: ExportFormat,
) -> Result<ExportInfo> {
    let standalone = network.extract_level(level);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    }
    let (bytes, config_path) = match format {
        ExportFormat::Burnpack => {
            let bytes = record_bytes(&standalone)?;
            write_atomic(path, &bytes)?;
            let config_path = burnpack_config_path(path);
            write_atomic(&config_path, &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))?;
            (bytes, Some(config_path))
        }
        ExportFormat::Safetensors | ExportFormat::SparseSafetensors => {
            let sparse = format == ExportFormat::SparseSafetensors;
            let bytes = safetensors_bytes(&standalone, &manifest, path, sparse)?;
            write_atomic(path, &bytes)?;
            (bytes, None)
        }
    };
    // Read the file back and compare it with the nested level.
    let device = network.devices().into_iter().next().map_or_else(Device::default, |d| d.inner());
    let (_, reloaded) = load_level_as::<C>(path, format, &device)?;
    let input = probe::<InputOf<C>>(&network.input_shape(), 8, &device);
    let nested = network.forward_level(input.clone(), level).into_logits();
    let alone = reloaded.valid().forward_level(input, 0).into_logits();
    let max_abs_diff = (alone - nested).abs().max().into_scalar::<f32>();
    // NaN fails too.
    if max_abs_diff.is_nan() || max_abs_diff > EXPORT_TOLERANCE {
        return Err(TrainError::Invalid(format!(
            "{}: the exported level {level} differs from the nested level by {max_abs_diff} (largest logit difference)",
            path.display()
        )));
    }
    Ok(ExportInfo {
        path: path.to_path_buf(),
        config_path,
        bytes: bytes.len(),
        level,
        level_name: manifest.level_name,
        max_abs_diff,
    })
}

/// `n` fixed pseudo-random inputs (from a seeded host generator: no device generator is
/// touched) to compare an export with its nested level.
pub(crate) fn probe<I: nestednet_models::NetworkInput>(shape: &I::Shape, n: usize, device: &Device) -> I {
    probe_input(shape, n, 0x5eed, device)
}

/// `FILE.json` beside a burnpack export (`level0.bpk` → `level0.json`).
pub fn burnpack_config_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

/// Loads an exported level on `device` (its format told by its file name, see
/// [`ExportFormat::from_path`]): its manifest and its standalone network.
pub fn load_level<C: NestedNetworkConfig>(
    path: &Path,
    device: &Device,
) -> Result<(LevelExport<C>, LevelNetwork<C>)> {
    load_level_as(path, ExportFormat::from_path(path), device)
}

/// [`load_level`] of a file in `format`, whatever its name.
pub fn load_level_as<C: NestedNetworkConfig>(
    path: &Path,
    format: ExportFormat,
    device: &Device,
) -> Result<(LevelExport<C>, LevelNetwork<C>)> {
    match format {
        ExportFormat::Burnpack => {
            let config_path = burnpack_config_path(path);
            let manifest_len = std::fs::metadata(&config_path).map_err(TrainError::io(&config_path))?.len();
            if manifest_len > MAX_MANIFEST_BYTES {
                return Err(TrainError::Record {
                    path: config_path,
                    message: format!(
                        "{manifest_len} bytes: an export's configuration file holds at most {MAX_MANIFEST_BYTES}"
                    ),
                });
            }
            let text = std::fs::read(&config_path).map_err(TrainError::io(&config_path))?;
            let manifest: LevelExport<C> = serde_json::from_slice(&text)
                .map_err(|source| TrainError::Json { path: config_path.clone(), source })?;
            let file_len = std::fs::metadata(path).map_err(TrainError::io(path))?.len();
            let skeleton = level_skeleton(&manifest, device, path, file_len, false)?;
            Ok((manifest, load_record(skeleton, path)?))
        }
        ExportFormat::Safetensors | ExportFormat::SparseSafetensors => load_safetensors_level(path, device),
    }
}

/// The largest configuration file beside a burnpack export (real ones are a few kB).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The level's standalone network, of the right shapes, ready to take its tensors.
///
/// The configuration comes from the file, so it is checked like user input before anything is
/// allocated (networks initialise lazily: counting their parameters allocates nothing): the
/// nested network it declares may hold at most [`MAX_NETWORK_PARAMS`] parameters, and the level
/// no more than `file_len` bytes of dense f32 weights can hold (sparse files: at most as many
/// as the full network).
fn level_skeleton<C: NestedNetworkConfig>(
    manifest: &LevelExport<C>,
    device: &Device,
    file: &Path,
    file_len: u64,
    sparse: bool,
) -> Result<LevelNetwork<C>> {
    crate::with_init_lock(|| {
        let network = manifest.model.init_network(device)?;
        check_level(manifest.level, network.num_levels())?;
        let full = network.level_cost(network.num_levels() - 1).params as u64;
        let level = network.level_cost(manifest.level).params as u64;
        let refuse = |reason: String| TrainError::Record { path: file.to_path_buf(), message: reason };
        if full > MAX_NETWORK_PARAMS {
            return Err(refuse(format!(
                "its configuration declares a network of {full} parameters; exports of more than {MAX_NETWORK_PARAMS} are refused"
            )));
        }
        if manifest.mix.is_none() && !sparse && level.saturating_mul(4) > file_len {
            return Err(refuse(format!(
                "its configuration declares a level of {level} parameters ({} bytes), more than the {file_len}-byte file holds",
                level.saturating_mul(4)
            )));
        }
        // A mix is built only once the full network's size is checked (building it draws the
        // weights it copies).
        if let Some(choice) = &manifest.mix {
            let mixed = network.mixed(choice)?;
            let level = mixed.level_cost(0).params as u64;
            if !sparse && level.saturating_mul(4) > file_len {
                return Err(refuse(format!(
                    "its configuration declares a sub-network of {level} parameters ({} bytes), more than the {file_len}-byte file holds",
                    level.saturating_mul(4)
                )));
            }
            return Ok(mixed.extract_level(0));
        }
        Ok(network.extract_level(manifest.level))
    })
}

/// One tensor to write: name, shape, dtype, little-endian bytes.
type NamedTensor = (String, Vec<usize>, Dtype, Vec<u8>);

/// Burn's PyTorch adapter, plus the same `[in, out]` → `[out, in]` transposition for nested
/// linear layers (which Burn's adapter does not know). Transposing is its own inverse, so the
/// adapter serves both directions.
#[derive(Debug, Clone, Default)]
struct NestedLinearPyTorchLayout;

impl ModuleAdapter for NestedLinearPyTorchLayout {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let is_weight = tensor.name.rsplit('.').next() == Some("weight");
        if ctx.module_type() != Some("Struct:NestedLinear") || !is_weight || tensor.shape.len() != 2 {
            return tensor;
        }
        let (name, dtype) = (tensor.name.clone(), tensor.dtype);
        let shape = vec![tensor.shape[1], tensor.shape[0]];
        bridge::map_data(tensor, name, dtype, shape.into(), transpose)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// The transpose of a 2-D tensor's data (any fixed-width dtype).
fn transpose(data: TensorData) -> TensorData {
    let shape = data.shape().to_vec();
    let (rows, cols) = (shape[0], shape[1]);
    let size = data.dtype().size();
    let bytes = data.as_bytes();
    let mut out = vec![0u8; bytes.len()];
    for i in 0..rows {
        for j in 0..cols {
            let (src, dst) = ((i * cols + j) * size, (j * rows + i) * size);
            out[dst..dst + size].copy_from_slice(&bytes[src..src + size]);
        }
    }
    TensorData::from_bytes_vec(out, vec![cols, rows], data.dtype())
}

fn to_safetensors_dtype(dtype: DType) -> Option<Dtype> {
    match dtype {
        DType::F32 => Some(Dtype::F32),
        DType::F64 => Some(Dtype::F64),
        DType::I64 => Some(Dtype::I64),
        DType::I32 => Some(Dtype::I32),
        DType::U8 => Some(Dtype::U8),
        _ => None,
    }
}

/// Every tensor of `level` under its PyTorch name and layout, plus `num_batches_tracked` for
/// every batch norm; and the map from each PyTorch name back to the tensor's module path.
fn pytorch_tensors<L: NestedNetwork>(
    level: &L,
    path: &Path,
) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let bad = |message: String| TrainError::Safetensors { path: path.to_path_buf(), message };
    let adapter = BurnToPyTorchAdapter.chain(NestedLinearPyTorchLayout);
    // The same traversal twice: module paths, then the adapted tensors (same order).
    let paths: Vec<String> = level.collect(None, None, true).into_iter().map(|t| t.name).collect();
    let adapted = level.collect(None, Some(Box::new(adapter)), true);
    let mut tensors = Vec::new();
    let mut origin = BTreeMap::new();
    for (module_path, tensor) in paths.into_iter().zip(adapted) {
        let name = level.export_name(&tensor.name);
        let dtype = to_safetensors_dtype(tensor.dtype).ok_or_else(|| {
            bad(format!("tensor `{name}` has dtype {:?}, which has no safetensors form", tensor.dtype))
        })?;
        let shape: Vec<usize> = tensor.shape.to_vec();
        let bytes = tensor.to_bytes().map_err(|e| bad(format!("tensor `{name}`: {e}")))?.to_vec();
        if origin.insert(name.clone(), module_path).is_some() {
            return Err(bad(format!("two tensors are exported as `{name}`")));
        }
        tensors.push((name, shape, dtype, bytes));
    }
    // PyTorch's BatchNorm also keeps a (here unknown) count of batches: 0, as a fresh module.
    let norms: Vec<String> =
        tensors.iter().filter_map(|(n, ..)| n.strip_suffix(".running_var").map(str::to_string)).collect();
    for norm in norms {
        tensors.push((
            format!("{norm}.num_batches_tracked"),
            vec![],
            Dtype::I64,
            0i64.to_le_bytes().to_vec(),
        ));
    }
    Ok((tensors, origin))
}

fn index_dtype(indices: &IndexArray) -> Dtype {
    match indices {
        IndexArray::U8(_) => Dtype::U8,
        IndexArray::U16(_) => Dtype::U16,
        IndexArray::U32(_) => Dtype::U32,
    }
}

/// Replaces every weight of two or more dimensions by its sparse arrays where they are
/// smaller; returns the layouts for the metadata.
fn sparsify(tensors: Vec<NamedTensor>) -> (Vec<NamedTensor>, Vec<(String, SparseLayout)>) {
    let mut out = Vec::new();
    let mut layouts = Vec::new();
    for (name, shape, dtype, data) in tensors {
        if !(name.ends_with(".weight") && shape.len() >= 2 && dtype == Dtype::F32) {
            out.push((name, shape, dtype, data));
            continue;
        }
        let values: Vec<f32> = f32_values(&data);
        let sparse = SparseTensor::from_dense(&values, &shape);
        if sparse.bytes() >= data.len() {
            // A dense (unmasked) weight is smaller stored densely.
            out.push((name, shape, dtype, data));
            continue;
        }
        let nnz = sparse.nnz();
        out.push((format!("{name}.values"), vec![nnz], Dtype::F32, f32_slice_bytes(&sparse.values)));
        out.push((
            format!("{name}.indices"),
            vec![sparse.indices.len()],
            index_dtype(&sparse.indices),
            sparse.indices.to_le_bytes(),
        ));
        out.push((
            format!("{name}.pointers"),
            vec![sparse.pointers.len()],
            index_dtype(&sparse.pointers),
            sparse.pointers.to_le_bytes(),
        ));
        layouts.push((name, sparse.layout));
    }
    (out, layouts)
}

fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn f32_slice_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Metadata key prefix of a sparse tensor's layout.
const SPARSE_PREFIX: &str = "nestednet.sparse.";
/// Metadata key of the [`LevelExport`].
const EXPORT_KEY: &str = "nestednet.export";

fn serialize(tensors: &[NamedTensor], metadata: HashMap<String, String>, path: &Path) -> Result<Vec<u8>> {
    let err = |e: safetensors::SafeTensorError| TrainError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let views = tensors
        .iter()
        .map(|(name, shape, dtype, data)| {
            TensorView::new(*dtype, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<core::result::Result<Vec<_>, _>>()
        .map_err(err)?;
    let bytes = safetensors::tensor::serialize(views, Some(metadata)).map_err(err)?;
    canonical_header(bytes).ok_or_else(|| TrainError::Safetensors {
        path: path.to_path_buf(),
        message: "the safetensors writer produced an unreadable header".into(),
    })
}

/// The same safetensors file with its JSON header's keys in sorted order: the writer takes the
/// metadata as a `HashMap`, whose order changes from run to run, so identical exports came out
/// as different bytes. The data and their offsets are unchanged; the header keeps its 8-byte
/// alignment (padded with spaces, as the format allows).
fn canonical_header(bytes: Vec<u8>) -> Option<Vec<u8>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    // serde_json's maps are ordered by key.
    let mut json = serde_json::to_vec(&header).ok()?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    Some(out)
}

fn safetensors_bytes<L: NestedNetwork, C: NestedNetworkConfig>(
    level: &L,
    manifest: &LevelExport<C>,
    path: &Path,
    sparse: bool,
) -> Result<Vec<u8>> {
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("nestednet.level".to_string(), manifest.level.to_string()),
        ("nestednet.model".to_string(), manifest.model.name()),
        (EXPORT_KEY.to_string(), serde_json::to_string(manifest).expect("manifest serializes")),
    ]);
    let (mut tensors, _) = pytorch_tensors(level, path)?;
    if sparse {
        let (sparse_tensors, layouts) = sparsify(tensors);
        tensors = sparse_tensors;
        for (name, layout) in layouts {
            metadata.insert(
                format!("{SPARSE_PREFIX}{name}"),
                serde_json::to_string(&layout).expect("layout serializes"),
            );
        }
    }
    serialize(&tensors, metadata, path)
}

/// Bytes of level `level` of `network` (built from `config`) exported as dense and as sparse
/// safetensors: the sizes [`export_level`] writes, computed in memory.
pub fn export_sizes<C: NestedNetworkConfig>(
    network: &C::Network,
    config: &C,
    level: usize,
) -> Result<(usize, usize)> {
    check_level(level, network.num_levels())?;
    let standalone = network.extract_level(level);
    let manifest = LevelExport::of(network, config, level);
    let path = Path::new("<in memory>");
    let dense = safetensors_bytes(&standalone, &manifest, path, false)?.len();
    let sparse = safetensors_bytes(&standalone, &manifest, path, true)?.len();
    Ok((dense, sparse))
}

fn to_burn_dtype(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 => Some(DType::F32),
        Dtype::F64 => Some(DType::F64),
        Dtype::I64 => Some(DType::I64),
        Dtype::I32 => Some(DType::I32),
        Dtype::U8 => Some(DType::U8),
        _ => None,
    }
}

/// Loads a safetensors export (PyTorch layout, dense or sparse) on `device`. Sparse tensors
/// are checked (pointers, index ranges and order) before use; every tensor of the level must
/// be in the file with its shape, and nothing else may be.
fn load_safetensors_level<C: NestedNetworkConfig>(
    path: &Path,
    device: &Device,
) -> Result<(LevelExport<C>, LevelNetwork<C>)> {
    let err = |message: String| TrainError::Safetensors { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let manifest_json = metadata
        .get(EXPORT_KEY)
        .ok_or_else(|| err(format!("no `{EXPORT_KEY}` metadata: not a nestednet export")))?;
    let manifest: LevelExport<C> =
        serde_json::from_str(manifest_json).map_err(|e| err(format!("bad {EXPORT_KEY} metadata: {e}")))?;
    let sparse = metadata.keys().any(|k| k.starts_with(SPARSE_PREFIX));
    let skeleton = level_skeleton(&manifest, device, path, bytes.len() as u64, sparse)?;
    let skeleton = fill_from_safetensors(skeleton, path, &bytes, &metadata)?;
    Ok((manifest, skeleton))
}

/// A dense network's weights for `skeleton` (a standalone network of the right shapes) from
/// `path`: safetensors with PyTorch's names and layouts (a nestednet export, or a state dict
/// saved from PyTorch, `num_batches_tracked` optional), or a burnpack record. Every tensor of
/// the skeleton must be in the file with its shape, and nothing else.
pub fn load_dense_weights<L: NestedNetwork>(skeleton: L, path: &Path) -> Result<L> {
    let len = std::fs::metadata(path).map_err(TrainError::io(path))?.len();
    // Dense f32 weights (or f64 at most) plus a generous header: a larger file is not this
    // network's, and is not read into memory.
    let bound = (skeleton.num_params() as u64).saturating_mul(8).saturating_add(16 << 20);
    if len > bound {
        return Err(TrainError::Record {
            path: path.to_path_buf(),
            message: format!("{len} bytes, more than the {bound} a dense network of these shapes takes"),
        });
    }
    if ExportFormat::from_path(path) == ExportFormat::Burnpack {
        return load_record(skeleton, path);
    }
    let err = |message: String| TrainError::Safetensors { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    fill_from_safetensors(skeleton, path, &bytes, &metadata)
}

/// `skeleton` with every tensor read from the safetensors `bytes` (PyTorch names and layouts;
/// sparse tensors as `metadata` describes them).
fn fill_from_safetensors<L: NestedNetwork>(
    mut skeleton: L,
    path: &Path,
    bytes: &[u8],
    metadata: &HashMap<String, String>,
) -> Result<L> {
    let err = |message: String| TrainError::Safetensors { path: path.to_path_buf(), message };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| err(e.to_string()))?;
    let raw = |name: &str, dtypes: &[Dtype]| -> Result<(Vec<usize>, Dtype, &[u8])> {
        let view = st.tensor(name).map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        if !dtypes.contains(&view.dtype()) {
            return Err(err(format!("tensor `{name}` is {:?}, expected one of {dtypes:?}", view.dtype())));
        }
        Ok((view.shape().to_vec(), view.dtype(), view.data()))
    };
    // What the level holds, under its exported names (shapes in PyTorch's layout).
    let (expected, origin) = pytorch_tensors(&skeleton, path)?;
    let mut used: Vec<String> = Vec::new();
    let mut tensors = Vec::new();
    for (name, shape, dtype, _) in &expected {
        let Some(module_path) = origin.get(name) else {
            // `num_batches_tracked`: PyTorch's, not Burn's.
            used.push(name.clone());
            continue;
        };
        let (data, dtype) = match metadata.get(&format!("{SPARSE_PREFIX}{name}")) {
            Some(layout) => {
                let layout: SparseLayout = serde_json::from_str(layout)
                    .map_err(|e| err(format!("bad sparse layout of `{name}`: {e}")))?;
                if layout.shape != *shape {
                    return Err(err(format!(
                        "sparse tensor `{name}` has shape {:?}, expected {shape:?}",
                        layout.shape
                    )));
                }
                let index = |suffix: &str| -> Result<IndexArray> {
                    let (_, dtype, data) =
                        raw(&format!("{name}.{suffix}"), &[Dtype::U8, Dtype::U16, Dtype::U32])?;
                    IndexArray::from_le_bytes(data, dtype.bitsize() / 8)
                        .ok_or_else(|| err(format!("`{name}.{suffix}` is not an index array")))
                };
                let (_, _, values) = raw(&format!("{name}.values"), &[Dtype::F32])?;
                let sparse = SparseTensor {
                    layout,
                    pointers: index("pointers")?,
                    indices: index("indices")?,
                    values: f32_values(values),
                };
                sparse.validate(name)?;
                for suffix in ["values", "indices", "pointers"] {
                    used.push(format!("{name}.{suffix}"));
                }
                (f32_slice_bytes(&sparse.to_dense()), DType::F32)
            }
            None => {
                let (found, found_dtype, data) = raw(name, &[*dtype])?;
                if found != *shape {
                    return Err(err(format!("tensor `{name}` has shape {found:?}, expected {shape:?}")));
                }
                used.push(name.clone());
                (data.to_vec(), to_burn_dtype(found_dtype).expect("a dtype the level holds"))
            }
        };
        tensors.push(PackTensor::new(
            module_path.clone(),
            dtype,
            shape.clone(),
            None,
            Bytes::from_bytes_vec(data),
        ));
    }
    if let Some(extra) = st.names().into_iter().find(|n| !used.iter().any(|u| u == *n)) {
        return Err(err(format!("tensor `{extra}` does not belong to this level")));
    }
    let adapter = PyTorchToBurnAdapter.chain(NestedLinearPyTorchLayout);
    let applied = skeleton.apply(tensors, None, Some(Box::new(adapter)), true);
    if !applied.errors.is_empty() || !applied.missing.is_empty() || !applied.unused.is_empty() {
        return Err(err(format!(
            "the tensors do not fit the level: {} errors, missing {:?}, unused {:?}",
            applied.errors.len(),
            applied.missing.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            applied.unused
        )));
    }
    Ok(skeleton)
}

/// How the levels of a consensus export are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusMethod {
    /// NestedNet-A: the mean of the levels' probabilities (coarse levels lifted).
    Average,
    /// NestedNet-L: the learned layer on the levels' log-probabilities.
    Learned,
}

impl core::str::FromStr for ConsensusMethod {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "average" => Ok(Self::Average),
            "learned" => Ok(Self::Learned),
            other => {
                Err(TrainError::Invalid(format!("unknown consensus `{other}` (use average or learned)")))
            }
        }
    }
}

/// `consensus.json` of a consensus export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsensusManifest {
    /// How the levels are combined.
    pub method: ConsensusMethod,
    /// Number of levels; level `k` is `level{k}.safetensors` beside this file.
    pub num_levels: usize,
    /// The hierarchy of coarse-to-fine levels, if any (it says how coarse levels are lifted).
    pub hierarchy: Option<HierarchyConfig>,
}

/// Every level as a standalone network plus the way to combine them.
pub struct ConsensusModel<C: NestedNetworkConfig> {
    /// The manifest.
    pub manifest: ConsensusManifest,
    /// The levels, core first.
    pub levels: Vec<LevelNetwork<C>>,
    /// The learned layer (method `learned`).
    pub layer: Option<Linear>,
}

impl<C: NestedNetworkConfig> ConsensusModel<C> {
    /// Every level's probabilities for `input`, one row per output row.
    pub fn outputs(&self, input: InputOf<C>) -> LevelOutputs {
        let mut probs = Vec::new();
        let mut classes = Vec::new();
        let mut rows = 0;
        for level in &self.levels {
            let p = burn::tensor::activation::softmax(level.forward_level(input.clone(), 0).into_logits(), 1);
            let [r, c] = p.dims();
            rows = r;
            classes.push(c);
            probs.push(p.into_data().convert::<f32>().try_to_vec::<f32>().expect("probabilities"));
        }
        LevelOutputs { probs, classes, fine_labels: vec![0; rows] }
    }

    /// The consensus's fine-class prediction for every output row of `input` (every image, for
    /// an image classifier).
    pub fn predict(&self, input: InputOf<C>) -> Result<Vec<usize>> {
        let outputs = self.outputs(input);
        match (self.manifest.method, &self.layer) {
            (ConsensusMethod::Average, _) => outputs.consensus_average(self.manifest.hierarchy.as_ref()),
            (ConsensusMethod::Learned, Some(layer)) => outputs.consensus_learned(layer),
            (ConsensusMethod::Learned, None) => {
                Err(TrainError::Invalid("the learned consensus has no layer".into()))
            }
        }
    }
}

/// Exports every level of `network` (evaluation mode) and the consensus into `dir`:
/// `level{k}.safetensors` (PyTorch layout, each verified), `consensus.json` and, for the
/// learned consensus, `consensus.safetensors` (`weight` `[classes, Σ level classes]` in
/// PyTorch's layout, `bias`). The folder is then read back and its consensus must predict
/// what the nested levels' consensus predicts on 64 fixed random images; returns the manifest
/// and the number of images checked.
pub fn export_consensus<C: NestedNetworkConfig>(
    network: &C::Network,
    config: &C,
    method: ConsensusMethod,
    hierarchy: Option<&HierarchyConfig>,
    layer: Option<&Linear>,
    dir: &Path,
) -> Result<(ConsensusManifest, usize)> {
    if network.num_levels() < 2 {
        return Err(TrainError::Invalid("a consensus needs at least 2 levels".into()));
    }
    if method == ConsensusMethod::Learned && layer.is_none() {
        return Err(TrainError::Invalid("the run has no learned consensus (consensus.bpk)".into()));
    }
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    for level in 0..network.num_levels() {
        export_level(
            network,
            config,
            level,
            &dir.join(format!("level{level}.safetensors")),
            ExportFormat::Safetensors,
        )?;
    }
    if let (ConsensusMethod::Learned, Some(layer)) = (method, layer) {
        let path = dir.join("consensus.safetensors");
        let weight = layer.weight.val().transpose();
        let bias = layer.bias.as_ref().map(|b| b.val()).expect("consensus layer has a bias");
        let tensors = [
            ("weight".to_string(), weight.dims().to_vec(), Dtype::F32, f32_bytes(weight)),
            ("bias".to_string(), bias.dims().to_vec(), Dtype::F32, f32_bytes(bias)),
        ];
        write_atomic(&path, &serialize(&tensors, HashMap::new(), &path)?)?;
    }
    let manifest =
        ConsensusManifest { method, num_levels: network.num_levels(), hierarchy: hierarchy.cloned() };
    write_atomic(
        &dir.join("consensus.json"),
        &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
    )?;
    // Verify: the folder's consensus against the nested levels' on the same images.
    let device = network.devices().into_iter().next().map_or_else(Device::default, |d| d.inner());
    let reloaded = load_consensus_export::<C>(dir, &device)?;
    let input = probe::<InputOf<C>>(&network.input_shape(), 64, &device);
    let mut nested = reloaded.outputs(input.clone());
    nested.probs = (0..network.num_levels())
        .map(|k| {
            let p =
                burn::tensor::activation::softmax(network.forward_level(input.clone(), k).into_logits(), 1);
            p.into_data().convert::<f32>().try_to_vec::<f32>().expect("probabilities")
        })
        .collect();
    let expected = match (method, layer) {
        (ConsensusMethod::Learned, Some(layer)) => nested.consensus_learned(layer)?,
        _ => nested.consensus_average(hierarchy)?,
    };
    let got = reloaded.predict(input)?;
    let differing = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
    if differing > 0 {
        return Err(TrainError::Invalid(format!(
            "{}: the exported consensus disagrees with the nested levels on {differing} of {} inputs",
            dir.display(),
            got.len()
        )));
    }
    Ok((manifest, got.len()))
}

fn f32_bytes<const D: usize>(t: Tensor<D>) -> Vec<u8> {
    f32_slice_bytes(&t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data"))
}

/// Loads a consensus export written by [`export_consensus`].
pub fn load_consensus_export<C: NestedNetworkConfig>(
    dir: &Path,
    device: &Device,
) -> Result<ConsensusModel<C>> {
    let path = dir.join("consensus.json");
    let text = std::fs::read(&path).map_err(TrainError::io(&path))?;
    let manifest: ConsensusManifest =
        serde_json::from_slice(&text).map_err(|source| TrainError::Json { path: path.clone(), source })?;
    let levels = (0..manifest.num_levels)
        .map(|k| load_level::<C>(&dir.join(format!("level{k}.safetensors")), device).map(|(_, m)| m))
        .collect::<Result<Vec<_>>>()?;
    let layer = match manifest.method {
        ConsensusMethod::Average => None,
        ConsensusMethod::Learned => {
            let path = dir.join("consensus.safetensors");
            let err = |message: String| TrainError::Safetensors { path: path.clone(), message };
            let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
            let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
            let read = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
                let view = st.tensor(name).map_err(|e| err(format!("tensor `{name}`: {e}")))?;
                if view.dtype() != Dtype::F32 {
                    return Err(err(format!("tensor `{name}` is {:?}, expected F32", view.dtype())));
                }
                Ok((view.shape().to_vec(), f32_values(view.data())))
            };
            let (wshape, w) = read("weight")?;
            let (bshape, b) = read("bias")?;
            if wshape.len() != 2 || bshape != [wshape[0]] {
                return Err(err(format!("weight {wshape:?} and bias {bshape:?} do not make a linear layer")));
            }
            let mut layer = burn::nn::LinearConfig::new(wshape[1], wshape[0]).init(device);
            let weight: Tensor<2> = Tensor::from_data(TensorData::new(w, wshape), device);
            layer.weight = burn::module::Param::from_tensor(weight.transpose());
            layer.bias =
                Some(burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(b, bshape), device)));
            Some(layer)
        }
    };
    Ok(ConsensusModel { manifest, levels, layer })
}
