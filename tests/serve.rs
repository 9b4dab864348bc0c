//! Serving any budget: levels chosen by measured cost, Mix'n'Match sub-networks searched,
//! exported and chosen, and dense networks nested ("nestify"), on real MNIST.

mod common;

use std::sync::Arc;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::{DataSource, DatasetKind};
use nestednet::models::{ChannelImportance, NestedMnistCnnConfig, NestedNetwork};
use nestednet::train::TrainError;
use nestednet::train::export::{ExportFormat, export_level, load_level, nestify};
use nestednet::train::jobs::{Backend, TrainJob, run_job_with_data};
use nestednet::train::serve::{
    Budget, BudgetKind, SearchSettings, calibrated_mix, calibration_batches, export_front,
    measure_candidates, run_candidates, search_mixes, select_within,
};
use nestednet::train::trainer::{
    ImageData, LevelLabels, OptimizerConfig, QuietProgress, RunConfig, RunDir, TrainingConfig, evaluate,
};

fn short_training() -> TrainingConfig {
    TrainingConfig::new()
        .with_epochs(1)
        .with_train_limit(Some(640))
        .with_optimizer(OptimizerConfig::sgd())
        .with_learning_rate(0.05)
}

/// Trains `model` briefly into `dir` through the whole job (report included).
fn trained_run(
    model: NestedMnistCnnConfig,
    training: TrainingConfig,
    dir: &std::path::Path,
) -> nestednet::models::NestedMnistCnn {
    let (train_set, test_set) = common::mnist();
    let job = TrainJob::new(
        RunConfig::new(model, training),
        DataSource::new(DatasetKind::Mnist, common::mnist_dir()),
        RunDir::new(dir),
        Backend::Flex,
    );
    let test_set = Arc::new(test_set.take(400));
    run_job_with_data(&job, ImageData::from(train_set), ImageData::from(test_set), &mut QuietProgress)
        .unwrap()
        .training
        .model
}

fn budget(text: &str) -> Budget {
    text.parse().unwrap()
}

