//! Speed of the 3-level `mnist-cnn` on every compiled backend, all figures from one run:
//!
//! - **training epoch** on mnist10k (8,000 digits, batch 64, Adam 1e-3): the joint 3-level
//!   network; the plain full-width network alone; the three widths trained one after another
//!   as separate networks. Batches come through the same prefetching loader as `train`, and
//!   the four networks train **interleaved**, step by step on the same batches, so that the
//!   ratios between them are measured under the same load (see [`interleaved_epochs`]);
//! - **inference latency** of every level at batch 1, 64 and 256, both the way training runs a
//!   level (`forward_level`, which slices the shared weights on each call) and the way a level
//!   is served (`extract_level`: weights sliced once, compact);
//! - ratios: joint epoch / full-width epoch, joint / sequential, full / core latency, and
//!   flex / ndarray when both are compiled.
//!
//! ```text
//! cargo bench --bench speed                                   # every compiled backend
//! cargo bench --bench speed -- --backends flex --epoch-steps 40
//! cargo bench --bench speed --features ndarray -- --backends flex,ndarray
//! ```
//! `--epoch-steps N` times N steps (after 3 warm-up steps) and scales to the 125-step epoch:
//! use it for slow backends (wgpu on a software Vulkan driver). `--json PATH` writes the
//! figures. Absolute times depend on the (shared) machine: compare ratios from one run.
//! `NESTEDNET_KERNELS=burn` measures Burn's own operations in place of `nestednet-kernels`'
//! (the same values): the before/after of the kernels.

use std::sync::Arc;
use std::time::Instant;

use burn::optim::ModuleOptimizer;
use clap::Parser;
use nestednet::data::{ImageBatch, ImageSet, Mnist, epoch_loader, prefetch};
use nestednet::heads::JointLoss;
use nestednet::models::{NestedMnistCnn, NestedMnistCnnConfig, NestedNetwork};
use nestednet::train::jobs::Backend;
use nestednet::train::serve::{measure_latency, median_latency_ms};
use nestednet::train::trainer::{JointStep, OptimizerConfig, seeded_model, train_step};

#[derive(Parser, Debug)]
struct Args {
    /// Backends to measure (default: every compiled one except cuda without a GPU).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<Backend>,
    /// Training steps timed per configuration (after 3 warm-up steps); 0 = the whole epoch.
    #[arg(long, default_value_t = 0)]
    epoch_steps: usize,
    /// Batch sizes for inference latency.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    batches: Vec<usize>,
    /// Levels whose latency is measured (default: all).
    #[arg(long, value_delimiter = ',')]
    levels: Vec<usize>,
    /// Time only these networks' training epochs (interleaved) and stop, e.g. under a
    /// profiler: a comma-separated list of `joint` (the 3-level network) and width ratios of
    /// the plain network (`0.25`, `0.5`, `1.0`), e.g. `joint,1.0`.
    #[arg(long)]
    train_only: Option<String>,
    /// Skip the training measurements.
    #[arg(long)]
    no_training: bool,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// (`cargo bench` passes `--bench`.)
    #[arg(long, hide = true)]
    bench: bool,
}

/// Widths of the three levels; the sequential baseline trains one network per width.
const RATIOS: [f64; 3] = [0.25, 0.5, 1.0];
const BATCH: usize = 64;

fn scaled(ratio: f64) -> NestedMnistCnnConfig {
    let c = |n: usize| ((n as f64 * ratio).round() as usize).max(1);
    NestedMnistCnnConfig::new()
        .with_conv1_channels(c(32))
        .with_conv2_channels(c(64))
        .with_hidden(c(128))
        .with_levels("1.0".parse().expect("one level"))
}

