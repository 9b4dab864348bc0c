//! `nestednet nestify`: a pretrained dense network made into a nested one, then fine-tuned.

use std::path::PathBuf;

use crate::{App, CliModel};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use nestednet::models::ChannelImportance;
use nestednet::train::export::{NestifyRecord, nestify};
use nestednet::train::jobs::{TrainSettings, run_job_with_data};
use nestednet::train::trainer::{BarProgress, record_bytes, write_atomic};

/// How channels are ranked before nesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Importance {
    /// L1 norm of each filter (each linear unit's incoming weights).
    FilterL1,
    /// |γ| of the batch norm after each convolution (filter L1 where none follows).
    BnGamma,
    /// Keep the dense network's channel order (the ablation).
    None,
}

#[derive(Args, Debug)]
pub struct NestifyArgs {
    /// The dense network: safetensors with PyTorch's names and layouts (a state dict saved from
    /// PyTorch, or a nestednet export of a one-level run), or a burnpack export. Its
    /// architecture is the full level of the model the settings describe.
    #[arg(long)]
    from: PathBuf,
    /// How each layer's channels are ordered before the levels take the leading ones
    /// (bn-gamma gave the better core on mnist10k: README, "Serving any budget").
    #[arg(long, value_enum, default_value = "bn-gamma")]
    importance: Importance,
    /// Run folder to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Settings file (TOML or JSON); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: TrainSettings,
}

/// The settings of the run `a` asks for: its flags over its settings file.
pub fn settings(a: &NestifyArgs) -> Result<TrainSettings> {
    Ok(match &a.config {
        Some(file) => a.settings.clone().merged_over(TrainSettings::from_file(file)?),
        None => a.settings.clone(),
    })
}

pub fn run<F: CliModel>(a: NestifyArgs, app: &App) -> Result<()> {
    let settings = settings(&a)?;
    anyhow::ensure!(
        settings.init_from.is_none(),
        "--init-from and --from both give starting weights: nestify starts from --from"
    );
    // The starting weights live in the run folder, so a retry or a resume finds them; the
    // settings name them before they are resolved, so the model's fine-tuning recipe applies.
    let init = a.out.join("nestified.bpk");
    let settings = TrainSettings { init_from: Some(init.clone()), ..settings };
    let resolved = settings.resolve::<F>(&a.out, false, app.registry())?;
    anyhow::ensure!(
        !resolved.job.run.has_checkpoint(),
        "{} already holds a training run; continue it with `nestednet train --resume --out {}`",
        a.out.display(),
        a.out.display()
    );
    let device = resolved.job.backend.device()?;
    let training = &resolved.job.config.training;
    let importance = match a.importance {
        Importance::FilterL1 => Some(ChannelImportance::FilterL1),
        Importance::BnGamma => Some(ChannelImportance::BatchNormGamma),
        Importance::None => None,
    };
    let nested = nestify(
        &resolved.job.config.model,
        training.masking.as_ref(),
        training.seed,
        &a.from,
        importance,
        &device,
    )?;
    println!(
        "nestified {}: channels ordered by {:?}; the re-ordered dense network differs from the original by {:.2e}, the full level from the dense network by {:.2e} (largest logit difference)",
        a.from.display(),
        a.importance,
        nested.reorder_max_abs_diff,
        nested.full_level_max_abs_diff
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    write_atomic(&init, &record_bytes(&nested.network)?)?;
    let record = NestifyRecord {
        from: a.from.display().to_string(),
        importance: format!("{:?}", a.importance),
        orders: nested.orders,
        reorder_max_abs_diff: nested.reorder_max_abs_diff,
        full_level_max_abs_diff: nested.full_level_max_abs_diff,
    };
    write_atomic(&a.out.join("nestify.json"), &serde_json::to_vec_pretty(&record)?)?;
    if let Some(name) =
        resolved.job.config.settings.as_ref().and_then(|s| s.get("recipe")).and_then(|r| r.as_str())
    {
        println!("recipe {}", app.registry().recipe(name)?);
    }
    let job = app.with_teacher(resolved.job, &resolved.train)?;
    let outcome = run_job_with_data(&job, resolved.train, resolved.test, &mut BarProgress::default())?;
    match outcome.report {
        Some(report) => println!("\n{}\nrun folder: {}", report.table(), job.run.path().display()),
        None => println!("stopped early (--max-steps)"),
    }
    Ok(())
}
