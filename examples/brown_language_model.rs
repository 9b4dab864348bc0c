//! Bench: the nested byte-level language model on the Brown corpus against each of its levels
//! trained alone, in bits per byte.
//!
//! MatFormer's setting: the model width stays whole and the levels nest the attention heads and
//! the feed-forward width (ratios 0.25 / 0.5 / 1 of `lm-tiny`'s 4 heads and 256 hidden units,
//! 4 blocks, context 128). The nested model trains all levels jointly (the mean of the levels'
//! losses); then each level's architecture is trained as an ordinary one-level network with the
//! same data, epochs, batch, optimizer, schedule and seed. Both are scored on the same test
//! windows (documents held out whole, `data/brown/README.md`).
//!
//! ```text
//! cargo run --release --example brown_language_model -- --train-windows 4000 --epochs 2
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use clap::Parser;
use nestednet::data::{DataSource, DatasetKind};
use nestednet::models::{NestedLanguageModelConfig, NestedNetwork, TextTransformerConfig};
use nestednet::schedule::LevelSpec;
use nestednet::train::jobs::{Backend, TEXT_RECIPE, train_level_alone};
use nestednet::train::trainer::{
    LabelledSet, LevelLabels, QuietProgress, RunConfig, RunDir, TextData, TrainData, TrainingConfig,
    evaluate, train,
};

/// The nested language model's levels against the same sizes trained alone.
#[derive(Parser, Debug)]
struct Args {
    /// Ratios of the heads and feed-forward width of the levels (core first).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1.0")]
    ratios: Vec<f64>,
    /// Training windows of 128 bytes, spread evenly over the training documents (0: all 37,900).
    #[arg(long, default_value_t = 4000)]
    train_windows: usize,
    /// Test windows, spread evenly over the test documents (0: all 8,693).
    #[arg(long, default_value_t = 2000)]
    test_windows: usize,
    /// Passes over the training windows.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Seed of the initialisation and the order of the windows.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Corpus folder (`train/` and `test/` of text files; defaults to the vendored Brown corpus).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backend.
    #[arg(long)]
    device: Option<Backend>,
}

const CONTEXT: usize = 128;

fn main() -> Result<()> {
    let args = Args::parse();
    let backend = args.device.map_or_else(Backend::from_env_or_default, Ok)?;
    let device = backend.device()?;
    let dir = args.data_dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/brown"));
    let (train_text, test_text) =
        DataSource::new(DatasetKind::TextCorpus, dir).with_context(Some(CONTEXT)).load_corpus()?;
    let limit = |data: TextData, n: usize| if n == 0 { data } else { data.take(n) };
    let train_set = limit(TextData::next_tokens(train_text, CONTEXT), args.train_windows);
    let test_set = limit(TextData::next_tokens(test_text, CONTEXT), args.test_windows);
    ensure!(train_set.tokenizer().vocabulary() == 257, "the Brown model reads bytes");

    let body = TextTransformerConfig::new()
        .with_context(CONTEXT)
        .with_nest_model_width(false)
        .with_levels(LevelSpec::Ratios(args.ratios.clone()));
    let training = TrainingConfig::new()
        .with_dataset(DatasetKind::TextCorpus)
        .with_optimizer(TEXT_RECIPE.optimizer.clone())
        .with_learning_rate(TEXT_RECIPE.learning_rate)
        .with_lr_schedule(TEXT_RECIPE.lr_schedule.clone())
        .with_batch_size(TEXT_RECIPE.batch_size)
        .with_epochs(args.epochs)
        .with_seed(args.seed);
    let config = RunConfig::new(NestedLanguageModelConfig::new(body), training);
    let scratch = tempfile::tempdir()?;

    let started = Instant::now();
    let run = RunDir::new(scratch.path().join("nested"));
    let out =
        train(&config, TrainData::of(train_set.clone(), None), &device, &run, false, &mut QuietProgress)?;
    let nested_seconds: f64 = out.history.iter().map(|m| m.train_seconds).sum();
    let levels = out.model.num_levels();
    let nested = evaluate(&out.model, &test_set, 64, &device, &LevelLabels::fine(levels))?;
    let params: Vec<usize> = (0..levels).map(|k| out.model.level_cost(k).params).collect();
    println!("nested model trained and scored in {:.0} s", started.elapsed().as_secs_f64());

    let mut alone = Vec::with_capacity(levels);
    for k in 0..levels {
        let run = RunDir::new(scratch.path().join(format!("alone-{k}")));
        let sets = (train_set.clone(), test_set.clone());
        alone.push(train_level_alone(&config, k, sets, &device, &run, &mut QuietProgress)?);
        println!("level {k} trained alone in {:.0} s", alone[k].train_seconds);
    }

    println!(
        "\nlm-tiny (heads and FFN nested, width 64, 4 blocks, context {CONTEXT}) on Brown: {} training windows, \
         {} epochs, batch {}, Adam {} cosine, seed {}, backend {backend}; {} test windows\n",
        train_set.len(),
        args.epochs,
        TEXT_RECIPE.batch_size,
        TEXT_RECIPE.learning_rate,
        args.seed,
        test_set.len()
    );
    println!("| level | heads / FFN ratio | params | nested bits/byte | alone bits/byte | nested / alone |");
    println!("|---|---|---|---|---|---|");
    for k in 0..levels {
        let (n, a) =
            (nested[k].loss() / std::f64::consts::LN_2, alone[k].tally.loss() / std::f64::consts::LN_2);
        println!("| {k} | {} | {} | {n:.3} | {a:.3} | {:.3} |", args.ratios[k], params[k], n / a);
    }
    let alone_seconds: f64 = alone.iter().map(|a| a.train_seconds).sum();
    println!(
        "\ntraining time: nested (all {levels} levels) {nested_seconds:.1} s, the {levels} networks alone {alone_seconds:.1} s in total"
    );
    Ok(())
}
