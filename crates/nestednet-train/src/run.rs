//! The run folder: one checkpoint for all levels, written so that a crash never leaves a
//! half-written file behind.
//!
//! ```text
//! RUN/
//!   config.json              RunConfig: model, training, settings (with format_version)
//!   model.bpk                the latest completed model: every level, one record
//!   checkpoint.json          the last completed epoch and its metrics history
//!   checkpoints/epoch-NNNN/  model.bpk + optimizer.bpk of that epoch (resume point)
//!   consensus.bpk            the learned consensus layer (NestedNet-L), with 2+ levels
//!   report.json              per-level report (accuracy, params, MACs, bytes, latency)
//!   accuracy_vs_macs.png     the report as a plot
//! ```
//!
//! Every file is written to a temporary name, flushed to disk and renamed over its target, and
//! a checkpoint folder is renamed into place only once complete; `checkpoint.json` is renamed
//! last, so it always names a complete checkpoint.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use nestednet_models::{NestedNetwork, NestedNetworkConfig};
use serde::{Deserialize, Serialize};

use crate::{EpochMetrics, Result, RunConfig, TrainError, enable_masks};

/// Writes `bytes` to `path` atomically: temporary file in the same folder, `fsync`, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| TrainError::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        TrainError::Io { path: path.to_path_buf(), source: e }
    })
}

