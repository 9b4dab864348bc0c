//! Bench: every nested level against the same-width network trained alone, same recipe.
//!
//! Trains the 3-level `mnist-cnn` (0.25 / 0.5 / 1.0) jointly, then each width as an ordinary
//! single network, with the same data, epochs, batch size, optimizer and seed, and prints the
//! test accuracies side by side (averaged over `--seeds`).
//!
//! ```text
//! cargo run --release --example nested_vs_alone -- --seeds 42,43,44
//! ```

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use nestednet::data::Mnist;
use nestednet::models::{NestedMnistCnnConfig, NestedNetwork};
use nestednet::schedule::LevelSpec;
use nestednet::train::jobs::{Backend, train_level_alone};
use nestednet::train::trainer::{
    ImageData, LevelLabels, QuietProgress, RunConfig, RunDir, TrainData, TrainingConfig, evaluate, train,
};

/// Nested levels vs the same widths trained alone.
#[derive(Parser, Debug)]
struct Args {
    /// Width ratios of the levels (core first).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1.0")]
    ratios: Vec<f64>,
    /// Seeds; accuracies are averaged over them.
    #[arg(long, value_delimiter = ',', default_value = "42")]
    seeds: Vec<u64>,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Data folder (defaults to the vendored mnist10k).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backend.
    #[arg(long)]
    device: Option<Backend>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let backend = args.device.map_or_else(Backend::from_env_or_default, Ok)?;
    let device = backend.device()?;
    let (train_set, test_set) = Mnist::load(&args.data_dir.unwrap_or_else(nestednet::vendored_mnist_dir))?;
    let (train_set, test_set) = (ImageData::from(train_set), ImageData::from(test_set));
    let scratch = tempfile::tempdir()?;
    let n = args.ratios.len();
    let mut nested = vec![0.0; n];
    let mut alone = vec![0.0; n];
    let (mut nested_secs, mut alone_secs) = (0.0, 0.0);
    for &seed in &args.seeds {
        let config = RunConfig::new(
            NestedMnistCnnConfig::new().with_levels(LevelSpec::Ratios(args.ratios.clone())),
            TrainingConfig::new().with_epochs(args.epochs).with_seed(seed),
        );
        let run = RunDir::new(scratch.path().join(format!("nested-{seed}")));
        let out =
            train(&config, TrainData::of(train_set.clone(), None), &device, &run, false, &mut QuietProgress)?;
        nested_secs += out.history.iter().map(|m| m.train_seconds).sum::<f64>();
        for (k, t) in
            evaluate(&out.model, &test_set, 500, &device, &LevelLabels::fine(out.model.num_levels()))?
                .iter()
                .enumerate()
        {
            nested[k] += t.accuracy() / args.seeds.len() as f64;
        }
        for (k, alone_k) in alone.iter_mut().enumerate() {
            let run = RunDir::new(scratch.path().join(format!("alone-{seed}-{k}")));
            let level = train_level_alone(
                &config,
                k,
                (train_set.clone(), test_set.clone()),
                &device,
                &run,
                &mut QuietProgress,
            )?;
            alone_secs += level.train_seconds;
            *alone_k += level.accuracy() / args.seeds.len() as f64;
        }
        println!("seed {seed} done");
    }
    println!(
        "\nmnist-cnn on mnist10k, {} epochs, batch 64, Adam 1e-3, backend {backend}, mean over seeds {:?}\n",
        args.epochs, args.seeds
    );
    println!("| level | width ratio | nested accuracy | alone accuracy | nested - alone (points) |");
    println!("|---|---|---|---|---|");
    for k in 0..n {
        println!(
            "| {k} | {} | {:.4} | {:.4} | {:+.2} |",
            args.ratios[k],
            nested[k],
            alone[k],
            100.0 * (nested[k] - alone[k])
        );
    }
    println!(
        "\ntraining time: nested (all {n} levels) {:.1} s, the {n} networks alone {:.1} s in total",
        nested_secs / args.seeds.len() as f64,
        alone_secs / args.seeds.len() as f64
    );
    Ok(())
}
