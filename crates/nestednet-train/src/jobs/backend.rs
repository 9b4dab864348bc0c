//! Choosing a backend at run time. Which backends exist is decided at compile time by this
//! crate's Cargo features (`flex`, `ndarray`, `wgpu`, `tch`, `cuda`); asking for one that was
//! not compiled in is a clear error that says how to rebuild.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::trainer::devices::TrainDevices;

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

/// One device of a data-parallel run, as written on the command line: `flex`, `cuda:1`,
/// `wgpu:0=2` (`=share`: its part of each batch, relative to the others'; default 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// The backend.
    pub backend: Backend,
    /// The device's index among the backend's devices (GPUs); CPU backends have index 0 only.
    pub index: usize,
    /// Its share of every batch, relative to the other devices' (positive).
    pub share: f64,
}

impl DeviceSpec {
    /// The Burn device (not autodiff); an error when the backend is not compiled in.
    pub fn device(&self) -> Result<Device> {
        self.backend.device_at(self.index)
    }
}

impl core::str::FromStr for DeviceSpec {
    type Err = TrainError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: String| TrainError::Device(format!("device `{text}`: {why}"));
        let (name, share) = match text.split_once('=') {
            Some((name, share)) => {
                let share: f64 =
                    share.trim().parse().map_err(|_| bad(format!("the share `{share}` is not a number")))?;
                if !(share.is_finite() && share > 0.0) {
                    return Err(bad("a share must be a positive number".into()));
                }
                (name, share)
            }
            None => (text, 1.0),
        };
        let (backend, index) = match name.trim().split_once(':') {
            Some((backend, index)) => {
                let index: usize =
                    index.parse().map_err(|_| bad(format!("the index `{index}` is not a device number")))?;
                (backend, index)
            }
            None => (name.trim(), 0),
        };
        let backend: Backend = backend.parse().map_err(|e: TrainError| bad(e.to_string()))?;
        if index > 0 && !backend.has_numbered_devices() {
            return Err(bad(format!(
                "`{backend}` has one device (index 0); to run several workers on it, name it several times"
            )));
        }
        Ok(Self { backend, index, share })
    }
}

impl core::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.backend)?;
        if self.index > 0 || self.backend.has_numbered_devices() {
            write!(f, ":{}", self.index)?;
        }
        if self.share != 1.0 {
            write!(f, "={}", self.share)?;
        }
        Ok(())
    }
}

/// A list of devices as written on the command line, `flex,flex` or `cuda:0=2,cuda:1` (see
/// [`DeviceSpec`]), and whether DDP sums their gradients; [`DeviceList::devices`] turns it
/// into devices. (Parsed and written as the list alone: `--ddp` is a setting of its own.)
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceList {
    /// The devices, the main one first.
    pub specs: Vec<DeviceSpec>,
    /// Sum the gradients with Burn's DDP all-reduce ([`TrainDevices::with_ddp`]).
    pub ddp: bool,
}

impl DeviceList {
    /// The backend of the main (first) device.
    pub fn main_backend(&self) -> Backend {
        self.specs[0].backend
    }

    /// The devices, checked to be compiled in (and to be able to run DDP, when asked).
    pub fn devices(&self) -> Result<TrainDevices> {
        let devices = self.specs.iter().map(DeviceSpec::device).collect::<Result<Vec<_>>>()?;
        let shares = self.specs.iter().map(|s| s.share).collect();
        let names = self.specs.iter().map(ToString::to_string).collect();
        let devices = TrainDevices::new(devices, shares)?.with_names(names)?.with_ddp(self.ddp);
        devices.check_ddp()?;
        Ok(devices)
    }
}

impl core::str::FromStr for DeviceList {
    type Err = TrainError;

    fn from_str(list: &str) -> Result<Self> {
        let specs = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<DeviceSpec>>>()?;
        if specs.is_empty() {
            return Err(TrainError::Device("the device list is empty".into()));
        }
        Ok(Self { specs, ddp: false })
    }
}

impl core::fmt::Display for DeviceList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let names: Vec<String> = self.specs.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_devices(list: &str) -> Result<TrainDevices> {
        list.parse::<DeviceList>()?.devices()
    }

    #[test]
    fn device_lists_parse_and_shard_every_sample_once() {
        let spec: DeviceSpec = "cuda:1=2.5".parse().unwrap();
        assert_eq!(spec, DeviceSpec { backend: Backend::Cuda, index: 1, share: 2.5 });
        assert_eq!(spec.to_string(), "cuda:1=2.5");
        assert_eq!("flex".parse::<DeviceSpec>().unwrap().to_string(), "flex");
        for (bad, why) in [
            ("gpu", "unknown backend `gpu`"),
            ("flex:1", "has one device"),
            ("cuda:x", "not a device number"),
            ("flex=0", "positive"),
            ("flex=abc", "not a number"),
        ] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
        let devices = parse_devices("flex,flex=2").unwrap();
        assert_eq!(devices.names(), ["flex", "flex=2"]);
        assert_eq!(devices.shard_sizes(32), vec![11, 21]);
        assert_eq!(devices.shard_sizes(1), vec![0, 1]);
        assert_eq!(devices.shard_ranges(5), vec![0..2, 2..5]);
        let three = TrainDevices::new(vec![Device::flex(); 3], vec![1.0; 3]).unwrap();
        for n in 0..40 {
            let sizes = three.shard_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{n}: {sizes:?}");
        }
        assert!(TrainDevices::new(vec![], vec![]).is_err());
        parse_devices("flex,flex").unwrap().check_ddp().unwrap();
        let err = parse_devices("flex,flex").unwrap().with_ddp(true).check_ddp().unwrap_err().to_string();
        assert!(err.contains("cuda devices only") && err.contains("`flex`"), "{err}");
        let err = parse_devices("flex").unwrap().with_ddp(true).check_ddp().unwrap_err().to_string();
        assert!(err.contains("two or more devices"), "{err}");
        assert!(parse_devices(" , ").unwrap_err().to_string().contains("empty"));
        let list: DeviceList = "cuda:0=2, cuda:1".parse().unwrap();
        assert_eq!((list.to_string(), list.main_backend()), ("cuda:0=2,cuda:1".to_string(), Backend::Cuda));
        assert!(TrainDevices::new(vec![Device::flex()], vec![1.0, 1.0]).is_err());
        assert!(TrainDevices::new(vec![Device::flex().autodiff()], vec![1.0]).is_err());
        #[cfg(not(feature = "cuda"))]
        {
            let err = parse_devices("flex,cuda:1").unwrap_err().to_string();
            assert!(err.contains("not compiled into this build"), "{err}");
        }
    }
}
