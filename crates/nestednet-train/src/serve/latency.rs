//! Latency as a level is served: median wall-clock time of its forward pass on probe inputs.

use std::time::Instant;

use crate::trainer::data::probe_input;
use burn::prelude::*;
use nestednet_models::{NestedNetwork, NetworkInput, NetworkOutput};

/// Median wall-clock milliseconds of level `level` at `batch` on random inputs, after warm-up,
/// run the way a deployed level runs: on its weights extracted once
/// ([`NestedNetwork::extract_level`]), not re-sliced from the shared tensors on every call.
/// Each measured call ends with a read of the output, so asynchronous backends are timed to
/// completion. Runs at least `min_runs` calls and at least ~`min_ms` milliseconds.
pub fn measure_latency<M: NestedNetwork>(
    model: &M,
    level: usize,
    batch: usize,
    device: &Device,
    min_runs: usize,
    min_ms: f64,
) -> f64 {
    let standalone = model.extract_level(level);
    median_latency_ms(
        |x| standalone.forward_level(x, 0),
        &model.input_shape(),
        batch,
        device,
        min_runs,
        min_ms,
    )
}

/// Median wall-clock milliseconds of `forward` on a random batch of `batch` inputs of `shape`
/// on `device`, after 3 warm-up calls, each call ending with a read of the logits. Runs at
/// least `min_runs` calls and at least ~`min_ms` milliseconds (at most 10,000 calls).
pub fn median_latency_ms<I: NetworkInput, O: NetworkOutput>(
    forward: impl Fn(I) -> O,
    shape: &I::Shape,
    batch: usize,
    device: &Device,
    min_runs: usize,
    min_ms: f64,
) -> f64 {
    let times = latency_samples_ms(forward, shape, batch, device, min_runs, min_ms);
    times[times.len() / 2]
}

/// Every timed call of [`median_latency_ms`], in milliseconds, sorted (at least one).
pub fn latency_samples_ms<I: NetworkInput, O: NetworkOutput>(
    forward: impl Fn(I) -> O,
    shape: &I::Shape,
    batch: usize,
    device: &Device,
    min_runs: usize,
    min_ms: f64,
) -> Vec<f64> {
    let x: I = probe_input(shape, batch, 0x1a7e_09c7, device);
    for _ in 0..3 {
        let _ = forward(x.clone()).into_logits().into_data();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_runs.max(1) || start.elapsed().as_secs_f64() * 1e3 < min_ms {
        let t = Instant::now();
        let _ = forward(x.clone()).into_logits().into_data();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if times.len() >= 10_000 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    times
}
