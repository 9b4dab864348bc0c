//! Exported levels load into plain PyTorch with `load_state_dict(strict=True)` and give
//! nestednet's logits there, for every model family (and into torchvision's own ResNet-18).
//!
//! Needs Python with `torch` and `safetensors` (and `torchvision` for the ResNet-18 check):
//!
//! ```text
//! NESTEDNET_PYTHON=.venv/bin/python cargo test --test pytorch_exports -- --ignored
//! ```
//!
//! CI runs it with the libtorch wheel it installs for the `tch` backend.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::{ImageSet, Normalization, SplitMix64};
use nestednet::models::NetworkOutput;
use nestednet::models::{
    ChannelImportance, LevelRequest, ModelFamily, ModelRequest, NestedLanguageModelConfig,
    NestedMnistCnnConfig, NestedNetwork, NestedNetworkConfig, NestedResNetConfig, NestedTextClassifierConfig,
    NestedVitConfig, TokenShape,
};
use nestednet::schedule::LevelSpec;
use nestednet::train::export::{ExportFormat, export_level, nestify};
use nestednet::train::trainer::{
    OptimizerConfig, QuietProgress, RunConfig, RunDir, TrainData, TrainingConfig, train,
};
use safetensors::tensor::{Dtype, TensorView};

/// Random images of `shape` with labels: enough for batch-norm statistics to move away from
/// their initial values.
fn random_set(shape: [usize; 3], classes: usize) -> Arc<ImageSet> {
    let mut rng = SplitMix64::new(17);
    let n = 64;
    let [c, h, w] = shape;
    Arc::new(ImageSet {
        pixels: (0..n * c * h * w).map(|_| rng.next_u64() as u8).collect(),
        labels: (0..n).map(|_| rng.below(classes)).collect(),
        coarse_labels: None,
        channels: c,
        height: h,
        width: w,
        num_classes: classes,
        num_coarse_classes: 0,
        normalization: Normalization { mean: vec![0.5; c], std: vec![0.25; c] },
        class_names: Vec::new(),
    })
}

fn request(name: &str, shape: [usize; 3], levels: LevelRequest) -> ModelRequest {
    ModelRequest::new(name, shape, 10, levels)
}

fn f32_bytes(t: Tensor<4>) -> Vec<u8> {
    t.into_data().iter::<f32>().flat_map(f32::to_le_bytes).collect()
}

/// A family of image classifiers.
trait ImageFamily: ModelFamily<Network: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>> {}

impl<F: ModelFamily<Network: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>>> ImageFamily for F {}

/// The configuration `request` asks family `F` for.
fn build<F: ImageFamily>(request: &ModelRequest) -> F {
    F::from_request(request).expect("the family's model").unwrap()
}