/// Seconds for one epoch (125 steps of 64) of training each of `configs` on `backend`, their
/// steps interleaved: every batch trains each network in turn, and each step is timed on its
/// own (its statistics read, so that it has finished). A slower or faster stretch of a shared
/// machine then falls on every network alike, and the ratios between them hold far better
/// than those of epochs timed one after another (measured: joint / full 1.38×–1.65× over four
/// back-to-back pairs in one process; 1.65×–1.67× in three interleaved runs). Also returns
/// whether fewer steps were timed than an epoch has (`steps`; then the figures are scaled to
/// the epoch).
fn interleaved_epochs(
    configs: &[NestedMnistCnnConfig],
    train: &Arc<ImageSet>,
    backend: Backend,
    steps: usize,
) -> (Vec<f64>, bool) {
    let device = backend.device().expect("device").autodiff();
    let mut nets: Vec<(Option<NestedMnistCnn>, ModuleOptimizer, Vec<usize>, JointLoss)> = configs
        .iter()
        .map(|config| {
            let model = seeded_model(config, None, 1, &device).expect("a valid model");
            let levels: Vec<usize> = (0..model.num_levels()).collect();
            let joint = JointLoss::mean(levels.len());
            (Some(model), OptimizerConfig::adam().init(), levels, joint)
        })
        .collect();
    let epoch_steps = train.len().div_ceil(BATCH);
    let warmup = 3;
    let timed = if steps == 0 { epoch_steps } else { steps.min(epoch_steps) };
    let mut seconds = vec![0.0; configs.len()];
    let mut run = |batches: &mut dyn Iterator<Item = ImageBatch>, seconds: &mut [f64]| {
        for batch in batches {
            for ((model, optim, levels, joint), seconds) in nets.iter_mut().zip(seconds.iter_mut()) {
                let start = Instant::now();
                // Taken, not cloned: a second reference to the parameters would keep the
                // optimizer from updating them in place.
                let step = JointStep::new(batch.images.clone(), batch.labels.clone(), levels, joint);
                let (next, stats) = train_step(model.take().expect("a model"), optim, step, 1e-3);
                *model = Some(next);
                stats.read();
                *seconds += start.elapsed().as_secs_f64();
            }
        }
    };
    // Warm-up steps come from another epoch's order, so that the timed steps are one epoch.
    let warm = epoch_loader(train.clone(), BATCH, 1, 1, true, None, &device).expect("loader");
    run(&mut prefetch(warm, 2).take(warmup).map(|b| b.expect("batch")), &mut vec![0.0; configs.len()]);
    let loader = epoch_loader(train.clone(), BATCH, 1, 0, true, None, &device).expect("loader");
    run(&mut prefetch(loader, 2).take(timed).map(|b| b.expect("batch")), &mut seconds);
    let scale = epoch_steps as f64 / timed as f64;
    (seconds.into_iter().map(|s| s * scale).collect(), timed < epoch_steps)
}

#[derive(serde::Serialize)]
struct BackendFigures {
    backend: String,
    /// Seconds per epoch: joint 3 levels, full width alone, the 3 widths one after another.
    epoch_joint_s: Option<f64>,
    epoch_full_s: Option<f64>,
    epoch_sequential_s: Option<f64>,
    epoch_extrapolated: bool,
    /// Milliseconds to build one batch (what prefetching overlaps).
    load_ms_per_batch: Option<f64>,
    /// `[level][batch index]` milliseconds, sliced per call and extracted once.
    latency_sliced_ms: Vec<Vec<f64>>,
    latency_extracted_ms: Vec<Vec<f64>>,
}

