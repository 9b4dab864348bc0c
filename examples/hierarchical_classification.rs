//! Coarse-to-fine hierarchical classification on MNIST (the paper's Sec. 4.3 protocol).
//!
//! One nested `mnist-cnn` whose levels predict different granularities of a class hierarchy
//! (by default the built-in MNIST one: the core, at half width, tells the 3 shape groups loop
//! 0/6/8/9, line 1/4/7 and curve 2/3/5; the full level tells the 10 digits), trained jointly,
//! against the same-size networks trained alone on each level's labels with the same recipe
//! (2 epochs, batch 64, Adam 1e-3). The core also learns the full level's digit probabilities
//! summed to its groups (in-place distillation, α 0.5, T 1; `--distill-alpha 0` turns it off).
//! Prints a Table-3-style comparison, the hierarchical
//! metrics and the consensus of the levels (NestedNet-A, the average, and NestedNet-L, the
//! learned layer), averaged over `--seeds`, and writes it to
//! `runs/hierarchical_classification/table3.md`.
//!
//! ```text
//! cargo run --release --example hierarchical_classification
//! cargo run --release --example hierarchical_classification -- --seeds 42,43,44
//! cargo run --release --example hierarchical_classification -- --hierarchy my_groups.csv
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Parser;
use nestednet::data::Mnist;
use nestednet::heads::Hierarchy;
use nestednet::models::{NestedClassifier, NestedMnistCnnConfig};
use nestednet::schedule::LevelSpec;
use nestednet::train::{
    Backend, BarProgress, DistillationConfig, HierarchyConfig, LevelLabels, QuietProgress, Report, RunDir,
    TrainJob, TrainingConfig, evaluate, run_job, train,
};

// Burn allocates a fresh buffer for most op outputs; mimalloc keeps them in user space instead
// of mapping and zeroing new pages for each (a quarter of a training step with glibc's malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Coarse-to-fine levels against the same networks trained alone on each level's labels.
#[derive(Parser, Debug)]
struct Args {
    /// Class hierarchy file (.json or .csv); default: MNIST digits grouped by shape.
    #[arg(long)]
    hierarchy: Option<PathBuf>,
    /// Seeds; accuracies are averaged over them.
    #[arg(long, value_delimiter = ',', default_value = "42")]
    seeds: Vec<u64>,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Data folder (MNIST idx files); defaults to the vendored copy.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder. Previous runs of this example in it are replaced.
    #[arg(long, default_value = "runs/hierarchical_classification")]
    out: PathBuf,
    /// Weight α of in-place distillation: the core also learns the full level's softened
    /// digit probabilities summed to its groups; 0 trains the levels from their labels alone.
    #[arg(long, default_value_t = 0.5)]
    distill_alpha: f64,
    /// Temperature of the distillation. With 3 coarse classes a soft target (T = 4) pulls the
    /// core towards the teacher's hesitations and costs it 0.3 points here; T = 1 gains 0.35.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Backend (flex by default).
    #[arg(long)]
    device: Option<Backend>,
}

