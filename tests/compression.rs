//! Weight connection learning on real MNIST: the masks nest after every stage and after a
//! reload, reach the requested densities, and export to a sparse file that computes what the
//! nested level computes; the baselines reach their densities too; bad requests are clear
//! errors.

mod common;

use std::sync::Arc;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::epoch_loader;
use nestednet::models::{NestedMnistCnnConfig, NestedNetwork};
use nestednet::prune::MaskTargets;
use nestednet::train::export::{ExportFormat, export_level, export_sizes, load_level};
use nestednet::train::trainer::{
    EpochMetrics, LevelTally, MaskMethod, MaskingConfig, Phase, Progress, QuietProgress, RunConfig, RunDir,
    TrainData, TrainingConfig, train,
};

fn masked_config(method: MaskMethod, densities: &[f64]) -> RunConfig<NestedMnistCnnConfig> {
    let model = NestedMnistCnnConfig::new()
        .with_levels(nestednet::schedule::LevelSpec::Ratios(vec![1.0; densities.len()]));
    let masking = MaskingConfig {
        recalibrate_every: 3,
        ..MaskingConfig::new(method, MaskTargets::Densities(densities.to_vec()))
            .with_masked_layers(vec!["conv2".into(), "fc1".into()])
    };
    RunConfig::new(
        model,
        TrainingConfig::new().with_epochs(1).with_train_limit(Some(320)).with_masking(Some(masking)),
    )
}

fn masking(c: &mut RunConfig<NestedMnistCnnConfig>) -> &mut MaskingConfig {
    c.training.masking.as_mut().unwrap()
}

fn data(train: &Arc<nestednet::data::ImageSet>, test: Option<&Arc<nestednet::data::ImageSet>>) -> TrainData {
    TrainData::new(train.clone(), test.cloned())
}

/// Whether level `level`'s outputs ignore every weight of a masked layer whose level-map value
/// `dropped` selects: those weights get large new values, and the level's logits must stay
/// bit-identical. This reads what the forward pass uses, not the masks' own bookkeeping (a
/// level map gives nested masks by construction; what can break is which weights a level's
/// forward pass multiplies).
fn ignores<M: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>> + Module>(
    model: &M,
    level: usize,
    dropped: impl Fn(i64) -> bool,
) -> bool {
    let device = model.devices().into_iter().next().expect("a model on a device");
    let [c, h, w] = model.input_shape();
    let pixels: Vec<f32> = (0..4 * c * h * w).map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5).collect();
    let images = Tensor::<4>::from_data(TensorData::new(pixels, [4, c, h, w]), &device);
    let logits = |m: &M| m.forward_level(images.clone(), level).into_data().try_to_vec::<f32>().unwrap();
    let before = logits(model);
    let mut changed = model.clone();
    for (_, layer) in changed.weight_layers_mut() {
        let Some(map) = layer.mask().map(|m| m.level_map_values()) else { continue };
        let mut values = layer.weight_values();
        for (v, &m) in values.iter_mut().zip(&map) {
            if dropped(m) {
                *v += 1.0 + v.abs();
            }
        }
        layer.set_weight_values(&values).unwrap();
    }
    before == logits(&changed)
}

/// Whether the levels nest as their forward passes compute them: level `k` ignores every
/// weight whose map value is above `k`, so every weight a level uses, the next level uses too.
/// (`checks_can_fail` shows that a wrong claim fails it.)
fn masks_nest<M: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>> + Module>(model: &M) -> bool {
    (0..model.num_levels()).all(|k| ignores(model, k, |m| m > k as i64))
}

#[test]
fn checks_can_fail() {
    let config = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    let mut model = nestednet::train::trainer::seeded_model(
        &config.model,
        config.training.masking.as_ref(),
        3,
        &Device::flex(),
    )
    .unwrap();
    for (_, layer) in model.weight_layers_mut() {
        if let Some(mask) = layer.mask_mut() {
            // Every other weight enters at level 1.
            let map: Vec<i64> = (0..mask.level_map_values().len()).map(|i| (i % 2) as i64).collect();
            mask.set_level_map_values(map).unwrap();
        }
    }
    assert!(masks_nest(&model));
    // Claiming that level 1 ignores the weights that enter at level 1 is caught.
    assert!(!ignores(&model, 1, |m| m >= 1));
    // The core depends on the weights it keeps: a forward pass that dropped them would be
    // caught the same way.
    assert!(!ignores(&model, 0, |m| m == 0));
}

