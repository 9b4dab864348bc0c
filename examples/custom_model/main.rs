//! Your own network, trained by nestednet's own trainer.
//!
//! `model.rs` defines `TinyNet` with nestednet's nested layers (it lives only in this
//! example, not in the crates) and implements `NestedNetwork` for it. This file is all the
//! rest a user writes: the data, the training settings, one job (checkpoints every epoch,
//! `--resume`, `report.json` and the accuracy-vs-MACs plot, like the CLI's), and a verified
//! export of every level.
//!
//! ```text
//! cargo run --release --example custom_model -- --out runs/custom_model
//! cargo run --release --example custom_model -- --out runs/custom_model --epochs 4 --resume
//! ```

mod model;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use nestednet::data::{DataSource, DatasetKind};
use nestednet::train::{
    Backend, BarProgress, ExportFormat, ImageData, LrSchedule, RunConfig, RunDir, TrainJob, TrainingConfig,
    export_level, run_job_with_data,
};

use model::TinyNetConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train `TinyNet` (3 levels: 0.25, 0.5 and 1 of its channels) on the vendored MNIST.
#[derive(Parser, Debug)]
struct Args {
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Continue the run in --out.
    #[arg(long)]
    resume: bool,
}

fn main() -> Result<()> {
    // First, before any thread starts: freed memory stays mapped for the next steps, and this
    // thread is one of the CPU kernels' threads.
    nestednet_alloc::mimalloc_retain_freed_memory();
    nestednet::train::join_cpu_thread_pool();
    let args = Args::parse();
    let data = DataSource::new(DatasetKind::Mnist, nestednet::vendored_mnist_dir());
    let (train, test) = data.load()?;
    let model = TinyNetConfig::new(
        vec![0.25, 0.5, 1.0],
        [train.channels, train.height, train.width],
        train.num_classes,
    );
    let training =
        TrainingConfig::new().with_epochs(args.epochs).with_lr_schedule(LrSchedule::Cosine { min_lr: 0.0 });
    let job = TrainJob {
        config: RunConfig::new(model.clone(), training),
        data,
        run: RunDir::new(&args.out),
        backend: Backend::from_env_or_default()?,
        devices: None,
        resume: args.resume,
    };
    let outcome =
        run_job_with_data(&job, ImageData::from(train), ImageData::from(test), &mut BarProgress::default())?;
    println!("\n{}", outcome.report.context("a full run reports")?.table());
    for level in 0..3 {
        let path = args.out.join(format!("level{level}.safetensors"));
        let info = export_level(&outcome.training.model, &model, level, &path, ExportFormat::Safetensors)?;
        println!(
            "{}: {} bytes, verified (max |Δlogit| {:.1e})",
            path.display(),
            info.bytes,
            info.max_abs_diff
        );
    }
    Ok(())
}
