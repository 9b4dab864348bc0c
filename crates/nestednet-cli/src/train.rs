//! `nestednet train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use nestednet::models::ModelConfig;
use nestednet::train::{BarProgress, MaskMethod, TrainSettings, run_job_with_data, run_magnitude_jobs};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Run folder to create (or to continue with --resume).
    #[arg(long)]
    out: PathBuf,
    /// Settings file (TOML, or JSON; a run's config.json repeats that run); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out after its last completed epoch (its recorded settings rule;
    /// only --epochs, --device, --devices and --data-dir may change).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    settings: TrainSettings,
}

/// The recipes, for `nestednet train --help`.
pub fn recipes_help() -> String {
    let mut text = String::from(
        "Recipes (--recipe NAME; default: the model's own). Each flag or config-file key overrides its part:\n",
    );
    for recipe in ModelConfig::recipes() {
        text += &format!(
            "  {}: {}\n      {}\n      chosen by: {}\n",
            recipe.name,
            recipe.description,
            recipe.summary(),
            recipe.chosen_by
        );
    }
    text
}

pub fn run(a: TrainArgs) -> Result<()> {
    let settings = match &a.config {
        Some(file) => a.settings.merged_over(TrainSettings::from_file(file)?),
        None => a.settings,
    };
    let given = settings.clone();
    let resolved = settings.resolve(&a.out, a.resume)?;
    let job = &resolved.job;
    if let Some(name) = job.config.settings.as_ref().and_then(|s| s.recipe.as_deref()) {
        let recipe = ModelConfig::recipe(name)?;
        let overridden = given.recipe_overrides();
        let overridden = match overridden.is_empty() {
            true => String::new(),
            false => format!(" (given: --{})", overridden.join(", --")),
        };
        println!("recipe {recipe}{overridden}");
    }
    if let Some(fraction) = given.validation_split {
        println!(
            "validation split: the last {fraction} of the training images are held out; accuracies below are on them, not on the test set"
        );
    }
    let mut progress = BarProgress::default();
    if job.config.training.masking.as_ref().is_some_and(|m| m.method == MaskMethod::Magnitude) {
        let report = run_magnitude_jobs(job, resolved.train, resolved.test, &mut progress)?;
        println!("\n{}", report.table());
        println!(
            "one network per density in {}/density-*/; side-by-side report in {}",
            job.run.path().display(),
            job.run.report_path().display()
        );
        return Ok(());
    }
    let outcome = run_job_with_data(job, resolved.train, resolved.test, &mut progress)?;
    match outcome.report {
        Some(report) => {
            println!("\n{}", report.table());
            println!(
                "run folder: {} (config.json, model.bpk, report.json, accuracy_vs_macs.png)",
                job.run.path().display()
            );
        }
        None => println!("stopped early (--max-steps): the configuration builds, loads its data and trains"),
    }
    Ok(())
}
