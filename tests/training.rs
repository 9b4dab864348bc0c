//! Joint training on real MNIST: it learns, it is reproducible, it resumes exactly, and its
//! checkpoints reload bit for bit.

mod common;

use std::sync::Arc;

use nestednet::burn::module::Module;
use nestednet::burn::prelude::*;
use nestednet::data::ImageSet;
use nestednet::data::epoch_loader;
use nestednet::models::{NestedMnistCnn, NestedMnistCnnConfig, NestedNetwork, NestedNetworkConfig};
use nestednet::train::trainer::{
    ImageData, LevelLabels, LrSchedule, OptimizerConfig, QuietProgress, RunConfig, RunDir, TrainData,
    TrainingConfig, evaluate, record_bytes, seeded_model, train,
};

fn quick_config(epochs: usize, limit: usize) -> RunConfig<NestedMnistCnnConfig> {
    RunConfig::new(
        NestedMnistCnnConfig::new(),
        TrainingConfig::new().with_epochs(epochs).with_train_limit(Some(limit)).with_seed(7),
    )
}

fn with_training(
    config: RunConfig<NestedMnistCnnConfig>,
    f: impl FnOnce(TrainingConfig) -> TrainingConfig,
) -> RunConfig<NestedMnistCnnConfig> {
    RunConfig { training: f(config.training), ..config }
}

fn alone(train: &Arc<ImageSet>) -> TrainData {
    TrainData::new(train.clone(), None)
}

fn assert_same_weights(a: &NestedMnistCnn, b: &NestedMnistCnn, what: &str) {
    let (a, b) = (common::weights(a), common::weights(b));
    assert_eq!(a.len(), b.len());
    let differing = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    assert_eq!(differing, 0, "{what}: {differing} of {} values differ", a.len());
}

