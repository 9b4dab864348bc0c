//! Data-parallel training on several devices, with Burn's own machinery.
//!
//! Each batch is cut into one shard per device, in proportion to the devices' shares. The
//! network is forked onto every device ([`Module::fork`]) and each device computes its
//! shard's joint loss and backward pass on a thread of its own, the loss weighted by the
//! shard's part of the batch. Then, as burn-train's multi-device strategy does:
//!
//! the gradients move to the first ("main") device ([`GradientsParams::to_device`]) and are
//! summed there ([`GradientsAccumulator`]), and one optimizer step updates the one network.
//! This works on every backend, the CPU ones included.
//!
//! With [`TrainDevices::with_ddp`], the sum is Burn's DDP all-reduce instead: the forked
//! parameters are marked distributed ([`Tensor::set_distributed`], as burn-train's DDP
//! strategy marks them) under a [`DistributedContext`], and `backward()` sums every device's
//! gradients on every device (NCCL on `cuda`, the one backend that implements it in Burn
//! 0.22.1); the main device's sum takes the optimizer step. Unlike burn-train's DDP, the
//! network is not kept as one replica per device with an optimizer each: it is forked from
//! the main device every step, as in the gather-and-sum path, so masks, thresholds, pruning
//! and checkpoints stay those of the one network.
//!
//! Because each shard's loss carries the weight `shard / batch`, the summed gradient is the
//! gradient of the whole batch's loss: the step equals one device's step on the same batch,
//! except where the network itself couples the samples of a batch (batch normalisation
//! computes its statistics per shard, as DDP without synchronised batch norm does).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use nestednet_heads::JointLoss;
use nestednet_models::{NestedNetwork, NetworkInput};

use crate::error::{Result, TrainError};
use crate::trainer::labels::LevelLabels;
use crate::trainer::step::{DistillStep, JointStep, StepStats, level_gradients};

/// The devices a run trains on: one, or several for data-parallel training. The first is the
/// main device: it holds the network, the optimizer and the data, and evaluates.
#[derive(Debug, Clone)]
pub struct TrainDevices {
    devices: Vec<Device>,
    names: Vec<String>,
    shares: Vec<f64>,
    ddp: bool,
}

impl TrainDevices {
    /// Training on `device` alone.
    pub fn single(device: Device) -> Self {
        Self { names: vec![format!("{device:?}")], devices: vec![device], shares: vec![1.0], ddp: false }
    }

