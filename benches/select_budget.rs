//! Does `select` keep its promise on this device? For a latency budget between two levels, it
//! is called 10 times (each measuring afresh); after each call every candidate is measured
//! again, to check that the chosen one is within the budget (its re-measured median, and its
//! re-measured 90th percentile, the figure `select` compares) and that no more accurate
//! candidate is (by the same figure).
//!
//! ```text
//! cargo bench --bench select_budget -- --run RUN [--budget-ms MS] [--batch-size 1] [--calls 10] [--with-mixes]
//! ```
//! Without `--budget-ms`, the budget is the midpoint between the 90th-percentile latency of the
//! middle level (by latency) and the median of the next, so that one fits and the next does not.
//! The trained levels are the candidates unless `--with-mixes` adds the run's search front.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use nestednet::burn::prelude::*;
use nestednet::models::{NestedMnistCnnConfig, NestedNetwork};
use nestednet::train::jobs::Backend;
use nestednet::train::serve::{
    Budget, BudgetKind, measure_candidates, measure_network, run_candidates, select_within,
};
use nestednet::train::trainer::RunDir;

#[derive(Parser, Debug)]
struct Args {
    /// A trained run (with its report.json).
    #[arg(long)]
    run: PathBuf,
    /// The latency budget in milliseconds (default: between two levels, see above).
    #[arg(long)]
    budget_ms: Option<f64>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Calls to `select`.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Also weigh the Mix'n'Match front of the run's search.
    #[arg(long)]
    with_mixes: bool,
    /// Ignored (cargo bench passes it).
    #[arg(long)]
    bench: bool,
}

fn main() -> Result<()> {
    // First, before anything uses the CPU thread pool: this thread is one of its threads (the
    // bench times its work directly, not through the trainer, which would do it).
    nestednet::train::trainer::join_cpu_thread_pool();
    let args = Args::parse();
    let backend = Backend::from_env_or_default()?;
    let device: Device = backend.device()?;
    let run = RunDir::new(&args.run);
    let (_, model) = run.load_model::<NestedMnistCnnConfig>(&device).context("loading the run")?;
    let candidates: Vec<_> =
        run_candidates(&run, &model)?.into_iter().filter(|c| args.with_mixes || c.mix.is_none()).collect();
    let measure = |remeasure| {
        measure_candidates::<NestedMnistCnnConfig>(
            &run,
            &model,
            &candidates,
            backend.name(),
            args.batch_size,
            &device,
            remeasure,
        )
    };
    let first = measure(true)?;
    let budget_ms = match args.budget_ms {
        Some(ms) => ms,
        None => {
            let mut by_latency: Vec<_> = first.iter().map(|c| &c.measurement).collect();
            by_latency.sort_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms));
            let middle = (by_latency.len() - 1) / 2;
            let next = (middle + 1).min(by_latency.len() - 1);
            0.5 * (by_latency[middle].latency_p90_ms + by_latency[next].latency_ms)
        }
    };
    let budget = Budget { kind: BudgetKind::LatencyMs, limit: budget_ms };
    println!("device: {} | batch {} | budget {budget}", backend.name(), args.batch_size);
    let (mut median_within, mut p90_within, mut best) = (0, 0, 0);
    for call in 0..args.calls {
        let measured = measure(true)?;
        let chosen = select_within(&measured, &[budget])?.candidate.clone();
        // Measured again, afterwards: every candidate, the chosen one included.
        let again: Vec<(String, f64, f64, f64)> = candidates
            .iter()
            .map(|c| {
                let standalone = match &c.mix {
                    Some(choice) => model.mixed(choice)?.extract_level(0),
                    None => model.extract_level(c.level.expect("a level")),
                };
                let m = measure_network(&standalone, &c.name, args.batch_size, &device)?;
                Ok((c.name.clone(), m.latency_ms, m.latency_p90_ms, c.accuracy))
            })
            .collect::<Result<_>>()?;
        let (_, median, p90, _) =
            again.iter().find(|(n, ..)| *n == chosen.name).expect("the chosen candidate");
        let top = again.iter().filter(|(_, _, p, _)| *p <= budget_ms).map(|c| c.3).fold(f64::MIN, f64::max);
        let is_best = chosen.accuracy >= top;
        median_within += usize::from(*median <= budget_ms);
        p90_within += usize::from(*p90 <= budget_ms);
        best += usize::from(is_best);
        println!(
            "call {:2}: chose {} (accuracy {:.4}); re-measured median {:.3} ms, p90 {:.3} ms: {}; {}",
            call + 1,
            chosen.name,
            chosen.accuracy,
            median,
            p90,
            if *p90 <= budget_ms {
                "within"
            } else if *median <= budget_ms {
                "median within, p90 over"
            } else {
                "OVER"
            },
            if is_best { "no more accurate candidate fits" } else { "a more accurate candidate fits" }
        );
    }
    println!(
        "\n{median_within}/{n} choices re-measured within {budget_ms:.3} ms (median), {p90_within}/{n} (90th percentile); {best}/{n} the most accurate candidate within it",
        n = args.calls
    );
    Ok(())
}