#[test]
fn budgets_select_the_most_accurate_level_that_fits_and_measurements_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path());
    let model = trained_run(NestedMnistCnnConfig::new(), short_training(), dir.path());
    let device = Device::flex();
    let candidates = run_candidates(&run, &model).unwrap();
    assert_eq!(candidates.iter().map(|c| c.level).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)]);
    let measured =
        measure_candidates::<NestedMnistCnnConfig>(&run, &model, &candidates, "flex", 2, &device, false)
            .unwrap();
    let cache: Vec<_> = std::fs::read_dir(dir.path().join("measurements")).unwrap().collect();
    assert_eq!(cache.len(), 1, "one cache file per device and batch size");
    // A second call reads the cache: the very same figures.
    let again =
        measure_candidates::<NestedMnistCnnConfig>(&run, &model, &candidates, "flex", 2, &device, false)
            .unwrap();
    for (m, a) in measured.iter().zip(&again) {
        let (m, a) = (&m.measurement, &a.measurement);
        assert_eq!((&m.name, m.calls, m.macs), (&a.name, a.calls, a.macs));
        // JSON keeps the figures up to the last bit or so of their decimal form.
        assert!((m.latency_p90_ms - a.latency_p90_ms).abs() <= 1e-9 * m.latency_p90_ms, "{m:?} vs {a:?}");
    }
    // A damaged cache is measured again, not trusted.
    let path = cache[0].as_ref().unwrap().path();
    std::fs::write(&path, b"{\"device\": 3").unwrap();
    let fresh =
        measure_candidates::<NestedMnistCnnConfig>(&run, &model, &candidates, "flex", 2, &device, false)
            .unwrap();
    assert_eq!(fresh.len(), 3);
    assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap()).is_ok());

    // MACs between L1's and L2's: the most accurate of L0 and L1.
    let macs = |k: usize| measured[k].candidate.macs;
    let limit = format!("macs<={}", (macs(1) + macs(2)) / 2);
    let chosen = select_within(&measured, &[budget(&limit)]).unwrap();
    let best =
        measured[..2].iter().max_by(|a, b| a.candidate.accuracy.total_cmp(&b.candidate.accuracy)).unwrap();
    assert_eq!(chosen.candidate.name, best.candidate.name);
    // Every budget must hold, the latency one by its 90th percentile.
    let p90 = measured[2].measurement.latency_p90_ms;
    let both = [
        budget(&format!("latency-ms={}", p90 * 2.0)),
        budget(&format!("params={}", measured[0].candidate.params)),
    ];
    assert_eq!(select_within(&measured, &both).unwrap().candidate.name, "L0");
    // Nothing fits: the error names the cheapest level and its figure.
    let err = select_within(&measured, &[budget("macs=10")]).unwrap_err();
    assert!(matches!(err, TrainError::Budget(_)));
    let text = err.to_string();
    assert!(
        text.contains("no level fits macs<=10")
            && text.contains("the cheapest, L0")
            && text.contains(&macs(0).to_string()),
        "{text}"
    );
    // nestednet's allocator (this test binary's, as any binary's that depends on nestednet)
    // counts a level's peak memory: at least its weights, and every level fits 100 MiB.
    for c in &measured {
        let memory = c.measurement.memory_bytes.expect("counted");
        assert!(memory >= 4 * c.candidate.params, "{}: {memory} bytes", c.candidate.name);
    }
    let most_accurate = measured.iter().map(|c| c.candidate.accuracy).fold(f64::NEG_INFINITY, f64::max);
    let roomy = select_within(&measured, &[budget("memory-mb=100")]).unwrap();
    assert_eq!(roomy.candidate.accuracy, most_accurate);
    // Where nothing counts allocations, memory budgets say so instead of guessing.
    let mut uncounted = measured.clone();
    uncounted.iter_mut().for_each(|c| c.measurement.memory_bytes = None);
    let err = select_within(&uncounted, &[budget("memory-mb=100")]).unwrap_err().to_string();
    assert!(err.contains("PeakAllocator"), "{err}");
    for (bad, why) in [
        ("latency-ms", "NAME=LIMIT"),
        ("speed=3", "unknown budget `speed`"),
        ("macs=-1", "positive"),
        ("macs=abc", "not a number"),
        ("latency-ms=NaN", "positive"),
    ] {
        let err = bad.parse::<Budget>().unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
    assert_eq!(budget("latency-ms<=2.5"), Budget { kind: BudgetKind::LatencyMs, limit: 2.5 });
    // A run without a report cannot rank its levels.
    std::fs::remove_file(run.report_path()).unwrap();
    let err = run_candidates(&run, &model).unwrap_err().to_string();
    assert!(err.contains("report.json") && err.contains("nestednet eval"), "{err}");
}

