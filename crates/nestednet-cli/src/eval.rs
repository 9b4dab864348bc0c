//! `nestednet eval`.

use std::path::PathBuf;

use crate::CliModel;
use anyhow::Result;
use clap::Args;
use nestednet::burn::module::Module;
use nestednet::burn::prelude::Device;
use nestednet::data::{DataSource, DatasetKind};
use nestednet::models::NestedNetwork;
use nestednet::train::jobs::SourcedSet;
use nestednet::train::jobs::{Backend, ImageSize, TrainSettings};
use nestednet::train::serve::{
    EarlyExit, LevelOutputs, LevelReport, Report, ReportContext, anytime_figures, build_report,
    level_outputs, mix_name, plot_early_exit, takes_level_outputs,
};
use nestednet::train::trainer::{LevelLabels, LevelTally, RunConfig, RunDir, check_compatible, evaluate};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
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
    pub device: Option<nestednet::train::jobs::Backend>,
    /// Also measure sizes and latencies and rewrite report.json and the plot.
    #[arg(long)]
    report: bool,
    /// Anytime inference: run the core level first and go up a level only while the level's
    /// top probability is below this threshold; prints accuracy and mean MACs per sample at
    /// this threshold and a sweep, and plots the sweep to RUN/early_exit.png.
    #[arg(long)]
    early_exit: Option<f64>,
}

pub fn run<F: CliModel>(a: EvalArgs) -> Result<()> {
    let backend = crate::backend(a.device)?;
    let device = backend.device()?;
    let run = RunDir::new(&a.run);
    let (config, model) = run.load_model::<F>(&device)?;
    let only = a.level.as_deref().map(|key| model.find_level(key)).transpose()?;
    // The test set, also for runs trained with a validation split (their report is on the
    // held-out training images; this is the final measurement).
    let source = crate::run_data(&config, a.dataset, a.data_dir, a.image_size.map(|s| s.0), false)?;
    let only = match (only, a.budget.budgets.is_empty()) {
        (Some(_), false) => anyhow::bail!("give --level or --budget, not both"),
        (only, true) => only,
        (None, false) => {
            match within_budget::<F>(&a.budget, &run, (&config, &model), &source, (backend, &device))? {
                Budgeted::Level(level) => level,
                Budgeted::MixEvaluated => return Ok(()),
            }
        }
    };
    let (_, test) = crate::DataOf::<F>::load(&source)?;
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
    print_levels(&model, &tallies, only);
    // What the levels give together: hierarchy metrics, consensus, early exit (per sample: a
    // language model has none, unless asked for early exit, which names why it cannot).
    if !takes_level_outputs(&test) && a.early_exit.is_none() {
        return Ok(());
    }
    let outputs = level_outputs(&model, &test, 256, &device)?;
    let mut together = anytime_figures(&model, &outputs, hierarchy, consensus.as_ref())?;
    let full_macs = model.level_cost(model.num_levels() - 1).macs;
    match a.early_exit {
        Some(threshold) => with_early_exit(&model, &outputs, &tallies, threshold, &mut together.early_exit)?,
        None => together.early_exit.clear(),
    }
    print!("{}", together.table(full_macs));
    if a.early_exit.is_some() {
        plot_sweep(&run, &config, &model, &source, backend, &tallies, together.early_exit)?;
    }
    Ok(())
}

/// Evaluates the Mix'n'Match sub-network `choice` of the run (recalibrated as its search did).
fn eval_mix<F: CliModel>(
    model: &F::Network,
    choice: &[usize],
    run: &RunDir,
    calibration: &DataSource,
    source: &DataSource,
    device: &Device,
) -> Result<()> {
    let (train, _) = crate::DataOf::<F>::load(calibration)?;
    let (_, test) = crate::DataOf::<F>::load(source)?;
    let mixed = crate::export::recalibrated::<F>(model, choice, run, &train, device)?;
    let tally = &evaluate(&mixed, &test, 256, device, &LevelLabels::fine(1))?[0];
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

/// What the budgets chose.
enum Budgeted {
    /// A level (of the candidates' list: `None` is all of them), to evaluate.
    Level(Option<usize>),
    /// A Mix'n'Match sub-network, evaluated already.
    MixEvaluated,
}

/// The level the budgets choose, or the Mix'n'Match sub-network, evaluated here on the test set
/// after recalibration on the training images the search used.
fn within_budget<F: CliModel>(
    budget: &crate::select::BudgetArgs,
    run: &RunDir,
    (config, model): (&RunConfig<F>, &F::Network),
    source: &DataSource,
    (backend, device): (Backend, &Device),
) -> Result<Budgeted> {
    let chosen = crate::select::choose::<F>(run, model, budget, backend, device, false)?;
    match (&chosen.candidate.mix, chosen.candidate.level) {
        (Some(choice), _) => {
            // The search's validation split held out, if the run has one.
            let split = TrainSettings::data_of(config)?.and_then(|d| d.validation_split);
            let calibration = DataSource { validation_split: split, ..source.clone() };
            eval_mix::<F>(model, choice, run, &calibration, source, device)?;
            Ok(Budgeted::MixEvaluated)
        }
        (None, level) => {
            println!("budget: {} selected\n", chosen.candidate.name);
            Ok(Budgeted::Level(level))
        }
    }
}

/// Each level's (or only `only`'s) accuracy, loss (in nats, and in bits per target: a language
/// model's bits per byte) and cost.
fn print_levels<N: NestedNetwork>(model: &N, tallies: &[LevelTally], only: Option<usize>) {
    println!(
        "| level | name | accuracy | loss | bits/target | correct/total | params | MACs/sample |\n|---|---|---|---|---|---|---|---|"
    );
    for (level, t) in tallies.iter().enumerate().filter(|(k, _)| only.is_none_or(|l| l == *k)) {
        let cost = model.level_cost(level);
        println!(
            "| {level} | {} | {:.4} | {:.4} | {:.4} | {}/{} | {} | {} |",
            model.level_name(level),
            t.accuracy(),
            t.loss(),
            t.loss() / core::f64::consts::LN_2,
            t.correct,
            t.total,
            cost.params,
            cost.macs
        );
    }
}

/// Plots the early-exit sweep next to the levels alone, to RUN/early_exit.png.
fn plot_sweep<F: CliModel>(
    run: &RunDir,
    config: &RunConfig<F>,
    model: &F::Network,
    source: &DataSource,
    backend: Backend,
    tallies: &[LevelTally],
    early_exit: Vec<EarlyExit>,
) -> Result<()> {
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
        early_exit,
    };
    let path = run.path().join("early_exit.png");
    plot_early_exit(&report, &path)?;
    println!("early-exit plot: {}", path.display());
    Ok(())
}

/// Prints anytime inference at `threshold` and adds it to the `sweep` (if not in it already).
fn with_early_exit<N: NestedNetwork>(
    model: &N,
    outputs: &LevelOutputs,
    tallies: &[LevelTally],
    threshold: f64,
    sweep: &mut Vec<EarlyExit>,
) -> Result<()> {
    let full_macs = model.level_cost(model.num_levels() - 1).macs;
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
    if !sweep.iter().any(|e| e.threshold == threshold) {
        sweep.push(chosen);
        sweep.sort_by(|x, y| x.threshold.total_cmp(&y.threshold));
    }
    Ok(())
}
