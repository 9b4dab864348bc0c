//! The main job: adaptive deep compression on MNIST, the paper's Table 1 protocol.
//!
//! Trains `mnist-cnn` on the repository's vendored real MNIST (`data/mnist10k`, 8,000 train /
//! 2,000 test digits) in five ways, every one with the same budget of passes over the data
//! (`3 × stage_epochs + epochs`, 5 by default), batch 64, Adam 1e-3 with a cosine decay and
//! the same seed, then prints a Table-1-style comparison (method, compression, accuracy, the
//! unpruned network's accuracy):
//!
//! - `weights`: NestedNet's weight connection learning, 3 levels at 3×, 2× and 1× compression
//!   (densities 1/3, 1/2, 1), nested unstructured masks learned from the full level down to
//!   the core (one stage each), then all levels trained jointly with the fixed masks;
//! - `weights-10x`: the same with 2 levels at 10× and 1×;
//! - `channels`: NestedNet's channel scheduling, 2 levels at 2× (the widths that hold half the
//!   parameters, ≈ 1/√2) and 1×;
//! - `random`: random nested masks of the same densities as `weights` (the paper's ablation);
//! - `magnitude`: Han et al.'s magnitude pruning, one network per density: dense training,
//!   one-shot pruning, fine-tuning. Its density-1 network is the unpruned baseline.
//!
//! Every run folder (`runs/adaptive_compression/<method>/`) gets `config.json`, `model.bpk`
//! (all levels, one checkpoint), `report.json` and a plot; the comparison is written to
//! `runs/adaptive_compression/table1.md`.
//!
//! ```text
//! cargo run --release --example adaptive_compression
//! cargo run --release --example adaptive_compression -- --methods weights,magnitude --seeds 43
//! cargo run --release --example adaptive_compression -- --methods weights,random,magnitude --seeds 42,43,44
//! ```
//!
//! With several seeds, every method runs once per seed (in `<out>/seed-S/<method>/`) and the
//! table gives the mean accuracy ± the standard deviation over the seeds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use nestednet::models::NestedMnistCnnConfig;
use nestednet::train::jobs::{
    Backend, Method, Registry, TrainSettings, run_job_with_data, run_magnitude_jobs,
};
use nestednet::train::serve::Report;
use nestednet::train::trainer::{BarProgress, LrSchedule};

const METHODS: [&str; 5] = ["weights", "weights-10x", "channels", "random", "magnitude"];

/// Adaptive deep compression on MNIST: NestedNet (weights, channels) against random masks
/// and magnitude pruning, the paper's Table 1 protocol.
#[derive(Parser, Debug)]
struct Args {
    /// Methods to run (weights, weights-10x, channels, random, magnitude).
    #[arg(long, value_delimiter = ',', default_value = "weights,weights-10x,channels,random,magnitude")]
    methods: Vec<String>,
    /// Epochs of each mask-learning stage (weights) and of dense training before pruning
    /// (magnitude: 3 × this).
    #[arg(long, default_value_t = 1)]
    stage_epochs: usize,
    /// Epochs of joint training after the mask stages (and of fine-tuning after pruning).
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seeds; with several, accuracies are averaged over them.
    #[arg(long, value_delimiter = ',', default_value = "42")]
    seeds: Vec<u64>,
    /// Data folder (MNIST idx files); defaults to the vendored copy.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output folder. Previous runs of this example in it are replaced.
    #[arg(long, default_value = "runs/adaptive_compression")]
    out: PathBuf,
    /// Backend (flex by default).
    #[arg(long)]
    device: Option<Backend>,
}

