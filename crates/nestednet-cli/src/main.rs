//! `nestednet`: train, evaluate, export and inspect nested networks.
//!
//! A thin shell over the library: each subcommand parses its arguments (typed, with clap),
//! hands them to `nestednet::train` and prints what comes back. Training settings are the
//! library's own [`TrainSettings`](nestednet::train::TrainSettings), so flags, config files and
//! a run's recorded settings are one thing.

mod eval;
mod export;
mod inspect;
mod nestify;
mod search;
mod select;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};
use nestednet::data::{DataSource, DatasetKind};
use nestednet::models::ModelConfig;
use nestednet::train::{Backend, PeakAllocator, RunConfig};

// Burn allocates a fresh buffer for most op outputs; mimalloc keeps them in user space instead
// of mapping and zeroing new pages for each (a quarter of a training step with glibc's malloc).
// Wrapped in a counter, so that `select` can measure a level's peak inference memory.
#[global_allocator]
static GLOBAL: PeakAllocator<mimalloc::MiMalloc> = PeakAllocator::new(mimalloc::MiMalloc);

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
    /// The most accurate level (or searched sub-network) within a latency, MAC, parameter,
    /// size or memory budget, measured on this device.
    Select(select::SelectArgs),
    /// Mix'n'Match: search the sub-networks whose layers take different levels' widths, write
    /// their accuracy–MACs Pareto front and export its points.
    Search(search::SearchArgs),
    /// Turn a pretrained dense network into a nested one (channels ordered by importance),
    /// then fine-tune every level jointly.
    Nestify(Box<nestify::NestifyArgs>),
}

/// The backend asked for, or `$BURN_DEVICE`, or the first compiled one.
fn backend(choice: Option<Backend>) -> Result<Backend> {
    Ok(match choice {
        Some(b) => b,
        None => Backend::from_env_or_default()?,
    })
}

/// The data a run was trained on, with a different folder, format or image size where given.
/// With `own_split`, a run trained with a validation split is evaluated on it (as its report
/// was); otherwise on the test set.
fn run_data(
    config: &RunConfig<ModelConfig>,
    dataset: Option<DatasetKind>,
    data_dir: Option<std::path::PathBuf>,
    image_size: Option<[usize; 2]>,
    own_split: bool,
) -> Result<DataSource> {
    let recorded = config.data_source();
    Ok(DataSource {
        kind: dataset.or(recorded.as_ref().map(|d| d.kind)).unwrap_or(config.training.dataset),
        dir: data_dir
            .or(recorded.as_ref().map(|d| d.dir.clone()))
            .ok_or_else(|| anyhow::anyhow!("give the data folder (--data-dir): the run records none"))?,
        image_size: image_size.or(recorded.as_ref().and_then(|d| d.image_size)),
        validation_split: if own_split { recorded.and_then(|d| d.validation_split) } else { None },
    })
}

/// Makes a closed standard output end the process quietly, as it ends any Unix filter:
/// `nestednet inspect --run r | head` exits when `head` has what it wants, where Rust's
/// runtime, which ignores SIGPIPE, would have every later `println!` (the CLI's, and the
/// training loop's epoch lines) fail with `EPIPE` and panic. A training run killed this way
/// resumes like any killed run (`--resume`; checkpoints are written atomically).
#[cfg(unix)]
#[allow(unsafe_code)]
fn exit_quietly_on_closed_stdout() {
    // SAFETY: sets the disposition of one signal to its default, before any other thread
    // exists; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> Result<()> {
    // First, before any thread starts: a closed pipe ends the process quietly, freed memory
    // stays mapped for the next steps, and this thread is one of the CPU kernels' threads.
    #[cfg(unix)]
    exit_quietly_on_closed_stdout();
    nestednet_alloc::mimalloc_retain_freed_memory();
    nestednet::train::join_cpu_thread_pool();
    match Cli::parse().command {
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Export(a) => export::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Select(a) => select::run(a),
        Command::Search(a) => search::run(a),
        Command::Nestify(a) => nestify::run(*a),
    }
}
