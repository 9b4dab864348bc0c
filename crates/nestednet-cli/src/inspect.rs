//! `nestednet inspect`.

use std::path::PathBuf;

use crate::CliModel;
use anyhow::{Context, Result};
use clap::Args;
use nestednet::models::NestedNetwork;
use nestednet::train::export::export_sizes;
use nestednet::train::jobs::Backend;
use nestednet::train::jobs::{Recipe, Registry};
use nestednet::train::serve::{Report, SearchResults};
use nestednet::train::trainer::{RunConfig, RunDir, TrainingConfig, layer_densities, skeleton};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
}

pub fn run<F: CliModel>(a: InspectArgs, registry: &Registry) -> Result<()> {
    let run = RunDir::new(&a.run);
    let config = run.load_config::<F>()?;
    // Without a completed epoch, costs need only the shapes of a fresh network.
    let device = Backend::default_compiled()?.device()?;
    let trained = run.model_path().is_file();
    let model = if trained { run.load_model::<F>(&device)?.1 } else { skeleton(&config, &device)? };
    print_run::<F>(&run, &config, &model, registry)?;
    print_widths_and_masks(&config.training, &model);
    print_levels(&model);
    if config.training.masking.is_some() && trained {
        print_mask_densities::<F>(&config.model, &model)?;
    }
    print_checkpoint(&run, &config.training, model.num_levels())?;
    print_saved_results(&run)
}

/// The run's folder, model, training and the settings that repeat it.
fn print_run<F: CliModel>(
    run: &RunDir,
    config: &RunConfig<F>,
    model: &F::Network,
    registry: &Registry,
) -> Result<()> {
    let training = &config.training;
    let n = model.num_levels();
    let names: Vec<String> = (0..n).map(|k| model.level_name(k)).collect();
    println!("run: {}", run.path().display());
    println!(
        "model: {}, {n} levels ({}), data set {}",
        config.model.name(),
        names.join(","),
        training.dataset
    );
    println!(
        "training: {:?}, lr {} ({}), {} epochs, batch {}, seed {}",
        training.optimizer,
        training.learning_rate,
        training.lr_schedule,
        training.epochs,
        training.batch_size,
        training.seed
    );
    if let Some(settings) = nestednet::train::jobs::TrainSettings::recorded_in(config)? {
        let recipe = settings.recipe.as_deref().unwrap_or(Recipe::PLAIN.name);
        match registry.recipe(recipe) {
            Ok(r) => println!("recipe: {r} (the training line above is what the run used)"),
            Err(_) => println!("recipe: {recipe} (not known to this build)"),
        }
        println!(
            "settings (repeat with `nestednet train --config {}/config.json --out NEW`):",
            run.path().display()
        );
        println!("  {}", serde_json::to_string(&settings)?);
    }
    Ok(())
}

/// Each layer's width per level, and the masked layers.
fn print_widths_and_masks<N: NestedNetwork>(training: &TrainingConfig, model: &N) {
    let widths: Vec<Vec<(String, usize)>> = (0..model.num_levels()).map(|k| model.level_widths(k)).collect();
    if let Some(first) = widths.first().filter(|w| !w.is_empty()) {
        println!("\nper-layer widths (core → full):");
        for (i, (name, _)) in first.iter().enumerate() {
            let per_level: Vec<usize> = widths.iter().map(|w| w[i].1).collect();
            println!("  {name:<16} {per_level:?}");
        }
    }
    if let Some(m) = &training.masking {
        println!(
            "\nmasks: {} on layers {} (γ = {}, {} epoch(s) per stage)",
            training.method_name(),
            m.layer_names(model).join(", "),
            m.gamma,
            m.stage_epochs
        );
    }
}

/// Each level's parameters, density, compression and MACs.
fn print_levels<N: NestedNetwork>(model: &N) {
    let n = model.num_levels();
    println!("\n| level | name | params | density | compression | MACs/sample |\n|---|---|---|---|---|---|");
    let full = model.level_cost(n - 1).params.max(1);
    for level in 0..n {
        let cost = model.level_cost(level);
        println!(
            "| {level} | {} | {} | {:.4} | {:.2}x | {} |",
            model.level_name(level),
            cost.params,
            cost.params as f64 / full as f64,
            full as f64 / cost.params.max(1) as f64,
            cost.macs
        );
    }
}

/// Each masked layer's density per level, and each level's export dense vs sparse.
fn print_mask_densities<F: CliModel>(config: &F, model: &F::Network) -> Result<()> {
    let n = model.num_levels();
    let layers: Vec<String> = layer_densities(model, n - 1).into_iter().map(|d| d.name).collect();
    println!(
        "\nper-layer weight density, and the level exported dense vs sparse (safetensors):\n\
         | level | {} | dense bytes | sparse bytes | sparse / dense |\n|---|{}---|---|---|",
        layers.join(" | "),
        "---|".repeat(layers.len())
    );
    for level in 0..n {
        let densities: Vec<String> = layer_densities(model, level)
            .iter()
            .map(|d| format!("{:.3} ({}/{})", d.kept as f64 / d.total.max(1) as f64, d.kept, d.total))
            .collect();
        let (dense, sparse) = export_sizes(model, config, level)?;
        println!(
            "| {level} | {} | {dense} | {sparse} | {:.3} |",
            densities.join(" | "),
            sparse as f64 / dense.max(1) as f64
        );
    }
    Ok(())
}

/// The checkpoint's progress, binarised thresholds and epoch history.
fn print_checkpoint(run: &RunDir, training: &TrainingConfig, levels: usize) -> Result<()> {
    let Some(state) = run.load_checkpoint_state()? else {
        println!("\ncheckpoint: none (no epoch completed)");
        return Ok(());
    };
    println!(
        "\ncheckpoint: {} of {} epochs completed ({} steps)",
        state.epochs_completed,
        training.epoch_plan(levels).len(),
        state.global_step
    );
    for (level, tau) in &state.thresholds {
        println!("  level {level}'s mask binarised at tau = {tau:.6}");
    }
    for m in &state.history {
        let test = m
            .test_accuracy
            .as_ref()
            .map(|t| t.iter().map(|a| format!("{a:.4}")).collect::<Vec<_>>().join(", "));
        println!(
            "  epoch {} ({}): {:.1} s, test accuracy per level: [{}]",
            m.epoch + 1,
            m.phase,
            m.train_seconds,
            test.unwrap_or_default()
        );
    }
    Ok(())
}

/// The report, the Mix'n'Match search and `select`'s cached measurements, where saved.
fn print_saved_results(run: &RunDir) -> Result<()> {
    if run.report_path().is_file() {
        let report = Report::read_json(&run.report_path()).context("reading report.json")?;
        println!("\nreport ({}):\n{}", report.backend, report.table());
    }
    if let Some(search) = SearchResults::read(run)? {
        println!("\nMix'n'Match search ({}):\n{}", SearchResults::folder(run).display(), search.table());
    }
    let measured = run.path().join("measurements");
    if let Ok(files) = std::fs::read_dir(&measured) {
        let names: Vec<String> =
            files.flatten().map(|f| f.file_name().to_string_lossy().into_owned()).collect();
        println!("\nmeasurements cached for `select` ({}): {}", measured.display(), names.join(", "));
    }
    Ok(())
}
