//! Running the real `nestednet` binary from the CLI tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The vendored real MNIST.
pub fn mnist_dir() -> PathBuf {
    repo().join("data/mnist10k")
}

/// Runs `nestednet ARGS`.
pub fn nestednet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nestednet")).args(args).output().expect("nestednet runs")
}

/// Runs `nestednet ARGS`, which must succeed; its stdout and stderr.
pub fn ok(args: &[&str]) -> String {
    let out = nestednet(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nestednet {args:?} failed:\n{text}");
    text
}

/// Runs `nestednet ARGS`, which must fail with an error and not a panic; its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = nestednet(args);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "nestednet {args:?} should fail");
    assert!(!text.contains("panicked"), "nestednet {args:?} panicked:\n{text}");
    text
}