    /// Data-parallel training on `devices` (the first is the main device), each batch shared
    /// among them in proportion to `shares` (one positive number per device).
    pub fn new(devices: Vec<Device>, shares: Vec<f64>) -> Result<Self> {
        if devices.is_empty() {
            return Err(TrainError::Device("the device list is empty".into()));
        }
        if shares.len() != devices.len() {
            return Err(TrainError::Device(format!(
                "{} shares given for {} devices",
                shares.len(),
                devices.len()
            )));
        }
        if let Some(bad) = shares.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(TrainError::Device(format!("a device's share must be a positive number, not {bad}")));
        }
        if devices.iter().any(|d| d.is_autodiff()) {
            return Err(TrainError::Device(
                "give plain devices: training adds autodiff itself (`device.clone().inner()`)".into(),
            ));
        }
        Ok(Self { names: devices.iter().map(|d| format!("{d:?}")).collect(), devices, shares, ddp: false })
    }

    /// The same devices, called `names` in messages and reports (`flex`, `cuda:1=2`, ...; one
    /// per device).
    pub fn with_names(mut self, names: Vec<String>) -> Result<Self> {
        if names.len() != self.devices.len() {
            return Err(TrainError::Device(format!(
                "{} names for {} devices",
                names.len(),
                self.devices.len()
            )));
        }
        self.names = names;
        Ok(self)
    }

    /// Sums the devices' gradients with Burn's DDP all-reduce inside `backward()` instead of
    /// gathering them on the main device (see the module's documentation). Only `cuda`
    /// implements the all-reduce in Burn 0.22.1: [`TrainDevices::check_ddp`] says so before
    /// a run starts.
    pub fn with_ddp(mut self, ddp: bool) -> Self {
        self.ddp = ddp;
        self
    }

    /// Whether the gradients are summed by Burn's DDP all-reduce.
    pub fn ddp(&self) -> bool {
        self.ddp
    }

    /// An error unless DDP can run here: two or more devices, all `cuda`. (`flex`, `ndarray`
    /// and `tch` report the all-reduce unsupported, and `wgpu` fails inside CubeCL.)
    pub fn check_ddp(&self) -> Result<()> {
        if !self.ddp {
            return Ok(());
        }
        if self.devices.len() < 2 {
            return Err(TrainError::Device(
                "--ddp needs two or more devices (e.g. --devices cuda:0,cuda:1)".into(),
            ));
        }
        if let Some(name) = self.names.iter().find(|n| !n.starts_with("cuda")) {
            return Err(TrainError::Device(format!(
                "--ddp runs on cuda devices only (Burn 0.22.1 implements its all-reduce for cuda alone), not on `{name}`; without --ddp the gradients of any backend are gathered and summed on the main device"
            )));
        }
        Ok(())
    }

    /// The devices (plain, not autodiff), the main one first.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The main device: it holds the network and the data, and evaluates.
    pub fn main(&self) -> &Device {
        &self.devices[0]
    }

    /// How many devices train.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Never true: there is always a main device.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The devices as given (`flex`, `cuda:1=2`, ...), for messages and reports.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many of a batch's `samples` each device takes: in proportion to the shares, by
    /// largest remainders (ties to the earlier device), summing to `samples`. A device may get
    /// none of a small last batch; it then sits that step out.
    pub fn shard_sizes(&self, samples: usize) -> Vec<usize> {
        let total: f64 = self.shares.iter().sum();
        let exact: Vec<f64> = self.shares.iter().map(|s| samples as f64 * s / total).collect();
        let mut sizes: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
        let mut order: Vec<usize> = (0..sizes.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b))
        });
        let short = samples - sizes.iter().sum::<usize>();
        for &i in order.iter().take(short) {
            sizes[i] += 1;
        }
        sizes
    }

    /// The row ranges of the shards of a batch of `samples`, one per device (empty ones included).
    pub fn shard_ranges(&self, samples: usize) -> Vec<core::ops::Range<usize>> {
        let mut start = 0;
        self.shard_sizes(samples)
            .into_iter()
            .map(|n| {
                let range = start..start + n;
                start += n;
                range
            })
            .collect()
    }
}

impl From<Device> for TrainDevices {
    fn from(device: Device) -> Self {
        Self::single(device)
    }
}

impl From<&Device> for TrainDevices {
    fn from(device: &Device) -> Self {
        Self::single(device.clone())
    }
}

/// A job for one device's worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// One long-lived thread per device. Long-lived, because Burn's batch norm running statistics
/// ([`burn::module::RunningState`]) keep one pending update per thread and average them: a
/// fresh thread every step would leave stale updates behind.
pub(crate) struct DeviceWorkers {
    senders: Vec<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl DeviceWorkers {
    pub(crate) fn spawn(count: usize) -> Result<Self> {
        let mut senders = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let (sender, receiver): (Sender<Job>, Receiver<Job>) = channel();
            let handle = std::thread::Builder::new()
                .name(format!("nestednet-device-{i}"))
                .spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        job();
                    }
                })
                .map_err(|e| {
                    TrainError::Device(format!("could not start the worker thread of device {i}: {e}"))
                })?;
            senders.push(sender);
            handles.push(handle);
        }
        Ok(Self { senders, handles })
    }

    /// Runs `jobs[i]` on worker `i` (none where `None`), all at once, and returns their
    /// results in device order. A job that panics is an error naming its device; every other
    /// job still finishes first, so no answer is left over for the next call.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        jobs: Vec<Option<Box<dyn FnOnce() -> T + Send>>>,
        names: &[String],
    ) -> Result<Vec<Option<T>>> {
        let (sender, receiver) = channel();
        let mut sent = 0;
        for (i, job) in jobs.into_iter().enumerate() {
            let Some(job) = job else { continue };
            let sender = sender.clone();
            let wrapped: Job = Box::new(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                let _ = sender.send((i, result));
            });
            self.senders[i].send(wrapped).map_err(|_| {
                TrainError::Device(format!("the worker thread of device {} is gone", names[i]))
            })?;
            sent += 1;
        }
        let mut results: Vec<Option<T>> = (0..self.senders.len()).map(|_| None).collect();
        let mut failures = Vec::new();
        for _ in 0..sent {
            let (i, result) = receiver
                .recv()
                .map_err(|_| TrainError::Device("a device's worker thread ended without answering".into()))?;
            match result {
                Ok(value) => results[i] = Some(value),
                Err(payload) => {
                    failures.push(format!("device {} ({}): {}", i, names[i], panic_message(&payload)))
                }
            }
        }
        if !failures.is_empty() {
            return Err(TrainError::Device(format!("a training step failed on {}", failures.join("; "))));
        }
        Ok(results)
    }
}

