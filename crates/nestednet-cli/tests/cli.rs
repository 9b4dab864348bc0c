//! The `nestednet` binary end to end, on the vendored real MNIST.

mod common;

use std::process::Command;

use common::{fails, mnist_dir, ok};

#[test]
fn every_subcommand_has_help() {
    for sub in ["train", "eval", "export", "inspect"] {
        let text = ok(&[sub, "--help"]);
        assert!(text.contains("Usage: nestednet"), "{text}");
    }
    assert!(ok(&["--help"]).contains("inspect"));
}

#[test]
fn train_eval_export_inspect_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (run_s, data) = (run.to_str().unwrap(), mnist_dir());
    let text = ok(&[
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        run_s,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--levels",
        "0.25,0.5,1.0",
        "--device",
        "flex",
        "--seed",
        "3",
        "--train-limit",
        "640",
    ]);
    assert!(text.contains("| level |"), "{text}");
    for file in ["config.json", "model.bpk", "report.json", "accuracy_vs_macs.png", "checkpoint.json"] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let levels = report["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 3);
    for (k, l) in levels.iter().enumerate() {
        assert_eq!(l["level"], k);
        let acc = l["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        for key in ["params", "macs", "export_bytes"] {
            assert!(l[key].as_u64().unwrap() > 0, "{key}");
        }
        for key in ["latency_ms_b1", "latency_ms_b256"] {
            assert!(l[key].as_f64().unwrap() > 0.0, "{key}");
        }
    }
    assert!(levels[0]["macs"].as_u64().unwrap() * 10 < levels[2]["macs"].as_u64().unwrap());

    let text = ok(&[
        "eval",
        "--run",
        run_s,
        "--dataset",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--level",
        "1",
    ]);
    assert!(text.contains("| 1 |") && !text.contains("| 0 |"), "{text}");
    let text = ok(&["eval", "--run", run_s, "--data-dir", data.to_str().unwrap(), "--early-exit", "0.9"]);
    assert!(text.contains("early exit at 0.9: accuracy") && text.contains("early-exit threshold"), "{text}");
    assert!(text.contains("consensus of all levels (average)"), "{text}");
    assert!(run.join("early_exit.png").is_file());
    let err = fails(&["eval", "--run", run_s, "--data-dir", data.to_str().unwrap(), "--early-exit", "1.5"]);
    assert!(err.contains("threshold is a probability"), "{err}");

    let bpk = dir.path().join("core.bpk");
    let text = ok(&["export", "--run", run_s, "--level", "0", "--out", bpk.to_str().unwrap()]);
    assert!(text.contains("verified"), "{text}");
    assert!(bpk.is_file() && dir.path().join("core.json").is_file());
    let st = dir.path().join("full.safetensors");
    let text = ok(&[
        "export",
        "--run",
        run_s,
        "--level",
        "2",
        "--out",
        st.to_str().unwrap(),
        "--format",
        "safetensors",
    ]);
    assert!(text.contains("verified"), "{text}");

    let text = ok(&["inspect", "--run", run_s]);
    assert!(
        text.contains("conv1") && text.contains("[8, 16, 32]") && text.contains("1 of 1 epochs"),
        "{text}"
    );

    // A reader that stops early (`nestednet inspect --run r | head`) ends the command quietly,
    // not in a panic: the pipe is closed before the command has printed its first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestednet"))
        .args(["inspect", "--run", run_s])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    // Ended by SIGPIPE (or done, had it printed everything before the pipe closed).
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        const SIGPIPE: i32 = 13;
        let status = closed.status;
        assert!(status.success() || status.signal() == Some(SIGPIPE), "{status:?}: {stderr}");
    }

    // Bad inputs are clear errors.
    let err = fails(&["export", "--run", run_s, "--level", "5", "--out", bpk.to_str().unwrap()]);
    assert!(err.contains("no level `5`") && err.contains("2 (L2)"), "{err}");
    let err = fails(&["eval", "--run", run_s, "--data-dir", "/nonexistent/mnist"]);
    assert!(
        err.contains("/nonexistent/mnist/t10k-images-idx3-ubyte.gz") || err.contains("train-images"),
        "{err}"
    );
    let err = fails(&["train", "--data-dir", data.to_str().unwrap(), "--out", run_s, "--epochs", "1"]);
    assert!(err.contains("--resume"), "{err}");
}

