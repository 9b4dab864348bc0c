//! `nestednet train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use nestednet::train::jobs::{Registry, TrainSettings, run_job_with_data, run_magnitude_jobs};
use nestednet::train::trainer::{BarProgress, MaskMethod};

use crate::{App, CliModel};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Run folder to create (or to continue with --resume).
    #[arg(long)]
    pub out: PathBuf,
    /// Settings file (TOML, or JSON; a run's config.json repeats that run); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out after its last completed epoch (its recorded settings rule;
    /// only --epochs, --device, --devices and --data-dir may change).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    settings: TrainSettings,
}

/// The recipes `registry` knows, for `nestednet train --help`.
pub fn recipes_help(registry: &Registry) -> String {
    let mut text = String::from(
        "Recipes (--recipe NAME; default: the model's own). Each flag or config-file key overrides its part:\n",
    );
    for recipe in registry.recipes() {
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

/// The settings of the run `a` asks for: its flags over its settings file, and with `--resume`
/// the run's own recorded settings under both.
pub fn settings(a: &TrainArgs) -> Result<TrainSettings> {
    let settings = match &a.config {
        Some(file) => a.settings.clone().merged_over(TrainSettings::from_file(file)?),
        None => a.settings.clone(),
    };
    Ok(settings.for_run(&a.out, a.resume)?)
}

pub fn run<F: CliModel>(a: TrainArgs, app: &App) -> Result<()> {
    let given = match &a.config {
        Some(file) => a.settings.clone().merged_over(TrainSettings::from_file(file)?),
        None => a.settings.clone(),
    };
    let resolved = settings(&a)?.resolve::<F>(&a.out, a.resume, app.registry())?;
    if let Some(name) =
        resolved.job.config.settings.as_ref().and_then(|s| s.get("recipe")).and_then(|r| r.as_str())
    {
        let recipe = app.registry().recipe(name)?;
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
    let job = app.with_teacher(resolved.job, &resolved.train)?;
    let mut progress = BarProgress::default();
    if job.config.training.masking.as_ref().is_some_and(|m| m.method == MaskMethod::Magnitude) {
        let report = run_magnitude_jobs(&job, resolved.train, resolved.test, &mut progress)?;
        println!("\n{}", report.table());
        println!(
            "one network per density in {}/density-*/; side-by-side report in {}",
            job.run.path().display(),
            job.run.report_path().display()
        );
        return Ok(());
    }
    let outcome = run_job_with_data(&job, resolved.train, resolved.test, &mut progress)?;
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