/// Measured density of every level: its parameters over the full level's.
fn densities<M: NestedNetwork>(model: &M) -> Vec<f64> {
    let full = model.level_cost(model.num_levels() - 1).params as f64;
    (0..model.num_levels()).map(|k| model.level_cost(k).params as f64 / full).collect()
}

/// Loads the checkpoint after every epoch and checks the masks there.
struct CheckEveryStage {
    run: RunDir,
    stages_checked: Vec<Phase>,
}

impl Progress for CheckEveryStage {
    fn epoch_start(&mut self, _: usize, _: usize, _: usize) {}
    fn batch_done(&mut self, _: &[LevelTally]) {}
    fn epoch_end(&mut self, metrics: &EpochMetrics) {
        let (_, model) = self.run.load_model::<NestedMnistCnnConfig>(&Device::flex()).unwrap();
        assert!(
            masks_nest(&model),
            "masks do not nest after epoch {} ({})",
            metrics.epoch + 1,
            metrics.phase
        );
        if let Phase::Mask(level) = metrics.phase {
            // Right after its stage, the level is at its requested density.
            let d = densities(&model)[level];
            let want = [0.33, 0.5, 1.0][level];
            assert!((d - want).abs() < 0.01, "level {level} at {d} after its stage, asked {want}");
        }
        self.stages_checked.push(metrics.phase);
    }
    fn message(&mut self, _: &str) {}
}