#[test]
fn invalid_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let data = mnist_dir();
    let base = ["train", "--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--levels"];
    let err = fails(&[&base[..], &["0.5,0.25,1.0"]].concat());
    assert!(err.contains("level 1"), "{err}");
    let err = fails(&[&base[..], &["conv1=0,16,32;conv2=16,32,64;fc1=32,64,128"]].concat());
    assert!(err.contains("`conv1`, level 0"), "{err}");
    let err = fails(&[&base[..], &["0.25,0.5,1.0"], &["--device", "cuda"][..]].concat());
    assert!(err.contains("`cuda` is not compiled"), "{err}");
    let err = fails(&["train", "--data-dir", "/no/such/dir", "--out", out.to_str().unwrap()]);
    assert!(err.contains("/no/such/dir/train-images-idx3-ubyte"), "{err}");
    assert!(!out.join("model.bpk").exists());
    let err = fails(&["inspect", "--run", dir.path().join("missing").to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn compression_with_learned_masks_exports_sparse_and_inspects() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("masked");
    let (run_s, data) = (run.to_str().unwrap(), mnist_dir());
    let text = ok(&[
        "train",
        "--task",
        "compression",
        "--method",
        "weights",
        "--densities",
        "0.33,1.0",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        run_s,
        "--epochs",
        "1",
        "--train-limit",
        "256",
    ]);
    assert!(text.contains("total density") && text.contains("3.0"), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let density = report["levels"][0]["density"].as_f64().unwrap();
    assert!((density - 0.33).abs() < 0.01, "{density}");
    let sparse = dir.path().join("core.sparse.safetensors");
    let text = ok(&["export", "--run", run_s, "--level", "0", "--out", sparse.to_str().unwrap()]);
    assert!(text.contains("verified"), "{text}");
    let text = ok(&["inspect", "--run", run_s]);
    assert!(text.contains("per-layer weight density") && text.contains("sparse / dense"), "{text}");
    assert!(text.contains("binarised at tau"), "{text}");
}

#[test]
fn invalid_compression_requests_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let data = mnist_dir();
    let base = ["train", "--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let err = fails(&[&base[..], &["--thresholds", "0.5,0"]].concat());
    assert!(err.contains("needs a mask method"), "{err}");
    let err = fails(&[&base[..], &["--densities", "0.5,1.0", "--levels", "0.5,1"]].concat());
    assert!(err.contains("not both"), "{err}");
    let err = fails(&[&base[..], &["--densities", "0.5,0.9"]].concat());
    assert!(err.contains("full (last) level has density 1"), "{err}");
    let err = fails(&[&base[..], &["--method", "weights"]].concat());
    assert!(err.contains("needs --densities"), "{err}");
    let err = fails(&[&base[..], &["--method", "weights", "--densities", "0,1"]].concat());
    assert!(err.contains("density of level 0 is 0"), "{err}");
    let err = fails(&[&base[..], &["--method", "weights", "--densities", "0.5,1.5"]].concat());
    assert!(err.contains("density of level 1 is 1.5"), "{err}");
    let err = fails(&[&base[..], &["--method", "weights", "--thresholds", "0.01,0.02"]].concat());
    assert!(err.contains("thresholds must not grow"), "{err}");
    let err = fails(&[&base[..], &["--method", "pruning", "--densities", "0.5,1"]].concat());
    assert!(err.contains("'pruning'") && err.contains("channels, weights, random, magnitude"), "{err}");
    let err = fails(
        &[&base[..], &["--method", "weights", "--densities", "0.5,1", "--dense-layers", "conv9"]].concat(),
    );
    assert!(err.contains("unknown layer `conv9`"), "{err}");
    let err = fails(&[&base[..], &["--task", "segmentation"]].concat());
    assert!(err.contains("'segmentation'") && err.contains("compression, hierarchy, distillation"), "{err}");
    // Depths belong to residual networks.
    let err = fails(&[&base[..], &["--widths", "0.5,1", "--depths", "1,2"]].concat());
    assert!(err.contains("mnist-cnn has no residual blocks"), "{err}");
    let err = fails(&[&base[..], &["--levels", "0.5,1", "--widths", "0.5,1"]].concat());
    assert!(err.contains("either as --levels or as --widths"), "{err}");
    let err = fails(&[&base[..], &["--model", "resnet-18"]].concat());
    assert!(err.contains("resnet-18 cannot take images of 1x28x28"), "{err}");
    let err = fails(&[&base[..], &["--temperature", "2"]].concat());
    assert!(err.contains("--temperature needs --distill"), "{err}");
    let distil = [&base[..], &["--task", "distillation"]].concat();
    let err = fails(&[&distil[..], &["--model", "vgg-16"]].concat());
    assert!(err.contains("unknown model `vgg-16`"), "{err}");
    let err = fails(&[&distil[..], &["--widths", "0.5,1", "--depths", "1,3"]].concat());
    assert!(err.contains("network's 2 blocks per stage"), "{err}");
    let err = fails(&[&distil[..], &["--depths", "1,2", "--pairs", "w1-d1"]].concat());
    assert!(err.contains("full level w1-d2"), "{err}");
    let err = fails(&[&base[..], &["--hierarchy", "h.csv"]].concat());
    assert!(err.contains("--hierarchy needs --task hierarchy"), "{err}");
    assert!(!out.join("model.bpk").exists());
}

#[test]
fn hierarchy_task_trains_coarse_and_fine_levels() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("h");
    let (run_s, data) = (run.to_str().unwrap(), mnist_dir());
    let data_s = data.to_str().unwrap();
    ok(&[
        "train",
        "--task",
        "hierarchy",
        "--data-dir",
        data_s,
        "--out",
        run_s,
        "--epochs",
        "1",
        "--train-limit",
        "256",
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["levels"][0]["classes"], 3);
    assert_eq!(report["levels"][1]["classes"], 10);
    let methods: Vec<&str> =
        report["consensus"].as_array().unwrap().iter().map(|c| c[0].as_str().unwrap()).collect();
    assert_eq!(methods, ["average", "learned"]);
    assert!(run.join("consensus.bpk").is_file());
    let text = ok(&["eval", "--run", run_s, "--data-dir", data_s]);
    assert!(text.contains("| 1 |") && text.contains("consensus of all levels (learned)"), "{text}");
    assert!(text.contains("mistake severity"), "{text}");
    for method in ["average", "learned"] {
        let out = dir.path().join(format!("consensus-{method}"));
        let text = ok(&["export", "--run", run_s, "--consensus", method, "--out", out.to_str().unwrap()]);
        assert!(text.contains("verified: same predictions"), "{text}");
        assert!(out.join("level0.safetensors").is_file() && out.join("consensus.json").is_file());
    }
    assert!(dir.path().join("consensus-learned/consensus.safetensors").is_file());
    // Early exit needs levels of the same classes: a clear error here.
    let err = fails(&["eval", "--run", run_s, "--data-dir", data_s, "--early-exit", "0.9"]);
    assert!(err.contains("early exit needs every level to predict the same classes"), "{err}");
    // A hierarchy file that does not fit the data set, and one that is malformed.
    let file = dir.path().join("h.csv");
    std::fs::write(&file, "label,kind,digit\n0,a,zero\n1,b,one\n").unwrap();
    let base = ["train", "--task", "hierarchy", "--data-dir", data_s, "--out"];
    let out = dir.path().join("bad");
    let err = fails(&[&base[..], &[out.to_str().unwrap(), "--hierarchy", file.to_str().unwrap()]].concat());
    assert!(err.contains("2 fine classes but the data set has 10"), "{err}");
    std::fs::write(&file, "label,kind,digit\n0,a,zero\n0,b,one\n").unwrap();
    let err = fails(&[&base[..], &[out.to_str().unwrap(), "--hierarchy", file.to_str().unwrap()]].concat());
    assert!(err.contains("h.csv") && err.contains("mapped twice"), "{err}");
}

/// `--task distillation`: a residual lattice trained with in-place distillation, its levels
/// addressed by name in eval, export and inspect.
#[test]
fn a_residual_lattice_trains_and_its_levels_go_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("lattice");
    let (run_s, data) = (run.to_str().unwrap(), mnist_dir());
    let data = data.to_str().unwrap();
    let text = ok(&[
        "train",
        "--task",
        "distillation",
        "--model",
        "mnist-resnet",
        "--widths",
        "0.5,1",
        "--depths",
        "1,2",
        "--distill",
        "0.5",
        "--data-dir",
        data,
        "--out",
        run_s,
        "--epochs",
        "1",
        "--train-limit",
        "256",
    ]);
    assert!(text.contains("w0.5-d1") && text.contains("w1-d2"), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let names: Vec<&str> =
        report["levels"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["w0.5-d1", "w0.5-d2", "w1-d1", "w1-d2"]);
    assert_eq!(report["model"], "mnist-resnet");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["training"]["distillation"]["alpha"], 0.5);

    let text = ok(&["eval", "--run", run_s, "--data-dir", data, "--level", "w1-d1"]);
    assert!(text.contains("| 2 |") && !text.contains("| 3 |"), "{text}");
    let bpk = dir.path().join("w05d2.bpk");
    let text = ok(&["export", "--run", run_s, "--level", "0.5,2", "--out", bpk.to_str().unwrap()]);
    assert!(text.contains("exported level 1 (w0.5-d2") && text.contains("verified"), "{text}");
    let err = fails(&["export", "--run", run_s, "--level", "w0.25-d1", "--out", bpk.to_str().unwrap()]);
    assert!(err.contains("no level `w0.25-d1`") && err.contains("w0.5-d1, w0.5-d2, w1-d1, w1-d2"), "{err}");
    // Residual levels export to safetensors too (torchvision's names), dense and sparse.
    for file in ["c.safetensors", "c.sparse.safetensors"] {
        let text =
            ok(&["export", "--run", run_s, "--level", "0", "--out", dir.path().join(file).to_str().unwrap()]);
        assert!(text.contains("verified"), "{text}");
    }
    let text = ok(&["inspect", "--run", run_s]);
    assert!(text.contains("model: mnist-resnet, 4 levels (w0.5-d1,w0.5-d2,w1-d1,w1-d2)"), "{text}");
    // The consensus of the lattice's levels exports and verifies on reload.
    let consensus = dir.path().join("consensus");
    let text =
        ok(&["export", "--run", run_s, "--consensus", "learned", "--out", consensus.to_str().unwrap()]);
    assert!(text.contains("level0..3.safetensors") && text.contains("verified"), "{text}");
    assert!(consensus.join("level3.safetensors").is_file() && consensus.join("consensus.json").is_file());
}

/// `BURN_DEVICE` picks the backend when `--device` is absent; a bad one is named.
#[test]
fn burn_device_chooses_the_backend() {
    let run = |value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_nestednet"))
            .args(["eval", "--run", "/nonexistent/run", "--data-dir", "/nonexistent/data"])
            .env("BURN_DEVICE", value)
            .output()
            .expect("nestednet runs");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run("bogus");
    assert!(err.contains("BURN_DEVICE") && err.contains("unknown backend `bogus`"), "{err}");
    // A compiled backend gets past the device choice to the missing run folder.
    let err = run("flex");
    assert!(err.contains("/nonexistent/run") && !err.contains("BURN_DEVICE"), "{err}");
    if !cfg!(feature = "cuda") {
        let err = run("cuda");
        assert!(err.contains("BURN_DEVICE=cuda") && err.contains("--features cuda"), "{err}");
    }
    // A device list with an unknown or an uncompiled backend is named before any data is read.
    let train_with = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nestednet"))
            .args(["train", "--data-dir", "/nonexistent/data", "--out", "/nonexistent/out"])
            .args(extra)
            .output()
            .expect("nestednet runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let train = |devices: &str| train_with(&["--devices", devices]);
    let err = train("flex,gpu:1");
    assert!(err.contains("device `gpu:1`") && err.contains("unknown backend `gpu`"), "{err}");
    if !cfg!(feature = "cuda") {
        let err = train("flex,cuda:1");
        assert!(
            err.contains("`cuda` is not compiled into this build") && !err.contains("/nonexistent/data"),
            "{err}"
        );
    }
    let err = train("flex,flex=-1");
    assert!(err.contains("device `flex=-1`") && err.contains("positive"), "{err}");
    // Burn 0.22.1's DDP all-reduce exists on cuda alone.
    let err = train_with(&["--devices", "flex,flex", "--ddp"]);
    assert!(err.contains("--ddp runs on cuda devices only") && err.contains("`flex`"), "{err}");
    let err = train_with(&["--ddp"]);
    assert!(err.contains("give them with --devices"), "{err}");
}

/// `--task distillation --dataset cifar10` on CIFAR-10 binary files we generate (the published
/// format: a label byte, then 3,072 pixel bytes, per record).
#[test]
fn a_cifar_resnet_trains_from_generated_binary_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&data).unwrap();
    let records = |count: usize, seed: u8| -> Vec<u8> {
        (0..count)
            .flat_map(|i| {
                let label = (i % 10) as u8;
                std::iter::once(label)
                    .chain((0..3072).map(move |p| (p as u8).wrapping_mul(label).wrapping_add(seed)))
            })
            .collect()
    };
    for i in 1..=5 {
        std::fs::write(data.join(format!("data_batch_{i}.bin")), records(16, i as u8)).unwrap();
    }
    std::fs::write(data.join("test_batch.bin"), records(20, 9)).unwrap();
    let run = dir.path().join("resnet8");
    let text = ok(&[
        "train",
        "--task",
        "distillation",
        "--model",
        "resnet-8",
        "--widths",
        "0.5,1",
        "--dataset",
        "cifar10",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--lr-schedule",
        "cosine",
    ]);
    assert!(
        text.contains("2 levels of resnet-8") && text.contains("w0.5-d1") && text.contains("w1-d1"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["dataset"], "cifar10");
    // ResNet-8: stem 464, one block per stage 4,672 + 13,952 + 55,552, classifier 650.
    assert_eq!(report["levels"][1]["params"], 75_290);
}
