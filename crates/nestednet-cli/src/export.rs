//! `nestednet export`.

use std::path::PathBuf;

use crate::CliModel;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use nestednet::burn::module::Module;
use nestednet::burn::prelude::Device;
use nestednet::models::NestedNetwork;
use nestednet::train::export::{ExportFormat, export_level, export_mix};
use nestednet::train::jobs::SourcedSet;
use nestednet::train::serve::{
    ConsensusMethod, SearchResults, SearchSettings, calibrated_mix, calibration_batches, export_consensus,
    mix_name, parse_mix,
};
use nestednet::train::trainer::RunDir;

/// How the levels of a consensus export are combined.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Consensus {
    /// NestedNet-A: the mean of the levels' probabilities.
    Average,
    /// NestedNet-L: the run's learned layer on the levels' log-probabilities.
    Learned,
}

/// The file format of an exported level.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Burn's record format, with a .json beside it.
    Burnpack,
    /// safetensors with PyTorch's names and layouts.
    Safetensors,
    /// safetensors with the masked weights in compressed sparse form.
    Sparse,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Level to export: its number (0 = core), or for a lattice its name (`w0.25-d2`) or pair
    /// (`0.25,2`).
    #[arg(long, conflicts_with_all = ["consensus", "mix"])]
    level: Option<String>,
    /// Export a Mix'n'Match sub-network instead: the level whose width each mixable layer
    /// takes (`2,0,1`, or a front point's name `mix-2-0-1`); its batch norms are recalibrated
    /// on training batches as `nestednet search` does.
    #[arg(long, conflicts_with = "consensus")]
    mix: Option<String>,
    /// Export the most accurate level (or searched sub-network) within these budgets instead
    /// of --level (see `nestednet select`).
    #[command(flatten)]
    budget: crate::select::BudgetArgs,
    /// Export the consensus of all levels instead: every level plus consensus.json (and, for
    /// `learned`, consensus.safetensors) into the folder --out.
    #[arg(long)]
    consensus: Option<Consensus>,
    /// Output file (`.bpk` for burnpack, `.safetensors` for safetensors, `.sparse.safetensors`
    /// for safetensors with the masked weights in compressed sparse form); a folder with
    /// --consensus.
    #[arg(long)]
    out: PathBuf,
    /// Format (default: from the file name).
    #[arg(long)]
    format: Option<Format>,
    /// Backend (must be compiled in; default: $BURN_DEVICE, else the first compiled).
    #[arg(long)]
    pub device: Option<nestednet::train::jobs::Backend>,
}

/// The sub-network `choice` of `model` with its batch norms recalibrated on `train` (the run's
/// training set), with the settings of the run's search when it has one (so that an export reproduces
/// the front's point), the search's defaults otherwise.
pub fn recalibrated<F: CliModel>(
    model: &F::Network,
    choice: &[usize],
    run: &RunDir,
    train: &crate::DataOf<F>,
    device: &Device,
) -> Result<F::Network> {
    let defaults = SearchSettings::default();
    let (batches, batch_size, seed) = match SearchResults::read(run)? {
        Some(r) => (r.calibration_batches, r.calibration_batch_size, r.seed),
        None => (defaults.calibration_batches, defaults.calibration_batch_size, defaults.seed),
    };
    let calibration = calibration_batches(train, batches, batch_size, seed, device)?;
    Ok(calibrated_mix(model, choice, &calibration)?)
}

pub fn run<F: CliModel>(a: ExportArgs) -> Result<()> {
    let device = crate::backend(a.device)?.device()?;
    let run = RunDir::new(&a.run);
    let (config, model) = run.load_model::<F>(&device)?;
    let model = model.valid();
    if let Some(consensus) = a.consensus {
        let method = match consensus {
            Consensus::Average => ConsensusMethod::Average,
            Consensus::Learned => ConsensusMethod::Learned,
        };
        let width: usize = (0..model.num_levels()).map(|k| model.level_classes(k)).sum();
        let layer = run.load_consensus(width, model.level_classes(model.num_levels() - 1), &device)?;
        let hierarchy = config.training.hierarchy.as_ref();
        let (_, checked) =
            export_consensus(&model, &config.model, method, hierarchy, layer.as_ref(), &a.out)?;
        println!(
            "exported the {method:?} consensus of {} levels to {} (level0..{}.safetensors, consensus.json{}); verified: same predictions on {checked} inputs",
            model.num_levels(),
            a.out.display(),
            model.num_levels() - 1,
            if method == ConsensusMethod::Learned { ", consensus.safetensors" } else { "" },
        );
        return Ok(());
    }
    let format = match a.format {
        Some(Format::Burnpack) => ExportFormat::Burnpack,
        Some(Format::Safetensors) => ExportFormat::Safetensors,
        Some(Format::Sparse) => ExportFormat::SparseSafetensors,
        None => ExportFormat::from_path(&a.out),
    };
    let choice = match (&a.level, &a.mix, a.budget.budgets.is_empty()) {
        (Some(key), None, true) => Err(model.find_level(key)?),
        (None, Some(mix), true) => Ok(parse_mix(mix)?),
        (None, None, false) => {
            let backend = crate::backend(a.device)?;
            let chosen = crate::select::choose::<F>(&run, &model, &a.budget, backend, &device, false)?;
            println!("budget: {} selected", chosen.candidate.name);
            match (chosen.candidate.mix, chosen.candidate.level) {
                (Some(mix), _) => Ok(mix),
                (None, level) => Err(level.context("a candidate is a level or a mix")?),
            }
        }
        _ => anyhow::bail!("give one of --level, --mix, --budget and --consensus"),
    };
    let level = match choice {
        Err(level) => level,
        Ok(choice) => {
            let source = crate::run_data(&config, None, None, None, true)?;
            let (train, _) = crate::DataOf::<F>::load(&source)?;
            let mixed = recalibrated::<F>(&model, &choice, &run, &train, &device)?;
            let name = mix_name(&choice);
            let info = export_mix(&mixed, &config.model, &choice, &name, &a.out, format)?;
            let widths: Vec<String> = mixed.level_widths(0).iter().map(|(n, w)| format!("{n} {w}")).collect();
            println!(
                "exported sub-network {name} ({format:?}) to {}: {} bytes, {}; verified: max |Δlogit| = {:.2e}",
                a.out.display(),
                info.bytes,
                widths.join(", "),
                info.max_abs_diff
            );
            return Ok(());
        }
    };
    let info = export_level(&model, &config.model, level, &a.out, format)?;
    let widths: Vec<String> = model.level_widths(level).iter().map(|(n, w)| format!("{n} {w}")).collect();
    println!(
        "exported level {level} ({}, {format:?}) to {}: {} bytes, {}; verified: max |Δlogit| = {:.2e}",
        info.level_name,
        a.out.display(),
        info.bytes,
        widths.join(", "),
        info.max_abs_diff
    );
    if let Some(path) = info.config_path {
        println!("configuration: {}", path.display());
    }
    Ok(())
}