#[test]
fn learned_masks_nest_reach_their_densities_survive_reload_and_export_sparse() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    let config = masked_config(MaskMethod::Learned, &[0.33, 0.5, 1.0]);
    assert_eq!(
        config.training.epoch_plan(3),
        vec![Phase::Mask(2), Phase::Mask(1), Phase::Mask(0), Phase::Joint]
    );
    let mut progress = CheckEveryStage { run: run.clone(), stages_checked: Vec::new() };
    let model =
        train(&config, data(&train_set, Some(&test_set)), &device, &run, false, &mut progress).unwrap().model;
    assert_eq!(progress.stages_checked.len(), 4);

    // Densities as requested (within 1 point), nesting, and the full level is dense.
    let measured = densities(&model);
    for (level, want) in [0.33, 0.5, 1.0].into_iter().enumerate() {
        assert!((measured[level] - want).abs() < 0.01, "level {level}: {} vs {want}", measured[level]);
    }
    assert!(masks_nest(&model));
    assert!(measured[0] < measured[1] && measured[1] < measured[2]);

    // The level maps are in the checkpoint and survive a reload.
    let (_, reloaded) = run.load_model::<NestedMnistCnnConfig>(&device).unwrap();
    for ((_, a), (_, b)) in model.weight_layers().iter().zip(reloaded.weight_layers().iter()) {
        assert_eq!(a.mask().map(|m| m.level_map_values()), b.mask().map(|m| m.level_map_values()));
    }
    assert!(masks_nest(&reloaded));
    assert_eq!(densities(&reloaded), measured);

    // Sparse export: same outputs as the nested level, far fewer bytes at 1/3 density.
    let images: Vec<_> = epoch_loader(test_set, 200, 0, 0, false, None, &device)
        .unwrap()
        .iter()
        .take(2)
        .map(|b| b.unwrap().images)
        .collect();
    for level in 0..3 {
        let path = dir.path().join(format!("level{level}.sparse.safetensors"));
        assert_eq!(ExportFormat::from_path(&path), ExportFormat::SparseSafetensors);
        let info =
            export_level(&model, &config.model, level, &path, ExportFormat::SparseSafetensors).unwrap();
        assert!(info.max_abs_diff <= 1e-5, "{}", info.max_abs_diff);
        let (_, plain) = load_level::<NestedMnistCnnConfig>(&path, &device).unwrap();
        let plain = plain.valid();
        for x in &images {
            let diff = (plain.forward(x.clone()) - model.forward_level(x.clone(), level))
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(diff <= 1e-5, "level {level}: max |Δ| = {diff}");
        }
        let (dense, sparse) = export_sizes(&model, &config.model, level).unwrap();
        assert_eq!(sparse, info.bytes);
        if level == 0 {
            let ratio = sparse as f64 / dense as f64;
            assert!(ratio <= 0.45, "sparse / dense bytes at density 1/3: {ratio}");
        }
    }
    // A corrupt sparse file is a clear error naming the tensor.
    let path = dir.path().join("level0.sparse.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header =
        String::from_utf8_lossy(&bytes[8..8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize])
            .to_string();
    let patched = header.replacen("csc", "csr", 1);
    assert_ne!(patched, header, "expected a column-compressed tensor");
    bytes.splice(8..8 + header.len(), patched.into_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = load_level::<NestedMnistCnnConfig>(&path, &device).expect_err("a corrupt file").to_string();
    assert!(err.contains("corrupt sparse tensor") && err.contains(".weight"), "{err}");
}

#[test]
fn random_and_magnitude_masks_reach_their_densities_and_nest() {
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for (i, method) in [MaskMethod::Random, MaskMethod::Magnitude].into_iter().enumerate() {
        let mut config = masked_config(method, &[0.2, 0.5, 1.0]);
        config.training.train_limit = Some(128);
        let run = RunDir::new(dir.path().join(format!("run{i}")));
        let model =
            train(&config, data(&train_set, None), &device, &run, false, &mut QuietProgress).unwrap().model;
        let measured = densities(&model);
        for (level, want) in [0.2, 0.5, 1.0].into_iter().enumerate() {
            assert!((measured[level] - want).abs() < 0.01, "{method:?} level {level}: {}", measured[level]);
        }
        assert!(masks_nest(&model), "{method:?}");
    }
}

#[test]
fn bad_mask_requests_are_clear_errors() {
    let device = Device::flex();
    let err = |config: RunConfig<NestedMnistCnnConfig>| {
        config.validate(&device).expect_err("an invalid request").to_string()
    };
    let e = err(masked_config(MaskMethod::Learned, &[0.0, 1.0]));
    assert!(e.contains("density of level 0 is 0"), "{e}");
    let e = err(masked_config(MaskMethod::Learned, &[0.5, 1.2]));
    assert!(e.contains("density of level 1 is 1.2"), "{e}");
    let e = err(masked_config(MaskMethod::Learned, &[0.6, 0.5]));
    assert!(e.contains("must not shrink"), "{e}");
    let mut thresholds = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    masking(&mut thresholds).targets = MaskTargets::Thresholds(vec![0.01, 0.02]);
    assert!(err(thresholds).contains("thresholds must not grow"));
    let mut random_thresholds = masked_config(MaskMethod::Random, &[0.5, 1.0]);
    masking(&mut random_thresholds).targets = MaskTargets::Thresholds(vec![0.02, 0.0]);
    assert!(err(random_thresholds).contains("given by densities"));
    // Equal channel levels must differ by their masks.
    let mut unmasked = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    unmasked.training.masking = None;
    assert!(err(unmasked).contains("levels 0 and 1 are the same network"));
    let mut none = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    masking(&mut none).masked_layers = Some(Vec::new());
    assert!(err(none).contains("masks no layer"));
    let mut unknown = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    masking(&mut unknown).masked_layers = Some(vec!["conv2".into(), "conv9".into()]);
    let e = err(unknown);
    assert!(e.contains("unknown layer `conv9`") && e.contains("conv1, conv2, fc1, fc2"), "{e}");
    // Per-level (un-nested) layers share no weight: no nested mask on them.
    let mut private = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    {
        let cnn = &mut private.model;
        cnn.unnested_first_conv = true;
    }
    masking(&mut private).masked_layers = Some(vec!["conv1".into()]);
    assert!(err(private).contains("`conv1` is un-nested"));
    let mut weights = masked_config(MaskMethod::Learned, &[0.5, 1.0, 1.0]);
    weights.training.level_loss_weights = Some(vec![1.0]);
    assert!(err(weights).contains("weights"));
    let mut wrong_count = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    masking(&mut wrong_count).targets = MaskTargets::Densities(vec![1.0]);
    assert!(err(wrong_count).contains("gives 1 values but the model has 2 levels"));

    // Unreachable: conv1, fc2, biases and batch norms stay dense and alone exceed 0.1%.
    let (train_set, _) = common::mnist();
    let dir = tempfile::tempdir().unwrap();
    let config = masked_config(MaskMethod::Learned, &[0.001, 1.0]);
    let run = RunDir::new(dir.path().join("run"));
    let result = train(&config, data(&train_set, None), &device, &run, false, &mut QuietProgress);
    let e = result.expect_err("unreachable density").to_string();
    assert!(e.contains("density 0.001 of level 0 cannot be reached"), "{e}");
    // Found before anything was written.
    assert!(!run.path().join("config.json").exists());
}

#[test]
fn a_level_can_be_narrower_and_sparser() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let mut config = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    config.training.train_limit = Some(128);
    config.model = NestedMnistCnnConfig::new().with_levels("0.5,1.0".parse().unwrap());
    let run = RunDir::new(dir.path().join("run"));
    let model =
        train(&config, data(&train_set, None), &device, &run, false, &mut QuietProgress).unwrap().model;
    assert!(masks_nest(&model));
    // Level 0 uses half the channels, and half of the parameters of its channel block.
    assert_eq!(model.conv2.level_dims(0), (16, 32));
    let unmasked = nestednet::train::trainer::seeded_model(
        &NestedMnistCnnConfig::new().with_levels("0.5,1.0".parse().unwrap()),
        None,
        0,
        &device,
    )
    .unwrap();
    let block = unmasked.level_cost(0).params as f64;
    let density = model.level_cost(0).params as f64 / block;
    assert!((density - 0.5).abs() < 0.01, "{density}");
    assert_eq!(model.level_cost(1).params, unmasked.level_cost(1).params);
    // Its sparse export is level-sized and computes what the nested level computes.
    let path = dir.path().join("core.sparse.safetensors");
    export_level(&model, &config.model, 0, &path, ExportFormat::SparseSafetensors).unwrap();
    let (manifest, plain) = load_level::<NestedMnistCnnConfig>(&path, &device).unwrap();
    assert_eq!(manifest.level, 0);
    let cnn = &plain;
    assert_eq!((cnn.conv2.weight.dims()[0], cnn.fc1.weight.dims()[1]), (32, 64));
    let x = epoch_loader(test_set, 100, 0, 0, false, None, &device)
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .unwrap()
        .images;
    let diff =
        (plain.valid().forward(x.clone()) - model.forward_level(x, 0)).abs().max().into_scalar::<f32>();
    assert!(diff <= 1e-5, "{diff}");
}

