//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use nestednet::data::{ImageSet, Mnist};

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
