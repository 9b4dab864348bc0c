//! `nestednet`: train, evaluate, export and inspect nested networks.
//!
//! A thin shell over the library: each subcommand parses its arguments (typed, with clap),
//! hands them to `nestednet::train` and prints what comes back. Training settings are the
//! library's own [`TrainSettings`](nestednet::train::TrainSettings), so flags, config files and
//! a run's recorded settings are one thing.

mod eval;
mod export;
mod inspect;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};
use nestednet::train::Backend;

// Burn allocates a fresh buffer for most op outputs; mimalloc keeps them in user space instead
// of mapping and zeroing new pages for each (a quarter of a training step with glibc's malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nested sparse networks: many networks in one set of weights.
#[derive(Parser, Debug)]
#[command(name = "nestednet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train every level of a nested network jointly, then report each level.
    #[command(after_help = train::recipes_help())]
    Train(Box<train::TrainArgs>),
    /// Evaluate the levels of a trained run on a data set.
    Eval(eval::EvalArgs),
    /// Export one level (or the consensus of all) as a compact standalone model, verified.
    Export(export::ExportArgs),
    /// Show a run's configuration, levels, checkpoint and report.
    Inspect(inspect::InspectArgs),
}

/// The backend asked for, or `$BURN_DEVICE`, or the first compiled one.
fn backend(choice: Option<Backend>) -> Result<Backend> {
    Ok(match choice {
        Some(b) => b,
        None => Backend::from_env_or_default()?,
    })
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Export(a) => export::run(a),
        Command::Inspect(a) => inspect::run(a),
    }
}
