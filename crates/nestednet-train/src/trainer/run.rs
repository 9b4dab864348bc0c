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
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::Bytes;
use nestednet_models::{NestedNetwork, NestedNetworkConfig};

use crate::error::{Result, TrainError};
use crate::trainer::config::RunConfig;
use crate::trainer::masks::enable_masks;
use crate::trainer::phases::CheckpointState;
use crate::trainer::record::load_record;
use crate::trainer::record::record_bytes;
use crate::trainer::record::stable_ids;
use crate::trainer::record::write_atomic;

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

    /// Reads `config.json` as a run of model configuration `C` (a built-in family's, or a
    /// user's own).
    pub fn load_config<C: NestedNetworkConfig>(&self) -> Result<RunConfig<C>> {
        let value = self.config_value()?;
        let config: RunConfig<C> = serde_json::from_value(value)
            .map_err(|source| TrainError::Json { path: self.config_path(), source })?;
        config.training.validate()?;
        Ok(config)
    }

    /// `config.json` as JSON, checked to be of this build's format version (whatever the
    /// model's type).
    fn config_value(&self) -> Result<serde_json::Value> {
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
        if version != Some(u64::from(crate::trainer::config::FORMAT_VERSION)) {
            return Err(self.run_error(format!(
                "was written in run format version {} and this build reads version {} only: retrain it, or use the nestednet release that wrote it",
                version.map_or("?".to_string(), |v| v.to_string()),
                crate::trainer::config::FORMAT_VERSION
            )));
        }
        Ok(value)
    }

    /// The model family `config.json` records (`None`: a network of the library's caller that
    /// belongs to no registered family), whatever the model's type.
    pub fn recorded_family(&self) -> Result<Option<String>> {
        Ok(self.config_value()?.get("family").and_then(|f| f.as_str()).map(str::to_string))
    }

    /// The settings `config.json` records (`None`: a run made through the library).
    pub fn recorded_settings(&self) -> Result<Option<serde_json::Value>> {
        Ok(self.config_value()?.get("settings").cloned())
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
    crate::trainer::init::with_init_lock(|| {
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
