//! `nestednet search`: the Mix'n'Match sub-networks of a run, their accuracy–cost Pareto front.

use std::path::PathBuf;

use crate::CliModel;
use anyhow::Result;
use clap::{Args, ValueEnum};
use nestednet::burn::module::Module;
use nestednet::train::jobs::SourcedSet;
use nestednet::train::serve::{
    Budget, SearchResults, SearchSettings, calibration_batches, export_front, search_mixes,
};
use nestednet::train::trainer::{BarProgress, LabelledSet, RunDir};

/// What the search trades against MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Objective {
    /// Accuracy on the run's evaluation set (classifiers).
    Accuracy,
    /// Bits per byte on the run's evaluation set, lower better (language models).
    BitsPerByte,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Run folder (a channel-scheduled model).
    #[arg(long)]
    pub run: PathBuf,
    /// What the front trades against MACs (default: bits-per-byte for a language model,
    /// accuracy otherwise; the other is refused, since each kind of data has one).
    #[arg(long, value_enum)]
    objective: Option<Objective>,
    /// A limit every sub-network must meet (repeat for several): macs<=N, params<=N, bytes<=N.
    #[arg(long = "constraint")]
    constraints: Vec<Budget>,
    /// Training batches each sub-network's batch norms are recalibrated on.
    #[arg(long, default_value_t = 16)]
    calibration_batches: usize,
    /// Images per calibration batch.
    #[arg(long, default_value_t = 128)]
    calibration_batch_size: usize,
    /// Score every combination when there are at most this many; search evolutionarily otherwise.
    #[arg(long, default_value_t = 512)]
    exhaustive_limit: usize,
    /// Evolutionary search: sub-networks per generation.
    #[arg(long, default_value_t = 16)]
    population: usize,
    /// Evolutionary search: generations.
    #[arg(long, default_value_t = 8)]
    generations: usize,
    /// Seed of the calibration batches and of the evolutionary search.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Folder holding the data set's files (default: the one the run trained on).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backend (must be compiled in; default: $BURN_DEVICE, else the first compiled).
    #[arg(long)]
    pub device: Option<nestednet::train::jobs::Backend>,
}

pub fn run<F: CliModel>(a: SearchArgs) -> Result<()> {
    let device = crate::backend(a.device)?.device()?;
    let run = RunDir::new(&a.run);
    let (config, model) = run.load_model::<F>(&device)?;
    let model = model.valid();
    // The run's own evaluation set: its validation split if it trained with one (the test
    // set then stays out of the choice), its test set otherwise.
    let source = crate::run_data(&config, None, a.data_dir, None, true)?;
    let (train, eval) = crate::DataOf::<F>::load(&source)?;
    let objective = if eval.targets_per_sample() > 1 { Objective::BitsPerByte } else { Objective::Accuracy };
    if let Some(asked) = a.objective.filter(|&o| o != objective) {
        anyhow::bail!(
            "--objective {}: this run's data are searched by {} (a language model's by bits per byte, a classifier's by accuracy)",
            asked.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string()),
            objective.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
        );
    }
    let settings = SearchSettings {
        constraints: a.constraints,
        calibration_batches: a.calibration_batches,
        calibration_batch_size: a.calibration_batch_size,
        exhaustive_limit: a.exhaustive_limit,
        population: a.population,
        generations: a.generations,
        seed: a.seed,
    };
    if config.training.mix_samples.unwrap_or(0) == 0 {
        println!(
            "note: this run was trained without --mix-training, so its mixes are combinations no step trained; expect them below the levels (train with --mix-training 1 to make them worth serving)"
        );
    }
    let mut progress = BarProgress::default();
    let eval_samples = eval.len();
    let mut results = search_mixes(&model, &train, &eval, &settings, &device, &mut progress)?;
    let set = if source.validation_split.is_some() { "the run's validation split" } else { "the test set" };
    results.evaluated_on = format!("{set} ({eval_samples} {})", eval.sample_name());
    let calibration = calibration_batches(
        &train,
        settings.calibration_batches,
        settings.calibration_batch_size,
        settings.seed,
        &device,
    )?;
    let exports = export_front(&run, &model, &config.model, &mut results, &calibration)?;
    results.write(&run)?;
    println!("\n{}", results.table());
    for info in &exports {
        println!(
            "exported {} to {} ({} bytes); verified: max |Δlogit| = {:.2e}",
            info.level_name,
            info.path.display(),
            info.bytes,
            info.max_abs_diff
        );
    }
    let dir = SearchResults::folder(&run);
    println!(
        "front: {} (table {}, plot {}); `nestednet select` now considers its mixes",
        dir.join("front.json").display(),
        dir.join("front.md").display(),
        dir.join("front.png").display()
    );
    Ok(())
}
