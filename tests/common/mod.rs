//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use nestednet::burn::module::{Module, ModuleVisitor, Param};
use nestednet::burn::prelude::*;
use nestednet::data::{ImageSet, Mnist};
use nestednet::train::trainer::{EpochMetrics, LevelTally, Progress};

/// The real MNIST digits: the vendored copy, or `../shared/data/mnist10k` beside the checkout.
pub fn mnist_dir() -> PathBuf {
    let vendored = nestednet::vendored_mnist_dir();
    if vendored.join("train-images-idx3-ubyte.gz").is_file() {
        return vendored;
    }
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist10k");
    assert!(shared.is_dir(), "no MNIST data: neither {} nor {} exists", vendored.display(), shared.display());
    shared
}

/// Real MNIST train and test sets.
pub fn mnist() -> (Arc<ImageSet>, Arc<ImageSet>) {
    let (train, test) = Mnist::load(&mnist_dir()).expect("vendored MNIST loads");
    (Arc::new(train), Arc::new(test))
}

/// Images of `shape` with values in [-2, 2) from a generator of their own. Burn's generator is
/// shared by every thread of the process: a test drawing from it while a parallel test seeds
/// and draws its network's weights would shift that network (and fail its reproducibility
/// checks) under some thread timings only.
pub fn random_images(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
    let values = nestednet::data::SplitMix64::new(seed).uniform_f32(shape.iter().product(), -2.0, 2.0);
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Every float parameter and running statistic of `model`, in visiting order. (Record bytes
/// would not do: they also hold each parameter's random id.)
pub fn weights<M: Module>(model: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// Stops a run (by panicking) once epoch `after` is checkpointed, as a kill would.
pub struct KillAfter(pub usize);

impl Progress for KillAfter {
    fn epoch_start(&mut self, _: usize, _: usize, _: usize) {}
    fn batch_done(&mut self, _: &[LevelTally]) {}
    fn epoch_end(&mut self, metrics: &EpochMetrics) {
        assert!(metrics.epoch + 1 != self.0, "killed after epoch {}", self.0);
    }
    fn message(&mut self, _: &str) {}
}
