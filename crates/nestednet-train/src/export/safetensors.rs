//! safetensors with PyTorch's names and layouts, dense or sparse: writing and reading.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot, PyTorchToBurnAdapter, bridge,
};
use burn::tensor::{Bytes, DType};
use nestednet_models::NestedNetwork;
use nestednet_prune::{IndexArray, SparseLayout, SparseTensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Result, TrainError};
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

/// PyTorch's names for the nested layer norm's parameters (`weight` and `bias`, as
/// `nn.LayerNorm`'s), which Burn's adapter gives only Burn's own `LayerNorm`. Exports only:
/// reading goes back through the export's own map from each name to its module path.
#[derive(Debug, Clone, Default)]
struct NestedLayerNormPyTorchNames;

impl ModuleAdapter for NestedLayerNormPyTorchNames {
    fn adapt(&self, mut tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        if ctx.module_type() != Some("Struct:NestedLayerNorm") {
            return tensor;
        }
        let renamed = match tensor.name.rsplit('.').next() {
            Some("gamma") => "weight",
            Some("beta") => "bias",
            _ => return tensor,
        };
        let keep = tensor.name.rfind('.').map_or(0, |i| i + 1);
        tensor.name.truncate(keep);
        tensor.name.push_str(renamed);
        tensor
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
    let adapter = BurnToPyTorchAdapter.chain(NestedLinearPyTorchLayout).chain(NestedLayerNormPyTorchNames);
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

pub(crate) fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub(crate) fn f32_slice_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Metadata key prefix of a sparse tensor's layout.
pub(crate) const SPARSE_PREFIX: &str = "nestednet.sparse.";
/// Metadata key of the [`LevelExport`].
pub(crate) const EXPORT_KEY: &str = "nestednet.export";

pub(crate) fn serialize(
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
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

/// What a safetensors export records in its metadata besides the tensors: the exported level,
/// the model's name and the export's manifest (JSON).
pub(crate) struct ExportMetadata {
    /// The exported level.
    pub level: usize,
    /// The nested model's name (`mnist-cnn`).
    pub model: String,
    /// The [`LevelExport`](crate::export::level::LevelExport), as JSON.
    pub manifest: String,
}

/// The safetensors bytes of `level` (PyTorch names and layouts; masked weights in compressed
/// sparse form with `sparse`), with `export` in the metadata.
pub(crate) fn safetensors_bytes<L: NestedNetwork>(
    level: &L,
    export: &ExportMetadata,
    path: &Path,
    sparse: bool,
) -> Result<Vec<u8>> {
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("nestednet.level".to_string(), export.level.to_string()),
        ("nestednet.model".to_string(), export.model.clone()),
        (EXPORT_KEY.to_string(), export.manifest.clone()),
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

/// The metadata of the safetensors file `bytes` (read from `path`).
pub(crate) fn read_metadata(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| TrainError::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// `skeleton` with every tensor read from the safetensors `bytes` (PyTorch names and layouts;
/// sparse tensors as `metadata` describes them).
pub(crate) fn fill_from_safetensors<L: NestedNetwork>(
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
