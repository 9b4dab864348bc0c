//! The main job: adaptive deep compression by channel scheduling.
//!
//! Trains the 3 levels (width 0.25 / 0.5 / 1.0) of `mnist-cnn` jointly on the repository's
//! vendored real MNIST (`data/mnist10k`, 8,000 train / 2,000 test digits) with the reference
//! recipe (2 epochs, batch 64, Adam 1e-3), then reports every level: test accuracy, parameters,
//! MACs, exported size and latency at batch 1 and 256. The run folder gets `config.json`,
//! `model.bpk` (all levels, one checkpoint), `report.json` and `accuracy_vs_macs.png`.
//!
//! ```text
//! cargo run --release --example adaptive_compression
//! cargo run --release --example adaptive_compression -- --levels 0.5,1.0 --epochs 3 --out runs/two
//! ```

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use nestednet::models::NestedMnistCnnConfig;
use nestednet::schedule::LevelSpec;
use nestednet::train::{Backend, BarProgress, RunDir, TrainJob, TrainingConfig, run_job};

// Burn allocates a fresh buffer for most op outputs; mimalloc keeps them in user space instead
// of mapping and zeroing new pages for each (a quarter of a training step with glibc's malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Adaptive deep compression with channel-scheduled nested levels on MNIST.
#[derive(Parser, Debug)]
struct Args {
    /// Levels as width ratios (core first) or explicit channel counts.
    #[arg(long, default_value = "0.25,0.5,1.0")]
    levels: LevelSpec,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Data folder (MNIST idx files); defaults to the vendored copy.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run folder. A previous run of this example in it is replaced.
    #[arg(long, default_value = "runs/adaptive_compression")]
    out: PathBuf,
    /// Backend (flex by default).
    #[arg(long)]
    device: Option<Backend>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let run = RunDir::new(&args.out);
    if run.exists() {
        println!("replacing the previous run in {}", args.out.display());
        std::fs::remove_dir_all(&args.out)?;
    }
    let config = TrainingConfig::new(NestedMnistCnnConfig::new().with_levels(args.levels))
        .with_epochs(args.epochs)
        .with_batch_size(args.batch_size)
        .with_seed(args.seed);
    let job = TrainJob {
        config,
        data_dir: args.data_dir.unwrap_or_else(nestednet::vendored_mnist_dir),
        run,
        backend: args.device.map_or_else(Backend::default_compiled, Ok)?,
        resume: false,
    };
    let (outcome, report) = run_job(&job, &mut BarProgress::default())?;
    println!("\n{}", report.table());
    if let Some(per_epoch) = report.train_seconds_per_epoch {
        println!(
            "training: {per_epoch:.2} s per epoch ({} epochs, all levels jointly)",
            outcome.history.len()
        );
    }
    let (core, full) = (&report.levels[0], &report.levels[report.levels.len() - 1]);
    println!(
        "core level: {:.1}x fewer MACs, {:.1}x fewer parameters, {:.2}x faster at batch 256 than the full level",
        full.macs as f64 / core.macs as f64,
        full.params as f64 / core.params as f64,
        full.latency_ms_b256 / core.latency_ms_b256
    );
    println!("run folder: {}", job.run.path().display());
    Ok(())
}
