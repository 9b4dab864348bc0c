//! The consensus of all levels exported: every level plus the rule that combines them.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use nestednet_models::{NestedNetwork, NestedNetworkConfig, NetworkOutput};
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::export::level::{ExportFormat, LevelNetwork, export_level, load_level, probe};
use crate::export::safetensors::{f32_slice_bytes, f32_values, serialize};
use crate::serve::anytime::LevelOutputs;
use crate::trainer::data::InputOf;
use crate::trainer::labels::HierarchyConfig;
use crate::trainer::record::write_atomic;

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
