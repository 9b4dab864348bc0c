//! A network defined outside the crates (the `custom_model` example's `TinyNet`) gets what the
//! built-in models get: measured costs, training with checkpoints and an exact resume, weight
//! masks, reports and verified exports in every format.

mod common;

#[path = "../examples/custom_model/model.rs"]
mod model;

use nestednet::burn::prelude::*;
use nestednet::models::{NestedNetwork, NestedNetworkConfig};
use nestednet::prune::MaskTargets;
use nestednet::train::export::{ExportFormat, export_level, load_level};
use nestednet::train::trainer::{
    MaskMethod, MaskingConfig, QuietProgress, RunConfig, RunDir, TrainData, TrainingConfig, train,
};

use model::TinyNetConfig;

fn config(epochs: usize) -> RunConfig<TinyNetConfig> {
    RunConfig::new(
        TinyNetConfig::new(vec![0.25, 0.5, 1.0], [1, 28, 28], 10),
        TrainingConfig::new().with_epochs(epochs).with_train_limit(Some(384)).with_seed(5),
    )
}

/// The costs the nested layers record equal a hand count of TinyNet's levels.
#[test]
fn a_user_network_gets_its_costs_measured() {
    let network =
        nestednet::train::trainer::seeded_model(&config(1).model, None, 0, &Device::flex()).unwrap();
    for (level, (c1, c2)) in [(4, 8), (8, 16), (16, 32)].into_iter().enumerate() {
        let params = (c1 * 9 + c1) + 2 * c1 + (c2 * c1 * 9 + c2) + 2 * c2 + (c2 * 49 * 10 + 10);
        let macs = 28 * 28 * c1 * 9 + 14 * 14 * c2 * c1 * 9 + c2 * 49 * 10;
        let cost = network.level_cost(level);
        assert_eq!((cost.params, cost.macs), (params, macs), "level {level}");
        assert_eq!(network.level_classes(level), 10);
    }
    let err =
        TinyNetConfig::new(vec![0.5, 0.25, 1.0], [1, 28, 28], 10).init_network(&Device::flex()).unwrap_err();
    assert!(err.to_string().contains("level 1"), "{err}");
}

#[test]
fn a_user_network_trains_resumes_exactly_and_exports_verified() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let data = || TrainData::new(train_set.clone(), Some(test_set.clone()));
    let straight = train(
        &config(2),
        data(),
        &device,
        &RunDir::new(dir.path().join("straight")),
        false,
        &mut QuietProgress,
    )
    .unwrap();
    let run = RunDir::new(dir.path().join("killed"));
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(&config(2), data(), &device, &run, false, &mut common::KillAfter(1))
    }));
    assert!(killed.is_err());
    let resumed = train(&config(2), data(), &device, &run, true, &mut QuietProgress).unwrap();
    assert_eq!(common::weights(&resumed.model), common::weights(&straight.model), "resume is not exact");
    // Its run folder reloads through the user's own configuration type.
    let (stored, reloaded) = run.load_model::<TinyNetConfig>(&device).unwrap();
    assert_eq!(stored.model.name(), "tiny-net");
    assert_eq!(common::weights(&reloaded), common::weights(&resumed.model));
    for (format, file) in [
        (ExportFormat::Burnpack, "core.bpk"),
        (ExportFormat::Safetensors, "core.safetensors"),
        (ExportFormat::SparseSafetensors, "core.sparse.safetensors"),
    ] {
        let path = dir.path().join(file);
        let info = export_level(&resumed.model, &stored.model, 0, &path, format).unwrap();
        assert!(info.max_abs_diff <= 1e-5, "{format:?}: {}", info.max_abs_diff);
        let (_, level) = load_level::<TinyNetConfig>(&path, &device).unwrap();
        assert_eq!(level.level_cost(0), resumed.model.level_cost(0));
    }
}

/// Learned nested masks on a user's network: its first and last layers stay dense by default.
#[test]
fn a_user_network_learns_nested_weight_masks() {
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let mut run_config = config(1);
    run_config.model.ratios = vec![1.0, 1.0];
    // fc holds most parameters and stays dense: 0.5 would be unreachable (a clear error).
    run_config.training.masking =
        Some(MaskingConfig::new(MaskMethod::Learned, MaskTargets::Densities(vec![0.85, 1.0])));
    let outcome = train(
        &run_config,
        TrainData::new(train_set, None),
        &device,
        &RunDir::new(dir.path().join("masked")),
        false,
        &mut QuietProgress,
    )
    .unwrap();
    let model = outcome.model;
    let density = model.level_cost(0).params as f64 / model.level_cost(1).params as f64;
    assert!((density - 0.85).abs() < 0.01, "{density}");
    let masked: Vec<String> =
        model.weight_layers().into_iter().filter(|(_, l)| l.mask().is_some()).map(|(n, _)| n).collect();
    assert_eq!(masked, ["conv2"]);
}

/// The library's entry point for a user's network: data, folder and devices in, a trained
/// object out that reports and exports; what it lacks is named before anything runs.
#[test]
fn a_user_network_launches_on_two_devices_and_returns_what_it_trained() {
    use nestednet::data::{DataSource, DatasetKind};
    use nestednet::train::jobs::NestedTraining;
    let (train_set, test_set) = common::mnist();
    let dir = tempfile::tempdir().unwrap();
    let start = || NestedTraining::new(config(1).model, config(1).training).quiet();
    let images = || ((*train_set).clone(), (*test_set).clone());
    let no_data = start().into_dir(dir.path().join("none")).launch().unwrap_err();
    assert!(no_data.to_string().contains("give the data"), "{no_data}");
    let (train, test) = images();
    let no_dir = start().images(train, test).launch().unwrap_err();
    assert!(no_dir.to_string().contains("run folder"), "{no_dir}");

    let (train, test) = images();
    let source = DataSource::new(DatasetKind::Mnist, common::mnist_dir());
    let trained = start()
        .images(train, test)
        .source(source.clone())
        .devices("flex,flex".parse().unwrap())
        .into_dir(dir.path().join("two"))
        .launch()
        .unwrap();
    assert_eq!(trained.num_levels(), 3);
    assert_eq!(trained.report.levels.len(), 3);
    assert_eq!(trained.history.len(), 1);
    // The folder records its data, so the CLI's `eval` finds them again.
    let stored = trained.run.load_config::<TinyNetConfig>().unwrap();
    assert_eq!(stored.data.as_ref().map(|d| &d.dir), Some(&source.dir));
    let info = trained.export(0, &dir.path().join("core.safetensors"), ExportFormat::Safetensors).unwrap();
    assert!(info.max_abs_diff <= 1e-5, "{}", info.max_abs_diff);
}