impl Drop for DeviceWorkers {
    fn drop(&mut self) {
        self.senders.clear();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked".to_string()
    }
}

/// The per-device half of a data-parallel step: the batch's shards, their gradients on their
/// devices' worker threads, gathered and summed on the main device.
pub(crate) struct ShardedStep {
    devices: TrainDevices,
    autodiff: Vec<Device>,
    workers: DeviceWorkers,
    /// Burn's communication servers, while DDP trains (dropping it tears them down).
    _ddp: Option<DistributedContext>,
}

/// One shard of a distilled step, owned by its worker: temperature, α, the teacher's logits of
/// the shard's rows, and the level labels.
type ShardDistill = (f64, f64, Option<Tensor<2>>, LevelLabels);

impl ShardedStep {
    pub(crate) fn new(devices: &TrainDevices) -> Result<Self> {
        devices.check_ddp()?;
        let ddp = devices.ddp().then(|| {
            DistributedContext::init(
                devices.devices().to_vec(),
                DistributedConfig { all_reduce_op: ReduceOperation::Sum },
            )
        });
        Ok(Self {
            devices: devices.clone(),
            autodiff: devices.devices().iter().map(|d| d.clone().autodiff()).collect(),
            workers: DeviceWorkers::spawn(devices.len())?,
            _ddp: ddp,
        })
    }

    /// The gradients of the whole batch's joint loss (each shard's loss weighted by its part
    /// of the batch), on the main device, and the batch's statistics there.
    pub(crate) fn gradients<M: NestedNetwork + 'static>(
        &self,
        model: &M,
        step: JointStep<'_, M::Input>,
    ) -> Result<(GradientsParams, StepStats)> {
        type ShardJob = Box<dyn FnOnce() -> (GradientsParams, StepStats) + Send>;
        let samples = step.input.batch_size();
        // Rows of the output (and targets) per sample: 1 for a classifier.
        let rows_per_sample = step.targets.first().map_or(1, |t| t.dims()[0] / samples.max(1));
        let ranges = self.devices.shard_ranges(samples);
        let ddp = self.devices.ddp();
        let jobs: Vec<Option<ShardJob>> = ranges
            .iter()
            .zip(&self.autodiff)
            .map(|(range, device)| {
                // Every device takes part in DDP's all-reduce: one left without samples (a
                // small last batch) computes the first sample's gradient with weight 0.
                let (start, len, weight) = match (range.is_empty(), ddp) {
                    (true, false) => return None,
                    (true, true) => (0, 1, 0),
                    (false, _) => (range.start, range.len(), range.len()),
                };
                let rows =
                    |t: &Tensor<2>| t.clone().narrow(0, start * rows_per_sample, len * rows_per_sample);
                let model = model.clone();
                let device = device.clone();
                let input = step.input.clone().narrow_batch(start, len);
                let targets: Vec<Tensor<1, Int>> = step
                    .targets
                    .iter()
                    .map(|t| t.clone().narrow(0, start * rows_per_sample, len * rows_per_sample))
                    .collect();
                let joint: JointLoss = step.joint.clone();
                let levels = step.levels.to_vec();
                let mixes = step.mixes.to_vec();
                let distill: Option<ShardDistill> = step
                    .distill
                    .map(|d| (d.temperature, d.alpha, d.teacher_logits.as_ref().map(rows), d.labels.clone()));
                let shard = Shard {
                    model,
                    device,
                    ddp,
                    input,
                    targets,
                    joint,
                    levels,
                    mixes,
                    distill,
                    scale: weight as f64 / samples as f64,
                };
                let job: ShardJob = Box::new(move || shard.gradients());
                Some(job)
            })
            .collect();
        // The last optimizer step's writes must be done before other threads read the weights.
        self.devices
            .main()
            .sync()
            .map_err(|e| TrainError::Device(format!("the main device failed: {e:?}")))?;
        let results = self.workers.run(jobs, self.devices.names())?;
        let main_autodiff = &self.autodiff[0];
        let mut grads = Vec::with_capacity(results.len());
        let mut stats: Option<StepStats> = None;
        for ((g, s), range) in results.into_iter().zip(&ranges).filter_map(|(r, range)| Some((r?, range))) {
            // Under DDP every device holds the all-reduced sum already: the main device's is
            // the step's gradient.
            if !ddp || grads.is_empty() {
                grads.push(g);
            }
            if range.is_empty() {
                continue; // a DDP device's stand-in sample
            }
            let s = s.to_device(main_autodiff);
            stats = Some(match stats {
                Some(total) => total.merge(s),
                None => s,
            });
        }
        let stats = stats.ok_or_else(|| TrainError::Invalid("an empty batch".into()))?;
        Ok((gather_and_sum(model, grads, self.devices.main()), stats))
    }
}

