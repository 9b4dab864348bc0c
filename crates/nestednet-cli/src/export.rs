//! `nestednet export`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use nestednet::burn::module::Module;
use nestednet::models::{ModelConfig, NestedNetwork};
use nestednet::train::{ConsensusMethod, ExportFormat, RunDir, export_consensus, export_level};

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
    run: PathBuf,
    /// Level to export: its number (0 = core), or for a lattice its name (`w0.25-d2`) or pair
    /// (`0.25,2`).
    #[arg(long, required_unless_present = "consensus", conflicts_with = "consensus")]
    level: Option<String>,
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
    device: Option<nestednet::train::Backend>,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let device = crate::backend(a.device)?.device()?;
    let run = RunDir::new(&a.run);
    let (config, model) = run.load_model::<ModelConfig>(&device)?;
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
    let key = a.level.as_deref().context("give --level or --consensus")?;
    let level = model.find_level(key)?;
    let format = match a.format {
        Some(Format::Burnpack) => ExportFormat::Burnpack,
        Some(Format::Safetensors) => ExportFormat::Safetensors,
        Some(Format::Sparse) => ExportFormat::SparseSafetensors,
        None => ExportFormat::from_path(&a.out),
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