/// Exports every level of `request`'s model (trained a few steps) and checks each in PyTorch.
fn check<F: ImageFamily>(python: &str, request: ModelRequest, dir: &Path) {
    let config = build::<F>(&request);
    let set = random_set(request.input_shape, 10);
    let run_config = RunConfig::new(
        config.clone(),
        TrainingConfig::new()
            .with_max_steps(Some(3))
            .with_batch_size(16)
            .with_optimizer(OptimizerConfig::sgd()),
    );
    let device = Device::flex();
    let run = RunDir::new(dir.join(format!("run-{}", request.name)));
    let model = train(&run_config, TrainData::new(set, None), &device, &run, false, &mut QuietProgress)
        .unwrap()
        .model;
    let [c, h, w] = request.input_shape;
    let mut rng = SplitMix64::new(3);
    let values: Vec<f32> = (0..4 * c * h * w).map(|_| (rng.below(2000) as f32 - 1000.0) / 500.0).collect();
    let images = Tensor::<4>::from_data(TensorData::new(values, [4, c, h, w]), &device);
    for level in 0..model.num_levels() {
        let name = format!("{}-{level}", request.name);
        let file = dir.join(format!("{name}.safetensors"));
        export_level(&model, &config, level, &file, ExportFormat::Safetensors).unwrap();
        let logits = model.forward_level(images.clone(), level);
        let [n, classes] = logits.dims();
        let (image_bytes, logit_bytes) =
            (f32_bytes(images.clone()), f32_bytes(logits.reshape([n, classes, 1, 1])));
        let views = vec![
            ("images".to_string(), TensorView::new(Dtype::F32, vec![4, c, h, w], &image_bytes).unwrap()),
            ("logits".to_string(), TensorView::new(Dtype::F32, vec![n, classes], &logit_bytes).unwrap()),
        ];
        let expected = dir.join(format!("{name}.expected.safetensors"));
        std::fs::write(
            &expected,
            safetensors::tensor::serialize(views, None::<HashMap<String, String>>).unwrap(),
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/load_exported.py");
        let mut args =
            vec![script.to_str().unwrap(), file.to_str().unwrap(), "--check", expected.to_str().unwrap()];
        // The full level of a standard-width ResNet-18 is torchvision's own resnet18.
        let standard = request.name == "resnet-18" && level + 1 == model.num_levels() && c == 3;
        if standard {
            args.push("--torchvision");
        }
        let out = Command::new(python).args(&args).output().expect("python runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{text}");
        assert!(out.status.success(), "{name} in PyTorch:\n{text}");
        assert!(!standard || text.contains("torchvision.resnet18"), "{text}");
    }
}

#[test]
#[ignore = "needs PyTorch: NESTEDNET_PYTHON=PATH cargo test --test pytorch_exports -- --ignored"]
fn every_model_family_loads_into_pytorch() {
    let python = std::env::var("NESTEDNET_PYTHON").expect("set NESTEDNET_PYTHON to a python with torch");
    let dir = tempfile::tempdir().unwrap();
    let ratios = |r: &[f64]| LevelRequest::Channels(LevelSpec::Ratios(r.to_vec()));
    let lattice = LevelRequest::Lattice("0.5,1;1,2".parse().unwrap());
    // Post-activation with option-A shortcuts, a lattice of depths.
    check::<NestedResNetConfig>(&python, request("mnist-resnet", [1, 28, 28], lattice), dir.path());
    check::<NestedMnistCnnConfig>(
        &python,
        request("mnist-cnn", [1, 28, 28], ratios(&[0.25, 0.5, 1.0])),
        dir.path(),
    );
    // Pre-activation with projections; un-nested first convolution and output layer.
    let mut wrn = request("wrn-16-2", [3, 16, 16], ratios(&[0.5, 1.0]));
    (wrn.unnested_first_conv, wrn.unnested_output) = (true, true);
    check::<NestedResNetConfig>(&python, wrn, dir.path());
    // ImageNet stem; the full level is torchvision's resnet18.
    check::<NestedResNetConfig>(&python, request("resnet-18", [3, 32, 32], ratios(&[0.25, 1.0])), dir.path());
    // Heads, feed-forward and model width nested; 13x13 images padded to patches of 2.
    check::<NestedVitConfig>(
        &python,
        request("vit-tiny", [3, 13, 13], ratios(&[0.25, 0.5, 1.0])),
        dir.path(),
    );
}

/// The transformers over tokens: every level of the byte language model (causal; a width ×
/// depth lattice, and the MatFormer setting with the model width whole) and of the text
/// classifier (padding masked, coarse-to-fine heads) in a plain PyTorch module.
#[test]
#[ignore = "needs PyTorch: NESTEDNET_PYTHON=PATH cargo test --test pytorch_exports -- --ignored"]
fn the_text_transformers_load_into_pytorch() {
    let python = std::env::var("NESTEDNET_PYTHON").expect("set NESTEDNET_PYTHON to a python with torch");
    let dir = tempfile::tempdir().unwrap();
    let text = |name: &str, classes: usize, levels: LevelRequest| {
        ModelRequest::new(name, TokenShape { length: 12, vocabulary: 257 }, classes, levels)
    };
    let ratios = |r: &[f64]| LevelRequest::Channels(LevelSpec::Ratios(r.to_vec()));
    let lattice = text("lm-tiny", 257, LevelRequest::Lattice("0.5,1;2,4".parse().unwrap()));
    check_tokens(
        &python,
        NestedLanguageModelConfig::from_request(&lattice).unwrap().unwrap(),
        "lm-lattice",
        dir.path(),
    );
    let mut matformer =
        NestedLanguageModelConfig::from_request(&text("lm-tiny", 257, ratios(&[0.25, 0.5, 1.0])))
            .unwrap()
            .unwrap();
    matformer.body.nest_model_width = false;
    check_tokens(&python, matformer, "lm-matformer", dir.path());
    let mut genres = text("text-tiny", 15, ratios(&[0.5, 1.0]));
    genres.level_classes = vec![2, 15];
    check_tokens(
        &python,
        NestedTextClassifierConfig::from_request(&genres).unwrap().unwrap(),
        "text",
        dir.path(),
    );
}

/// Exports every level of `config`'s seeded model and checks its logits on random tokens
/// (the last positions of the second window padded) in PyTorch.
fn check_tokens<C>(python: &str, config: C, name: &str, dir: &Path)
where
    C: NestedNetworkConfig<Network: NestedNetwork<Input = Tensor<2, Int>>>,
{
    let device = Device::flex();
    let model = nestednet::train::trainer::seeded_model(&config, None, 7, &device).unwrap();
    let length = model.input_shape().length;
    let mut rng = SplitMix64::new(9);
    let mut ids: Vec<i64> = (0..2 * length).map(|_| rng.below(256) as i64).collect();
    ids[2 * length - 3..].fill(256);
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [2, length]), &device);
    let token_bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
    for level in 0..model.num_levels() {
        let file = dir.join(format!("{name}-{level}.safetensors"));
        export_level(&model, &config, level, &file, ExportFormat::Safetensors).unwrap();
        let logits = model.forward_level(tokens.clone(), level).into_logits();
        let shape = logits.dims().to_vec();
        let logit_bytes: Vec<u8> = logits.into_data().iter::<f32>().flat_map(f32::to_le_bytes).collect();
        let views = vec![
            ("tokens".to_string(), TensorView::new(Dtype::I64, vec![2, length], &token_bytes).unwrap()),
            ("logits".to_string(), TensorView::new(Dtype::F32, shape, &logit_bytes).unwrap()),
        ];
        let expected = dir.join(format!("{name}-{level}.expected.safetensors"));
        std::fs::write(
            &expected,
            safetensors::tensor::serialize(views, None::<HashMap<String, String>>).unwrap(),
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/load_exported.py");
        let out = Command::new(python)
            .args([script.to_str().unwrap(), file.to_str().unwrap(), "--check", expected.to_str().unwrap()])
            .output()
            .expect("python runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("{name} level {level}: {text}");
        assert!(out.status.success(), "{name} level {level} in PyTorch:\n{text}");
    }
}

/// The backend tests' stored reference (`tests/fixtures/pytorch_logits.json`): every level's
/// logits of seeded, untrained `mnist-cnn` and `mnist-resnet` lattice networks on fixed
/// images, computed by PyTorch from the exported weights, so that the default build's backend
/// test (`flex` only) compares against values computed independently of nestednet's forward
/// passes. With `NESTEDNET_WRITE_FIXTURE=1` the file is (re)written; otherwise PyTorch's
/// values must still equal the stored ones.
#[test]
#[ignore = "needs PyTorch: NESTEDNET_PYTHON=PATH cargo test --test pytorch_exports -- --ignored"]
fn the_backend_fixture_is_pytorch_s_output() {
    let python = std::env::var("NESTEDNET_PYTHON").expect("set NESTEDNET_PYTHON to a python with torch");
    let dir = tempfile::tempdir().unwrap();
    let cnn =
        request("mnist-cnn", [1, 28, 28], LevelRequest::Channels(LevelSpec::Ratios(vec![0.25, 0.5, 1.0])));
    let resnet = request("mnist-resnet", [1, 28, 28], LevelRequest::Lattice("0.5,1;1,2".parse().unwrap()));
    let models = vec![
        fixture_entry::<NestedMnistCnnConfig>(&python, &cnn, dir.path()),
        fixture_entry::<NestedResNetConfig>(&python, &resnet, dir.path()),
    ];
    let fixture = serde_json::json!({
        "about": "PyTorch's logits for seeded, untrained nestednet models (tests/pytorch_exports.rs writes it; tests/backends.rs reads it)",
        "seed": FIXTURE_SEED,
        "models": models,
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_logits.json");
    if std::env::var_os("NESTEDNET_WRITE_FIXTURE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec_pretty(&fixture).unwrap()).unwrap();
        return;
    }
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (model, stored) in
        fixture["models"].as_array().unwrap().iter().zip(stored["models"].as_array().unwrap())
    {
        for (level, (now, then)) in
            model["levels"].as_array().unwrap().iter().zip(stored["levels"].as_array().unwrap()).enumerate()
        {
            let flat = |v: &serde_json::Value| -> Vec<f64> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                    .collect()
            };
            let worst = flat(now).iter().zip(flat(then)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(
                worst <= 1e-5,
                "{} level {level}: PyTorch now gives logits {worst:e} away from the stored fixture",
                model["name"]
            );
        }
    }
}

/// The fixture's entry of `request`'s seeded, untrained model (family `F`): the images and
/// every level's logits as PyTorch computes them from the exported level.
fn fixture_entry<F: ImageFamily>(python: &str, request: &ModelRequest, dir: &Path) -> serde_json::Value {
    let device = Device::flex();
    let name = request.name.as_str();
    let config = build::<F>(request);
    let model = nestednet::train::trainer::seeded_model(&config, None, FIXTURE_SEED, &device).unwrap();
    let mut rng = SplitMix64::new(3);
    let values: Vec<f32> = (0..2 * 28 * 28).map(|_| (rng.below(2000) as f32 - 1000.0) / 500.0).collect();
    let images = Tensor::<4>::from_data(TensorData::new(values.clone(), [2, 1, 28, 28]), &device);
    let image_bytes = f32_bytes(images);
    let input = dir.join(format!("{name}.images.safetensors"));
    let views =
        vec![("images".to_string(), TensorView::new(Dtype::F32, vec![2, 1, 28, 28], &image_bytes).unwrap())];
    std::fs::write(&input, safetensors::tensor::serialize(views, None::<HashMap<String, String>>).unwrap())
        .unwrap();
    let mut levels = Vec::new();
    for level in 0..model.num_levels() {
        let file = dir.join(format!("{name}-{level}.safetensors"));
        export_level(&model, &config, level, &file, ExportFormat::Safetensors).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/load_exported.py");
        let out = Command::new(python)
            .args([script.to_str().unwrap(), file.to_str().unwrap(), "--logits", input.to_str().unwrap()])
            .output()
            .expect("python runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        levels.push(json["logits"].clone());
    }
    serde_json::json!({"name": name, "images": values, "levels": levels})
}

/// The seed of the stored backend fixture (`tests/backends.rs` uses the same).
const FIXTURE_SEED: u64 = 20;

/// A dense `mnist-cnn` built and saved by PyTorch itself (a plain `nn.Module`'s `state_dict`,
/// random batch-norm statistics, written with `safetensors.torch.save_file`) nestifies: the
/// nested model's full level gives PyTorch's logits, whatever the channel order.
#[test]
#[ignore = "needs PyTorch: NESTEDNET_PYTHON=PATH cargo test --test pytorch_exports -- --ignored"]
fn a_dense_network_saved_by_pytorch_nestifies() {
    let python = std::env::var("NESTEDNET_PYTHON").expect("set NESTEDNET_PYTHON to a python with torch");
    let dir = tempfile::tempdir().unwrap();
    let (weights, logits) = (dir.path().join("dense.safetensors"), dir.path().join("logits.json"));
    let script = r#"
import json, sys, torch, torch.nn as nn, torch.nn.functional as F
from safetensors.torch import save_file
torch.manual_seed(5)
class MnistCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.fc1, self.fc2 = nn.Linear(64 * 49, 128), nn.Linear(128, 10)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))
m = MnistCnn()
for bn in (m.bn1, m.bn2):
    bn.running_mean.uniform_(-0.5, 0.5); bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.2, 2.0); bn.bias.data.uniform_(-0.3, 0.3)
m.eval()
x = torch.linspace(-2, 2, 2 * 28 * 28).reshape(2, 1, 28, 28)
save_file(m.state_dict(), sys.argv[1])
json.dump(m(x).tolist(), open(sys.argv[2], "w"))
"#;
    let out = Command::new(&python)
        .args(["-c", script, weights.to_str().unwrap(), logits.to_str().unwrap()])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected: Vec<Vec<f64>> = serde_json::from_slice(&std::fs::read(&logits).unwrap()).unwrap();
    let device = Device::flex();
    let config = build::<NestedMnistCnnConfig>(&request(
        "mnist-cnn",
        [1, 28, 28],
        LevelRequest::Channels(LevelSpec::Ratios(vec![0.25, 0.5, 1.0])),
    ));
    let values: Vec<f32> =
        (0..2 * 28 * 28).map(|i| -2.0 + 4.0 * i as f32 / (2.0 * 28.0 * 28.0 - 1.0)).collect();
    let images = Tensor::<4>::from_data(TensorData::new(values, [2, 1, 28, 28]), &device);
    for importance in [Some(ChannelImportance::BatchNormGamma), Some(ChannelImportance::FilterL1), None] {
        let nested = nestify(&config, None, 1, &weights, importance, &device).unwrap();
        let got = nested
            .network
            .valid()
            .forward_level(images.clone(), 2)
            .into_data()
            .iter::<f32>()
            .collect::<Vec<_>>();
        let worst =
            got.iter().zip(expected.iter().flatten()).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        println!("{importance:?}: full level vs PyTorch's dense network: {worst:e}");
        assert!(worst <= 1e-4, "{importance:?}: {worst:e}");
    }
}
