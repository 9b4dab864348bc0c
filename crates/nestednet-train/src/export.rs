//! Exporting one level as a compact standalone model.
//!
//! The exported tensors are copies of the level's blocks of the shared weights, so the file and
//! the loaded model are physically the level's size. Two formats:
//!
//! Residual networks export a level as Burnpack only ([`export_resnet_level`]): a one-level
//! `NestedResNet` with the level's channels and blocks, and its `NestedResNetConfig`.
//!
//! - **burnpack** (`FILE`, Burn's record format) plus `FILE`-with-extension-`.json` holding the
//!   [`MnistCnnConfig`]; loads into the plain Burn [`MnistCnn`].
//! - **safetensors**, with PyTorch's names and layouts so that `torch.nn.Module.load_state_dict`
//!   accepts it directly: `conv{1,2}.weight` `[out, in, kh, kw]`, `conv{1,2}.bias`,
//!   `bn{1,2}.{weight,bias,running_mean,running_var,num_batches_tracked}`,
//!   `fc{1,2}.weight` `[out, in]` (**transposed** from Burn's `[in, out]`), `fc{1,2}.bias`;
//!   all `float32` except `num_batches_tracked` (`int64`, shape `[]`). The file's metadata holds
//!   `format = pt`, the level, and the configuration as JSON under `nestednet.config`.
//!   `scripts/load_exported.py` shows the PyTorch side.
//! - **sparse safetensors** (`FILE.sparse.safetensors`): the same, except that each masked
//!   weight `W` (each convolution or linear weight that is smaller so) is stored in compressed sparse form as `W.values` (`float32`), `W.indices` and
//!   `W.pointers` (`uint8`, `uint16` or `uint32`, the smallest the shape allows), with the
//!   layout (dense shape in PyTorch's layout, split axis, `csr` or `csc`) as JSON in the
//!   metadata under `nestednet.sparse.W`. See [`nestednet_prune::SparseTensor`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;
use nestednet_models::{
    LevelModel, MnistCnn, MnistCnnConfig, NestedMnistCnn, NestedModel, NestedResNet, NestedResNetConfig,
};
use nestednet_prune::{IndexArray, SparseLayout, SparseTensor};
use nestednet_schedule::check_level;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::{HierarchyConfig, LevelOutputs, Result, TrainError, load_record, record_bytes, write_atomic};

/// File format of an exported level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Burn's record format (`.bpk`), with a `.json` configuration beside it.
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

/// What an export wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportInfo {
    /// The model file.
    pub path: PathBuf,
    /// The configuration file written beside it (burnpack only).
    pub config_path: Option<PathBuf>,
    /// Bytes of the model file.
    pub bytes: usize,
    /// The exported level.
    pub level: usize,
    /// The standalone model's configuration.
    pub config: MnistCnnConfig,
}

/// Exports level `level` of `model` to `path` in `format`.
pub fn export_level(
    model: &NestedMnistCnn,
    level: usize,
    path: &Path,
    format: ExportFormat,
) -> Result<ExportInfo> {
    use nestednet_models::NestedClassifier;
    check_level(level, model.num_levels())?;
    let (config, plain) = model.extract_level(level);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    }
    let (bytes, config_path) = match format {
        ExportFormat::Burnpack => {
            let bytes = record_bytes(&plain)?;
            write_atomic(path, &bytes)?;
            let config_path = burnpack_config_path(path);
            write_atomic(&config_path, &serde_json::to_vec_pretty(&config).expect("config serializes"))?;
            (bytes, Some(config_path))
        }
        ExportFormat::Safetensors | ExportFormat::SparseSafetensors => {
            let sparse = format == ExportFormat::SparseSafetensors;
            let bytes = safetensors_bytes(&plain, &config, level, path, sparse)?;
            write_atomic(path, &bytes)?;
            (bytes, None)
        }
    };
    Ok(ExportInfo { path: path.to_path_buf(), config_path, bytes: bytes.len(), level, config })
}

/// What a residual network's level export wrote.
#[derive(Debug, Clone)]
pub struct ResNetExportInfo {
    /// The Burnpack model file.
    pub path: PathBuf,
    /// The configuration file written beside it.
    pub config_path: PathBuf,
    /// Bytes of the model file.
    pub bytes: usize,
    /// The exported level.
    pub level: usize,
    /// The standalone network's configuration (its widths and depth, one level).
    pub config: NestedResNetConfig,
}

