//! The paper's four set-ups (`configs/table{1,2,3,4}-*.toml`), each accepted and started by
//! the real binary on generated data of the right shape, and stopped after one step.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::repo;

/// Runs `nestednet train --config CONFIG ARGS --max-steps 1 --train-limit 2` and returns its
/// output, failing the test if it failed.
fn one_step(config: &str, args: &[&str]) -> String {
    let config = repo().join("configs").join(config);
    let out = Command::new(env!("CARGO_BIN_EXE_nestednet"))
        .args(["train", "--config", config.to_str().unwrap(), "--max-steps", "1", "--train-limit", "2"])
        .args(args)
        .output()
        .expect("nestednet runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{config:?} failed:\n{text}");
    assert!(
        text.contains("stopped after 1 step(s)") && text.contains("stopped early (--max-steps)"),
        "{text}"
    );
    text
}

/// CIFAR-10 binary files (label byte + 3,072 pixel bytes per record).
fn cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let records = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| std::iter::once((i % 10) as u8).chain((0..3072).map(move |p| (p * 7 + i) as u8)))
            .collect()
    };
    for i in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), records(10)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), records(10)).unwrap();
}

/// CIFAR-100 binary files (coarse byte, fine byte, pixels), every fine class once in training
/// under its published super-class.
fn cifar100(dir: &Path) {
    use nestednet::heads::CIFAR100_COARSE_OF_FINE;
    std::fs::create_dir_all(dir).unwrap();
    let records = |fine: std::ops::Range<usize>| -> Vec<u8> {
        fine.flat_map(|f| {
            [CIFAR100_COARSE_OF_FINE[f] as u8, f as u8]
                .into_iter()
                .chain((0..3072).map(move |p| (p + f) as u8))
        })
        .collect()
    };
    std::fs::write(dir.join("train.bin"), records(0..100)).unwrap();
    std::fs::write(dir.join("test.bin"), records(0..20)).unwrap();
}

/// A folder of 100 classes (one tiny image each, training and test) and a 3-depth hierarchy
/// over them, as the paper's ImageNet subset: 11 groups (class `c` in group `c % 11`) under 4
/// kingdoms (group `g` in kingdom `g % 4`).
fn image_folder(dir: &Path) -> PathBuf {
    let mut classes = Vec::new();
    for c in 0..100 {
        let name = format!("c{c:03}");
        for split in ["train", "test"] {
            let path = dir.join(split).join(&name).join("0.png");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            image::RgbImage::from_pixel(12, 12, image::Rgb([c as u8, 2 * c as u8, 255 - c as u8]))
                .save(&path)
                .unwrap();
        }
        classes.push(format!(r#"{{"name": "{name}", "path": ["k{}", "g{}"]}}"#, (c % 11) % 4, c % 11));
    }
    let file = dir.join("hierarchy.json");
    let json = format!(r#"{{"depths": ["kingdom", "group", "class"], "classes": [{}]}}"#, classes.join(", "));
    std::fs::write(&file, json).unwrap();
    file
}

#[test]
fn table1_resnet56_with_learned_masks_on_cifar10() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar-10-batches-bin");
    cifar10(&data);
    let out = dir.path().join("run");
    let text = one_step(
        "table1-resnet56-cifar10.toml",
        &["--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()],
    );
    assert!(
        text.contains("3 levels of resnet-56") && text.contains("weights, densities 0.3333,0.5,1"),
        "{text}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let masked = config["training"]["masking"]["masked_layers"].as_array().unwrap();
    // Every convolution of the blocks, not the stem nor the classifier.
    assert_eq!(masked.len(), 54, "{masked:?}");
    assert!(!masked.iter().any(|l| l == "stem" || l == "fc"));
}

#[test]
fn table2_wrn32_4_lattice_on_cifar100() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar-100-binary");
    cifar100(&data);
    let out = dir.path().join("run");
    let text = one_step(
        "table2-wrn32-4-cifar100.toml",
        &["--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()],
    );
    assert!(text.contains("4 levels of wrn-32-4 (w0.25-d2,w0.25-d5,w1-d2,w1-d5"), "{text}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["unnested_first_conv"], true);
    assert_eq!(config["model"]["unnested_output"], true);
}

#[test]
fn table3_wrn32_4_super_classes_at_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar-100-binary");
    cifar100(&data);
    let out = dir.path().join("run");
    let text = one_step(
        "table3-wrn32-4-cifar100-hierarchy.toml",
        &["--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()],
    );
    assert!(text.contains("2 levels of wrn-32-4"), "{text}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["level_classes"], serde_json::json!([20, 100]));
}

#[test]
fn table4_resnet18_three_granularities_on_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("imagenet100");
    let hierarchy = image_folder(&data);
    let out = dir.path().join("run");
    let text = one_step(
        "table4-resnet18-imagenet100.toml",
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--hierarchy",
            hierarchy.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(text.contains("3 levels of resnet-18"), "{text}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["level_classes"], serde_json::json!([4, 11, 100]));
    assert_eq!(config["model"]["image_size"], 224);
}
