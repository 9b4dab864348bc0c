//! Identical runs give byte-identical artifacts: checkpoints, optimizer states, the final model,
//! the consensus layer, exports in every format, and reports and histories once their timings
//! are removed.

mod common;

use std::path::Path;

use common::{ok, repo};

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A JSON file with every key that holds a timing removed.
fn without_timings(path: &Path) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|key, _| !(key.contains("seconds") || key.starts_with("latency")));
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    strip(&mut value);
    value
}

#[test]
fn identical_runs_write_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // The 8x8 digits: small enough for the report (latencies, consensus) to be quick.
    let data = repo().join("data/digits8x8");
    let runs = [dir.path().join("a"), dir.path().join("b")];
    for run in &runs {
        let run_s = run.to_str().unwrap();
        ok(&[
            "train",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            run_s,
            "--method",
            "weights",
            "--densities",
            "0.5,1",
            "--epochs",
            "1",
        ]);
        for format in ["burnpack", "safetensors", "sparse"] {
            let out = run.join(format!("export-L0.{format}"));
            ok(&[
                "export",
                "--run",
                run_s,
                "--level",
                "0",
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
            ]);
        }
    }
    let names = files(&runs[0]);
    assert_eq!(names, files(&runs[1]));
    for must in ["model.bpk", "consensus.bpk", "export-L0.safetensors", "export-L0.sparse", "report.json"] {
        assert!(names.iter().any(|n| n == must), "{must} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with("optimizer.bpk")), "{names:?}");
    for name in &names {
        let (a, b) = (runs[0].join(name), runs[1].join(name));
        if name.ends_with("report.json") || name.ends_with("checkpoint.json") {
            assert_eq!(without_timings(&a), without_timings(&b), "{name} differs beyond its timings");
        } else {
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{name} differs between identical runs"
            );
        }
    }
}