/// Exports level `level` of a nested residual network as a standalone one-level network:
/// Burnpack at `path` and its [`NestedResNetConfig`] as JSON beside it. The tensors are compact
/// copies of the level's channels, and only the level's blocks are written.
pub fn export_resnet_level(model: &NestedResNet, level: usize, path: &Path) -> Result<ResNetExportInfo> {
    use nestednet_models::NestedClassifier;
    check_level(level, model.num_levels())?;
    let (config, standalone) = model.extract_level(level);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    }
    let bytes = record_bytes(&standalone)?;
    write_atomic(path, &bytes)?;
    let config_path = burnpack_config_path(path);
    write_atomic(&config_path, &serde_json::to_vec_pretty(&config).expect("config serializes"))?;
    Ok(ResNetExportInfo { path: path.to_path_buf(), config_path, bytes: bytes.len(), level, config })
}

/// Loads a residual network's level export (and its `.json` configuration) on `device`.
pub fn load_resnet_level(path: &Path, device: &Device) -> Result<(NestedResNetConfig, NestedResNet)> {
    let config_path = burnpack_config_path(path);
    let text = std::fs::read(&config_path).map_err(TrainError::io(&config_path))?;
    let config: NestedResNetConfig =
        serde_json::from_slice(&text).map_err(|source| TrainError::Json { path: config_path, source })?;
    let model = load_record(config.try_init(device)?, path)?;
    Ok((config, model))
}

/// `FILE.json` beside a burnpack export (`level0.bpk` → `level0.json`).
pub fn burnpack_config_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

/// Loads a burnpack export (and its `.json` configuration) on `device`.
pub fn load_burnpack_level(path: &Path, device: &Device) -> Result<(MnistCnnConfig, MnistCnn)> {
    let config_path = burnpack_config_path(path);
    let text = std::fs::read(&config_path).map_err(TrainError::io(&config_path))?;
    let config: MnistCnnConfig =
        serde_json::from_slice(&text).map_err(|source| TrainError::Json { path: config_path, source })?;
    let model = load_record(config.init(device), path)?;
    Ok((config, model))
}

/// Little-endian bytes of a float tensor.
fn f32_bytes<const D: usize>(t: Tensor<D>) -> Vec<u8> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// One tensor to write: name, shape, dtype, little-endian bytes.
type NamedTensor = (String, Vec<usize>, Dtype, Vec<u8>);

/// The level's tensors with PyTorch's names and layouts.
fn pytorch_tensors(model: &MnistCnn) -> Vec<NamedTensor> {
    let mut tensors: Vec<NamedTensor> = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, dtype: Dtype, data: Vec<u8>| {
        tensors.push((name, shape, dtype, data))
    };
    let mut conv = |name: &str, c: &Conv2d| {
        push(format!("{name}.weight"), c.weight.dims().to_vec(), Dtype::F32, f32_bytes(c.weight.val()));
        if let Some(b) = &c.bias {
            push(format!("{name}.bias"), b.dims().to_vec(), Dtype::F32, f32_bytes(b.val()));
        }
    };
    conv("conv1", &model.conv1);
    conv("conv2", &model.conv2);
    let mut bn = |name: &str, n: &BatchNorm| {
        let w = n.gamma.dims().to_vec();
        push(format!("{name}.weight"), w.clone(), Dtype::F32, f32_bytes(n.gamma.val()));
        push(format!("{name}.bias"), w.clone(), Dtype::F32, f32_bytes(n.beta.val()));
        push(format!("{name}.running_mean"), w.clone(), Dtype::F32, f32_bytes(n.running_mean.value_sync()));
        push(format!("{name}.running_var"), w, Dtype::F32, f32_bytes(n.running_var.value_sync()));
        push(format!("{name}.num_batches_tracked"), vec![], Dtype::I64, 0i64.to_le_bytes().to_vec());
    };
    bn("bn1", &model.bn1);
    bn("bn2", &model.bn2);
    let mut linear = |name: &str, l: &Linear| {
        // Burn stores [in, out]; PyTorch's nn.Linear stores [out, in].
        let weight = l.weight.val().transpose();
        push(format!("{name}.weight"), weight.dims().to_vec(), Dtype::F32, f32_bytes(weight));
        if let Some(b) = &l.bias {
            push(format!("{name}.bias"), b.dims().to_vec(), Dtype::F32, f32_bytes(b.val()));
        }
    };
    linear("fc1", &model.fc1);
    linear("fc2", &model.fc2);
    tensors
}

