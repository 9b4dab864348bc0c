//! `nestednet select`: the most accurate level (or Mix'n'Match sub-network) within a budget,
//! measured on this device.

use std::path::PathBuf;

use crate::CliModel;
use anyhow::Result;
use clap::Args;
use nestednet::burn::prelude::Device;
use nestednet::train::jobs::Backend;
use nestednet::train::serve::{Budget, MeasuredCandidate, candidates_table, select_in_run};
use nestednet::train::trainer::RunDir;

/// The budget flags `select`, `eval` and `export` share.
#[derive(Args, Debug, Clone)]
pub struct BudgetArgs {
    /// A limit the chosen level must meet (repeat for several): latency-ms=MS (the 90th
    /// percentile of its calls at --batch-size, measured here), macs=N (per sample), params=N,
    /// bytes=N (exported burnpack), memory-mb=MIB (peak inference memory at --batch-size).
    #[arg(long = "budget")]
    pub budgets: Vec<Budget>,
    /// Batch size the latency and memory are measured at.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Measure again, even if RUN/measurements holds this device's figures.
    #[arg(long)]
    pub remeasure: bool,
}

#[derive(Args, Debug)]
pub struct SelectArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    budget: BudgetArgs,
    /// Backend (must be compiled in; default: $BURN_DEVICE, else the first compiled).
    #[arg(long)]
    pub device: Option<Backend>,
    /// Print the choice as one line of JSON (name, level or mix, accuracy, measured figures).
    #[arg(long)]
    json: bool,
}

/// Measures every candidate of the run in `run` on `device` and picks the one `budget` asks
/// for; prints the table unless `quiet`.
pub fn choose<F: CliModel>(
    run: &RunDir,
    model: &F::Network,
    budget: &BudgetArgs,
    backend: Backend,
    device: &Device,
    quiet: bool,
) -> Result<MeasuredCandidate> {
    anyhow::ensure!(!budget.budgets.is_empty(), "give at least one --budget (e.g. --budget latency-ms=2)");
    let selection = select_in_run::<F>(
        run,
        model,
        &budget.budgets,
        backend.name(),
        budget.batch_size,
        device,
        budget.remeasure,
    )?;
    if !quiet {
        let name = selection.chosen.as_ref().ok().map(|c| c.candidate.name.as_str());
        print!("{}", candidates_table(&selection.candidates, name));
    }
    Ok(selection.chosen?)
}

pub fn run<F: CliModel>(a: SelectArgs) -> Result<()> {
    let backend = crate::backend(a.device)?;
    let device = backend.device()?;
    let run = RunDir::new(&a.run);
    let (_, model) = run.load_model::<F>(&device)?;
    let chosen = choose::<F>(&run, &model, &a.budget, backend, &device, a.json)?;
    let (c, m) = (&chosen.candidate, &chosen.measurement);
    if a.json {
        let value = serde_json::json!({
            "name": c.name,
            "level": c.level,
            "mix": c.mix,
            "accuracy": c.accuracy,
            "bits_per_byte": c.bits_per_byte,
            "macs": c.macs,
            "params": c.params,
            "bytes": c.bytes,
            "latency_ms": m.latency_ms,
            "latency_p90_ms": m.latency_p90_ms,
            "memory_bytes": m.memory_bytes,
            "batch_size": a.budget.batch_size,
            "backend": backend.name(),
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "\nselected {} for {} at batch {} on {}: accuracy {:.4}{}, latency {:.3} ms median / {:.3} ms p90, {} MACs/sample, {} params, {} bytes{}",
        c.name,
        a.budget.budgets.iter().map(Budget::to_string).collect::<Vec<_>>().join(" and "),
        a.budget.batch_size,
        backend.name(),
        c.accuracy,
        c.bits_per_byte.map_or(String::new(), |b| format!(", {b:.3} bits/byte")),
        m.latency_ms,
        m.latency_p90_ms,
        c.macs,
        c.params,
        c.bytes,
        m.memory_bytes.map_or(String::new(), |b| format!(", peak memory {:.2} MiB", b as f64 / 1048576.0)),
    );
    Ok(())
}