/// One finished method: its report for every seed.
struct Outcome {
    method: &'static str,
    label: &'static str,
    reports: Vec<Report>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(bad) = args.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
        bail!("unknown method `{bad}` (use {})", METHODS.join(", "));
    }
    let backend = args.device.map_or_else(Backend::from_env_or_default, Ok)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(nestednet::vendored_mnist_dir);
    // Every method gets the same number of passes over the data.
    let budget = 3 * args.stage_epochs + args.epochs;
    if args.seeds.is_empty() {
        bail!("give at least one seed");
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    for &seed in &args.seeds {
        let out =
            if args.seeds.len() == 1 { args.out.clone() } else { args.out.join(format!("seed-{seed}")) };
        run_methods(&args, seed, &out, backend, &data_dir, &mut outcomes)?;
    }
    let table = table1(&outcomes, budget, &args.seeds);
    println!("\n{table}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("table1.md"), &table)?;
    println!("run folders and table1.md in {}", args.out.display());
    Ok(())
}

/// Runs every requested method with `seed` into `out/<method>/`, adding the reports to
/// `outcomes`.
fn run_methods(
    args: &Args,
    seed: u64,
    out: &Path,
    backend: Backend,
    data_dir: &Path,
    outcomes: &mut Vec<Outcome>,
) -> Result<()> {
    let budget = 3 * args.stage_epochs + args.epochs;
    // What every method shares: the data, batch, seed and Adam 1e-3 with a cosine decay (the
    // `plain` recipe's optimizer: Table 1 was measured with it, before mnist-cnn had its own).
    let base = TrainSettings {
        recipe: Some("plain".into()),
        data_dir: Some(data_dir.to_path_buf()),
        batch_size: Some(args.batch_size),
        seed: Some(seed),
        lr_schedule: Some(LrSchedule::Cosine { min_lr: 0.0 }),
        device: Some(backend),
        ..TrainSettings::default()
    };
    // Masks stay off the first and the last layer (conv1, fc2), the default.
    let masks = |method: Method, densities: &[f64], stage_epochs: usize, epochs: usize| TrainSettings {
        method: Some(method),
        densities: Some(densities.to_vec()),
        stage_epochs: Some(stage_epochs),
        epochs: Some(epochs),
        ..base.clone()
    };
    let thirds = [1.0 / 3.0, 0.5, 1.0];
    for method in METHODS.iter().copied().filter(|m| args.methods.iter().any(|a| a == m)) {
        let (label, settings) = match method {
            "weights" => (
                "NestedNet, learned weight masks",
                masks(Method::Weights, &thirds, args.stage_epochs, args.epochs),
            ),
            "weights-10x" => (
                "NestedNet, learned weight masks",
                masks(Method::Weights, &[0.1, 1.0], args.stage_epochs, budget - 2 * args.stage_epochs),
            ),
            // The widths of conv1, conv2 and fc1 that hold half the parameters.
            "channels" => (
                "NestedNet, channel scheduling",
                TrainSettings {
                    method: Some(Method::Channels),
                    densities: Some(vec![0.5, 1.0]),
                    epochs: Some(budget),
                    ..base.clone()
                },
            ),
            "random" => {
                ("random nested masks (ablation)", masks(Method::Random, &thirds, args.stage_epochs, budget))
            }
            "magnitude" => (
                "magnitude pruning + retraining (Han et al.)",
                masks(Method::Magnitude, &thirds, 3 * args.stage_epochs, args.epochs),
            ),
            _ => unreachable!("checked above"),
        };
        let out = out.join(method);
        replace_previous(&out)?;
        println!("\n== {method} (seed {seed}): {label}");
        let resolved = settings.resolve::<NestedMnistCnnConfig>(&out, false, &Registry::builtin())?;
        let mut progress = BarProgress::default();
        let report = if method == "magnitude" {
            run_magnitude_jobs(&resolved.job, resolved.train, resolved.test, &mut progress)?
        } else {
            run_job_with_data(&resolved.job, resolved.train, resolved.test, &mut progress)?
                .report
                .context("a full run reports")?
        };
        println!("\n{}", report.table());
        match outcomes.iter_mut().find(|o| o.method == method) {
            Some(o) => o.reports.push(report),
            None => outcomes.push(Outcome { method, label, reports: vec![report] }),
        }
    }
    Ok(())
}

/// Removes a previous run of this example (a folder holding `config.json` or `report.json`).
fn replace_previous(path: &Path) -> Result<()> {
    if path.join("config.json").is_file() || path.join("report.json").is_file() {
        println!("replacing the previous run in {}", path.display());
        std::fs::remove_dir_all(path)?;
    }
    Ok(())
}

/// Mean and standard deviation (over the seeds) of the accuracy of level `level`.
fn accuracy_stats(reports: &[Report], level: usize) -> (f64, f64) {
    let values: Vec<f64> = reports.iter().map(|r| 100.0 * r.levels[level].accuracy).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len().max(2) - 1) as f64;
    (mean, if values.len() > 1 { var.sqrt() } else { 0.0 })
}

/// The Table-1-style comparison: one line per level of every method, with the unpruned
/// network's accuracy (the magnitude baseline's density-1 network, trained alone with the same
/// budget) and, for masks, the magnitude-pruned network of the same density. Accuracies are
/// means over the seeds (± standard deviation when there are several).
fn table1(outcomes: &[Outcome], budget: usize, seeds: &[u64]) -> String {
    let fmt = |(mean, std): (f64, f64)| {
        if seeds.len() > 1 { format!("{mean:.2} ± {std:.2}") } else { format!("{mean:.2}") }
    };
    let magnitude = outcomes.iter().find(|o| o.method == "magnitude");
    let level_at = |o: &Outcome, params: usize| {
        o.reports[0].levels.iter().position(|l| (l.params as f64 / params as f64 - 1.0).abs() < 0.01)
    };
    let mut out = String::new();
    let seeds_text = seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        out,
        "Table 1 protocol on mnist10k (mnist-cnn, {budget} passes over the data per method, Adam 1e-3 cosine, batch 64, seeds {seeds_text})\n"
    );
    let _ = writeln!(
        out,
        "| method | run | compression | params | accuracy (%) | unpruned baseline (%) | magnitude pruning, same compression (%) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let full_params = |o: &Outcome| o.reports[0].levels.iter().map(|l| l.params).max().unwrap_or(1).max(1);
    let baseline =
        magnitude.and_then(|m| level_at(m, full_params(m)).map(|k| fmt(accuracy_stats(&m.reports, k))));
    for o in outcomes {
        let full = full_params(o);
        for (k, l) in o.reports[0].levels.iter().enumerate().rev() {
            let same = magnitude
                .filter(|_| o.method != "magnitude")
                .and_then(|m| level_at(m, l.params).map(|j| fmt(accuracy_stats(&m.reports, j))));
            let _ = writeln!(
                out,
                "| {} | {} | {:.2}x | {} | {} | {} | {} |",
                o.label,
                o.method,
                full as f64 / l.params.max(1) as f64,
                l.params,
                fmt(accuracy_stats(&o.reports, k)),
                baseline.clone().unwrap_or_else(|| "-".into()),
                same.unwrap_or_else(|| "-".into()),
            );
        }
    }
    out
}
