//! `nestednet-fuzz`: property-based fuzzing of every reader a user can point at a file.
//!
//! Each target generates hostile inputs with [`proptest`] strategies (structured: headers
//! whose sizes overflow or lie, gzip streams that inflate without end, records with labels out
//! of range, JSON and CSV with wrong types and huge numbers, valid files with flipped,
//! truncated or inserted bytes), writes them where the reader expects them and reads them back.
//! A reader passes an input when it returns (an error is fine), does not panic, and allocates
//! at most its target's bound over what the process held before (a counting allocator measures
//! the peak). The first failing input is shrunk by proptest and printed; the process exits 1.
//!
//! ```text
//! cargo run --release -p nestednet-fuzz -- --seconds 60            # every target, 60 s each
//! cargo run --release -p nestednet-fuzz -- idx cifar --seconds 600  # some targets
//! ```

mod alloc;
mod targets;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

#[derive(Parser, Debug)]
#[command(about = "Fuzz nestednet's file readers for a bounded time")]
struct Args {
    /// Targets to run (default: all): idx, cifar, image-folder, text-folder, hierarchy,
    /// run-folder, level-files.
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seed of the first round (each round of 64 cases takes the next).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let all = targets::names();
    let chosen: Vec<&str> = if args.targets.is_empty() {
        all.to_vec()
    } else {
        for t in &args.targets {
            if !all.contains(&t.as_str()) {
                bail!("unknown fuzz target `{t}` (known: {})", all.join(", "));
            }
        }
        args.targets.iter().map(String::as_str).collect()
    };
    for name in chosen {
        let target = targets::Target::new(name)?;
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let (mut cases, mut round) = (0u64, args.seed);
        let start = Instant::now();
        while Instant::now() < deadline {
            let config = Config { cases: 64, failure_persistence: None, ..Config::default() };
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&round.to_le_bytes());
            seed[8..16].copy_from_slice(&(name.len() as u64).to_le_bytes());
            let mut runner =
                TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
            let result = target.run(&mut runner);
            cases += 64;
            round += 1;
            if let Err(e) = result {
                match e {
                    TestError::Fail(reason, input) => {
                        bail!(
                            "target {name}: input failed after {cases} cases: {reason}\nminimal input: {input}"
                        )
                    }
                    TestError::Abort(reason) => bail!("target {name}: aborted: {reason}"),
                }
            }
        }
        println!(
            "{name}: {cases} inputs in {:.0} s, no panic, no allocation over its bound (peak {} MiB above the baseline)",
            start.elapsed().as_secs_f64(),
            alloc::max_excess() >> 20
        );
        alloc::reset_max_excess();
    }
    Ok(())
}
