//! Default recipes: each model trains with its own unless flags or a config file override a
//! part, the run records which one, `--help` and `inspect` show them, and a validation split
//! replaces the test set.

mod common;

use std::path::Path;

use common::{fails, mnist_dir, ok};

fn settings(run: &Path) -> serde_json::Value {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    config["settings"].clone()
}

/// `nestednet train ARGS --data-dir mnist10k --out RUN --max-steps 1`: the settings it recorded.
fn one_step(run: &Path, args: &[&str]) -> serde_json::Value {
    let data = mnist_dir();
    let mut all = vec![
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--max-steps",
        "1",
    ];
    all.extend_from_slice(args);
    let text = ok(&all);
    assert!(text.contains("recipe "), "{text}");
    settings(run)
}

fn recipe_part(s: &serde_json::Value) -> serde_json::Value {
    serde_json::json!([
        s["recipe"],
        s["optimizer"],
        s["lr"],
        s["momentum"],
        s["weight_decay"],
        s["lr_schedule"],
        s["batch_size"],
        s["epochs"],
        s["augment"]
    ])
}

#[test]
fn each_model_trains_with_its_recipe_and_flags_override_parts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // mnist-resnet: its own recipe, every part recorded.
    let s = one_step(&d.join("resnet"), &["--model", "mnist-resnet", "--widths", "0.5,1", "--depths", "1,2"]);
    assert_eq!(
        recipe_part(&s),
        serde_json::json!(["mnist-resnet", "sgd", 0.3, 0.9, 0.0005, "cosine", 32, 5, "usual"]),
        "{s}"
    );
    // One flag overrides its part only.
    let s = one_step(&d.join("resnet-lr"), &["--model", "mnist-resnet", "--lr", "0.05", "--epochs", "1"]);
    assert_eq!(
        recipe_part(&s),
        serde_json::json!(["mnist-resnet", "sgd", 0.05, 0.9, 0.0005, "cosine", 32, 1, "usual"]),
        "{s}"
    );
    // Another optimizer than the recipe's takes that optimizer's own defaults, not a learning
    // rate tuned for SGD.
    let s = one_step(&d.join("resnet-adam"), &["--model", "mnist-resnet", "--optimizer", "adam"]);
    assert_eq!(
        (s["optimizer"].clone(), s["lr"].clone(), s["weight_decay"].clone()),
        ("adam".into(), 0.001.into(), 0.0.into())
    );
    // mnist-cnn's recipe differs from mnist-resnet's; another model's recipe can be asked for.
    let s = one_step(&d.join("cnn"), &[]);
    assert_eq!(s["recipe"], "mnist-cnn");
    assert_ne!(recipe_part(&s), recipe_part(&settings(&d.join("resnet"))));
    let s = one_step(&d.join("plain"), &["--recipe", "plain", "--augment", "crop"]);
    assert_eq!(
        recipe_part(&s),
        serde_json::json!(["plain", "adam", 0.001, null, 0.0, "constant", 64, 2, "crop"]),
        "{s}"
    );
    // inspect says which recipe the run used.
    let text = ok(&["inspect", "--run", d.join("resnet").to_str().unwrap()]);
    assert!(text.contains("recipe: mnist-resnet: sgd lr 0.3 momentum 0.9"), "{text}");
    // An unknown recipe names the known ones.
    let data = mnist_dir();
    let err = fails(&[
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        d.join("x").to_str().unwrap(),
        "--recipe",
        "fast",
    ]);
    assert!(
        err.contains("unknown recipe `fast`") && err.contains("mnist-resnet") && err.contains("cifar-resnet"),
        "{err}"
    );
    assert!(!d.join("x").join("config.json").exists());
}

#[test]
fn help_lists_every_recipe_with_its_values_and_origin() {
    let text = ok(&["train", "--help"]);
    for needle in [
        "plain:",
        "mnist-cnn:",
        "mnist-resnet:",
        "cifar-resnet:",
        "sgd lr 0.3",
        "chosen by: validation split",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

#[test]
fn a_validation_split_replaces_the_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = mnist_dir();
    let run = dir.path().join("v");
    let text = ok(&[
        "train",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--validation-split",
        "0.125",
        "--train-limit",
        "256",
        "--epochs",
        "1",
    ]);
    // 8,000 training images: the last 1,000 are the evaluation set (of the 7,000 left, the
    // first 256 train), the test set (2,000) is unused.
    assert!(text.contains("256 train / 1000 test") && text.contains("not on the test set"), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["levels"][0]["total"], 1000);
    for bad in ["0", "1", "1.5"] {
        let err = fails(&[
            "train",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            dir.path().join("bad").to_str().unwrap(),
            "--validation-split",
            bad,
        ]);
        assert!(err.contains("validation split"), "{err}");
    }
}

/// The case the issue on failed runs reported: a run that diverges before its first completed
/// epoch (`--lr 1e6`) leaves a folder that a corrected retry may reuse, and `--resume` with the
/// corrected rate is an error naming it instead of silently diverging again with the stored one.
#[test]
fn a_diverged_run_does_not_block_the_corrected_retry() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::repo().join("data/digits8x8");
    let run = dir.path().join("r");
    let (data, run) = (data.to_str().unwrap(), run.to_str().unwrap());
    let base = ["train", "--data-dir", data, "--out", run, "--epochs", "1", "--optimizer", "sgd"];
    let err = fails(&[&base[..], &["--lr", "1e6"]].concat());
    assert!(err.contains("diverged") && err.contains("lower the learning rate"), "{err}");
    let err = fails(&["train", "--out", run, "--resume", "--lr", "0.01"]);
    assert!(err.contains("--lr"), "{err}");
    let text = ok(&[&base[..], &["--lr", "0.01"]].concat());
    assert!(text.contains("run folder"), "{text}");
}
