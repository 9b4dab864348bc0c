//! Joint training on real MNIST: it learns, it is reproducible, it resumes exactly, and its
//! checkpoints reload bit for bit.

mod common;

use std::sync::Arc;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::ImageSet;
use nestednet::data::epoch_loader;
use nestednet::models::{ModelConfig, NestedMnistCnnConfig, NestedModel, NestedNetwork};
use nestednet::train::{
    LevelLabels, LrSchedule, OptimizerConfig, QuietProgress, RunConfig, RunDir, TrainData, TrainingConfig,
    evaluate, record_bytes, seeded_model, train,
};

fn quick_config(epochs: usize, limit: usize) -> RunConfig<ModelConfig> {
    RunConfig::new(
        NestedMnistCnnConfig::new().into(),
        TrainingConfig::new().with_epochs(epochs).with_train_limit(Some(limit)).with_seed(7),
    )
}

fn with_training(
    config: RunConfig<ModelConfig>,
    f: impl FnOnce(TrainingConfig) -> TrainingConfig,
) -> RunConfig<ModelConfig> {
    RunConfig { training: f(config.training), ..config }
}

fn alone(train: &Arc<ImageSet>) -> TrainData {
    TrainData::new(train.clone(), None)
}

fn assert_same_weights(a: &NestedModel, b: &NestedModel, what: &str) {
    let (a, b) = (common::weights(a), common::weights(b));
    assert_eq!(a.len(), b.len());
    let differing = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    assert_eq!(differing, 0, "{what}: {differing} of {} values differ", a.len());
}

fn logits_of_every_level(model: &NestedModel, images: Tensor<4>) -> Vec<TensorData> {
    model.forward_all(images).into_iter().map(|l| l.into_data()).collect()
}

#[test]
fn joint_training_learns_every_level_on_real_mnist() {
    let (train_set, test_set) = common::mnist();
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let config = quick_config(1, 3000);
    let outcome = train(
        &config,
        TrainData::new(train_set, Some(test_set.clone())),
        &device,
        &RunDir::new(dir.path().join("run")),
        false,
        &mut QuietProgress,
    )
    .unwrap();
    let accuracy = evaluate(&outcome.model, test_set, 500, &device, &LevelLabels::fine(3)).unwrap();
    for (level, t) in accuracy.iter().enumerate() {
        // 47 steps on 3,000 digits: every level is far above chance (0.1) already.
        assert!(t.accuracy() > 0.78, "level {level} reached only {:.3}", t.accuracy());
    }
    let history = &outcome.history[0];
    assert_eq!(history.test_accuracy.as_ref().unwrap().len(), 3);
    // Below chance level (ln 10 = 2.30) and wider levels fit better.
    let loss = &history.train_loss;
    assert!(loss.iter().all(|l| l.is_finite() && *l < 2.3), "{loss:?}");
    assert!(loss[2] < loss[0], "{loss:?}");
}

#[test]
fn same_seed_same_model_and_sgd_cosine_also_train() {
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let config = with_training(quick_config(1, 256), |t| {
        t.with_optimizer(OptimizerConfig::sgd())
            .with_learning_rate(0.05)
            .with_lr_schedule(LrSchedule::Cosine { min_lr: 0.0 })
    });
    let run = |name: &str| {
        train(
            &config,
            alone(&train_set),
            &device,
            &RunDir::new(dir.path().join(name)),
            false,
            &mut QuietProgress,
        )
        .unwrap()
    };
    let (a, b) = (run("a"), run("b"));
    assert_same_weights(&a.model, &b.model, "two runs with the same seed");
    let untrained =
        seeded_model(&config.model, None, config.training.seed, &device.clone().autodiff()).unwrap().valid();
    assert_ne!(common::weights(&a.model), common::weights(&untrained), "training did not change the weights");
    let other = train(
        &with_training(config.clone(), |t| t.with_seed(8)),
        alone(&train_set),
        &device,
        &RunDir::new(dir.path().join("c")),
        false,
        &mut QuietProgress,
    )
    .unwrap();
    assert_ne!(common::weights(&a.model), common::weights(&other.model));
}

