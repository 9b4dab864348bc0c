//! Exported levels are compact standalone models that compute what the nested level computes,
//! for every model family and every format, checked on real MNIST batches.

mod common;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::epoch_loader;
use nestednet::models::{NestedMnistCnnConfig, NestedNetwork, NestedNetworkConfig, NestedResNetConfig};
use nestednet::train::export::{ExportFormat, burnpack_config_path, export_level, load_level};
use nestednet::train::trainer::{
    OptimizerConfig, QuietProgress, RunConfig, RunDir, TrainData, TrainingConfig, seeded_model, train,
};

/// A configuration of image classifiers (images in, class logits out).
trait ImageConfig: NestedNetworkConfig<Network: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>> {}

impl<C: NestedNetworkConfig<Network: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>>> ImageConfig
    for C
{
}

const FORMATS: [(ExportFormat, &str); 3] = [
    (ExportFormat::Burnpack, "bpk"),
    (ExportFormat::Safetensors, "safetensors"),
    (ExportFormat::SparseSafetensors, "sparse.safetensors"),
];

/// A short training run, so weights and batch-norm statistics are not at their initial values.
fn trained<C: ImageConfig>(model: C, dir: &std::path::Path) -> C::Network {
    let (train_set, _) = common::mnist();
    let config = RunConfig::new(
        model,
        TrainingConfig::new()
            .with_epochs(1)
            .with_train_limit(Some(320))
            .with_optimizer(OptimizerConfig::sgd())
            .with_learning_rate(0.05),
    );
    train(
        &config,
        TrainData::new(train_set, None),
        &Device::flex(),
        &RunDir::new(dir.join("run")),
        false,
        &mut QuietProgress,
    )
    .unwrap()
    .model
}

/// Every level of `model`, in every format: the file reloads into a network of the level's
/// size that computes the nested level's logits on real digits.
fn every_level_exports<C: ImageConfig>(model: &C::Network, config: &C, dir: &std::path::Path) -> Vec<usize> {
    let (_, test_set) = common::mnist();
    let device = Device::flex();
    let batches: Vec<_> = epoch_loader(test_set, 250, 0, 0, false, None, &device)
        .unwrap()
        .iter()
        .take(2)
        .map(|b| b.unwrap().images)
        .collect();
    let mut sizes = Vec::new();
    for level in 0..model.num_levels() {
        for (format, ext) in FORMATS {
            let path = dir.join(format!("level{level}.{ext}"));
            let info = export_level(model, config, level, &path, format).unwrap();
            assert!(info.max_abs_diff <= 1e-5, "level {level} {format:?}: {}", info.max_abs_diff);
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, info.bytes);
            let (manifest, standalone) = load_level::<C>(&path, &device).unwrap();
            assert_eq!((manifest.level, manifest.classes), (level, model.level_classes(level)));
            let standalone = standalone.valid();
            // Physically the level's size, and the level's costs.
            assert_eq!(standalone.level_cost(0), model.level_cost(level), "level {level} {format:?}");
            for images in &batches {
                let nested = model.forward_level(images.clone(), level);
                let alone = standalone.forward_level(images.clone(), 0);
                let diff = (nested - alone).abs().max().into_scalar::<f32>();
                assert!(diff <= 1e-5, "level {level} {format:?}: max |Δ| = {diff}");
            }
            if format == ExportFormat::Burnpack {
                sizes.push(info.bytes);
            }
        }
    }
    sizes
}

#[test]
fn mnist_cnn_levels_export_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let config = NestedMnistCnnConfig::new();
    let model = trained(config.clone(), dir.path());
    let sizes = every_level_exports(&model, &config, dir.path());
    // Lower levels are physically smaller files.
    assert!(sizes[0] * 4 < sizes[2], "core {} bytes vs full {} bytes", sizes[0], sizes[2]);
    assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2]);

    // A bad level is a clear error, not a panic.
    let err = export_level(&model, &config, 3, &dir.path().join("x.bpk"), ExportFormat::Burnpack)
        .unwrap_err()
        .to_string();
    assert!(err.contains("level 3 does not exist"), "{err}");
    // A file that is not a nestednet export is rejected with its name.
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"garbage").unwrap();
    let err = load_level::<NestedMnistCnnConfig>(&bogus, &Device::flex()).expect_err("an error").to_string();
    assert!(err.contains("bogus.safetensors"), "{err}");
    // A safetensors export missing a tensor, or with one too many, does not load.
    let path = dir.path().join("level0.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(name, _)| name != "fc1.bias").collect();
    let pruned = safetensors::tensor::serialize(tensors, meta.metadata().clone()).unwrap();
    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, pruned).unwrap();
    let err = load_level::<NestedMnistCnnConfig>(&broken, &Device::flex()).expect_err("an error").to_string();
    assert!(err.contains("fc1.bias"), "{err}");
}

/// Residual levels (a lattice: narrower and shallower) export in every format too, under
/// torchvision's names.
#[test]
fn residual_levels_export_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = NestedResNetConfig::mnist_resnet(10);
    net.lattice = "0.5,1;1,2".parse().unwrap();
    let config = net;
    let model = trained(config.clone(), dir.path());
    let sizes = every_level_exports(&model, &config, dir.path());
    assert!(sizes[0] < sizes[3]);
    let bytes = std::fs::read(dir.path().join("level3.safetensors")).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(String::from)
        .collect();
    for expected in
        ["conv1.weight", "bn1.running_var", "bn1.num_batches_tracked", "layer2.1.conv2.weight", "fc.weight"]
    {
        assert!(names.iter().any(|n| n == expected), "no `{expected}` in {names:?}");
    }
}

/// A configuration read from an export is checked like user input before anything is
/// allocated: one declaring a huge network, or a level larger than the file, is refused.
#[test]
fn hostile_export_configurations_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let config = NestedMnistCnnConfig::new();
    let model = seeded_model(&config, None, 1, &Device::flex()).unwrap();
    let file = dir.path().join("level0.bpk");
    export_level(&model, &config, 0, &file, ExportFormat::Burnpack).unwrap();
    let manifest_path = burnpack_config_path(&file);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for (hidden, expected) in [(1u64 << 40, "declares a network of"), (4096, "more than the")] {
        let mut hostile = manifest.clone();
        hostile["model"]["hidden"] = hidden.into();
        std::fs::write(&manifest_path, serde_json::to_vec(&hostile).unwrap()).unwrap();
        let err =
            load_level::<NestedMnistCnnConfig>(&file, &Device::flex()).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("level0.bpk"), "hidden {hidden}: {err}");
    }
}
