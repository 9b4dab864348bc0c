//! One level (or a Mix'n'Match sub-network) exported, read back and checked.

use crate::error::{Result, TrainError};
use crate::export::safetensors::{
    EXPORT_KEY, ExportMetadata, SPARSE_PREFIX, fill_from_safetensors, read_metadata, safetensors_bytes,
};
use crate::trainer::data::{InputOf, probe_input};
use crate::trainer::record::{load_record, record_bytes, write_atomic};
use crate::trainer::run::MAX_NETWORK_PARAMS;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use nestednet_models::{InputShape, NestedNetwork, NestedNetworkConfig, NetworkOutput};
use nestednet_schedule::check_level;
use serde::{Deserialize, Serialize};

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
    /// What a safetensors export of this manifest records in its metadata.
    fn metadata(&self) -> ExportMetadata {
        ExportMetadata {
            level: self.level,
            model: self.model.name(),
            manifest: serde_json::to_string(self).expect("manifest serializes"),
        }
    }

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
/// ([`NestedNetwork::mixed`], its batch norms recalibrated: [`calibrated_mix`](crate::serve::search::calibrated_mix)),
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
            let bytes = safetensors_bytes(&standalone, &manifest.metadata(), path, sparse)?;
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
    crate::trainer::init::with_init_lock(|| {
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

/// Bytes of level `level` of `network` (built from `config`) exported as dense and as sparse
/// safetensors: the sizes [`export_level`] writes, computed in memory.
pub fn export_sizes<C: NestedNetworkConfig>(
    network: &C::Network,
    config: &C,
    level: usize,
) -> Result<(usize, usize)> {
    check_level(level, network.num_levels())?;
    let standalone = network.extract_level(level);
    let export = LevelExport::of(network, config, level).metadata();
    let path = Path::new("<in memory>");
    let dense = safetensors_bytes(&standalone, &export, path, false)?.len();
    let sparse = safetensors_bytes(&standalone, &export, path, true)?.len();
    Ok((dense, sparse))
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
    let metadata = read_metadata(&bytes, path)?;
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
    let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
    let metadata = read_metadata(&bytes, path)?;
    fill_from_safetensors(skeleton, path, &bytes, &metadata)
}