fn logits_of_every_level(model: &NestedMnistCnn, images: Tensor<4>) -> Vec<TensorData> {
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
    let accuracy =
        evaluate(&outcome.model, &ImageData::from(test_set.clone()), 500, &device, &LevelLabels::fine(3))
            .unwrap();
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
    let (_, reloaded) = run.load_model::<NestedMnistCnnConfig>(&device).unwrap();
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
    let load =
        |run: &RunDir| run.load_model::<NestedMnistCnnConfig>(&device).expect_err("an error").to_string();
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
    let other_config = NestedMnistCnnConfig::new().with_levels("0.5,1.0".parse().unwrap());
    let other: NestedMnistCnn = seeded_model(&other_config, None, 0, &device).unwrap();
    std::fs::write(run.model_path(), record_bytes(&other).unwrap()).unwrap();
    let err = load(&run);
    assert!(err.contains("model.bpk") && err.contains("shape mismatch"), "{err}");
    std::fs::write(run.config_path(), b"{ not json").unwrap();
    let err = run.load_config::<NestedMnistCnnConfig>().unwrap_err().to_string();
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
    let w0 = before.conv2.weight.val().into_data().try_to_vec::<f32>().unwrap();
    let w1 = after.conv2.weight.val().into_data().try_to_vec::<f32>().unwrap();
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
    let err = run.load_config::<NestedMnistCnnConfig>().unwrap_err().to_string();
    assert!(err.contains("run format version 1") && err.contains("reads version 5"), "{err}");
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
        type Input = Tensor<4>;
        type Output = Tensor<2>;
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
    use nestednet::train::trainer::{TrainDevices, train_on};
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
        let devices = list.parse::<nestednet::train::jobs::DeviceList>().unwrap().devices().unwrap();
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
    let devices = "flex,flex".parse::<nestednet::train::jobs::DeviceList>().unwrap().devices().unwrap();
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

/// The plain Eq. 5 loop, written out: each level's cross-entropy weighed `1/n`, its gradient
/// taken on its own and the gradients summed from the last level down (the order one backward
/// pass of the summed loss reaches the parameters), one Adam step per batch, the batches in the
/// data's seeded order. Returns the trained weights.
fn plain_joint_training<C>(config: &RunConfig<C>, train_set: &Arc<ImageSet>) -> Vec<f32>
where
    C: NestedNetworkConfig<Network: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>>,
{
    use nestednet::burn::optim::{GradientsAccumulator, GradientsParams};
    let training = &config.training;
    let device = Device::flex().autodiff();
    let mut model = seeded_model(&config.model, None, training.seed, &device).unwrap();
    let mut optim = training.optimizer.init();
    let n = model.num_levels();
    let set = Arc::new(train_set.take(training.train_limit.expect("a limit")));
    for epoch in 0..training.epochs as u64 {
        let loader =
            epoch_loader(set.clone(), training.batch_size, training.seed, epoch, true, None, &device);
        for batch in loader.unwrap().iter() {
            let batch = batch.unwrap();
            let mut summed = GradientsAccumulator::<C::Network>::new();
            for level in (0..n).rev() {
                let logits = model.forward_level(batch.images.clone(), level);
                let loss =
                    nestednet::heads::cross_entropy(logits, batch.labels.clone()).mul_scalar(1.0 / n as f64);
                summed.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
            }
            model = optim.step(training.learning_rate, model, summed.grads());
        }
    }
    common::weights(&model.valid())
}

/// The trainer (any input, phase hooks, levels side by side on the CPU's threads, prefetched
/// batches, a checkpoint every epoch) trains exactly the weights of the plain Eq. 5 loop, bit
/// for bit, on `mnist-cnn` and on a residual lattice.
#[test]
fn the_trainer_takes_the_plain_joint_steps_bit_for_bit() {
    use nestednet::models::{LevelRequest, ModelFamily, ModelRequest, NestedResNetConfig};
    let (train_set, _) = common::mnist();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let lattice = ModelRequest::new(
        "mnist-resnet",
        [1, 28, 28],
        10,
        LevelRequest::Lattice("0.5,1;1,2".parse().unwrap()),
    );
    let training =
        TrainingConfig::new().with_epochs(2).with_train_limit(Some(160)).with_batch_size(32).with_seed(5);
    let check = |name: &str, ours: Vec<f32>, plain: Vec<f32>| {
        assert_eq!(ours.len(), plain.len(), "{name}");
        let differing = ours.iter().zip(&plain).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differing, 0, "{name}: {differing} of {} values differ from the plain loop's", ours.len());
    };
    let cnn = RunConfig::new(NestedMnistCnnConfig::new(), training.clone());
    let run = RunDir::new(dir.path().join("mnist-cnn"));
    let trained = train(&cnn, alone(&train_set), &device, &run, false, &mut QuietProgress).unwrap().model;
    check("mnist-cnn", common::weights(&trained), plain_joint_training(&cnn, &train_set));
    let resnet = RunConfig::new(NestedResNetConfig::from_request(&lattice).unwrap().unwrap(), training);
    let run = RunDir::new(dir.path().join("mnist-resnet"));
    let trained = train(&resnet, alone(&train_set), &device, &run, false, &mut QuietProgress).unwrap().model;
    check("mnist-resnet", common::weights(&trained), plain_joint_training(&resnet, &train_set));
}

/// A nested network whose input is not an image: token ids, embedded, mean-pooled, then a
/// nested MLP; and the data it learns from, a `LabelledSet` of the test's own.
mod tokens {
    use std::sync::Arc;

    use nestednet::burn::nn::{Embedding, EmbeddingConfig};
    use nestednet::burn::prelude::*;
    use nestednet::burn::tensor::activation::relu;
    use nestednet::data::SplitMix64;
    use nestednet::models::{Maskable, ModelError, NestedNetwork, NestedNetworkConfig, TokenShape};
    use nestednet::nn::{NestedLinear, NestedLinearConfig};
    use nestednet::train::trainer::{Batch, BatchOrder, Batches, LabelledSet};

    /// Sequences of `LENGTH` ids from a vocabulary of 16, whose class is the group of four ids
    /// (`id / 4`) that occurs most often in them (ties to the lowest group).
    #[derive(Debug, Clone)]
    pub struct TokenSet {
        ids: Arc<Vec<i64>>,
        labels: Arc<Vec<i64>>,
    }

    pub const LENGTH: usize = 12;
    pub const VOCABULARY: usize = 16;
    pub const CLASSES: usize = 4;