#[test]
fn a_killed_run_resumes_to_the_same_model() {
    let (train_set, test_set) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let straight = train(
        &quick_config(2, 384),
        alone(&train_set),
        &device,
        &RunDir::new(dir.path().join("straight")),
        false,
        &mut QuietProgress,
    )
    .unwrap();

    // "Killed" after epoch 1: the run folder holds epoch 1's checkpoint, plus the debris a crash
    // mid-way through epoch 2's checkpoint would leave (a half-written temporary folder and
    // file). Resuming must ignore them.
    let run = RunDir::new(dir.path().join("killed"));
    train(&quick_config(1, 384), alone(&train_set), &device, &run, false, &mut QuietProgress).unwrap();
    std::fs::create_dir_all(run.path().join("checkpoints/.2.tmp")).unwrap();
    std::fs::write(run.path().join("checkpoints/.2.tmp/model.bpk"), b"half").unwrap();
    std::fs::write(run.path().join(".model.bpk.tmp-999"), b"half").unwrap();
    let err = train(&quick_config(2, 384), alone(&train_set), &device, &run, false, &mut QuietProgress)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--resume"), "{err}");
    // Resuming with other settings names them; more epochs are what resuming is for.
    let other = with_training(quick_config(2, 384), |t| t.with_learning_rate(0.01).with_batch_size(32));
    let err =
        train(&other, alone(&train_set), &device, &run, true, &mut QuietProgress).unwrap_err().to_string();
    assert!(err.contains("another batch_size, learning_rate;"), "{err}");
    let resumed =
        train(&quick_config(2, 384), alone(&train_set), &device, &run, true, &mut QuietProgress).unwrap();
    assert_eq!(resumed.history.len(), 2);
    assert_same_weights(&resumed.model, &straight.model, "resumed vs uninterrupted run");

    // The checkpoint on disk reloads bit for bit, every level.
    let (_, reloaded) = run.load_model::<ModelConfig>(&device).unwrap();
    let reloaded = reloaded.valid();
    let images = epoch_loader(test_set, 128, 0, 0, false, None, &device)
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .unwrap()
        .images;
    let expected = logits_of_every_level(&resumed.model, images.clone());
    for (level, (a, b)) in expected.iter().zip(logits_of_every_level(&reloaded, images)).enumerate() {
        a.assert_eq(&b, true);
        assert_eq!(a.num_elements(), 128 * 10, "level {level}");
    }
    assert!(!run.path().join("checkpoints/.2.tmp").exists(), "stale temporary checkpoint left behind");
    let left: Vec<_> =
        std::fs::read_dir(run.path().join("checkpoints")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("epoch-0002")]);
}

#[test]
fn broken_run_folders_are_clear_errors() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let load = |run: &RunDir| run.load_model::<ModelConfig>(&device).expect_err("an error").to_string();
    let err = load(&RunDir::new(dir.path().join("nothing")));
    assert!(err.contains("does not exist"), "{err}");
    let run = RunDir::new(dir.path().join("run"));
    run.create(&quick_config(1, 64)).unwrap();
    let err = load(&run);
    assert!(err.contains("no model.bpk"), "{err}");
    std::fs::write(run.model_path(), b"not a burnpack").unwrap();
    let err = load(&run);
    assert!(err.contains("model.bpk"), "{err}");
    // A record of a different architecture does not load silently.
    // (Seeded, as every network a test builds is: an unseeded one drawn from Burn's shared
    // generator while a parallel test seeds its own would shift that test's weights.)
    let other_config = ModelConfig::from(NestedMnistCnnConfig::new().with_levels("0.5,1.0".parse().unwrap()));
    let other: NestedModel = seeded_model(&other_config, None, 0, &device).unwrap();
    std::fs::write(run.model_path(), record_bytes(&other).unwrap()).unwrap();
    let err = load(&run);
    assert!(err.contains("model.bpk") && err.contains("shape mismatch"), "{err}");
    std::fs::write(run.config_path(), b"{ not json").unwrap();
    let err = run.load_config::<ModelConfig>().unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("JSON"), "{err}");
    // A checkpoint.json naming a folder elsewhere is refused before anything is read there.
    std::fs::write(
        run.checkpoint_path(),
        br#"{"epochs_completed": 0, "global_step": 0, "dir": "../../etc", "history": []}"#,
    )
    .unwrap();
    let err = run.load_checkpoint_state().unwrap_err().to_string();
    assert!(err.contains("checkpoint.json") && err.contains("../../etc") && err.contains("damaged"), "{err}");
}

#[test]
fn only_the_trained_levels_blocks_move_for_a_single_level_loss() {
    // With loss weights (1, 0, 0) only the core is trained: every weight outside the core's
    // blocks must stay exactly at its initial value (Adam with zero gradients never moves them).
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let config =
        with_training(quick_config(1, 128), |t| t.with_level_loss_weights(Some(vec![1.0, 0.0, 0.0])));
    let before =
        seeded_model(&config.model, None, config.training.seed, &device.clone().autodiff()).unwrap().valid();
    let after = train(
        &config,
        alone(&train_set),
        &device,
        &RunDir::new(dir.path().join("r")),
        false,
        &mut QuietProgress,
    )
    .unwrap()
    .model;
    let w0 = before.as_mnist_cnn().unwrap().conv2.weight.val().into_data().try_to_vec::<f32>().unwrap();
    let w1 = after.as_mnist_cnn().unwrap().conv2.weight.val().into_data().try_to_vec::<f32>().unwrap();
    let mut moved_inside = false;
    for (i, (a, b)) in w0.iter().zip(&w1).enumerate() {
        let (out, inp) = (i / (32 * 9), (i / 9) % 32);
        if out < 16 && inp < 8 {
            moved_inside |= a != b;
        } else {
            assert_eq!(a, b, "conv2 weight [{out}, {inp}] outside the core moved");
        }
    }
    assert!(moved_inside);
}

