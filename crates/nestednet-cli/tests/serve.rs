//! `select`, `search`, `nestify` and budgets in `eval` / `export`, end to end through the binary.

mod common;

use common::{fails, ok, repo};

#[test]
fn budgets_mixes_and_nestify_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The 8x8 digits: small images keep the 27 sub-networks' evaluations quick.
    let data = repo().join("data/digits8x8");
    let data = data.to_str().unwrap();
    let run = d.join("run");
    let run_s = run.to_str().unwrap();
    let short = ["--epochs", "2", "--train-limit", "640", "--mix-training", "1"];
    let mut train = vec!["train", "--data-dir", data, "--out", run_s];
    train.extend_from_slice(&short);
    ok(&train);

    // select: a JSON line naming a level; an impossible budget names the cheapest one.
    let json = ok(&["select", "--run", run_s, "--budget", "macs=40000", "--json"]);
    let choice: serde_json::Value = serde_json::from_str(json.trim().lines().last().unwrap()).unwrap();
    assert!(choice["macs"].as_u64().unwrap() <= 40_000 && choice["level"].is_u64(), "{json}");
    assert!(choice["memory_bytes"].as_u64().unwrap() > 0, "the binary counts its allocations: {json}");
    let err = fails(&["select", "--run", run_s, "--budget", "latency-ms=0.000001"]);
    assert!(err.contains("no level fits latency-ms<=0.000001") && err.contains("the cheapest, L0"), "{err}");
    let err = fails(&["select", "--run", run_s, "--budget", "speed=3"]);
    assert!(err.contains("unknown budget `speed`"), "{err}");
    assert!(d.join("run/measurements").read_dir().unwrap().count() >= 1);

    // search: the front, its exports, then select / eval / export see the mixes.
    let text =
        ok(&["search", "--run", run_s, "--calibration-batches", "2", "--calibration-batch-size", "64"]);
    assert!(text.contains("Pareto front") && text.contains("27 points scored"), "{text}");
    let front: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/search/front.json")).unwrap()).unwrap();
    let mixes: Vec<&serde_json::Value> =
        front["front"].as_array().unwrap().iter().filter(|p| p["trained_level"].is_null()).collect();
    for p in &mixes {
        assert!(d.join("run").join(p["export"].as_str().unwrap()).is_file(), "{p}");
    }
    let out = d.join("mix.safetensors");
    let text = ok(&["export", "--run", run_s, "--mix", "2,0,1", "--out", out.to_str().unwrap()]);
    assert!(text.contains("exported sub-network mix-2-0-1") && text.contains("verified"), "{text}");
    let text = ok(&["eval", "--run", run_s, "--budget", "macs=100000"]);
    assert!(text.contains("accuracy"), "{text}");
    let out = d.join("chosen.bpk");
    let text = ok(&["export", "--run", run_s, "--budget", "macs=100000", "--out", out.to_str().unwrap()]);
    assert!(text.contains("selected") && out.is_file(), "{text}");
    let err = fails(&["export", "--run", run_s, "--mix", "2,0", "--out", out.to_str().unwrap()]);
    assert!(err.contains("one level per mixable layer"), "{err}");
    let err = fails(&["search", "--run", run_s, "--constraint", "latency-ms<=3"]);
    assert!(err.contains("depends on the serving device"), "{err}");

    // nestify: a dense one-level run, exported, nested and fine-tuned; its record beside it.
    let dense = d.join("dense");
    let mut train = vec!["train", "--data-dir", data, "--out", dense.to_str().unwrap(), "--levels", "1"];
    train.extend_from_slice(&short[..4]);
    ok(&train);
    let file = d.join("dense.safetensors");
    ok(&["export", "--run", dense.to_str().unwrap(), "--level", "0", "--out", file.to_str().unwrap()]);
    let nested = d.join("nested");
    let mut nestify = vec![
        "nestify",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        data,
        "--out",
        nested.to_str().unwrap(),
    ];
    nestify.extend_from_slice(&short[..4]);
    let text = ok(&nestify);
    assert!(text.contains("nestified") && nested.join("report.json").is_file(), "{text}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(nested.join("nestify.json")).unwrap()).unwrap();
    assert!(record["full_level_max_abs_diff"].as_f64().unwrap() <= 1e-4, "{record}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(nested.join("config.json")).unwrap()).unwrap();
    assert!(config["settings"]["init_from"].as_str().unwrap().ends_with("nestified.bpk"), "{config}");
    // A dense network of another architecture is refused with the shapes named.
    let other = d.join("other");
    let err = fails(&[
        "nestify",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        data,
        "--out",
        other.to_str().unwrap(),
        "--model",
        "mnist-resnet",
        "--max-steps",
        "1",
    ]);
    assert!(err.contains(".safetensors") || err.contains("shape"), "{err}");
}
