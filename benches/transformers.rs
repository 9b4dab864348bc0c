//! Speed of the nested transformers on the CPU, all figures from one run:
//!
//! - **training**: seconds per joint step (every level's loss, their mean, one Adam step) of
//!   the 3-level `lm-tiny` on Brown windows of 128 bytes (batch 32) and of the 3-level
//!   `vit-tiny` on mnist10k (batch 64), scaled to an epoch of `--epoch-windows` windows and of
//!   the 8,000 digits; the PyTorch peer (`scripts/torch_transformers.py`) times the same nested
//!   models, sizes, batches and threads, and `scripts/compare_transformer_speed.sh` alternates
//!   the two;
//! - **inference latency** of every level as served (`extract_level`: compact copies) at batch 1
//!   and 64, with the core's speed-up over the full level beside the ratio of their MACs.
//!
//! ```text
//! cargo bench --bench transformers                              # both models, every figure
//! cargo bench --bench transformers -- --train-only lm --steps 40 --json lm.json
//! ```
//! Absolute times depend on the (shared) machine: compare ratios from one run.

use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use clap::Parser;
use nestednet::data::{DataSource, DatasetKind, Mnist};
use nestednet::heads::JointLoss;
use nestednet::models::{
    LevelRequest, ModelFamily, ModelRequest, NestedLanguageModelConfig, NestedNetwork, NestedNetworkConfig,
    NestedVitConfig, TokenShape,
};
use nestednet::schedule::LevelSpec;
use nestednet::train::serve::measure_latency;
use nestednet::train::trainer::{
    BatchOrder, ImageData, JointStep, LabelledSet, OptimizerConfig, TextData, seeded_model, train_step,
};

#[derive(Parser, Debug)]
struct Args {
    /// Models: `lm` (lm-tiny on Brown), `vit` (vit-tiny on mnist10k).
    #[arg(long, value_delimiter = ',', default_value = "lm,vit")]
    models: Vec<String>,
    /// Training steps timed per model (after 3 warm-up steps).
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Windows of the language model's epoch the step time is scaled to.
    #[arg(long, default_value_t = 2000)]
    epoch_windows: usize,
    /// Batch sizes for inference latency.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    batches: Vec<usize>,
    /// Time the training steps only.
    #[arg(long)]
    train_only: bool,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// (`cargo bench` passes `--bench`.)
    #[arg(long, hide = true)]
    bench: bool,
}

const LEVELS: [f64; 3] = [0.25, 0.5, 1.0];

#[derive(serde::Serialize)]
struct ModelFigures {
    model: String,
    batch: usize,
    /// Median seconds per joint training step, and that times the epoch's steps.
    step_s: Option<f64>,
    epoch_s: Option<f64>,
    epoch_samples: usize,
    /// Per level: MACs per sample and `[batch index]` milliseconds (extracted level).
    macs: Vec<usize>,
    latency_ms: Vec<Vec<f64>>,
}