#[test]
fn a_run_folder_of_an_older_format_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path());
    let mut config = serde_json::to_value(quick_config(1, 64)).unwrap();
    config["format_version"] = 1.into();
    config.as_object_mut().unwrap().remove("training");
    std::fs::write(run.config_path(), serde_json::to_vec(&config).unwrap()).unwrap();
    let err = run.load_config::<ModelConfig>().unwrap_err().to_string();
    assert!(err.contains("run format version 1") && err.contains("reads version 4"), "{err}");
}

/// A network without batch norm: its gradient is a sum over samples, so a batch cut into
/// shards on several devices must give exactly one device's step.
mod mlp {
    use nestednet::burn::prelude::*;
    use nestednet::burn::tensor::activation::relu;
    use nestednet::models::{ModelError, NestedNetwork, NestedNetworkConfig};
    use nestednet::nn::{NestedLinear, NestedLinearConfig};

    /// Configuration of [`Mlp`].
    #[derive(Config, Debug)]
    pub struct MlpConfig {
        /// Hidden units of each level, core first.
        pub hidden: Vec<usize>,
    }

    /// 784 → hidden → 10, nested in its hidden units.
    #[derive(Module, Debug)]
    pub struct Mlp {
        fc1: NestedLinear,
        fc2: NestedLinear,
    }

    impl NestedNetworkConfig for MlpConfig {
        type Network = Mlp;
        fn init_network(&self, device: &Device) -> Result<Mlp, ModelError> {
            let (n, full) = (self.hidden.len(), *self.hidden.last().unwrap());
            Ok(Mlp {
                fc1: NestedLinearConfig::new(784, full, vec![784; n], self.hidden.clone()).init(device),
                fc2: NestedLinearConfig::new(full, 10, self.hidden.clone(), vec![10; n]).init(device),
            })
        }
        fn name(&self) -> String {
            "mlp".into()
        }
    }

    impl NestedNetwork for Mlp {
        type Level = Mlp;
        fn num_levels(&self) -> usize {
            self.fc1.num_levels()
        }
        fn input_shape(&self) -> [usize; 3] {
            [1, 28, 28]
        }
        fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
            self.fc2.forward(relu(self.fc1.forward(images.flatten::<2>(1, 3), level)), level)
        }
        fn extract_level(&self, level: usize) -> Mlp {
            Mlp { fc1: self.fc1.single_level(level), fc2: self.fc2.single_level(level) }
        }
    }
}

#[test]
fn two_devices_take_one_devices_steps_and_a_killed_run_on_them_resumes_exactly() {
    use nestednet::train::{TrainDevices, train_on};
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    // 97 digits in batches of 32: the last batch has one sample, so one device sits it out.
    let config = RunConfig::new(
        mlp::MlpConfig::new(vec![16, 48]),
        TrainingConfig::new()
            .with_epochs(1)
            .with_train_limit(Some(97))
            .with_batch_size(32)
            .with_seed(3)
            .with_optimizer(OptimizerConfig::sgd())
            .with_learning_rate(0.1),
    );
    let run = |name: &str, devices: &TrainDevices, config: &RunConfig<mlp::MlpConfig>| {
        train_on(
            config,
            alone(&train_set),
            devices,
            &RunDir::new(dir.path().join(name)),
            false,
            &mut QuietProgress,
        )
        .unwrap()
        .model
    };
    let one = run("one", &TrainDevices::single(device.clone()), &config);
    let first_step =
        RunConfig { training: config.training.clone().with_max_steps(Some(1)), ..config.clone() };
    let one_step = run("one-step", &TrainDevices::single(device.clone()), &first_step);
    for (list, what) in [("flex,flex", "even shards"), ("flex=1,flex=3", "shares 1:3")] {
        let devices = TrainDevices::parse(list).unwrap();
        for (a, b, steps) in [
            (&one_step, run(&format!("{list}-step"), &devices, &first_step), 1),
            (&one, run(list, &devices, &config), 4),
        ] {
            let (a, b) = (common::weights(a), common::weights(&b));
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "{what}, {steps} step(s): weights differ by up to {worst}");
            assert_ne!(a, common::weights(&seeded_model(&config.model, None, 3, &device).unwrap()));
        }
    }

    // mnist-cnn (batch norm: statistics per shard, running statistics averaged over the
    // devices) on two devices: killed after epoch 1 and resumed, it ends bit for bit where an
    // uninterrupted run ends.
    let devices = TrainDevices::parse("flex,flex").unwrap();
    let cnn = |epochs| quick_config(epochs, 200);
    let straight = train_on(
        &cnn(2),
        alone(&train_set),
        &devices,
        &RunDir::new(dir.path().join("cnn")),
        false,
        &mut QuietProgress,
    )
    .unwrap();
    let killed = RunDir::new(dir.path().join("cnn-killed"));
    train_on(&cnn(1), alone(&train_set), &devices, &killed, false, &mut QuietProgress).unwrap();
    let resumed = train_on(&cnn(2), alone(&train_set), &devices, &killed, true, &mut QuietProgress).unwrap();
    assert_same_weights(&resumed.model, &straight.model, "two devices: resumed vs uninterrupted run");
}
