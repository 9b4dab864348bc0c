//! Coarse-to-fine levels on real MNIST: the core predicts the 3 shape groups of the built-in
//! hierarchy, the full level the 10 digits, each trained and scored on its own labels.

mod common;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::heads::Hierarchy;
use nestednet::models::{NestedClassifier, NestedMnistCnnConfig};
use nestednet::train::{HierarchyConfig, QuietProgress, RunDir, TrainingConfig, evaluate, train};

fn hierarchical_config() -> TrainingConfig {
    let hierarchy = HierarchyConfig::one_level_per_depth(Hierarchy::mnist_shapes());
    let model = NestedMnistCnnConfig::new()
        .with_levels("0.5,1.0".parse().unwrap())
        .with_level_classes(hierarchy.level_classes());
    TrainingConfig::new(model).with_epochs(1).with_train_limit(Some(1280)).with_hierarchy(Some(hierarchy))
}

#[test]
fn each_level_learns_its_own_granularity() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let config = hierarchical_config();
    let run = RunDir::new(dir.path().join("run"));
    let model = train(&config, train_set, None, &device, &run, false, &mut QuietProgress).unwrap().model;
    assert_eq!((model.level_classes(0), model.level_classes(1)), (3, 10));
    let labels = config.level_labels();
    let tallies = evaluate(&model, test_set.clone(), 500, &device, &labels).unwrap();
    // Far above chance (1/3 and 1/10) after 20 steps.
    assert!(tallies[0].accuracy() > 0.8, "shape groups: {}", tallies[0].accuracy());
    assert!(tallies[1].accuracy() > 0.8, "digits: {}", tallies[1].accuracy());
    // The run folder reloads into the same model (heads included).
    let (stored, reloaded) = run.load_model(&device).unwrap();
    assert_eq!(stored.hierarchy, config.hierarchy);
    let again = evaluate(&reloaded.valid(), test_set, 500, &device, &labels).unwrap();
    assert_eq!(again, tallies);
}

#[test]
fn a_hierarchy_that_does_not_fit_is_a_clear_error() {
    let config = hierarchical_config();
    let mut wrong_classes = config.clone();
    wrong_classes.model.level_classes = vec![4, 10];
    let err = wrong_classes.validate().unwrap_err().to_string();
    assert!(err.contains("[3, 10] classes but the model's level_classes are [4, 10]"), "{err}");
    let mut three_levels = config.clone();
    three_levels.model.levels = "0.25,0.5,1.0".parse().unwrap();
    three_levels.model.level_classes = vec![3, 3, 10];
    let err = three_levels.validate().unwrap_err().to_string();
    assert!(err.contains("2 levels but the model has 3"), "{err}");
}
