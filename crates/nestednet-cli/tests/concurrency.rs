//! Two processes training into one folder: the second refuses with a clear error; killing the
//! first (SIGKILL, no clean-up) does not block the retry.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails, mnist_dir, ok};

#[test]
fn a_second_run_into_a_busy_folder_refuses_and_a_killed_one_does_not_block_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("busy");
    let (run_s, data) = (run.to_str().unwrap().to_string(), mnist_dir());
    let data_s = data.to_str().unwrap().to_string();
    let args = ["train", "--data-dir", &data_s, "--out", &run_s, "--epochs", "50"];
    let mut first = Command::new(env!("CARGO_BIN_EXE_nestednet"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first run holds the folder once its configuration is written.
    let start = Instant::now();
    while !run.join("config.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "the first run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = fails(&args);
    assert!(
        err.contains("busy") && err.contains("in use") && err.contains("another nestednet process"),
        "{err}"
    );
    let err = fails(&["train", "--out", &run_s, "--resume", "--epochs", "1"]);
    assert!(err.contains("in use"), "{err}");
    // Killed without any chance to clean up: the lock goes with the process.
    first.kill().unwrap();
    first.wait().unwrap();
    // The retry: a fresh start if no epoch had completed, else a resume for one more epoch.
    let text = match std::fs::read(run.join("checkpoint.json")) {
        Err(_) => {
            ok(&["train", "--data-dir", &data_s, "--out", &run_s, "--train-limit", "128", "--epochs", "1"])
        }
        Ok(bytes) => {
            let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let more = (state["epochs_completed"].as_u64().unwrap() + 1).to_string();
            ok(&["train", "--out", &run_s, "--resume", "--epochs", &more])
        }
    };
    assert!(text.contains("run folder"), "{text}");
}
