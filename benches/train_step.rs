//! Speed benchmark of `mnist-cnn` on the chosen backend (flex by default), real MNIST batches:
//!
//! - milliseconds per joint training step (3 levels, batch 64, Adam), the unit of the
//!   training-speed comparison with PyTorch (`scripts/compare_speed.sh`);
//! - forward latency of each level at batch 1 and 256, and the full/core ratio at batch 256
//!   (target: the core level at least 4x faster than the full level).
//!
//! ```text
//! cargo bench --bench train_step            # flex
//! cargo bench --bench train_step -- 60      # 60 measured steps
//! ```
//! Figures are ratios measured in one run; absolute times depend on the (shared) machine.

use std::sync::Arc;
use std::time::Instant;

use nestednet::burn::module::Module;
use nestednet::data::{Mnist, epoch_loader};
use nestednet::heads::JointLoss;
use nestednet::models::{NestedClassifier, NestedMnistCnnConfig};
use nestednet::train::{Backend, OptimizerConfig, measure_latency, seeded_model, train_step};

// Burn allocates a fresh buffer for most op outputs; mimalloc keeps them in user space instead
// of mapping and zeroing new pages for each (a quarter of a training step with glibc's malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let steps: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(40);
    let backend = Backend::default_compiled().expect("a backend");
    let device = backend.device().expect("device");
    let train_device = device.clone().autodiff();
    let (train, _) = Mnist::load(&nestednet::vendored_mnist_dir()).expect("vendored MNIST");
    let config = NestedMnistCnnConfig::new();
    let mut model = seeded_model(&config.clone().into(), 1, &train_device);
    let mut optim = OptimizerConfig::adam().init();
    let joint = JointLoss::mean(model.num_levels());
    let loader = epoch_loader(Arc::new(train), 64, 1, 0, true, None, &train_device).expect("loader");
    let batches: Vec<_> = loader.iter().take(steps + 5).map(|b| b.expect("batch")).collect();
    let mut start = Instant::now();
    for (i, batch) in batches.into_iter().enumerate() {
        if i == 5 {
            start = Instant::now(); // 5 warm-up steps
        }
        model = train_step(model, &mut optim, &joint, batch.images, batch.labels, 1e-3).0;
    }
    let per_step = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!("backend {backend}: joint training step (3 levels, batch 64): {per_step:.1} ms");
    println!("  = {:.2} s per mnist10k epoch (125 steps)", per_step * 125.0 / 1e3);

    let model = model.valid();
    let mut b256 = Vec::new();
    for level in 0..model.num_levels() {
        let b1 = measure_latency(&model, level, 1, &device, 50, 300.0);
        let b = measure_latency(&model, level, 256, &device, 10, 1000.0);
        let cost = model.level_cost(level);
        println!("level {level}: {:>9} MACs/sample, latency b1 {b1:.3} ms, b256 {b:.2} ms", cost.macs);
        b256.push(b);
    }
    let full = *b256.last().expect("levels");
    println!("full / core latency at batch 256: {:.2}x (target ≥ 4x)", full / b256[0]);
}