/// One device's shard of a data-parallel step, owned by that device's worker thread.
struct Shard<M: NestedNetwork> {
    model: M,
    device: Device,
    ddp: bool,
    input: M::Input,
    targets: Vec<Tensor<1, Int>>,
    joint: JointLoss,
    levels: Vec<usize>,
    mixes: Vec<Vec<usize>>,
    distill: Option<ShardDistill>,
    /// The shard's part of the batch (its loss's weight).
    scale: f64,
}

impl<M: NestedNetwork> Shard<M> {
    /// The shard's gradients and statistics, on its device.
    fn gradients(self) -> (GradientsParams, StepStats) {
        let device = self.device;
        let model = self.model.fork(&device);
        let model = if self.ddp { model.map(&mut MarkDistributed) } else { model };
        let distill = self.distill.as_ref().map(|(temperature, alpha, teacher, labels)| DistillStep {
            temperature: *temperature,
            alpha: *alpha,
            teacher_logits: teacher.clone().map(|t| t.to_device(&device)),
            labels,
        });
        let step = JointStep {
            input: self.input.to_device(&device),
            targets: self.targets.into_iter().map(|l| l.to_device(&device)).collect(),
            levels: &self.levels,
            joint: &self.joint,
            distill: distill.as_ref(),
            mixes: &self.mixes,
        };
        let out = level_gradients(&model, step, self.scale);
        // The gradients are read on the main thread next: wait until this thread's queued work
        // is done. (Without it, two workers on one wgpu device trained to garbage: the fusion
        // streams are per thread.)
        if let Err(e) = device.clone().inner().sync() {
            panic!("the device failed: {e:?}");
        }
        out
    }
}

/// Marks every parameter distributed: Burn's DDP all-reduces its gradient in `backward()`
/// (what burn-train's `ModuleSharder` does).
pub(crate) struct MarkDistributed;

impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_distributed(id), mapper)
    }
}

/// Sums per-device gradients on the main device, in device order (so a run is reproducible).
pub(crate) fn gather_and_sum<M: Module>(
    model: &M,
    grads: impl IntoIterator<Item = GradientsParams>,
    main: &Device,
) -> GradientsParams {
    let mut accumulator = GradientsAccumulator::<M>::new();
    for g in grads {
        accumulator.accumulate(model, g.to_device(main, model));
    }
    accumulator.grads()
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

/// [`join_cpu_thread_pool`] when called on the process's main thread (which lives as long as
/// the process, so the pool never loses the thread it is built with), once: training and the
/// jobs call it, so that a user's `main` needs no call of its own for full speed. Other
/// threads (a test harness's) leave the pool as it is.
pub fn join_cpu_thread_pool_from_main() {
    static TRIED: std::sync::Once = std::sync::Once::new();
    if std::thread::current().name() == Some("main") {
        TRIED.call_once(|| {
            join_cpu_thread_pool();
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_panics_is_an_error_naming_its_device_and_the_others_finish() {
        let workers = DeviceWorkers::spawn(3).unwrap();
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let jobs: Vec<Option<Box<dyn FnOnce() -> usize + Send>>> =
            vec![Some(Box::new(|| 1)), Some(Box::new(|| panic!("out of memory"))), None];
        let err = workers.run(jobs, &names).unwrap_err().to_string();
        assert!(err.contains("device 1 (b): out of memory"), "{err}");
        // The workers still serve the next step.
        let jobs: Vec<Option<Box<dyn FnOnce() -> usize + Send>>> =
            vec![Some(Box::new(|| 1)), Some(Box::new(|| 2)), None];
        assert_eq!(workers.run(jobs, &names).unwrap(), vec![Some(1), Some(2), None]);
    }
}