fn index_dtype(indices: &IndexArray) -> Dtype {
    match indices {
        IndexArray::U8(_) => Dtype::U8,
        IndexArray::U16(_) => Dtype::U16,
        IndexArray::U32(_) => Dtype::U32,
    }
}

/// Replaces every `*.weight` of a convolution or linear layer by its sparse arrays; returns
/// the layouts for the metadata.
fn sparsify(tensors: Vec<NamedTensor>) -> (Vec<NamedTensor>, Vec<(String, SparseLayout)>) {
    let mut out = Vec::new();
    let mut layouts = Vec::new();
    for (name, shape, dtype, data) in tensors {
        let is_weight = (name.starts_with("conv") || name.starts_with("fc")) && name.ends_with(".weight");
        if !is_weight {
            out.push((name, shape, dtype, data));
            continue;
        }
        let values: Vec<f32> =
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
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

fn f32_slice_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn safetensors_bytes(
    model: &MnistCnn,
    config: &MnistCnnConfig,
    level: usize,
    path: &Path,
    sparse: bool,
) -> Result<Vec<u8>> {
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("nestednet.level".to_string(), level.to_string()),
        ("nestednet.model".to_string(), "mnist-cnn".to_string()),
        ("nestednet.config".to_string(), serde_json::to_string(config).expect("config serializes")),
    ]);
    let mut tensors = pytorch_tensors(model);
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
    let views = tensors
        .iter()
        .map(|(name, shape, dtype, data)| {
            TensorView::new(*dtype, shape.clone(), data).map(|v| (name.clone(), v))
        })
        .collect::<core::result::Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| TrainError::Safetensors { path: path.to_path_buf(), message: e.to_string() })
}

/// Metadata key prefix of a sparse tensor's layout.
const SPARSE_PREFIX: &str = "nestednet.sparse.";

/// Bytes of level `level` of `model` exported as dense and as sparse safetensors (computed in
/// memory, nothing is written).
pub fn export_sizes(model: &NestedMnistCnn, level: usize) -> Result<(usize, usize)> {
    let (config, plain) = model.extract_level(level);
    let path = Path::new("<in memory>");
    let dense = safetensors_bytes(&plain, &config, level, path, false)?.len();
    let sparse = safetensors_bytes(&plain, &config, level, path, true)?.len();
    Ok((dense, sparse))
}