/// The state saved with every completed epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Number of completed epochs.
    pub epochs_completed: usize,
    /// Optimizer steps taken so far.
    pub global_step: usize,
    /// Folder (relative to the run folder) holding this epoch's records.
    pub dir: String,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// `(level, τ)` at which each learned or pruned mask was binarised, in order.
    #[serde(default)]
    pub thresholds: Vec<(usize, f64)>,
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run folder at `path` (not created yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }

    /// `model.bpk`, the latest model with all levels.
    pub fn model_path(&self) -> PathBuf {
        self.path.join("model.bpk")
    }

    /// `checkpoint.json`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join("checkpoint.json")
    }

    /// `report.json`.
    pub fn report_path(&self) -> PathBuf {
        self.path.join("report.json")
    }

    /// `consensus.bpk`, the learned consensus layer (NestedNet-L) of a multi-level run.
    pub fn consensus_path(&self) -> PathBuf {
        self.path.join("consensus.bpk")
    }

    /// Saves the learned consensus layer.
    pub fn save_consensus(&self, layer: &Linear) -> Result<()> {
        write_atomic(&self.consensus_path(), &record_bytes(layer)?)
    }

    /// Loads the learned consensus layer for `levels_width` concatenated level outputs and
    /// `classes` fine classes, if the run has one.
    pub fn load_consensus(
        &self,
        levels_width: usize,
        classes: usize,
        device: &Device,
    ) -> Result<Option<Linear>> {
        let path = self.consensus_path();
        if !path.is_file() {
            return Ok(None);
        }
        load_record(LinearConfig::new(levels_width, classes).init(device), &path).map(Some)
    }

    /// `accuracy_vs_macs.png`.
    pub fn plot_path(&self) -> PathBuf {
        self.path.join("accuracy_vs_macs.png")
    }

    fn run_error(&self, reason: impl Into<String>) -> TrainError {
        TrainError::Run { path: self.path.clone(), reason: reason.into() }
    }

    /// Whether the folder holds a run's configuration (a `config.json`).
    pub fn exists(&self) -> bool {
        self.config_path().is_file()
    }

    /// Whether the folder holds a completed epoch (a `checkpoint.json`): a run to resume.
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint_path().is_file()
    }

    /// Creates the folder and writes `config.json`.
    pub fn create<C: NestedNetworkConfig>(&self, config: &RunConfig<C>) -> Result<()> {
        fs::create_dir_all(&self.path).map_err(TrainError::io(&self.path))?;
        let json = serde_json::to_vec_pretty(config).expect("config serializes");
        write_atomic(&self.config_path(), &json)
    }

    /// Takes the folder for this process (creating it if needed): an exclusive lock on
    /// `.lock` inside it, held until the returned guard is dropped. The operating system
    /// releases it when the process ends, however it ends, so a killed run never blocks the
    /// retry; a second process training into the same folder meanwhile gets a clear error.
    pub fn lock(&self) -> Result<RunLock> {
        fs::create_dir_all(&self.path).map_err(TrainError::io(&self.path))?;
        let path = self.path.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(TrainError::io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(self.run_error(
                "is in use: another nestednet process is training into it (it holds its .lock); wait for it to finish or choose another output folder",
            )),
            Err(fs::TryLockError::Error(e)) => Err(TrainError::io(&path)(e)),
        }
    }

    /// Reads `config.json` as a run of model configuration `C` (a built-in
    /// [`ModelConfig`](nestednet_models::ModelConfig), or a user's own).
    pub fn load_config<C: NestedNetworkConfig>(&self) -> Result<RunConfig<C>> {
        let path = self.config_path();
        if !self.path.is_dir() {
            return Err(self.run_error("does not exist"));
        }
        if !path.is_file() {
            return Err(self.run_error("has no config.json: it is not a nestednet run folder"));
        }
        let text = fs::read(&path).map_err(TrainError::io(&path))?;
        // The version first: an older layout lacks fields, which would read as a bare JSON error.
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|source| TrainError::Json { path: path.clone(), source })?;
        let version = value.get("format_version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(crate::FORMAT_VERSION)) {
            return Err(self.run_error(format!(
                "was written in run format version {} and this build reads version {} only: retrain it, or use the nestednet release that wrote it",
                version.map_or("?".to_string(), |v| v.to_string()),
                crate::FORMAT_VERSION
            )));
        }
        let config: RunConfig<C> =
            serde_json::from_value(value).map_err(|source| TrainError::Json { path, source })?;
        config.training.validate()?;
        Ok(config)
    }

    /// Reads `checkpoint.json`, if a checkpoint has been completed.
    pub fn load_checkpoint_state(&self) -> Result<Option<CheckpointState>> {
        let path = self.checkpoint_path();
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read(&path).map_err(TrainError::io(&path))?;
        let state: CheckpointState = serde_json::from_slice(&text)
            .map_err(|source| TrainError::Json { path: path.clone(), source })?;
        // The folder it names is read next: only the one this format writes, never a path
        // elsewhere (`../..`) from a damaged or hostile file.
        let expected = format!("checkpoints/epoch-{:04}", state.epochs_completed);
        if state.dir != expected || state.history.len() != state.epochs_completed {
            return Err(TrainError::Run {
                path: path.clone(),
                reason: format!(
                    "is damaged: it records {} completed epochs, {} epochs of history and the folder `{}` (expected `{expected}`)",
                    state.epochs_completed,
                    state.history.len(),
                    state.dir
                ),
            });
        }
        Ok(Some(state))
    }

    /// Loads the configuration and the latest model (all levels) on `device`.
    pub fn load_model<C: NestedNetworkConfig>(&self, device: &Device) -> Result<(RunConfig<C>, C::Network)> {
        let config = self.load_config::<C>()?;
        let path = self.model_path();
        if !path.is_file() {
            return Err(self.run_error("has no model.bpk: no epoch has completed yet"));
        }
        let model = load_record(skeleton(&config, device)?, &path)?;
        Ok((config, model))
    }

    /// Saves one completed epoch: records into `checkpoints/epoch-NNNN/`, then
    /// `checkpoint.json`, then `model.bpk`; older checkpoints are removed afterwards.
    pub fn save_checkpoint<M: Module>(
        &self,
        model: &M,
        optim: &ModuleOptimizer,
        state: &CheckpointState,
    ) -> Result<()> {
        let root = self.path.join("checkpoints");
        fs::create_dir_all(&root).map_err(TrainError::io(&root))?;
        let final_dir = self.path.join(&state.dir);
        let tmp_dir = root.join(format!(".{}.tmp", state.epochs_completed));
        let _ = fs::remove_dir_all(&tmp_dir);
        fs::create_dir_all(&tmp_dir).map_err(TrainError::io(&tmp_dir))?;
        let model_bytes = record_bytes(model)?;
        write_atomic(&tmp_dir.join("model.bpk"), &model_bytes)?;
        let optim_bytes =
            stable_ids(optim.into_bytes().map_err(TrainError::record(tmp_dir.join("optimizer.bpk")))?)?;
        write_atomic(&tmp_dir.join("optimizer.bpk"), &optim_bytes)?;
        let _ = fs::remove_dir_all(&final_dir);
        fs::rename(&tmp_dir, &final_dir).map_err(TrainError::io(&final_dir))?;
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        write_atomic(&self.checkpoint_path(), &json)?;
        write_atomic(&self.model_path(), &model_bytes)?;
        // Only now is the previous checkpoint unreferenced.
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.flatten() {
                if entry.path() != final_dir {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }

    /// Loads the model and optimizer of the latest completed checkpoint.
    pub fn load_checkpoint<C: NestedNetworkConfig>(
        &self,
        config: &RunConfig<C>,
        device: &Device,
    ) -> Result<Option<(CheckpointState, C::Network, ModuleOptimizer)>> {
        let Some(state) = self.load_checkpoint_state()? else {
            return Ok(None);
        };
        let dir = self.path.join(&state.dir);
        let model = load_record(skeleton(config, device)?, &dir.join("model.bpk"))?;
        let optim_path = dir.join("optimizer.bpk");
        let bytes = fs::read(&optim_path).map_err(TrainError::io(&optim_path))?;
        // Burn's optimizer loader panics on a tensor without a parameter id (the fuzzer found
        // it with one flipped byte): checked here first.
        let tensors = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes.clone()))
            .and_then(|r| r.into_tensors())
            .map_err(|e| TrainError::Record { path: optim_path.clone(), message: e.to_string() })?;
        if let Some(t) = tensors.iter().find(|t| t.param_id.is_none()) {
            return Err(TrainError::Record {
                path: optim_path,
                message: format!("tensor `{}` carries no parameter id: the file is damaged", t.name),
            });
        }
        let optim = config
            .training
            .optimizer
            .init()
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(TrainError::record(&optim_path))?;
        Ok(Some((state, model, optim)))
    }
}