/// Width ratio of level `k` of `n`: each level twice as wide as the one below.
fn ratio(k: usize, n: usize) -> f64 {
    0.5f64.powi((n - 1 - k) as i32)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.seeds.is_empty() {
        bail!("give at least one seed");
    }
    let backend = args.device.map_or_else(Backend::from_env_or_default, Ok)?;
    let device = backend.device()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(nestednet::vendored_mnist_dir);
    let hierarchy = match &args.hierarchy {
        Some(path) => Hierarchy::load(path)?,
        None => Hierarchy::mnist_shapes(),
    };
    hierarchy.check_classes(10)?;
    let config = HierarchyConfig::one_level_per_depth(hierarchy.clone());
    let n = hierarchy.num_depths();
    let levels = LevelSpec::Ratios((0..n).map(|k| ratio(k, n)).collect());
    let (train_set, test_set) = Mnist::load(&data_dir)?;
    let (train_set, test_set) = (Arc::new(train_set), Arc::new(test_set));
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)?;
    }
    let scratch = tempfile::tempdir()?;

    let seeds = args.seeds.len() as f64;
    let mut nested = vec![0.0; n];
    let mut alone = vec![0.0; n];
    // Mean consensus accuracy by method (average = NestedNet-A, learned = NestedNet-L).
    let mut consensus: Vec<(String, f64)> = Vec::new();
    let mut reports: Vec<Report> = Vec::new();
    for &seed in &args.seeds {
        let model = NestedMnistCnnConfig::new()
            .with_levels(levels.clone())
            .with_level_classes(config.level_classes());
        let job = TrainJob {
            config: TrainingConfig::new(model.into())
                .with_epochs(args.epochs)
                .with_seed(seed)
                .with_hierarchy(Some(config.clone()))
                .with_distillation((args.distill_alpha > 0.0).then(|| {
                    DistillationConfig::new()
                        .with_alpha(args.distill_alpha)
                        .with_temperature(args.temperature)
                })),
            data_dir: data_dir.clone(),
            run: RunDir::new(args.out.join(format!("seed-{seed}"))),
            backend,
            resume: false,
        };
        println!("\n== seed {seed}: nested coarse-to-fine levels");
        let (_, report) = run_job(&job, &mut BarProgress::default())?;
        for (k, l) in report.levels.iter().enumerate() {
            nested[k] += l.accuracy / seeds;
        }
        for (method, accuracy) in &report.consensus {
            match consensus.iter_mut().find(|(m, _)| m == method) {
                Some((_, sum)) => *sum += accuracy / seeds,
                None => consensus.push((method.clone(), accuracy / seeds)),
            }
        }
        // Each level's network alone: its widths, trained on its own labels only.
        for (k, alone_k) in alone.iter_mut().enumerate() {
            let depth = config.level_depths[k];
            let classes = hierarchy.num_classes(depth);
            let map = &hierarchy.depths[depth].of_fine;
            let width = |c: usize| (ratio(k, n) * c as f64).round() as usize;
            let single = NestedMnistCnnConfig::new()
                .with_conv1_channels(width(32))
                .with_conv2_channels(width(64))
                .with_hidden(width(128))
                .with_num_classes(classes)
                .with_levels(LevelSpec::Ratios(vec![1.0]));
            let training = TrainingConfig::new(single.into()).with_epochs(args.epochs).with_seed(seed);
            let run = RunDir::new(scratch.path().join(format!("alone-{seed}-{k}")));
            let (train_k, test_k) =
                (Arc::new(train_set.relabel(map, classes)?), Arc::new(test_set.relabel(map, classes)?));
            println!(
                "   seed {seed}: level {k} alone ({classes} classes of `{}`)",
                hierarchy.depths[depth].name
            );
            let out = train(&training, train_k, None, &device, &run, false, &mut QuietProgress)?;
            let tally = &evaluate(&out.model, test_k, 500, &device, &LevelLabels::fine(1))?[0];
            *alone_k += tally.accuracy() / seeds;
            assert_eq!(out.model.level_classes(0), classes);
        }
        reports.push(report);
    }

    let mut table = String::new();
    let seed_list = args.seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        table,
        "Coarse-to-fine levels on mnist10k (mnist-cnn, {} epochs, batch 64, Adam 1e-3, {}, mean over seeds {seed_list})\n",
        args.epochs,
        if args.distill_alpha > 0.0 {
            format!("in-place distillation alpha {} T {}", args.distill_alpha, args.temperature)
        } else {
            "no distillation".to_string()
        }
    );
    let _ = writeln!(
        table,
        "| level | predicts | width | params | NestedNet | trained alone | NestedNet − alone (points) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    for k in 0..n {
        let depth = &hierarchy.depths[config.level_depths[k]];
        let _ = writeln!(
            table,
            "| {k} | {} {} | {} | {} | {:.4} | {:.4} | {:+.2} |",
            depth.classes.len(),
            depth.name,
            ratio(k, n),
            reports[0].levels[k].params,
            nested[k],
            alone[k],
            100.0 * (nested[k] - alone[k])
        );
    }
    let fine = nested[n - 1];
    for (method, accuracy) in &consensus {
        let _ = writeln!(
            table,
            "| all | consensus ({method}) of the {n} levels | | | {accuracy:.4} | | {:+.2} vs the full level |",
            100.0 * (accuracy - fine)
        );
    }
    let _ = write!(
        table,
        "\nHierarchical metrics (seed {}):\n{}",
        args.seeds[0],
        reports[0].levels_together_table()
    );
    println!("\n{table}");
    std::fs::write(args.out.join("table3.md"), &table)?;
    println!("run folders and table3.md in {}", args.out.display());
    Ok(())
}
