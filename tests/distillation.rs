//! Knowledge distillation inside one training run: in-place (the full level teaches the lower
//! levels) and from an external teacher run.

mod common;

use std::sync::Arc;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::epoch_loader;
use nestednet::heads::JointLoss;
use nestednet::models::{NestedMnistCnn, NestedMnistCnnConfig};
use nestednet::train::trainer::{
    DistillStep, DistillationConfig, JointStep, LevelLabels, QuietProgress, RunConfig, RunDir, TrainData,
    TrainingConfig, seeded_model, train, train_step,
};

fn config(model: NestedMnistCnnConfig, training: TrainingConfig) -> RunConfig<NestedMnistCnnConfig> {
    RunConfig::new(model, training)
}

/// One joint step of the 3-level `mnist-cnn` on the first 32 training digits, the core (level
/// 0) trained on `core_labels(label)` instead of the digit.
fn one_step(alpha: Option<f64>, core_labels: fn(i64) -> i64) -> NestedMnistCnn {
    let (train_set, _) = common::mnist();
    let device = Device::flex().autodiff();
    let config = TrainingConfig::new().with_seed(3);
    let model = seeded_model(&NestedMnistCnnConfig::new(), None, config.seed, &device).unwrap();
    let batch =
        epoch_loader(train_set, 32, 0, 0, false, None, &device).unwrap().iter().next().unwrap().unwrap();
    let digits = batch.labels.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
    let wrong: Vec<i64> = digits.iter().map(|&d| core_labels(d)).collect();
    let core = Tensor::<1, Int>::from_data(TensorData::new(wrong, [32]), &device);
    let labels = vec![core, batch.labels.clone(), batch.labels.clone()];
    let fine = LevelLabels::fine(3);
    let distill =
        alpha.map(|alpha| DistillStep { temperature: 4.0, alpha, teacher_logits: None, labels: &fine });
    let mut optim = config.optimizer.init();
    let joint = JointLoss::mean(3);
    let step = JointStep::new(batch.images, batch.labels, &[0, 1, 2], &joint)
        .with_targets(labels)
        .with_distill(distill.as_ref());
    let (model, _) = train_step(model, &mut optim, step, 1e-3);
    model.valid()
}

/// With α = 1 the core learns from the full level's softened outputs only: its labels no
/// longer matter. With α = 0.5 they do. The full level is the teacher, detached: its weights
/// outside level 1 move exactly as without distillation.
#[test]
fn in_place_distillation_teaches_the_core_from_the_detached_full_level() {
    let right = |d: i64| d;
    let wrong = |d: i64| (d + 1) % 10;
    assert_eq!(common::weights(&one_step(Some(1.0), right)), common::weights(&one_step(Some(1.0), wrong)));
    assert_ne!(common::weights(&one_step(Some(0.5), right)), common::weights(&one_step(Some(0.5), wrong)));
    let plain = one_step(None, right);
    let distilled = one_step(Some(0.5), right);
    assert_ne!(common::weights(&plain), common::weights(&distilled), "distillation changed nothing");
    // fc1's rows 64.. (hidden units of the full level only) learn from the full level alone.
    let rows = |m: &NestedMnistCnn| {
        let w = m.fc1.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let [d_in, d_out] = m.fc1.weight.dims();
        (0..d_in)
            .flat_map(|i| (64..d_out).map(move |o| (i, o)))
            .map(|(i, o)| w[i * d_out + o])
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&plain), rows(&distilled));
}

#[test]
fn an_external_teacher_run_teaches_every_level() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let teacher_dir = dir.path().join("teacher");
    let teacher = config(
        NestedMnistCnnConfig::new().with_levels("1.0".parse().unwrap()),
        TrainingConfig::new().with_epochs(1).with_train_limit(Some(256)),
    );
    let data = TrainData::new(train_set.clone(), None);
    train(&teacher, data, &device, &RunDir::new(&teacher_dir), false, &mut QuietProgress).unwrap();
    let student = |folder: &std::path::Path, alpha: f64| {
        config(
            NestedMnistCnnConfig::new(),
            TrainingConfig::new().with_epochs(1).with_train_limit(Some(128)).with_distillation(Some(
                DistillationConfig::new()
                    .with_alpha(alpha)
                    .with_teacher_run(Some(folder.display().to_string())),
            )),
        )
    };
    let run = |config: &RunConfig<NestedMnistCnnConfig>, name: &str| {
        train(
            config,
            TrainData::new(train_set.clone(), Some(Arc::clone(&test_set))),
            &device,
            &RunDir::new(dir.path().join(name)),
            false,
            &mut QuietProgress,
        )
    };
    let taught = run(&student(&teacher_dir, 1.0), "taught").unwrap();
    let plain = run(&student(&teacher_dir, 0.0), "plain").unwrap();
    assert_ne!(common::weights(&taught.model), common::weights(&plain.model));
    // The teacher's choice is saved with the run.
    let stored = RunDir::new(dir.path().join("taught")).load_config::<NestedMnistCnnConfig>().unwrap();
    assert_eq!(stored.training.distillation, student(&teacher_dir, 1.0).training.distillation);

    let err = run(&student(&dir.path().join("missing"), 0.5), "bad").err().unwrap().to_string();
    assert!(err.contains("distillation teacher") && err.contains("missing"), "{err}");
    // A teacher that predicts other classes than the data set's.
    let coarse_dir = dir.path().join("coarse");
    let coarse = config(
        NestedMnistCnnConfig::new().with_levels("1.0".parse().unwrap()).with_num_classes(3),
        TrainingConfig::new().with_epochs(1).with_train_limit(Some(64)),
    );
    let three = Arc::new(train_set.relabel(&[0, 1, 2, 2, 1, 2, 0, 1, 0, 0], 3).unwrap());
    let data = TrainData::new(three, None);
    train(&coarse, data, &device, &RunDir::new(&coarse_dir), false, &mut QuietProgress).unwrap();
    let err = run(&student(&coarse_dir, 0.5), "bad2").err().unwrap().to_string();
    assert!(err.contains("predicts 3 classes") && err.contains("10 classes"), "{err}");
}
