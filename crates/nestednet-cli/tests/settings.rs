//! Settings from files and flags, runs repeated from their own `config.json`, and data of
//! other shapes and formats, through the real binary.

mod common;

use std::path::Path;

use common::{fails, ok, repo};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every level's test loss and accuracy, and every epoch's training losses: equal only if
/// the runs computed the same thing.
fn fingerprint(run: &Path) -> (serde_json::Value, serde_json::Value) {
    let report = json(&run.join("report.json"));
    let levels: Vec<_> = report["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["loss"].clone(), l["correct"].clone()))
        .collect();
    let history = json(&run.join("checkpoint.json"))["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["train_loss"].clone())
        .collect::<Vec<_>>();
    (serde_json::json!(levels), serde_json::json!(history))
}

#[test]
fn a_config_file_and_flags_and_a_run_repeated_from_its_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("data/mnist10k");
    let file = dir.path().join("run.toml");
    std::fs::write(
        &file,
        format!(
            "model = \"mnist-cnn\"\ndata_dir = \"{}\"\nlevels = \"0.5,1\"\nepochs = 3\nbatch_size = 32\ntrain_limit = 256\noptimizer = \"sgd\"\nlr = 0.05\nlr_schedule = \"cosine\"\nseed = 9\n",
            data.display()
        ),
    )
    .unwrap();
    let first = dir.path().join("first");
    // The flag wins over the file's 3 epochs.
    let text =
        ok(&["train", "--config", file.to_str().unwrap(), "--epochs", "1", "--out", first.to_str().unwrap()]);
    assert!(text.contains("2 levels of mnist-cnn"), "{text}");
    let recorded = json(&first.join("config.json"))["settings"].clone();
    assert_eq!((recorded["epochs"].clone(), recorded["lr"].clone()), (1.into(), 0.05.into()));
    assert_eq!(recorded["task"], "compression");
    // The run's own config.json, given back with another folder, repeats it exactly.
    let second = dir.path().join("second");
    let config = first.join("config.json");
    ok(&["train", "--config", config.to_str().unwrap(), "--out", second.to_str().unwrap()]);
    assert_eq!(fingerprint(&first), fingerprint(&second));
    assert_eq!(json(&second.join("config.json"))["settings"], recorded);

    // Resuming with other settings names them; more epochs are fine.
    let err = fails(&["train", "--out", first.to_str().unwrap(), "--resume", "--lr", "0.5", "--seed", "9"]);
    assert!(err.contains("--lr") && !err.contains("--seed"), "{err}");
    let text = ok(&["train", "--out", first.to_str().unwrap(), "--resume", "--epochs", "2"]);
    assert!(text.contains("resuming after epoch 1 of 2"), "{text}");
    // A typo in a file, and a run folder that is not one, are named.
    std::fs::write(&file, "epoch = 3\n").unwrap();
    let err = fails(&[
        "train",
        "--config",
        file.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(err.contains("run.toml") && err.contains("epoch"), "{err}");
}

#[test]
fn eight_by_eight_digits_train_with_no_shape_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("data/digits8x8");
    let run = dir.path().join("d8");
    let text =
        ok(&["train", "--data-dir", data.to_str().unwrap(), "--out", run.to_str().unwrap(), "--epochs", "1"]);
    assert!(text.contains("3 levels of mnist-cnn") && text.contains("1437 train / 360 test"), "{text}");
    let config = json(&run.join("config.json"));
    assert_eq!((config["model"]["height"].clone(), config["model"]["width"].clone()), (8.into(), 8.into()));
    // eval finds the data the run recorded.
    let text = ok(&["eval", "--run", run.to_str().unwrap()]);
    assert!(text.contains("| 2 | L2 |") && text.contains("/360 |"), "{text}");
    // A residual network that fits 8x8 trains; one that does not is a clear error.
    let resnet = dir.path().join("resnet");
    ok(&[
        "train",
        "--task",
        "distillation",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        resnet.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    let err = fails(&[
        "train",
        "--model",
        "resnet-18",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("r18").to_str().unwrap(),
    ]);
    assert!(err.contains("resnet-18 cannot take images of 1x8x8") && err.contains("32x32"), "{err}");
}

#[test]
fn an_image_folder_trains_resized_and_normalised_on_its_own_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shapes");
    // Two classes: bright top half, bright bottom half; 16x20 images resized to 12x12.
    for (class, top) in [("bottom", false), ("top", true)] {
        for split in ["train", "test"] {
            for i in 0..12 {
                let path = data.join(split).join(class).join(format!("{i}.png"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let image = image::GrayImage::from_fn(20, 16, |_, y| {
                    let bright = (y < 8) == top;
                    image::Luma([if bright { 200 + i as u8 } else { 20 + i as u8 }])
                });
                image.save(&path).unwrap();
            }
        }
    }
    let run = dir.path().join("run");
    let args = [
        "train",
        "--dataset",
        "image-folder",
        "--data-dir",
        data.to_str().unwrap(),
        "--image-size",
        "12",
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "3",
        "--levels",
        "0.5,1",
    ];
    let text = ok(&args);
    assert!(text.contains("2 levels of mnist-cnn") && text.contains("24 train / 24 test"), "{text}");
    let report = json(&run.join("report.json"));
    for level in report["levels"].as_array().unwrap() {
        assert!(level["accuracy"].as_f64().unwrap() > 0.9, "{level}");
    }
    assert_eq!(json(&run.join("config.json"))["settings"]["image_size"], "12x12");
    ok(&["eval", "--run", run.to_str().unwrap()]);
    let err = fails(&[
        "train",
        "--dataset",
        "image-folder",
        "--data-dir",
        dir.path().join("none").to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(err.contains("none/train"), "{err}");
}