    impl TokenSet {
        pub fn generate(samples: usize, seed: u64) -> Self {
            let mut rng = SplitMix64::new(seed);
            let ids: Vec<i64> = (0..samples * LENGTH).map(|_| rng.below(VOCABULARY) as i64).collect();
            let labels = ids
                .chunks(LENGTH)
                .map(|s| {
                    let mut counts = [0usize; CLASSES];
                    s.iter().for_each(|&id| counts[id as usize / 4] += 1);
                    (0..CLASSES).max_by_key(|&g| (counts[g], CLASSES - g)).unwrap() as i64
                })
                .collect();
            Self { ids: Arc::new(ids), labels: Arc::new(labels) }
        }
    }

    impl LabelledSet for TokenSet {
        type Input = Tensor<2, Int>;

        fn len(&self) -> usize {
            self.labels.len()
        }

        fn input_shape(&self) -> TokenShape {
            TokenShape { length: LENGTH, vocabulary: VOCABULARY }
        }

        fn num_classes(&self) -> usize {
            CLASSES
        }

        fn batches(
            &self,
            order: BatchOrder,
            device: &Device,
        ) -> nestednet::train::Result<Batches<Tensor<2, Int>>> {
            let n = self.len();
            let indices = match order.shuffle {
                true => SplitMix64::for_stream(&[order.seed, order.epoch]).permutation(n),
                false => (0..n).collect(),
            };
            let (set, device) = (self.clone(), device.clone());
            let chunks: Vec<Vec<usize>> = indices.chunks(order.batch_size).map(<[usize]>::to_vec).collect();
            Ok(Box::new(chunks.into_iter().map(move |chunk| {
                let ids: Vec<i64> = chunk
                    .iter()
                    .flat_map(|&i| set.ids[i * LENGTH..(i + 1) * LENGTH].iter().copied())
                    .collect();
                let labels: Vec<i64> = chunk.iter().map(|&i| set.labels[i]).collect();
                Ok(Batch {
                    input: Tensor::from_data(TensorData::new(ids, [chunk.len(), LENGTH]), &device),
                    targets: Tensor::from_data(TensorData::new(labels, [chunk.len()]), &device),
                })
            })))
        }

        fn take(&self, n: usize) -> Self {
            let n = n.min(self.len());
            Self {
                ids: Arc::new(self.ids[..n * LENGTH].to_vec()),
                labels: Arc::new(self.labels[..n].to_vec()),
            }
        }
    }

    /// Configuration of [`TokenMlp`].
    #[derive(Config, Debug)]
    pub struct TokenMlpConfig {
        /// Embedding width (shared by every level).
        pub embedding: usize,
        /// Hidden units of each level, core first.
        pub hidden: Vec<usize>,
    }

    /// Embedded token ids, mean-pooled over the sequence, then a nested two-layer MLP.
    #[derive(Module, Debug)]
    pub struct TokenMlp {
        embedding: Embedding,
        fc1: NestedLinear,
        fc2: NestedLinear,
    }

    impl NestedNetworkConfig for TokenMlpConfig {
        type Network = TokenMlp;

        fn init_network(&self, device: &Device) -> Result<TokenMlp, ModelError> {
            let (n, full) = (self.hidden.len(), *self.hidden.last().unwrap());
            Ok(TokenMlp {
                embedding: EmbeddingConfig::new(VOCABULARY, self.embedding).init(device),
                fc1: NestedLinearConfig::new(
                    self.embedding,
                    full,
                    vec![self.embedding; n],
                    self.hidden.clone(),
                )
                .init(device),
                fc2: NestedLinearConfig::new(full, CLASSES, self.hidden.clone(), vec![CLASSES; n])
                    .init(device),
            })
        }

        fn name(&self) -> String {
            "token-mlp".into()
        }
    }

    impl NestedNetwork for TokenMlp {
        type Level = TokenMlp;
        type Input = Tensor<2, Int>;
        type Output = Tensor<2>;

        fn num_levels(&self) -> usize {
            self.fc1.num_levels()
        }

        fn input_shape(&self) -> TokenShape {
            TokenShape { length: LENGTH, vocabulary: VOCABULARY }
        }

        fn forward_level(&self, ids: Tensor<2, Int>, level: usize) -> Tensor<2> {
            let pooled = self.embedding.forward(ids).mean_dim(1).squeeze_dim::<2>(1);
            self.fc2.forward(relu(self.fc1.forward(pooled, level)), level)
        }

        fn extract_level(&self, level: usize) -> TokenMlp {
            TokenMlp {
                embedding: self.embedding.clone(),
                fc1: self.fc1.single_level(level),
                fc2: self.fc2.single_level(level),
            }
        }

        fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
            vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
        }

        fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
            vec![("fc1".into(), &mut self.fc1), ("fc2".into(), &mut self.fc2)]
        }
    }
}

/// A nested network over token ids (not images) is trained by the same trainer, checkpointed
/// and resumed exactly, evaluated, reported and exported (verified) like the image models.
#[test]
fn a_network_over_token_ids_trains_resumes_reports_and_exports() {
    use nestednet::train::export::{ExportFormat, export_level, load_level};
    use nestednet::train::serve::{ReportContext, build_report};
    use nestednet::train::trainer::LabelledSet;
    use tokens::{TokenMlpConfig, TokenSet};
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let (train_set, test_set) = (TokenSet::generate(1536, 1), TokenSet::generate(512, 2));
    let config = |epochs| {
        RunConfig::new(
            TokenMlpConfig::new(16, vec![4, 8, 32]),
            TrainingConfig::new()
                .with_epochs(epochs)
                .with_batch_size(32)
                .with_learning_rate(1e-2)
                .with_seed(9),
        )
    };
    let data = || TrainData::of(train_set.clone(), Some(test_set.clone()));
    let run = RunDir::new(dir.path().join("tokens"));
    let straight = train(&config(4), data(), &device, &run, false, &mut QuietProgress).unwrap();
    let labels = LevelLabels::fine(3);
    let tallies = evaluate(&straight.model, &test_set, 128, &device, &labels).unwrap();
    for (level, t) in tallies.iter().enumerate() {
        // Chance is 0.25; the majority group of 12 ids is easy to learn from mean embeddings.
        assert!(t.accuracy() > 0.6, "level {level} of the token network reached only {:.3}", t.accuracy());
    }
    assert_eq!(straight.history.last().unwrap().test_accuracy.as_ref().unwrap().len(), 3);
    // Killed after epoch 2 and resumed: the same weights as the uninterrupted run.
    let killed = RunDir::new(dir.path().join("killed"));
    train(&config(2), data(), &device, &killed, false, &mut QuietProgress).unwrap();
    let resumed = train(&config(4), data(), &device, &killed, true, &mut QuietProgress).unwrap();
    assert_same_weights_of(&resumed.model, &straight.model);
    // The run folder reloads as the user's own model type.
    let (_, reloaded) = run.load_model::<TokenMlpConfig>(&device).unwrap();
    assert_same_weights_of(&reloaded.valid(), &straight.model);
    // Report and verified exports, as for images.
    let context = ReportContext {
        model: "token-mlp",
        dataset: "tokens",
        backend: "flex",
        method: "channels",
        train_seconds_per_epoch: None,
        labels: &labels,
        hierarchy: None,
        consensus_layer: None,
    };
    let report = build_report(&straight.model, &config(4).model, context, &test_set, &device).unwrap();
    assert_eq!(report.levels.len(), 3);
    for (l, t) in report.levels.iter().zip(&tallies) {
        assert_eq!((l.correct, l.total), (t.correct, t.total));
    }
    assert!(
        report.levels[0].params < report.levels[2].params && report.levels[0].macs < report.levels[2].macs
    );
    assert_eq!(report.consensus.len(), 1, "the average consensus of same-class levels");
    for format in [ExportFormat::Burnpack, ExportFormat::Safetensors] {
        let path = dir.path().join(match format {
            ExportFormat::Burnpack => "level0.bpk",
            _ => "level0.safetensors",
        });
        let info = export_level(&straight.model, &config(4).model, 0, &path, format).unwrap();
        assert!(info.max_abs_diff <= 1e-5, "{format:?}: {}", info.max_abs_diff);
        let (manifest, level) = load_level::<TokenMlpConfig>(&path, &device).unwrap();
        assert_eq!(manifest.input_shape, test_set.input_shape());
        let alone = &evaluate(&level, &test_set, 128, &device, &LevelLabels::fine(1)).unwrap()[0];
        assert_eq!((alone.correct, alone.total), (tallies[0].correct, tallies[0].total), "{format:?}");
    }
}

fn assert_same_weights_of<M: Module>(a: &M, b: &M) {
    let (a, b) = (common::weights(a), common::weights(b));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "the weights differ");
}
