//! Coarse-to-fine levels on real MNIST: the core predicts the 3 shape groups of the built-in
//! hierarchy, the full level the 10 digits, each trained and scored on its own labels.

mod common;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::heads::Hierarchy;
use nestednet::models::{NestedMnistCnnConfig, NestedNetwork, NestedResNetConfig};
use nestednet::train::trainer::{
    HierarchyConfig, ImageData, OptimizerConfig, QuietProgress, RunConfig, RunDir, TrainData, TrainingConfig,
    evaluate, train,
};

fn training(hierarchy: &HierarchyConfig) -> TrainingConfig {
    TrainingConfig::new().with_epochs(1).with_train_limit(Some(1280)).with_hierarchy(Some(hierarchy.clone()))
}

fn hierarchical_config() -> RunConfig<NestedMnistCnnConfig> {
    let hierarchy = HierarchyConfig::one_level_per_depth(Hierarchy::mnist_shapes());
    let model = NestedMnistCnnConfig::new()
        .with_levels("0.5,1.0".parse().unwrap())
        .with_level_classes(hierarchy.level_classes());
    RunConfig::new(model, training(&hierarchy))
}

#[test]
fn each_level_learns_its_own_granularity() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let config = hierarchical_config();
    let run = RunDir::new(dir.path().join("run"));
    let model = train(&config, TrainData::new(train_set, None), &device, &run, false, &mut QuietProgress)
        .unwrap()
        .model;
    assert_eq!((model.level_classes(0), model.level_classes(1)), (3, 10));
    let labels = config.training.level_labels(2);
    let tallies = evaluate(&model, &ImageData::from(test_set.clone()), 500, &device, &labels).unwrap();
    // Far above chance (1/3 and 1/10) after 20 steps.
    assert!(tallies[0].accuracy() > 0.8, "shape groups: {}", tallies[0].accuracy());
    assert!(tallies[1].accuracy() > 0.8, "digits: {}", tallies[1].accuracy());
    // The run folder reloads into the same model (heads included).
    let (stored, reloaded) = run.load_model::<NestedMnistCnnConfig>(&device).unwrap();
    assert_eq!(stored.training.hierarchy, config.training.hierarchy);
    let again =
        evaluate(&reloaded.valid(), &ImageData::from(test_set.clone()), 500, &device, &labels).unwrap();
    assert_eq!(again, tallies);
}

/// Heads are not the mnist-cnn's alone: a residual lattice's levels get one each too.
#[test]
fn residual_levels_learn_their_own_granularity() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let hierarchy = HierarchyConfig::one_level_per_depth(Hierarchy::mnist_shapes());
    let mut model = NestedResNetConfig::mnist_resnet(10);
    model.lattice = nestednet::schedule::LatticeSpec::widths_only(vec![0.5, 1.0], 2);
    model.level_classes = hierarchy.level_classes();
    let config = RunConfig::new(
        model,
        training(&hierarchy)
            .with_optimizer(OptimizerConfig::sgd())
            .with_learning_rate(0.1)
            .with_batch_size(32),
    );
    let run = RunDir::new(dir.path().join("run"));
    let trained = train(&config, TrainData::new(train_set, None), &device, &run, false, &mut QuietProgress)
        .unwrap()
        .model;
    assert_eq!((trained.level_classes(0), trained.level_classes(1)), (3, 10));
    let tallies = evaluate(
        &trained,
        &ImageData::from(test_set.clone()),
        500,
        &device,
        &config.training.level_labels(2),
    )
    .unwrap();
    // 40 steps: well above chance (1/3 for the shapes, 1/10 for the digits).
    assert!(tallies[0].accuracy() > 0.45 && tallies[1].accuracy() > 0.2, "{tallies:?}");
}

