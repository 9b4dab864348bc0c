//! Exported levels are compact standalone models that compute what the nested level computes,
//! checked on real MNIST batches, in both formats.

mod common;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::epoch_loader;
use nestednet::models::NestedClassifier;
use nestednet::models::NestedMnistCnnConfig;
use nestednet::train::{
    ExportFormat, QuietProgress, RunDir, TrainingConfig, export_level, load_burnpack_level,
    load_safetensors_level, train,
};

#[test]
fn exported_levels_match_the_nested_levels_on_real_mnist() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    // A short training run, so weights and batch-norm statistics are not at their initial values.
    let config =
        TrainingConfig::new(NestedMnistCnnConfig::new().into()).with_epochs(1).with_train_limit(Some(640));
    let model = train(
        &config,
        train_set,
        None,
        &device,
        &RunDir::new(dir.path().join("run")),
        false,
        &mut QuietProgress,
    )
    .unwrap()
    .model
    .into_mnist_cnn()
    .expect("mnist-cnn");
    let batches: Vec<_> = epoch_loader(test_set, 250, 0, 0, false, None, &device)
        .unwrap()
        .iter()
        .take(3)
        .map(|b| b.unwrap().images)
        .collect();
    let mut sizes = Vec::new();
    for level in 0..model.num_levels() {
        for format in [ExportFormat::Burnpack, ExportFormat::Safetensors] {
            let ext = if format == ExportFormat::Burnpack { "bpk" } else { "safetensors" };
            let path = dir.path().join(format!("level{level}.{ext}"));
            let info = export_level(&model, level, &path, format).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, info.bytes);
            let (config, plain) = match format {
                ExportFormat::Burnpack => load_burnpack_level(&path, &device).unwrap(),
                ExportFormat::Safetensors | ExportFormat::SparseSafetensors => {
                    load_safetensors_level(&path, &device).unwrap()
                }
            };
            let plain = plain.valid();
            // Physically the level's size: the standalone model has exactly the level's
            // parameters, and its first convolution only the level's channels.
            assert_eq!(plain.conv1.weight.dims(), [config.conv1_channels, 1, 3, 3]);
            assert_eq!(plain.conv1.weight.dims()[0], model.conv1.level_dims(level).1);
            let expected_params = model.level_cost(level).params;
            let bn_buffers = 2 * (config.conv1_channels + config.conv2_channels);
            let counted = plain.num_params();
            assert_eq!(
                counted,
                expected_params + bn_buffers,
                "level {level}: Burn counts BN running stats too"
            );
            for images in &batches {
                let nested = model.forward_level(images.clone(), level).into_data();
                let standalone = plain.forward(images.clone()).into_data();
                let diff = nested
                    .iter::<f32>()
                    .zip(standalone.iter::<f32>())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff <= 1e-5, "level {level} {format:?}: max |Δ| = {diff}");
            }
            if format == ExportFormat::Burnpack {
                sizes.push(info.bytes);
            }
        }
    }
    // Lower levels are physically smaller files.
    assert!(sizes[0] * 4 < sizes[2], "core {} bytes vs full {} bytes", sizes[0], sizes[2]);
    assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2]);

    // A bad level is a clear error, not a panic.
    let err =
        export_level(&model, 3, &dir.path().join("x.bpk"), ExportFormat::Burnpack).unwrap_err().to_string();
    assert!(err.contains("level 3 does not exist"), "{err}");
    // A file that is not a nestednet export is rejected with its name.
    let bogus = dir.path().join("bogus.safetensors");
    std::fs::write(&bogus, b"garbage").unwrap();
    let err = load_safetensors_level(&bogus, &device).unwrap_err().to_string();
    assert!(err.contains("bogus.safetensors"), "{err}");
}