fn main() {
    // First, before anything uses the CPU thread pool: this thread is one of its threads (the
    // bench times its work directly, not through the trainer, which would do it).
    nestednet::train::trainer::join_cpu_thread_pool();
    let args = Args::parse();
    let backends = if args.backends.is_empty() {
        Backend::compiled().into_iter().filter(|b| *b != Backend::Cuda).collect()
    } else {
        args.backends.clone()
    };
    let (train, _) = Mnist::load(&nestednet::vendored_mnist_dir()).expect("vendored MNIST");
    let train = Arc::new(train);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    println!(
        "mnist-cnn, levels {RATIOS:?}, {} training digits, batch {BATCH}, Adam; {} CPU cores, RAYON_NUM_THREADS={threads}; {}",
        train.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        match std::env::var("NESTEDNET_KERNELS") {
            _ if !nestednet::kernels::own_kernels() =>
                "Burn's operations only (NESTEDNET_KERNELS=burn)".to_string(),
            Ok(list) => format!("nestednet-kernels' {list} kernels (NESTEDNET_KERNELS)"),
            Err(_) => "nestednet-kernels' own CPU kernels".to_string(),
        },
    );
    let nested = NestedMnistCnnConfig::new();
    if let Some(only) = &args.train_only {
        let names: Vec<&str> = only.split(',').map(str::trim).collect();
        let configs: Vec<NestedMnistCnnConfig> = names
            .iter()
            .map(|&name| match name {
                "joint" => nested.clone(),
                ratio => scaled(
                    ratio
                        .parse()
                        .unwrap_or_else(|_| panic!("--train-only: {ratio:?} is not joint or a ratio")),
                ),
            })
            .collect();
        for backend in backends {
            let (seconds, _) = interleaved_epochs(&configs, &train, backend, args.epoch_steps);
            let figures: Vec<String> =
                names.iter().zip(&seconds).map(|(n, s)| format!("{n} {s:.2} s")).collect();
            println!("{backend}: epoch {}", figures.join(", "));
        }
        return;
    }
    let mut all = Vec::new();
    for backend in backends {
        let device = backend.device().unwrap_or_else(|e| panic!("{e}"));
        println!("\n## backend `{backend}`");
        let mut figures = BackendFigures {
            backend: backend.to_string(),
            epoch_joint_s: None,
            epoch_full_s: None,
            epoch_sequential_s: None,
            epoch_extrapolated: false,
            load_ms_per_batch: None,
            latency_sliced_ms: Vec::new(),
            latency_extracted_ms: Vec::new(),
        };
        if !args.no_training {
            // What prefetching hides: building one epoch's batches alone (no training).
            let loader = epoch_loader(train.clone(), BATCH, 1, 0, true, None, &device).expect("loader");
            let start = Instant::now();
            let mut batches = 0;
            for batch in loader.iter() {
                drop(batch.expect("batch"));
                batches += 1;
            }
            let load_ms = start.elapsed().as_secs_f64() * 1e3 / batches as f64;
            println!("data loading alone: {load_ms:.3} ms per batch of {BATCH}");
            let mut configs = vec![nested.clone()];
            configs.extend(RATIOS.iter().map(|&r| scaled(r)));
            let (epochs, extrapolated) = interleaved_epochs(&configs, &train, backend, args.epoch_steps);
            let joint = epochs[0];
            // The last ratio is the full width.
            let full = epochs[RATIOS.len()];
            let sequential: f64 = epochs[1..].iter().sum();
            let note = if extrapolated {
                format!(" ({} steps timed, scaled to the epoch)", args.epoch_steps)
            } else {
                String::new()
            };
            println!("training epoch{note}:");
            println!("| network | s / epoch | vs full width |");
            println!("|---|---|---|");
            println!("| plain full width | {full:.2} | 1.00× |");
            println!("| joint 3 levels (NestedNet) | {joint:.2} | {:.2}× |", joint / full);
            println!("| 3 widths one after another | {sequential:.2} | {:.2}× |", sequential / full);
            println!("joint / sequential: {:.2}×", joint / sequential);
            figures.epoch_joint_s = Some(joint);
            figures.epoch_full_s = Some(full);
            figures.epoch_sequential_s = Some(sequential);
            figures.epoch_extrapolated = extrapolated;
            figures.load_ms_per_batch = Some(load_ms);
        }
        let model = seeded_model(&nested, None, 1, &device).expect("a valid model");
        println!("inference latency, ms (median; sliced per call → extracted once):");
        let header: Vec<String> = args.batches.iter().map(|b| format!("batch {b}")).collect();
        println!("| level | MACs / image | {} |", header.join(" | "));
        println!("|---|---|{}", "---|".repeat(args.batches.len()));
        let levels: Vec<usize> =
            if args.levels.is_empty() { (0..model.num_levels()).collect() } else { args.levels.clone() };
        for &level in &levels {
            let mut sliced = Vec::new();
            let mut extracted = Vec::new();
            for &b in &args.batches {
                let (runs, ms) = if b >= 64 { (10, 1500.0) } else { (50, 500.0) };
                sliced.push(median_latency_ms(
                    |x| model.forward_level(x, level),
                    &model.input_shape(),
                    b,
                    &device,
                    runs,
                    ms,
                ));
                extracted.push(measure_latency(&model, level, b, &device, runs, ms));
            }
            let cells: Vec<String> =
                sliced.iter().zip(&extracted).map(|(s, e)| format!("{s:.3} → **{e:.3}**")).collect();
            println!("| {level} | {} | {} |", model.level_cost(level).macs, cells.join(" | "));
            figures.latency_sliced_ms.push(sliced);
            figures.latency_extracted_ms.push(extracted);
        }
        let full = model.num_levels() - 1;
        let macs = model.level_cost(full).macs as f64 / model.level_cost(0).macs as f64;
        for (i, b) in args.batches.iter().enumerate().filter(|_| levels.len() == model.num_levels()) {
            let e = &figures.latency_extracted_ms;
            println!(
                "batch {b}: core {:.2}× faster than full (MAC ratio {macs:.1}×); extracting saves {:.0}% at the core",
                e[full][i] / e[0][i],
                100.0 * (1.0 - e[0][i] / figures.latency_sliced_ms[0][i])
            );
        }
        all.push(figures);
    }
    let find = |name: &str| all.iter().find(|f| f.backend == name);
    if let (Some(flex), Some(nd)) = (find("flex"), find("ndarray")) {
        println!("\n## flex vs ndarray");
        if let (Some(f), Some(n)) = (flex.epoch_joint_s, nd.epoch_joint_s) {
            println!("joint epoch: ndarray / flex = {:.2}×", n / f);
        }
        for (i, b) in args.batches.iter().enumerate() {
            let ratio: Vec<String> = (0..flex.latency_extracted_ms.len())
                .map(|k| format!("{:.2}×", nd.latency_extracted_ms[k][i] / flex.latency_extracted_ms[k][i]))
                .collect();
            println!("latency batch {b}, ndarray / flex per level: {}", ratio.join(", "));
        }
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&all).expect("json")).expect("writing the JSON");
        println!("\nwrote {}", path.display());
    }
}
