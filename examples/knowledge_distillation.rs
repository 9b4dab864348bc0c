//! Knowledge distillation across a lattice of levels (the paper's Sec. 4.2 and Table 2).
//!
//! One nested residual network holds a width × depth lattice of levels (by default
//! `mnist-resnet` with widths 0.5, 1 and 1 or 2 blocks per stage: 4 levels, the paper's
//! Figure 4 in small). It is trained twice from scratch, in one run each:
//!
//! - **joint**: the paper's setting, the mean of the levels' cross-entropies (Eq. 5), no
//!   teacher;
//! - **in-place distillation**: the same, and every lower level also learns the full level's
//!   softened outputs (`--alpha`, `--temperature`; the teacher's outputs are detached).
//!
//! Each level's architecture is also trained alone with the same recipe. The example prints a
//! Table-2-style report (architecture, parameters, density, MACs, accuracies, latency at batch
//! 64 and speed-up over the full level) and writes it to `runs/knowledge_distillation/table2.md`.
//!
//! ```text
//! cargo run --release --example knowledge_distillation
//! cargo run --release --example knowledge_distillation -- --seeds 42,43
//! # One WRN-32-4 lattice epoch on 256 random CIFAR-shaped images (timing only):
//! cargo run --release --example knowledge_distillation -- --model wrn-32-4 --widths 0.25,1 \
//!     --depths 2,5 --random-data 256
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use nestednet::data::{DataSource, DatasetKind, ImageSet, Normalization};
use nestednet::models::{NestedMnistCnnConfig, NestedNetwork, NestedResNetConfig};
use nestednet::schedule::LatticeSpec;
use nestednet::train::jobs::{Backend, TrainJob, run_job_with_data, train_level_alone};
use nestednet::train::serve::{Report, measure_latency};
use nestednet::train::trainer::{
    BarProgress, DistillationConfig, ImageData, LrSchedule, OptimizerConfig, QuietProgress, RunConfig,
    RunDir, TrainData, TrainingConfig, train,
};

/// A lattice of levels trained jointly, with and without in-place distillation, against each
/// level's architecture trained alone.
#[derive(Parser, Debug)]
struct Args {
    /// Residual network: mnist-resnet, resnet-N, wrn-D-K or resnet-18.
    #[arg(long, default_value = "mnist-resnet")]
    model: String,
    /// Width ratios of the lattice.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1")]
    widths: Vec<f64>,
    /// Blocks per stage of the lattice (the last is the network's depth).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    depths: Vec<usize>,
    /// Data set: mnist (the vendored copy by default), cifar10 or cifar100 (give --data-dir).
    #[arg(long, default_value = "mnist")]
    dataset: DatasetKind,
    /// Data folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seeds; accuracies are averaged over them.
    #[arg(long, value_delimiter = ',', default_value = "42")]
    seeds: Vec<u64>,
    /// Epochs.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Learning rate of SGD for the nested network (momentum 0.9, weight decay 5e-4, cosine
    /// schedule: the ResNet recipe). The joint loss is the mean over the levels, so each
    /// level's gradient is 1/n of what it would be alone: the default 0.3 with 4 levels gives
    /// the full level's own weights about the step a single network gets at 0.1.
    #[arg(long, default_value_t = 0.3)]
    lr: f64,
    /// Learning rates the networks trained alone are tried with; each baseline reports its
    /// best (so the comparison favours the baselines).
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.3")]
    alone_lrs: Vec<f64>,
    /// Weight α of the distillation term.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Distillation temperature.
    #[arg(long, default_value_t = 4.0)]
    temperature: f64,
    /// Instead of a data set, time one training epoch on this many random CIFAR-shaped images
    /// (3×32×32, 10 classes); no accuracy is claimed.
    #[arg(long)]
    random_data: Option<usize>,
    /// Output folder. Previous runs of this example in it are replaced.
    #[arg(long, default_value = "runs/knowledge_distillation")]
    out: PathBuf,
    /// Backend (flex by default).
    #[arg(long)]
    device: Option<Backend>,
}