/// The network of `config` with its masks on, ready to take a record (its parameters are not
/// drawn: loading replaces them).
pub fn skeleton<C: NestedNetworkConfig>(config: &RunConfig<C>, device: &Device) -> Result<C::Network> {
    crate::with_init_lock(|| {
        let mut network = config.model.init_network(device)?;
        // The configuration comes from a file (a run folder, a teacher): checked before
        // anything is allocated (networks initialise lazily; counting allocates nothing).
        let params = network.level_cost(network.num_levels() - 1).params as u64;
        if params > MAX_NETWORK_PARAMS {
            return Err(TrainError::Invalid(format!(
                "the configuration declares a network of {params} parameters; networks read from files may hold at most {MAX_NETWORK_PARAMS}"
            )));
        }
        if let Some(masking) = &config.training.masking {
            enable_masks(&mut network, masking)?;
        }
        Ok(network)
    })
}

/// The most parameters a network read from a file (a run folder's or an export's
/// configuration) may declare: 2^28, 1 GiB of f32 (ResNet-18 has 11.7 million, WRN-32-4 7.4
/// million).
pub const MAX_NETWORK_PARAMS: u64 = 1 << 28;

/// A run folder held by this process (see [`RunDir::lock`]); dropping it releases the folder.
#[derive(Debug)]
pub struct RunLock {
    _file: fs::File,
}

/// The burnpack bytes of a module's record, every parameter id replaced by a hash of its
/// tensor's path: two identical runs write identical files.
pub fn record_bytes<M: Module>(module: &M) -> Result<Vec<u8>> {
    let bytes = module.clone().into_record().into_bytes().map_err(TrainError::record("<in memory>"))?;
    stable_ids(bytes).map(|b| b.to_vec())
}

/// `module` with the parameter ids [`record_bytes`] writes. Burn draws ids at random (from the
/// OS, whatever the seed) and records store them, so identical runs wrote different bytes;
/// optimizer states are keyed by them, so a trained network takes these ids when it is
/// created ([`seeded_model`](crate::seeded_model)) and keeps them through every checkpoint
/// and resume. Applying it twice changes nothing.
pub fn with_stable_ids<M: Module>(module: M) -> Result<M> {
    let bytes = module.clone().into_record().into_bytes().map_err(TrainError::record("<in memory>"))?;
    let record = ModuleRecord::from_bytes(stable_ids(bytes)?).map_err(TrainError::record("<in memory>"))?;
    module.try_load_record(record).map_err(TrainError::record("<in memory>"))
}

/// Rewrites every tensor's parameter id in burnpack `bytes` as the 64-bit FNV-1a hash of its
/// path (unique within a module, since paths are). Optimizer states are keyed by their
/// tensors' names, which hold the (stable) id of the parameter they belong to; their own ids
/// were random too.
fn stable_ids(bytes: Bytes) -> Result<Bytes> {
    let error =
        |e: burn_pack::Error| TrainError::Record { path: "<in memory>".into(), message: e.to_string() };
    let reader = burn_pack::Reader::from_bytes(bytes).map_err(error)?;
    let (metadata, scalars) = (reader.metadata().clone(), reader.scalars().clone());
    let mut tensors = reader.into_tensors().map_err(error)?;
    for tensor in &mut tensors {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in tensor.name.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        tensor.param_id = Some(hash);
    }
    let mut writer = burn_pack::Writer::new(tensors);
    for (key, value) in &metadata {
        writer = writer.with_metadata(key, value);
    }
    for (key, value) in scalars {
        writer = writer.with_scalar(&key, value);
    }
    writer.into_bytes().map_err(error)
}

/// Applies the record at `path` to `module`, with a clear error if the file is missing, not a
/// record, or does not fit (missing, unused or mis-shaped tensors).
pub fn load_record<M: Module>(module: M, path: &Path) -> Result<M> {
    if !path.is_file() {
        return Err(TrainError::Record { path: path.to_path_buf(), message: "file not found".into() });
    }
    let record = ModuleRecord::load(path).map_err(TrainError::record(path))?;
    module.try_load_record(record).map_err(TrainError::record(path))
}
