//! `nestednet eval`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use nestednet::burn::module::Module;
use nestednet::data::{DataSource, DatasetKind};
use nestednet::models::NestedModel;
use nestednet::models::{ModelConfig, NestedNetwork, NestedNetworkConfig};
use nestednet::train::{
    ImageData, ImageSize, LevelLabels, LevelReport, Report, ReportContext, RunDir, anytime_figures,
    build_report, check_compatible, evaluate, level_outputs, mix_name, plot_early_exit,
};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Data format (default: the one the run trained on).
    #[arg(long)]
    dataset: Option<DatasetKind>,
    /// Folder holding the data set's files (default: the one the run trained on).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Image folders: resize to SIDE or HEIGHTxWIDTH (default: the run's).
    #[arg(long)]
    image_size: Option<ImageSize>,
    /// Evaluate only this level (default: all): its number, or a lattice level's name or pair.
    #[arg(long)]
    level: Option<String>,
    /// Evaluate the most accurate level within these budgets instead of --level (see
    /// `nestednet select`).
    #[command(flatten)]
    budget: crate::select::BudgetArgs,
    /// Backend (must be compiled in; default: $BURN_DEVICE, else the first compiled).
    #[arg(long)]
    device: Option<nestednet::train::Backend>,
    /// Also measure sizes and latencies and rewrite report.json and the plot.
    #[arg(long)]
    report: bool,
    /// Anytime inference: run the core level first and go up a level only while the level's
    /// top probability is below this threshold; prints accuracy and mean MACs per sample at
    /// this threshold and a sweep, and plots the sweep to RUN/early_exit.png.
    #[arg(long)]
    early_exit: Option<f64>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let backend = crate::backend(a.device)?;
    let device = backend.device()?;
    let run = RunDir::new(&a.run);
    let (config, model) = run.load_model::<ModelConfig>(&device)?;
    let only = a.level.as_deref().map(|key| model.find_level(key)).transpose()?;
    // The test set, also for runs trained with a validation split (their report is on the
    // held-out training images; this is the final measurement).
    let source = crate::run_data(&config, a.dataset, a.data_dir, a.image_size.map(|s| s.0), false)?;
    let only = match (&only, a.budget.budgets.is_empty()) {
        (Some(_), false) => anyhow::bail!("give --level or --budget, not both"),
        (None, false) => {
            let chosen = crate::select::choose(&run, &model, &a.budget, backend, &device, false)?;
            match (&chosen.candidate.mix, chosen.candidate.level) {
                (Some(choice), _) => {
                    // Recalibrated on the training images the search used (its validation
                    // split held out, if the run has one), scored on the test set.
                    let split = config.data_source().and_then(|d| d.validation_split);
                    let calibration = DataSource { validation_split: split, ..source.clone() };
                    return eval_mix(&model, choice, &run, &calibration, &source, &device);
                }
                (None, level) => {
                    println!("budget: {} selected\n", chosen.candidate.name);
                    level
                }
            }
        }
        (only, true) => *only,
    };
    let (_, test) = source.load()?;
    let test = ImageData::from(test);
    let labels = config.training.level_labels(model.num_levels());
    check_compatible(&model, &test, &labels, "test")?;
    let model = model.valid();
    let levels_width: usize = (0..model.num_levels()).map(|k| model.level_classes(k)).sum();
    let fine_classes = model.level_classes(model.num_levels() - 1);
    let consensus = run.load_consensus(levels_width, fine_classes, &device)?;
    let hierarchy = config.training.hierarchy.as_ref();
    if a.report {
        let context = ReportContext {
            model: &config.model.name(),
            dataset: &source.kind.to_string(),
            backend: backend.name(),
            method: &config.training.method_name(),
            train_seconds_per_epoch: None,
            labels: &labels,
            hierarchy,
            consensus_layer: consensus.as_ref(),
        };
        let report = build_report(&model, &config.model, context, &test, &device)?;
        report.write_to_run(&run)?;
        println!("{}", report.table());
        return Ok(());
    }
    let tallies = evaluate(&model, &test, 256, &device, &labels)?;
    println!(
        "| level | name | accuracy | loss | correct/total | params | MACs/sample |\n|---|---|---|---|---|---|---|"
    );
    for (level, t) in tallies.iter().enumerate().filter(|(k, _)| only.is_none_or(|l| l == *k)) {
        let cost = model.level_cost(level);
        println!(
            "| {level} | {} | {:.4} | {:.4} | {}/{} | {} | {} |",
            model.level_name(level),
            t.accuracy(),
            t.loss(),
            t.correct,
            t.total,
            cost.params,
            cost.macs
        );
    }
    // What the levels give together: hierarchy metrics, consensus, early exit.
    let outputs = level_outputs(&model, &test, 256, &device)?;
    let mut together = anytime_figures(&model, &outputs, hierarchy, consensus.as_ref())?;
    let full_macs = model.level_cost(model.num_levels() - 1).macs;
    if let Some(threshold) = a.early_exit {
        let macs: Vec<usize> = (0..model.num_levels()).map(|k| model.level_cost(k).macs).collect();
        let chosen = outputs.early_exit(threshold, &macs)?;
        let full = tallies.last().map_or(0.0, |t| t.accuracy());
        println!(
            "\nearly exit at {threshold}: accuracy {:.4} (full level {full:.4}, {:+.2} points), mean MACs/sample {:.0} = {:.3} of the full level's; answered by each level: {}",
            chosen.accuracy,
            100.0 * (chosen.accuracy - full),
            chosen.mean_macs,
            chosen.mean_macs / full_macs.max(1) as f64,
            chosen.exit_fractions.iter().map(|f| format!("{f:.3}")).collect::<Vec<_>>().join(" / ")
        );
        if !together.early_exit.iter().any(|e| e.threshold == threshold) {
            together.early_exit.push(chosen);
            together.early_exit.sort_by(|x, y| x.threshold.total_cmp(&y.threshold));
        }
    } else {
        together.early_exit.clear();
    }
    print!("{}", together.table(full_macs));
    if a.early_exit.is_some() {
        // Plot the sweep next to the levels alone.
        let report = Report {
            model: config.model.name(),
            dataset: source.kind.to_string(),
            backend: backend.name().into(),
            levels: tallies
                .iter()
                .enumerate()
                .map(|(level, t)| LevelReport {
                    level,
                    name: model.level_name(level),
                    classes: model.level_classes(level),
                    accuracy: t.accuracy(),
                    loss: t.loss(),
                    correct: t.correct,
                    total: t.total,
                    params: model.level_cost(level).params,
                    macs: model.level_cost(level).macs,
                    ..LevelReport::default()
                })
                .collect(),
            train_seconds_per_epoch: None,
            method: config.training.method_name(),
            hierarchy: None,
            consensus: Vec::new(),
            early_exit: together.early_exit,
        };
        let path = run.path().join("early_exit.png");
        plot_early_exit(&report, &path)?;
        println!("early-exit plot: {}", path.display());
    }
    Ok(())
}

/// Evaluates the Mix'n'Match sub-network `choice` of the run (recalibrated as its search did).
fn eval_mix(
    model: &NestedModel,
    choice: &[usize],
    run: &RunDir,
    calibration: &DataSource,
    source: &DataSource,
    device: &nestednet::burn::prelude::Device,
) -> Result<()> {
    let (train, _) = calibration.load()?;
    let (_, test) = source.load()?;
    let mixed = crate::export::recalibrated(model, choice, run, &ImageData::from(train), device)?;
    let tally = &evaluate(&mixed, &ImageData::from(test), 256, device, &LevelLabels::fine(1))?[0];
    let cost = mixed.level_cost(0);
    println!(
        "| sub-network | accuracy | loss | correct/total | params | MACs/sample |\n|---|---|---|---|---|---|\n| {} | {:.4} | {:.4} | {}/{} | {} | {} |",
        mix_name(choice),
        tally.accuracy(),
        tally.loss(),
        tally.correct,
        tally.total,
        cost.params,
        cost.macs
    );
    Ok(())
}