/// The ResNet recipe: SGD with momentum 0.9 and weight decay 5e-4, cosine learning rate.
fn recipe(args: &Args, dataset: DatasetKind, seed: u64) -> TrainingConfig {
    TrainingConfig::new()
        .with_dataset(dataset)
        .with_optimizer(OptimizerConfig::sgd())
        .with_learning_rate(args.lr)
        .with_lr_schedule(LrSchedule::Cosine { min_lr: 0.0 })
        .with_batch_size(args.batch_size)
        .with_epochs(args.epochs)
        .with_seed(seed)
}

fn network(args: &Args, channels: usize, side: usize, classes: usize) -> Result<NestedResNetConfig> {
    let mut config = NestedResNetConfig::from_name(&args.model, channels, side, classes)?;
    config.lattice = LatticeSpec::grid(args.widths.clone(), args.depths.clone());
    config.validate()?;
    Ok(config)
}

/// One epoch of the lattice on random CIFAR-shaped images: the step time of a network too big
/// to train to accuracy on a CPU.
fn random_data_epoch(args: &Args, images: usize, backend: Backend) -> Result<()> {
    let device = backend.device()?;
    let config = network(args, 3, 32, 10)?;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let set = Arc::new(ImageSet {
        pixels: (0..images * 3 * 32 * 32).map(|_| next() as u8).collect(),
        labels: (0..images).map(|_| (next() % 10) as usize).collect(),
        coarse_labels: None,
        channels: 3,
        height: 32,
        width: 32,
        num_classes: 10,
        num_coarse_classes: 0,
        normalization: Normalization::cifar10(),
        class_names: Vec::new(),
    });
    let model = config.init(&device);
    println!(
        "{} on {images} random 3x32x32 images, one epoch, batch {}, SGD 0.1 (momentum 0.9, wd 5e-4, cosine), crop + flip:",
        config.name, args.batch_size
    );
    for k in 0..model.num_levels() {
        let cost = model.level_cost(k);
        println!("  level {} {:>10} params {:>14} MACs", model.level_name(k), cost.params, cost.macs);
    }
    let training = recipe(args, DatasetKind::Cifar10, 42).with_epochs(1).with_learning_rate(0.1);
    let scratch = tempfile::tempdir()?;
    let start = Instant::now();
    let out = train(
        &RunConfig::new(config, training),
        TrainData::new(set, None),
        &device,
        &RunDir::new(scratch.path().join("run")),
        false,
        &mut BarProgress::default(),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "one epoch of all {} levels on {backend}: {seconds:.1} s ({:.3} s per image); final training loss per level: {:?}",
        out.model.num_levels(),
        seconds / images as f64,
        out.history[0].train_loss.iter().map(|l| format!("{l:.3}")).collect::<Vec<_>>()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.seeds.is_empty() || args.alone_lrs.is_empty() {
        bail!("give at least one seed and one learning rate for the networks alone");
    }
    let backend = args.device.map_or_else(Backend::from_env_or_default, Ok)?;
    if let Some(images) = args.random_data {
        return random_data_epoch(&args, images, backend);
    }
    let device = backend.device()?;
    let data_dir = match (&args.data_dir, args.dataset) {
        (Some(dir), _) => dir.clone(),
        (None, DatasetKind::Mnist) => nestednet::vendored_mnist_dir(),
        (None, other) => bail!("give --data-dir with the {other} files"),
    };
    let (train_set, test_set) = args.dataset.load(&data_dir)?;
    let (train_set, test_set) = (ImageData::from(train_set), ImageData::from(test_set));
    let images = train_set.set();
    let config = network(&args, images.channels, images.height, images.num_classes)?;
    let n = config.lattice.num_levels();
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)?;
    }
    let scratch = tempfile::tempdir()?;
    let seeds = args.seeds.len() as f64;
    let (mut joint, mut distilled, mut alone) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut reports: Vec<Report> = Vec::new();
    for &seed in &args.seeds {
        for (name, accuracies, distillation) in [
            ("joint", &mut joint, None),
            (
                "in-place",
                &mut distilled,
                Some(DistillationConfig::new().with_alpha(args.alpha).with_temperature(args.temperature)),
            ),
        ] {
            let job = TrainJob::new(
                RunConfig::new(
                    config.clone(),
                    recipe(&args, args.dataset, seed).with_distillation(distillation),
                ),
                DataSource::new(args.dataset, data_dir.clone()),
                RunDir::new(args.out.join(format!("{name}-seed-{seed}"))),
                backend,
            );
            println!("\n== seed {seed}: the lattice trained jointly ({name})");
            let outcome =
                run_job_with_data(&job, train_set.clone(), test_set.clone(), &mut BarProgress::default())?;
            let report = outcome.report.expect("a full run reports");
            for (k, l) in report.levels.iter().enumerate() {
                accuracies[k] += l.accuracy / seeds;
            }
            if name == "joint" {
                reports.push(report);
            }
        }
        // Each level's architecture alone, from its own initialisation.
        let nested = config.init(&device);
        for (k, alone_k) in alone.iter_mut().enumerate() {
            let mut best = 0.0f64;
            for &lr in &args.alone_lrs {
                let run_config =
                    RunConfig::new(config.clone(), recipe(&args, args.dataset, seed).with_learning_rate(lr));
                let run = RunDir::new(scratch.path().join(format!("alone-{seed}-{k}-{lr}")));
                let accuracy = train_level_alone(
                    &run_config,
                    k,
                    (train_set.clone(), test_set.clone()),
                    &device,
                    &run,
                    &mut QuietProgress,
                )?
                .accuracy();
                println!(
                    "   seed {seed}: level {} trained alone at lr {lr}: {accuracy:.4}",
                    nested.level_name(k)
                );
                best = best.max(accuracy);
            }
            *alone_k += best / seeds;
        }
    }

    // Latency at batch 64 of every level of the trained (joint) network, on this machine.
    let (_, trained) = RunDir::new(args.out.join(format!("joint-seed-{}", args.seeds[0])))
        .load_model::<NestedMnistCnnConfig>(&device)?;
    let latency: Vec<f64> = (0..n).map(|k| measure_latency(&trained, k, 64, &device, 10, 1000.0)).collect();
    let full = &reports[0].levels[n - 1];
    let mut table = String::new();
    let seed_list = args.seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        table,
        "{} lattice on {} ({} epochs, batch {}, SGD momentum 0.9 wd 5e-4 cosine, lr {} nested, best of {:?} alone; in-place distillation alpha {} T {}; mean over seeds {seed_list}; latency at batch 64 on {backend})\n",
        config.name,
        args.dataset,
        args.epochs,
        args.batch_size,
        args.lr,
        args.alone_lrs,
        args.alpha,
        args.temperature
    );
    let _ = writeln!(
        table,
        "| level | architecture | params | density | MACs | joint | in-place distillation | trained alone | latency b64 (ms) | speed-up | MAC ratio |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|");
    for k in 0..n {
        let l = &reports[0].levels[k];
        let widths = l
            .widths
            .iter()
            .filter(|(w, _)| w.starts_with("stage"))
            .map(|(_, c)| c.to_string())
            .collect::<Vec<_>>();
        let depth = l.widths.iter().find(|(w, _)| w == "blocks_per_stage").map_or(0, |(_, d)| *d);
        let _ = writeln!(
            table,
            "| {} | {} blocks/stage, {} channels | {} | {:.3} | {} | {:.4} | {:.4} | {:.4} | {:.2} | {:.2}x | {:.2}x |",
            l.name,
            depth,
            widths.join("/"),
            l.params,
            l.density,
            l.macs,
            joint[k],
            distilled[k],
            alone[k],
            latency[k],
            latency[n - 1] / latency[k],
            full.macs as f64 / l.macs as f64
        );
    }
    for (method, accuracy) in &reports[0].consensus {
        let _ = writeln!(
            table,
            "| all | consensus ({method}), seed {} | | | | {accuracy:.4} | | | | | |",
            args.seeds[0]
        );
    }
    println!("\n{table}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("table2.md"), &table)?;
    println!("run folders and table2.md in {}", args.out.display());
    Ok(())
}
