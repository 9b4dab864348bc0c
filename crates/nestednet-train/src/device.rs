//! Choosing a backend at run time. Which backends exist is decided at compile time by this
//! crate's Cargo features (`flex`, `ndarray`, `wgpu`, `tch`, `cuda`); asking for one that was
//! not compiled in is a clear error that says how to rebuild.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

/// A backend nestednet can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (the default).
    Flex,
    /// The ndarray CPU backend.
    Ndarray,
    /// WebGPU (Vulkan, Metal, DX12; Mesa's lavapipe on machines without a GPU).
    Wgpu,
    /// libtorch, on the CPU.
    Tch,
    /// CUDA, GPU 0.
    Cuda,
}

impl Backend {
    /// Every backend, compiled in or not.
    pub const ALL: [Backend; 5] = [Self::Flex, Self::Ndarray, Self::Wgpu, Self::Tch, Self::Cuda];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
            Self::Tch => "tch",
            Self::Cuda => "cuda",
        }
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Flex => cfg!(feature = "flex"),
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Tch => cfg!(feature = "tch"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends this build includes.
    pub fn compiled() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The first compiled backend, in the order flex, ndarray, tch, wgpu, cuda.
    pub fn default_compiled() -> Result<Backend> {
        [Self::Flex, Self::Ndarray, Self::Tch, Self::Wgpu, Self::Cuda]
            .into_iter()
            .find(|b| b.is_compiled())
            .ok_or_else(|| TrainError::Device("no backend is compiled in: build with --features flex".into()))
    }

    /// The backend named by the `BURN_DEVICE` environment variable (`flex`, `ndarray`, `wgpu`,
    /// `tch` or `cuda`), or else the first compiled one. An unknown name, or one that is not
    /// compiled in, is an error naming the variable.
    pub fn from_env_or_default() -> Result<Backend> {
        match std::env::var("BURN_DEVICE") {
            Ok(name) if !name.trim().is_empty() => {
                let backend: Backend =
                    name.trim().parse().map_err(|e| TrainError::Device(format!("BURN_DEVICE: {e}")))?;
                backend.device().map_err(|e| TrainError::Device(format!("BURN_DEVICE={name}: {e}")))?;
                Ok(backend)
            }
            _ => Self::default_compiled(),
        }
    }

    /// Whether the backend numbers its devices (GPUs: `cuda`, `wgpu`); the CPU backends have
    /// one device, index 0.
    pub fn has_numbered_devices(self) -> bool {
        matches!(self, Self::Cuda | Self::Wgpu)
    }

    /// The (non-autodiff) device of this backend.
    pub fn device(self) -> Result<Device> {
        self.device_at(0)
    }

    /// The (non-autodiff) device number `index` of this backend: the GPU of that index for
    /// `cuda` and `wgpu` (discrete GPUs, except index 0: the default adapter); the CPU
    /// backends have one device, index 0.
    pub fn device_at(self, index: usize) -> Result<Device> {
        if !self.is_compiled() {
            let compiled: Vec<&str> = Self::compiled().into_iter().map(Self::name).collect();
            return Err(TrainError::Device(format!(
                "backend `{}` is not compiled into this build (compiled: {}); rebuild with `--features {}`",
                self.name(),
                if compiled.is_empty() { "none".to_string() } else { compiled.join(", ") },
                self.name()
            )));
        }
        if index > 0 && !self.has_numbered_devices() {
            return Err(TrainError::Device(format!(
                "backend `{}` has one device, index 0 (asked: {index})",
                self.name()
            )));
        }
        Ok(match self {
            #[cfg(feature = "flex")]
            Self::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Self::Ndarray => Device::ndarray(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => initialised_wgpu_device(index)?,
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            Self::Tch => Device::libtorch(),
            #[cfg(feature = "cuda")]
            Self::Cuda => Device::cuda(index),
            #[allow(unreachable_patterns)]
            _ => unreachable!("checked by is_compiled"),
        })
    }
}

/// The wgpu device `index` (0: the default adapter; else that discrete GPU), its runtime
/// initialised here the first time the process asks for it, and reused after that.
///
/// Burn's `Device::wgpu` is lazy: on a machine without a usable adapter (no GPU and no
/// software Vulkan driver) the runtime panics inside cubecl at the device's first operation.
/// Initialising it here turns that into an error naming the cause. A runtime some other code
/// already initialised (registration refused) is simply used.
#[cfg(feature = "wgpu")]
fn initialised_wgpu_device(index: usize) -> Result<Device> {
    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::WgpuInitError;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    type Initialised = std::result::Result<Device, String>;
    static DEVICES: OnceLock<Mutex<HashMap<usize, Initialised>>> = OnceLock::new();
    let kind = if index == 0 { DeviceKind::DefaultDevice } else { DeviceKind::DiscreteGpu(index) };
    let mut devices = DEVICES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let device = devices.entry(index).or_insert_with(|| {
        match Device::wgpu_options().device_kind(kind.clone()).init() {
            Ok(device) => Ok(device),
            Err(WgpuInitError::Registration { .. }) => Ok(Device::wgpu(kind)),
            Err(e) => Err(e.to_string()),
        }
    });
    device.clone().map_err(|e| {
        TrainError::Device(format!(
            "backend `wgpu`, device {index}: {e}. Without a GPU, Mesa's software Vulkan driver \
             (lavapipe; Debian/Ubuntu package `mesa-vulkan-drivers`) provides an adapter"
        ))
    })
}

impl core::str::FromStr for Backend {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s.to_ascii_lowercase()).ok_or_else(|| {
            TrainError::Device(format!("unknown backend `{s}` (known: flex, ndarray, wgpu, tch, cuda)"))
        })
    }
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Builds the CPU backends' thread pool (rayon's global pool: `RAYON_NUM_THREADS` threads, or
/// one per core) with the calling thread as one of them, and returns whether it did.
///
/// A training step runs on the thread that calls it, and every parallel operation of the CPU
/// kernels called from a thread outside the pool hands its work to the pool and sleeps until a
/// pool thread wakes it: two context switches per operation, hundreds per step, the most
/// costly in a small level's step, whose operations are short. From a pool thread the
/// operation runs in place. Measured (`cargo bench --bench speed`, 2 threads, one run each,
/// alternately): the joint 3-level `mnist-cnn` epoch 3.40 s against 3.77 s and 3.37 against
/// 3.56, joint / full 1.55× and 1.53× against 1.62× and 1.59×. The values are the same bits.
///
/// Call it first thing in `main`, before anything uses the pool. Does nothing (`false`) if
/// the pool already exists, or if it would have a single thread: the calling thread would be
/// its only one, and work handed to the pool by another thread (a data loader's) would wait
/// until the calling thread next runs a parallel operation.
pub fn join_cpu_thread_pool() -> bool {
    let threads = cpu_pool_threads();
    threads >= 2
        && rayon::ThreadPoolBuilder::new().num_threads(threads).use_current_thread().build_global().is_ok()
}

/// The threads [`join_cpu_thread_pool`] gives the pool, as rayon counts them:
/// `RAYON_NUM_THREADS` if it is a positive number, else one per core.
pub fn cpu_pool_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}