/// The median seconds of `steps` joint steps of `model` on `data` (after 3 warm-up steps).
fn step_seconds<M, S>(model: M, data: &S, batch: usize, steps: usize, device: &Device) -> f64
where
    M: NestedNetwork,
    S: LabelledSet<Input = M::Input>,
{
    let levels: Vec<usize> = (0..model.num_levels()).collect();
    let joint = JointLoss::mean(levels.len());
    let mut optim: ModuleOptimizer = OptimizerConfig::adam().init();
    let mut model = Some(model);
    let mut times = Vec::with_capacity(steps);
    let batches = data.batches(BatchOrder::training(batch, 1, 0), device).expect("batches");
    for (i, b) in batches.take(steps + 3).enumerate() {
        let b = b.expect("a batch");
        let start = Instant::now();
        let step = JointStep::new(b.input, b.targets, &levels, &joint);
        let (next, stats) = train_step(model.take().expect("a model"), &mut optim, step, 1e-3);
        stats.read();
        model = Some(next);
        if i >= 3 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    assert!(!times.is_empty(), "too few batches for {steps} timed steps");
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Every level's latency at each of `batches`, and the core's speed-up against the MAC ratio.
fn latencies<M: NestedNetwork>(model: &M, batches: &[usize], device: &Device, figures: &mut ModelFigures) {
    println!(
        "| level | MACs / sample | {} |",
        batches.iter().map(|b| format!("batch {b}, ms")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(batches.len()));
    for level in 0..model.num_levels() {
        let ms: Vec<f64> = batches
            .iter()
            .map(|&b| {
                if b >= 32 {
                    measure_latency(model, level, b, device, 10, 1500.0)
                } else {
                    measure_latency(model, level, b, device, 50, 500.0)
                }
            })
            .collect();
        let macs = model.level_cost(level).macs;
        let cells: Vec<String> = ms.iter().map(|m| format!("{m:.3}")).collect();
        println!("| {level} | {macs} | {} |", cells.join(" | "));
        figures.macs.push(macs);
        figures.latency_ms.push(ms);
    }
    let full = model.num_levels() - 1;
    let mac_ratio = figures.macs[full] as f64 / figures.macs[0] as f64;
    for (i, b) in batches.iter().enumerate() {
        let speedup = figures.latency_ms[full][i] / figures.latency_ms[0][i];
        println!(
            "batch {b}: the core is {speedup:.2}× faster than the full level, {:.2} of the MAC ratio {mac_ratio:.2}×",
            speedup / mac_ratio
        );
    }
}

/// Times `config`'s training on `data` and its levels' latency.
fn measure<C, S>(name: &str, config: &C, data: &S, batch: usize, epoch: usize, args: &Args) -> ModelFigures
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = <C::Network as NestedNetwork>::Input>,
{
    let device = Device::flex();
    let mut figures = ModelFigures {
        model: name.into(),
        batch,
        step_s: None,
        epoch_s: None,
        epoch_samples: epoch,
        macs: Vec::new(),
        latency_ms: Vec::new(),
    };
    let model = seeded_model(config, None, 1, &device.clone().autodiff()).expect("a valid model");
    let step = step_seconds(model, data, batch, args.steps, &device.clone().autodiff());
    let epoch_s = step * epoch.div_ceil(batch) as f64;
    println!(
        "{name}: training step (batch {batch}, 3 levels) {:.1} ms, epoch of {epoch} samples {epoch_s:.1} s",
        step * 1e3
    );
    (figures.step_s, figures.epoch_s) = (Some(step), Some(epoch_s));
    if !args.train_only {
        let model = seeded_model(config, None, 1, &device).expect("a valid model");
        latencies(&model, &args.batches, &device, &mut figures);
    }
    figures
}

fn main() {
    nestednet::train::trainer::join_cpu_thread_pool();
    let args = Args::parse();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    println!("nested transformers, levels {LEVELS:?}, backend flex, RAYON_NUM_THREADS={threads}");
    let ratios = LevelRequest::Channels(LevelSpec::Ratios(LEVELS.to_vec()));
    let mut all = Vec::new();
    for model in &args.models {
        match model.as_str() {
            "lm" => {
                let brown = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/brown");
                let (train, _) = DataSource::new(DatasetKind::TextCorpus, brown)
                    .with_context(Some(128))
                    .load_corpus()
                    .expect("the vendored Brown corpus");
                let data = TextData::next_tokens(train, 128);
                let shape = TokenShape { length: 128, vocabulary: 257 };
                let request = ModelRequest::new("lm-tiny", shape, 257, ratios.clone());
                let config =
                    NestedLanguageModelConfig::from_request(&request).expect("lm-tiny").expect("valid");
                all.push(measure("lm-tiny", &config, &data, 32, args.epoch_windows, &args));
            }
            "vit" => {
                let (train, _) = Mnist::load(&nestednet::vendored_mnist_dir()).expect("vendored MNIST");
                let data = ImageData::from(train);
                let epoch = data.len();
                let request = ModelRequest::new("vit-tiny", [1, 28, 28], 10, ratios.clone());
                let config = NestedVitConfig::from_request(&request).expect("vit-tiny").expect("valid");
                all.push(measure("vit-tiny", &config, &data, 64, epoch, &args));
            }
            other => panic!("--models: {other:?} is neither lm nor vit"),
        }
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&all).expect("json")).expect("writing the JSON");
        println!("wrote {}", path.display());
    }
}