#[test]
fn global_thresholds_are_used_as_given() {
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let mut config = masked_config(MaskMethod::Learned, &[0.5, 1.0]);
    config.training.train_limit = Some(64);
    config.training.masking.as_mut().unwrap().targets = MaskTargets::Thresholds(vec![0.02, 0.0]);
    let run = RunDir::new(dir.path().join("run"));
    let model =
        train(&config, data(&train_set, None), &device, &run, false, &mut QuietProgress).unwrap().model;
    let state = run.load_checkpoint_state().unwrap().unwrap();
    assert_eq!(state.thresholds, vec![(1, 0.0), (0, 0.02)]);
    // fc1's weights start uniform in ±1/√3136 ≈ ±0.018, so τ = 0.02 removes most of them from
    // the core, and τ = 0 (the full level) almost none.
    let d = densities(&model);
    assert!(d[0] < 0.2 && d[1] > 0.999, "{d:?}");
    assert!(masks_nest(&model));
}

#[test]
fn a_run_killed_in_the_middle_of_a_mask_stage_resumes_exactly() {
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let mut config = masked_config(MaskMethod::Learned, &[0.33, 0.5, 1.0]);
    config.training.train_limit = Some(192);
    config.training.masking.as_mut().unwrap().stage_epochs = 2;
    assert_eq!(config.training.epoch_plan(3).len(), 7);
    let straight_run = RunDir::new(dir.path().join("straight"));
    let straight = train(&config, data(&train_set, None), &device, &straight_run, false, &mut QuietProgress)
        .unwrap()
        .model;
    // Killed after epoch 3: the first of level 1's two stage epochs.
    let run = RunDir::new(dir.path().join("killed"));
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&config, data(&train_set, None), &device, &run, false, &mut common::KillAfter(3))
    }));
    assert!(killed.is_err());
    assert_eq!(run.load_checkpoint_state().unwrap().unwrap().epochs_completed, 3);
    let resumed =
        train(&config, data(&train_set, None), &device, &run, true, &mut QuietProgress).unwrap().model;
    assert_eq!(common::weights(&resumed), common::weights(&straight), "weights differ after the resume");
    for ((_, a), (_, b)) in resumed.weight_layers().iter().zip(straight.weight_layers().iter()) {
        assert_eq!(a.mask().map(|m| m.level_map_values()), b.mask().map(|m| m.level_map_values()));
    }
    assert_eq!(
        run.load_checkpoint_state().unwrap().unwrap().thresholds,
        straight_run.load_checkpoint_state().unwrap().unwrap().thresholds
    );
}