#[test]
fn mix_and_match_searches_scores_exports_and_serves_sub_networks() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path());
    let training = short_training().with_mix_samples(Some(1));
    let model = trained_run(NestedMnistCnnConfig::new(), training, dir.path()).valid();
    let device = Device::flex();
    let (train_set, test_set) = common::mnist();
    let eval = Arc::new(test_set.take(160));
    let settings =
        SearchSettings { calibration_batches: 2, calibration_batch_size: 64, ..SearchSettings::default() };
    let mut results = search_mixes(
        &model,
        &ImageData::from(train_set.clone()),
        &ImageData::from(eval.clone()),
        &settings,
        &device,
        &mut QuietProgress,
    )
    .unwrap();
    assert!(results.exhaustive);
    assert_eq!(results.evaluated.len(), 27, "3 levels for each of 3 mixable layers");
    assert_eq!(results.layers, ["conv1", "conv2", "fc1"]);
    // The trained levels are scored as they are.
    let tallies =
        evaluate(&model, &ImageData::from(eval.clone()), 256, &device, &LevelLabels::fine(3)).unwrap();
    for (k, tally) in tallies.iter().enumerate() {
        let point = results.evaluated.iter().find(|p| p.trained_level == Some(k)).unwrap();
        assert_eq!((point.accuracy, point.choice.clone()), (tally.accuracy(), vec![k; 3]));
    }
    // The front: cheapest first, each point more accurate than everything cheaper.
    for pair in results.front.windows(2) {
        assert!(pair[0].macs < pair[1].macs && pair[0].accuracy < pair[1].accuracy);
    }
    for p in &results.evaluated {
        assert!(
            results.front.iter().any(|f| f.macs <= p.macs && f.accuracy >= p.accuracy),
            "{} is dominated by no front point",
            p.name
        );
    }
    // Constraints bound every point; device-dependent ones belong to `select`.
    let l1_macs = model.level_cost(1).macs;
    let bounded =
        SearchSettings { constraints: vec![budget(&format!("macs<={l1_macs}"))], ..settings.clone() };
    let within = search_mixes(
        &model,
        &ImageData::from(train_set.clone()),
        &ImageData::from(eval.clone()),
        &bounded,
        &device,
        &mut QuietProgress,
    )
    .unwrap();
    assert!(within.evaluated.iter().all(|p| p.macs <= l1_macs) && within.evaluated.len() < 27);
    let latency = SearchSettings { constraints: vec![budget("latency-ms=1")], ..settings.clone() };
    let err = search_mixes(
        &model,
        &ImageData::from(train_set.clone()),
        &ImageData::from(eval.clone()),
        &latency,
        &device,
        &mut QuietProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("nestednet select"), "{err}");
    // The evolutionary search: seeded, so repeatable.
    let evolve = SearchSettings { exhaustive_limit: 4, population: 2, generations: 2, ..settings.clone() };
    let a = search_mixes(
        &model,
        &ImageData::from(train_set.clone()),
        &ImageData::from(eval.clone()),
        &evolve,
        &device,
        &mut QuietProgress,
    )
    .unwrap();
    let b = search_mixes(
        &model,
        &ImageData::from(train_set.clone()),
        &ImageData::from(eval.clone()),
        &evolve,
        &device,
        &mut QuietProgress,
    )
    .unwrap();
    assert!(!a.exhaustive && a.evaluated.len() < 27 && a.evaluated.len() > 3);
    assert_eq!(a.evaluated, b.evaluated);

    // Every mix on the front is exported and verified; the file reloads alone and computes
    // what the recalibrated mix computes.
    let config = run.load_config::<NestedMnistCnnConfig>().unwrap().model;
    let calibration =
        calibration_batches(&ImageData::from(train_set), 1, 64, settings.seed, &device).unwrap();
    let infos = export_front(&run, &model, &config, &mut results, &calibration).unwrap();
    let mixes: Vec<_> = results.front.iter().filter(|p| p.trained_level.is_none()).collect();
    assert_eq!(infos.len(), mixes.len());
    let images = common::random_images([4, 1, 28, 28], 1, &device);
    for (point, info) in mixes.iter().zip(&infos) {
        assert!(info.max_abs_diff <= 1e-4);
        let (manifest, alone) =
            load_level::<NestedMnistCnnConfig>(&dir.path().join(point.export.as_ref().unwrap()), &device)
                .unwrap();
        assert_eq!(manifest.mix.as_deref(), Some(&point.choice[..]));
        let mixed = calibrated_mix(&model, &point.choice, &calibration).unwrap();
        assert_eq!(alone.level_cost(0).macs, point.macs);
        alone.forward(images.clone()).into_data().assert_approx_eq::<f32>(
            &mixed.forward_level(images.clone(), 0).into_data(),
            nestednet::burn::tensor::Tolerance::absolute(1e-4),
        );
    }
    // `select` now weighs the front's mixes with the levels.
    results.write(&run).unwrap();
    assert!(dir.path().join("search/front.png").is_file() && dir.path().join("search/front.md").is_file());
    let candidates = run_candidates(&run, &model).unwrap();
    assert_eq!(candidates.len(), 3 + mixes.len());
    let measured =
        measure_candidates::<NestedMnistCnnConfig>(&run, &model, &candidates, "flex", 1, &device, false)
            .unwrap();
    let cheapest_mix = mixes.iter().map(|p| p.macs).min();
    if let Some(macs) = cheapest_mix {
        let chosen = select_within(&measured, &[budget(&format!("macs<={macs}"))]).unwrap();
        let best = measured
            .iter()
            .filter(|c| c.candidate.macs <= macs)
            .map(|c| c.candidate.accuracy)
            .fold(0.0, f64::max);
        assert_eq!(chosen.candidate.accuracy, best);
    }
    // Mixes need mixable layers: a masked model has none.
    let masked = nestednet::train::trainer::with_init_lock(|| {
        let mut masked = NestedMnistCnnConfig::new().init(&device);
        nestednet::models::Maskable::enable_mask(&mut masked.conv2);
        masked
    });
    let err = TrainingConfig::new().with_mix_samples(Some(1)).validate_for(&masked).unwrap_err();
    assert!(err.to_string().contains("mix training needs"), "{err}");
    let sampled = TrainingConfig::new().with_mix_samples(Some(2)).sample_mixes(&[3, 3, 3], 7);
    assert_eq!(sampled, TrainingConfig::new().with_mix_samples(Some(2)).sample_mixes(&[3, 3, 3], 7));
    assert!(sampled.iter().all(|c| c.len() == 3 && c.iter().any(|&k| k != c[0])));
}

