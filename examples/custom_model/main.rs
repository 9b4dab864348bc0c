//! Your own network, trained by nestednet's own trainer.
//!
//! `model.rs` defines `TinyNet` with nestednet's nested layers (it lives only in this
//! example, not in the crates). This file is all the rest a user writes: the data, the training
//! settings, one launch (checkpoints every epoch, `--resume`, `report.json` and the
//! accuracy-vs-MACs plot, like the CLI's), and a verified export of every level. No allocator
//! or thread-pool set-up: the library's defaults give full speed.
//!
//! ```text
//! cargo run --release --example custom_model -- --out runs/custom_model
//! cargo run --release --example custom_model -- --out runs/custom_model --epochs 4 --resume
//! ```

mod model;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use nestednet::data::{DataSource, DatasetKind};
use nestednet::train::export::ExportFormat;
use nestednet::train::jobs::NestedTraining;
use nestednet::train::trainer::{LrSchedule, TrainingConfig};

use model::TinyNetConfig;

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
    let args = Args::parse();
    let source = DataSource::new(DatasetKind::Mnist, nestednet::vendored_mnist_dir());
    let (train, test) = source.load()?;
    let model = TinyNetConfig::new(
        vec![0.25, 0.5, 1.0],
        [train.channels, train.height, train.width],
        train.num_classes,
    );
    let training =
        TrainingConfig::new().with_epochs(args.epochs).with_lr_schedule(LrSchedule::Cosine { min_lr: 0.0 });
    let trained = NestedTraining::new(model, training)
        .images(train, test)
        .source(source)
        .into_dir(&args.out)
        .resume(args.resume)
        .launch()?;
    println!("\n{}", trained.report.table());
    for level in 0..trained.num_levels() {
        let path = args.out.join(format!("level{level}.safetensors"));
        let info = trained.export(level, &path, ExportFormat::Safetensors)?;
        println!(
            "{}: {} bytes, verified (max |Δlogit| {:.1e})",
            path.display(),
            info.bytes,
            info.max_abs_diff
        );
    }
    Ok(())
}
