//! `nestednet train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
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
    /// only --epochs, --device and --data-dir may change).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    settings: TrainSettings,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let settings = match &a.config {
        Some(file) => a.settings.merged_over(TrainSettings::from_file(file)?),
        None => a.settings,
    };
    let resolved = settings.resolve(&a.out, a.resume)?;
    let job = &resolved.job;
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