/// Loads a safetensors export (PyTorch layout, dense or sparse) into the plain Burn model on
/// `device`. Sparse tensors are checked (pointers, index ranges and order) before use.
pub fn load_safetensors_level(path: &Path, device: &Device) -> Result<(MnistCnnConfig, MnistCnn)> {
    let err = |message: String| TrainError::Safetensors { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let config_json = metadata
        .get("nestednet.config")
        .ok_or_else(|| err("no `nestednet.config` metadata: not a nestednet export".into()))?;
    let config: MnistCnnConfig =
        serde_json::from_str(config_json).map_err(|e| err(format!("bad nestednet.config: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
    let raw = |name: &str, dtypes: &[Dtype]| -> Result<(Vec<usize>, Dtype, &[u8])> {
        let view = st.tensor(name).map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        if !dtypes.contains(&view.dtype()) {
            return Err(err(format!("tensor `{name}` is {:?}, expected one of {dtypes:?}", view.dtype())));
        }
        Ok((view.shape().to_vec(), view.dtype(), view.data()))
    };
    let floats = |data: &[u8]| -> Vec<f32> {
        data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let tensor = |name: &str, shape: Vec<usize>| -> Result<TensorData> {
        let values = match metadata.get(&format!("{SPARSE_PREFIX}{name}")) {
            Some(layout) => {
                let layout: SparseLayout = serde_json::from_str(layout)
                    .map_err(|e| err(format!("bad sparse layout of `{name}`: {e}")))?;
                if layout.shape != shape {
                    return Err(err(format!(
                        "sparse tensor `{name}` has shape {:?}, expected {shape:?}",
                        layout.shape
                    )));
                }
                let index = |suffix: &str| -> Result<IndexArray> {
                    let (_, dtype, data) =
                        raw(&format!("{name}.{suffix}"), &[Dtype::U8, Dtype::U16, Dtype::U32])?;
                    let width = dtype.bitsize() / 8;
                    IndexArray::from_le_bytes(data, width)
                        .ok_or_else(|| err(format!("`{name}.{suffix}` is not an index array")))
                };
                let (_, _, values) = raw(&format!("{name}.values"), &[Dtype::F32])?;
                let sparse = SparseTensor {
                    layout,
                    pointers: index("pointers")?,
                    indices: index("indices")?,
                    values: floats(values),
                };
                sparse.validate(name)?;
                sparse.to_dense()
            }
            None => {
                let (found, _, data) = raw(name, &[Dtype::F32])?;
                if found != shape {
                    return Err(err(format!("tensor `{name}` is F32 {found:?}, expected F32 {shape:?}")));
                }
                floats(data)
            }
        };
        Ok(TensorData::new(values, shape))
    };
    let param = |data: TensorData| -> Tensor<1> { Tensor::from_data(data, device) };
    let mut model = config.init(device);
    let c = &config;
    let spatial = (c.height / 4) * (c.width / 4);
    let conv_shapes =
        [("conv1", c.conv1_channels, c.in_channels), ("conv2", c.conv2_channels, c.conv1_channels)];
    for (name, out, inp) in conv_shapes {
        let conv = if name == "conv1" { &mut model.conv1 } else { &mut model.conv2 };
        conv.weight = Param::from_tensor(Tensor::from_data(
            tensor(&format!("{name}.weight"), vec![out, inp, 3, 3])?,
            device,
        ));
        conv.bias = Some(Param::from_tensor(param(tensor(&format!("{name}.bias"), vec![out])?)));
    }
    for (name, width) in [("bn1", c.conv1_channels), ("bn2", c.conv2_channels)] {
        let norm = if name == "bn1" { &mut model.bn1 } else { &mut model.bn2 };
        norm.gamma = Param::from_tensor(param(tensor(&format!("{name}.weight"), vec![width])?));
        norm.beta = Param::from_tensor(param(tensor(&format!("{name}.bias"), vec![width])?));
        norm.running_mean = RunningState::new(param(tensor(&format!("{name}.running_mean"), vec![width])?));
        norm.running_var = RunningState::new(param(tensor(&format!("{name}.running_var"), vec![width])?));
    }
    let linear_shapes = [("fc1", c.hidden, c.conv2_channels * spatial), ("fc2", c.num_classes, c.hidden)];
    for (name, out, inp) in linear_shapes {
        let linear = if name == "fc1" { &mut model.fc1 } else { &mut model.fc2 };
        let w: Tensor<2> = Tensor::from_data(tensor(&format!("{name}.weight"), vec![out, inp])?, device);
        linear.weight = Param::from_tensor(w.transpose());
        linear.bias = Some(Param::from_tensor(param(tensor(&format!("{name}.bias"), vec![out])?)));
    }
    Ok((config, model))
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

/// Every level as a standalone model plus the way to combine them.
pub struct ConsensusModel {
    /// The manifest.
    pub manifest: ConsensusManifest,
    /// The levels, core first.
    pub levels: Vec<LevelModel>,
    /// The learned layer (method `learned`).
    pub layer: Option<Linear>,
}

impl ConsensusModel {
    /// Every level's probabilities for `images`.
    pub fn outputs(&self, images: Tensor<4>) -> LevelOutputs {
        let n = images.dims()[0];
        let mut probs = Vec::new();
        let mut classes = Vec::new();
        for level in &self.levels {
            let p = burn::tensor::activation::softmax(level.forward(images.clone()), 1);
            classes.push(p.dims()[1]);
            probs.push(p.into_data().convert::<f32>().try_to_vec::<f32>().expect("probabilities"));
        }
        LevelOutputs { probs, classes, fine_labels: vec![0; n] }
    }

    /// The consensus's fine-class prediction for every image.
    pub fn predict(&self, images: Tensor<4>) -> Result<Vec<usize>> {
        let outputs = self.outputs(images);
        match (self.manifest.method, &self.layer) {
            (ConsensusMethod::Average, _) => outputs.consensus_average(self.manifest.hierarchy.as_ref()),
            (ConsensusMethod::Learned, Some(layer)) => outputs.consensus_learned(layer),
            (ConsensusMethod::Learned, None) => {
                Err(TrainError::Invalid("the learned consensus has no layer".into()))
            }
        }
    }
}

/// Exports every level of `model` and the consensus into `dir`: `level{k}.safetensors`
/// (PyTorch layout) for the `mnist-cnn`, `level{k}.bpk` + `level{k}.json` for a residual
/// network (see [`export_resnet_level`]), `consensus.json` and, for the learned consensus,
/// `consensus.safetensors` (`weight` `[classes, Σ level classes]` in PyTorch's layout, `bias`).
pub fn export_consensus(
    model: &NestedModel,
    method: ConsensusMethod,
    hierarchy: Option<&HierarchyConfig>,
    layer: Option<&Linear>,
    dir: &Path,
) -> Result<ConsensusManifest> {
    use nestednet_models::NestedClassifier;
    if model.num_levels() < 2 {
        return Err(TrainError::Invalid("a consensus needs at least 2 levels".into()));
    }
    if method == ConsensusMethod::Learned && layer.is_none() {
        return Err(TrainError::Invalid("the run has no learned consensus (consensus.bpk)".into()));
    }
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    for level in 0..model.num_levels() {
        match model {
            NestedModel::MnistCnn(m) => {
                export_level(
                    m,
                    level,
                    &dir.join(format!("level{level}.safetensors")),
                    ExportFormat::Safetensors,
                )?;
            }
            NestedModel::ResNet(m) => {
                export_resnet_level(m, level, &dir.join(format!("level{level}.bpk")))?;
            }
        }
    }
    if let (ConsensusMethod::Learned, Some(layer)) = (method, layer) {
        let path = dir.join("consensus.safetensors");
        let weight = layer.weight.val().transpose();
        let bias = layer.bias.as_ref().map(|b| b.val()).expect("consensus layer has a bias");
        let tensors = [
            ("weight".to_string(), weight.dims().to_vec(), f32_bytes(weight)),
            ("bias".to_string(), bias.dims().to_vec(), f32_bytes(bias)),
        ];
        let views = tensors
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), data).map(|v| (name.clone(), v))
            })
            .collect::<core::result::Result<Vec<_>, _>>()
            .map_err(|e| TrainError::Safetensors { path: path.clone(), message: e.to_string() })?;
        let bytes = safetensors::tensor::serialize(views, None)
            .map_err(|e| TrainError::Safetensors { path: path.clone(), message: e.to_string() })?;
        write_atomic(&path, &bytes)?;
    }
    let manifest =
        ConsensusManifest { method, num_levels: model.num_levels(), hierarchy: hierarchy.cloned() };
    write_atomic(
        &dir.join("consensus.json"),
        &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
    )?;
    Ok(manifest)
}

/// Loads a consensus export written by [`export_consensus`].
pub fn load_consensus_export(dir: &Path, device: &Device) -> Result<ConsensusModel> {
    let path = dir.join("consensus.json");
    let text = std::fs::read(&path).map_err(TrainError::io(&path))?;
    let manifest: ConsensusManifest =
        serde_json::from_slice(&text).map_err(|source| TrainError::Json { path: path.clone(), source })?;
    let levels = (0..manifest.num_levels)
        .map(|k| {
            let residual = dir.join(format!("level{k}.bpk"));
            if residual.is_file() {
                load_resnet_level(&residual, device).map(|(_, m)| LevelModel::ResNet(m))
            } else {
                load_safetensors_level(&dir.join(format!("level{k}.safetensors")), device)
                    .map(|(_, m)| LevelModel::MnistCnn(m))
            }
        })
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
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Ok((view.shape().to_vec(), values))
            };
            let (wshape, w) = read("weight")?;
            let (bshape, b) = read("bias")?;
            if wshape.len() != 2 || bshape != [wshape[0]] {
                return Err(err(format!("weight {wshape:?} and bias {bshape:?} do not make a linear layer")));
            }
            let mut layer = burn::nn::LinearConfig::new(wshape[1], wshape[0]).init(device);
            let weight: Tensor<2> = Tensor::from_data(TensorData::new(w, wshape), device);
            layer.weight = Param::from_tensor(weight.transpose());
            layer.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(b, bshape), device)));
            Some(layer)
        }
    };
    Ok(ConsensusModel { manifest, levels, layer })
}