#[test]
fn a_dense_network_nests_keeping_its_function() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let dense_config = NestedMnistCnnConfig::new().with_levels("1".parse().unwrap());
    let dense = trained_run(dense_config.clone(), short_training(), &dir.path().join("dense"));
    let config = dense_config.clone();
    let file = dir.path().join("dense.safetensors");
    export_level(&dense, &config, 0, &file, ExportFormat::Safetensors).unwrap();
    let bpk = dir.path().join("dense.bpk");
    export_level(&dense, &config, 0, &bpk, ExportFormat::Burnpack).unwrap();
    let nested_config = NestedMnistCnnConfig::new();
    let images = common::random_images([4, 1, 28, 28], 1, &device);
    let reference = dense.valid().forward_level(images.clone(), 0);
    for (path, importance) in [
        (&file, Some(ChannelImportance::FilterL1)),
        (&file, Some(ChannelImportance::BatchNormGamma)),
        (&bpk, None),
    ] {
        let out = nestify(&nested_config, None, 7, path, importance, &device).unwrap();
        assert!(out.reorder_max_abs_diff <= 1e-4 && out.full_level_max_abs_diff <= 1e-4);
        out.network.valid().forward_level(images.clone(), 2).into_data().assert_approx_eq::<f32>(
            &reference.clone().into_data(),
            nestednet::burn::tensor::Tolerance::absolute(1e-4),
        );
        match importance {
            None => assert!(out.orders.is_empty()),
            Some(_) => {
                assert_eq!(
                    out.orders.iter().map(|(n, o)| (n.as_str(), o.len())).collect::<Vec<_>>(),
                    [("conv1", 32), ("conv2", 64), ("fc1", 128)]
                );
                for (_, order) in &out.orders {
                    let mut sorted = order.clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..order.len()).collect::<Vec<_>>(), "a permutation");
                }
            }
        }
    }
    // A dense network of another architecture is refused by name.
    let other = NestedMnistCnnConfig::new().with_hidden(64);
    let err = nestify(&other, None, 7, &file, None, &device).unwrap_err().to_string();
    assert!(err.contains("fc1") || err.contains("shape"), "{err}");
    // Random bytes are not a network.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file at all").unwrap();
    assert!(nestify(&nested_config, None, 7, &junk, None, &device).is_err());
}