#[test]
fn a_hierarchy_that_does_not_fit_is_a_clear_error() {
    let device = Device::flex();
    let config = hierarchical_config();
    let err = |c: RunConfig<NestedMnistCnnConfig>| c.validate(&device).expect_err("an error").to_string();
    let mut wrong_classes = config.clone();
    {
        let cnn = &mut wrong_classes.model;
        cnn.level_classes = vec![4, 10];
    }
    let e = err(wrong_classes);
    assert!(e.contains("[3, 10] classes but the model's levels predict [4, 10]"), "{e}");
    let mut three_levels = config.clone();
    {
        let cnn = &mut three_levels.model;
        cnn.levels = "0.25,0.5,1.0".parse().unwrap();
        cnn.level_classes = vec![3, 3, 10];
    }
    let e = err(three_levels);
    assert!(e.contains("2 levels but the model has 3"), "{e}");
}

/// CIFAR-100 records in the published binary layout: coarse byte, fine byte, R, G, B planes.
fn cifar100_records(pairs: &[(u8, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &(coarse, fine)) in pairs.iter().enumerate() {
        out.extend([coarse, fine]);
        out.extend((0..3072u32).map(|p| (p as u8).wrapping_mul(7).wrapping_add(fine).wrapping_add(i as u8)));
    }
    out
}

#[test]
fn cifar100_hierarchy_is_read_from_the_data_files() {
    use nestednet::data::Cifar100;
    use nestednet::heads::CIFAR100_COARSE_OF_FINE;
    let dir = tempfile::tempdir().unwrap();
    // Every fine class once in the training file, under its published super-class.
    let pairs: Vec<(u8, u8)> = (0..100).map(|f| (CIFAR100_COARSE_OF_FINE[f] as u8, f as u8)).collect();
    std::fs::write(dir.path().join("train.bin"), cifar100_records(&pairs)).unwrap();
    std::fs::write(dir.path().join("test.bin"), cifar100_records(&pairs[..20])).unwrap();
    let (train_set, test_set) = Cifar100::load(dir.path()).unwrap();
    let coarse = train_set.coarse_labels.clone().unwrap();
    let hierarchy = Hierarchy::cifar100_from_labels(&coarse, &train_set.labels).unwrap();
    assert_eq!(hierarchy, Hierarchy::cifar100());
    assert_eq!(hierarchy.depths[0].classes[hierarchy.depths[0].of_fine[3]], "large_carnivores"); // bear

    // A coarse/fine split of CIFAR-100 trains: 20 super-classes at the core, 100 classes at the
    // full level, on 3x32x32 images.
    let config = HierarchyConfig::one_level_per_depth(hierarchy.clone());
    let model = NestedMnistCnnConfig::new()
        .with_in_channels(3)
        .with_height(32)
        .with_width(32)
        .with_num_classes(100)
        .with_levels("0.5,1.0".parse().unwrap())
        .with_level_classes(config.level_classes());
    let training = RunConfig::new(
        model,
        TrainingConfig::new().with_epochs(1).with_batch_size(50).with_hierarchy(Some(config)),
    );
    let device = Device::flex();
    let run = RunDir::new(dir.path().join("run"));
    let (train_set, test_set) = (std::sync::Arc::new(train_set), std::sync::Arc::new(test_set));
    let trained = train(&training, TrainData::new(train_set, None), &device, &run, false, &mut QuietProgress)
        .unwrap()
        .model;
    assert_eq!((trained.level_classes(0), trained.level_classes(1)), (20, 100));
    let tallies = evaluate(
        &trained,
        &ImageData::from(test_set.clone()),
        20,
        &device,
        &training.training.level_labels(2),
    )
    .unwrap();
    assert_eq!(tallies.len(), 2);
    assert_eq!(tallies[0].total, 20);

    // A fine class filed under two super-classes is named.
    let mut wrong = pairs.clone();
    wrong[5].0 = (wrong[5].0 + 1) % 20;
    wrong.push(pairs[5]);
    std::fs::write(dir.path().join("train.bin"), cifar100_records(&wrong)).unwrap();
    let (bad_set, _) = Cifar100::load(dir.path()).unwrap();
    let err = Hierarchy::cifar100_from_labels(bad_set.coarse_labels.as_deref().unwrap(), &bad_set.labels)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fine class 5 appears under coarse classes"), "{err}");
}
