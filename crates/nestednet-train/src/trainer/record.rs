//! Records and files: atomic writes, record bytes with stable parameter ids, and loading a
//! record with a clear error.

use std::fs;
use std::io::Write;
use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::error::{Result, TrainError};

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

/// The burnpack bytes of a module's record, every parameter id replaced by a hash of its
/// tensor's path: two identical runs write identical files.
pub fn record_bytes<M: Module>(module: &M) -> Result<Vec<u8>> {
    let bytes = module.clone().into_record().into_bytes().map_err(TrainError::record("<in memory>"))?;
    stable_ids(bytes).map(|b| b.to_vec())
}

/// `module` with the parameter ids [`record_bytes`] writes. Burn draws ids at random (from the
/// OS, whatever the seed) and records store them, so identical runs wrote different bytes;
/// optimizer states are keyed by them, so a trained network takes these ids when it is
/// created ([`seeded_model`](crate::trainer::init::seeded_model)) and keeps them through every checkpoint
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
pub(crate) fn stable_ids(bytes: Bytes) -> Result<Bytes> {
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
