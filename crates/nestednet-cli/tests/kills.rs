//! SIGKILL the real CLI at many moments of a run (start-up, epochs, checkpoint writes, the
//! report) and resume it each time: every resumed run ends with the same weights, byte for
//! byte, as the uninterrupted one.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, repo};

const ARGS: [&str; 8] = ["--epochs", "4", "--train-limit", "256", "--batch-size", "64", "--seed", "3"];

fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["train", "--data-dir", data, "--out", out];
    args.extend_from_slice(&ARGS);
    args
}

/// Starts a run into `out` (resuming whatever is there) and SIGKILLs it after `delay`, or as
/// soon as a checkpoint is being written when `delay` is `None`; whether it was killed.
fn kill_run(data: &str, out: &Path, delay: Option<Duration>) -> bool {
    let mut args = train_args(data, out.to_str().unwrap());
    args.push("--resume");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestednet"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let checkpoints = out.join("checkpoints");
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let due = match delay {
            Some(d) => start.elapsed() >= d,
            // A checkpoint being written: its temporary folder exists.
            None => std::fs::read_dir(&checkpoints)
                .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
                .unwrap_or(false),
        };
        if due {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("data/digits8x8");
    let data = data.to_str().unwrap();
    let reference = dir.path().join("reference");
    let start = Instant::now();
    ok(&train_args(data, reference.to_str().unwrap()));
    let whole = start.elapsed();
    let want = std::fs::read(reference.join("model.bpk")).unwrap();

    // 20 moments spread over the run (its first 90%, so that a run a little faster than the
    // reference is still alive at the last one), then 5 inside checkpoint writes.
    let mut moments: Vec<Option<Duration>> =
        (0..20).map(|i| Some(whole.mul_f64(0.9 * (i as f64 + 0.5) / 20.0))).collect();
    moments.extend([None; 5]);
    let mut killed = 0;
    for (i, moment) in moments.into_iter().enumerate() {
        let out = dir.path().join(format!("killed-{i}"));
        killed += usize::from(kill_run(data, &out, moment));
        // The retry: the same command with --resume, to the end.
        let mut args = train_args(data, out.to_str().unwrap());
        args.push("--resume");
        ok(&args);
        let got = std::fs::read(out.join("model.bpk")).unwrap();
        assert!(
            got == want,
            "run {i} (killed at {moment:?}) resumed to other weights than the uninterrupted run"
        );
    }
    println!("{killed} of 25 runs were killed before they finished; all 25 resumed to identical weights");
    assert!(killed >= 20, "only {killed} kills landed: the moments missed the run");
}

/// A checkpoint that cannot be written (here: its temporary folder's name is taken by a file,
/// as a full disk or a read-only folder would refuse it) is a clear error naming the epoch and
/// the intact previous checkpoint; that checkpoint still evaluates and resumes, to the same
/// weights as a run that was never blocked.
#[test]
fn an_unwritable_checkpoint_is_a_clear_error_and_the_previous_one_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("data/digits8x8");
    let data = data.to_str().unwrap();
    let args = |out: &Path, epochs: &'static str| -> Vec<String> {
        let mut a: Vec<String> =
            ["train", "--data-dir", data, "--out", out.to_str().unwrap(), "--train-limit", "256"]
                .map(String::from)
                .to_vec();
        a.extend(["--epochs".to_string(), epochs.to_string()]);
        a
    };
    // The reference: one epoch, then resumed to two, undisturbed (a cosine schedule follows the
    // number of epochs asked, so a resumed run is compared with a resumed run).
    let reference = dir.path().join("reference");
    ok(&strs(&args(&reference, "1")));
    let mut more = args(&reference, "2");
    more.push("--resume".into());
    ok(&strs(&more));

    let run = dir.path().join("blocked");
    ok(&strs(&args(&run, "1")));
    std::fs::write(run.join("checkpoints/.2.tmp"), b"in the way").unwrap();
    let mut resume = args(&run, "2");
    resume.push("--resume".into());
    let err = common::fails(&strs(&resume));
    assert!(
        err.contains("could not write the checkpoint of epoch 2")
            && err.contains(".2.tmp")
            && err.contains("the checkpoint of epoch 1 is intact"),
        "{err}"
    );
    // The previous checkpoint is whole: it evaluates, and resumes once the cause is gone.
    let text = ok(&["eval", "--run", run.to_str().unwrap()]);
    assert!(text.contains("| 2 | L2 |"), "{text}");
    std::fs::remove_file(run.join("checkpoints/.2.tmp")).unwrap();
    ok(&strs(&resume));
    assert!(
        std::fs::read(run.join("model.bpk")).unwrap() == std::fs::read(reference.join("model.bpk")).unwrap()
    );
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
