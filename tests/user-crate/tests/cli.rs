//! This crate's own `nestednet` binary: its `tiny-mlp` family trains, evaluates, exports,
//! selects, searches and inspects as the built-in families do, and the built-in ones are still
//! there.

use std::path::{Path, PathBuf};
use std::process::Command;

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits8x8")
}

/// Runs the binary with `args`; its standard output, or a panic with everything it printed.
fn ok(args: &[&str]) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_user-nestednet")).args(args).output().expect("the binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "user-nestednet {}:\n{text}", args.join(" "));
    text
}

#[test]
fn a_family_of_the_users_crate_gets_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("mlp");
    let (run_s, data) = (run.to_str().unwrap(), digits());
    let text = ok(&[
        "train",
        "--model",
        "tiny-mlp",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        run_s,
        "--mix-training",
        "1",
    ]);
    assert!(text.contains("recipe tiny-mlp:") && text.contains("| level |"), "{text}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["family"], "tiny-mlp");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 3);
    for l in levels {
        assert!(l["accuracy"].as_f64().unwrap() > 0.5, "{l}");
        assert_eq!(l["widths"].as_array().unwrap().len(), 2, "the widths column: {l}");
    }
    assert!(report["consensus"].as_array().is_some_and(|c| !c.is_empty()));

    let text = ok(&["eval", "--run", run_s, "--early-exit", "0.9"]);
    assert!(text.contains("| level |") && text.contains("early exit at 0.9"), "{text}");
    let core = dir.path().join("core.safetensors");
    let text = ok(&["export", "--run", run_s, "--level", "0", "--out", core.to_str().unwrap()]);
    assert!(text.contains("verified") && core.is_file(), "{text}");
    let text = ok(&["search", "--run", run_s, "--calibration-batches", "2"]);
    assert!(text.contains("mix-") && run.join("search/front.json").is_file(), "{text}");
    let text = ok(&["select", "--run", run_s, "--budget", "macs=3000", "--json"]);
    let chosen: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(chosen["macs"].as_f64().unwrap() <= 3000.0, "{chosen}");
    let text = ok(&["inspect", "--run", run_s]);
    assert!(text.contains("model: tiny-mlp, 3 levels") && text.contains("recipe: tiny-mlp"), "{text}");
    // The built-in families are still there, and the help lists this family's recipe.
    assert!(ok(&["train", "--help"]).contains("tiny-mlp: tiny-mlp on small images"));
    let cnn = dir.path().join("cnn");
    let text = ok(&[
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        cnn.to_str().unwrap(),
        "--max-steps",
        "1",
    ]);
    assert!(text.contains("recipe mnist-cnn"), "{text}");
}
