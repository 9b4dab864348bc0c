//! The transformers from the command line on the vendored Brown corpus (`data/brown`): the byte
//! language model (bits per byte, export, Mix'n'Match by bits per byte) and coarse-to-fine
//! genre classification, each on a few training windows and a small validation split of the
//! training documents so that a debug build runs them in seconds; and the configs of
//! `configs/` for the ViT and the text models, each started for one step.

mod common;

use common::{fails, ok, repo};

fn brown() -> String {
    repo().join("data/brown").display().to_string()
}

#[test]
fn help_lists_the_transformers_and_the_text_data() {
    let text = ok(&["train", "--help"]);
    for name in ["vit-tiny", "text-tiny", "lm-tiny", "text-folder", "text-corpus"] {
        assert!(text.contains(name), "`train --help` does not name {name}:\n{text}");
    }
}

#[test]
fn a_byte_language_model_trains_on_brown_and_reports_searches_and_exports_by_bits_per_byte() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("lm");
    let run_s = run.to_str().unwrap();
    let brown = brown();
    let text = ok(&[
        "train",
        "--model",
        "lm-tiny",
        "--data-dir",
        &brown,
        "--context",
        "16",
        "--levels",
        "0.5,1",
        "--train-limit",
        "512",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--validation-split",
        "0.005",
        "--out",
        run_s,
    ]);
    assert!(text.contains("bits/byte"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for level in levels {
        // Uniform guesses cost log2(257) = 8.0 bits per byte; 32 steps learn at least the
        // bytes' frequencies (English text's are worth about 4.5 bits).
        let bits = level["bits_per_byte"].as_f64().expect("a language model's level has bits per byte");
        assert!(bits > 1.0 && bits < 7.0, "{level}");
    }

    let text = ok(&["eval", "--run", run_s]);
    assert!(text.contains("bits/target"), "{text}");
    let err = fails(&["eval", "--run", run_s, "--early-exit", "0.9"]);
    assert!(err.contains("early exit") || err.contains("per position"), "{err}");
    let err = fails(&["eval", "--run", run_s, "--data-dir", repo().join("data/mnist10k").to_str().unwrap()]);
    assert!(err.contains("mnist10k"), "image files given to a language model: {err}");

    let export = dir.path().join("core.safetensors");
    let text = ok(&["export", "--run", run_s, "--level", "0", "--out", export.to_str().unwrap()]);
    assert!(text.contains("verified"), "{text}");

    let text = ok(&[
        "search",
        "--run",
        run_s,
        "--exhaustive-limit",
        "0",
        "--population",
        "2",
        "--generations",
        "1",
        "--calibration-batches",
        "1",
        "--calibration-batch-size",
        "4",
    ]);
    assert!(text.contains("Pareto front of bits per byte vs MACs") && text.contains("bits/byte |"), "{text}");
    // `select` ranks a language model's candidates by bits per byte too.
    let text = ok(&["select", "--run", run_s, "--budget", "macs=1e12"]);
    assert!(text.contains("bits/byte"), "{text}");
    let err = fails(&["search", "--run", run_s, "--objective", "accuracy"]);
    assert!(err.contains("bits per byte"), "{err}");
}

#[test]
fn brown_genres_train_coarse_to_fine_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("genres");
    let text = ok(&[
        "train",
        "--model",
        "text-tiny",
        "--task",
        "hierarchy",
        "--dataset",
        "text-folder",
        "--data-dir",
        &brown(),
        "--context",
        "32",
        "--train-limit",
        "64",
        "--epochs",
        "1",
        "--validation-split",
        "0.05",
        "--out",
        run.to_str().unwrap(),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let classes: Vec<u64> =
        report["levels"].as_array().unwrap().iter().map(|l| l["classes"].as_u64().unwrap()).collect();
    assert_eq!(classes, [2, 15], "informative/imaginative prose, then the 15 genres:\n{text}");
}

#[test]
fn the_transformer_configs_start_on_the_vendored_data() {
    let dir = tempfile::tempdir().unwrap();
    for config in ["vit-tiny-mnist10k.toml", "lm-tiny-brown.toml", "text-tiny-brown-genres.toml"] {
        let path = repo().join("configs").join(config);
        let out_dir = dir.path().join(config);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nestednet"))
            .current_dir(repo())
            .args(["train", "--config", path.to_str().unwrap(), "--max-steps", "1", "--train-limit", "2"])
            .arg("--out")
            .arg(&out_dir)
            .output()
            .expect("nestednet runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("stopped after 1 step(s)"), "{config}:\n{text}");
    }
}

/// A small generated text folder: 3 classes of 2 training and 1 test documents, each class's
/// text drawn from its own letters.
fn small_text_folder(dir: &std::path::Path) -> String {
    for (c, letters) in ["abc", "lmn", "xyz"].iter().enumerate() {
        for (split, docs) in [("train", 2), ("test", 1)] {
            let folder = dir.join(split).join(format!("class-{c}"));
            std::fs::create_dir_all(&folder).unwrap();
            for d in 0..docs {
                let text: String = (0..400)
                    .map(|i| if i % 6 == 5 { ' ' } else { letters.as_bytes()[(i * 7 + d) % 3] as char })
                    .collect();
                std::fs::write(folder.join(format!("{d}.txt")), text).unwrap();
            }
        }
    }
    dir.display().to_string()
}

/// The tasks beyond plain nesting, each on the text transformer: learned nested weight masks on
/// its attention and feed-forward weights (sparse export), in-place distillation, distillation
/// from a teacher run, a run killed while it writes a checkpoint and resumed to the same bytes
/// as the uninterrupted one, and `select`.
#[test]
fn masks_distillation_kills_and_select_work_on_a_text_transformer() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_text_folder(&dir.path().join("data"));
    let run = |name: &str| dir.path().join(name).display().to_string();
    let base = ["--model", "text-tiny", "--dataset", "text-folder", "--data-dir", &data, "--context", "16"];
    let train = |extra: &[&str]| ok(&[&["train"][..], &base[..], extra].concat());

    let masked = run("masked");
    let text = train(&["--method", "weights", "--densities", "0.5,1", "--epochs", "1", "--out", &masked]);
    assert!(text.contains("total density"), "{text}");
    let text = ok(&["inspect", "--run", &masked]);
    for layer in ["attention.query", "feed_forward.inner"] {
        assert!(text.contains(layer), "inspect lists no density of {layer}:\n{text}");
    }
    let sparse = dir.path().join("core.sparse.safetensors");
    assert!(
        ok(&["export", "--run", &masked, "--level", "0", "--out", sparse.to_str().unwrap()])
            .contains("verified")
    );

    let teacher = run("teacher");
    train(&["--task", "distillation", "--distill", "0.5", "--epochs", "1", "--out", &teacher]);
    let student = run("student");
    train(&["--levels", "0.25,1", "--teacher", &teacher, "--epochs", "1", "--out", &student]);
    let config = std::fs::read_to_string(dir.path().join("student/config.json")).unwrap();
    assert!(config.contains("teacher_run") && config.contains("teacher"), "{config}");

    let args = ["--epochs", "3", "--batch-size", "4", "--seed", "5"];
    let reference = run("reference");
    train(&[&args[..], &["--out", &reference]].concat());
    let killed = dir.path().join("killed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nestednet"))
        .args([&["train"][..], &base[..], &args[..], &["--out", killed.to_str().unwrap()]].concat())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let checkpoints = killed.join("checkpoints");
    let writing = || {
        std::fs::read_dir(&checkpoints)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
            .unwrap_or(false)
    };
    while child.try_wait().unwrap().is_none() && !writing() {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run ended before a checkpoint was written");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("report.json").exists(), "killed while writing a checkpoint, before its report");
    train(&[&args[..], &["--out", killed.to_str().unwrap(), "--resume"]].concat());
    let weights = |run: &std::path::Path| std::fs::read(run.join("model.bpk")).unwrap();
    assert!(
        weights(&killed) == weights(std::path::Path::new(&reference)),
        "the resumed run's weights differ"
    );

    // Every level is right on every test window of this easy folder: the cheapest one is chosen.
    let text = ok(&["select", "--run", &reference, "--budget", "macs=1e12"]);
    assert!(text.contains("selected L0"), "{text}");
    let err = fails(&["select", "--run", &reference, "--budget", "macs=1e4"]);
    assert!(err.contains("no level fits"), "{err}");
}
