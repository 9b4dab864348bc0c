//! Each `nestednet-kernels` operation against the Burn operations it replaces, forward and
//! backward (the product with a random tensor, summed, is the loss), at the shapes of the 3-level `mnist-cnn`'s training step (batch 64), on `flex`.
//! Both paths run alternately in one process, so the ratio is from one run.
//!
//! ```text
//! cargo bench --bench kernels [-- --repeats 30]
//! ```

use std::time::Instant;

use clap::Parser;
use nestednet::burn::prelude::*;
use nestednet::burn::tensor::activation::relu;
use nestednet::burn::tensor::module::max_pool2d;
use nestednet::burn::tensor::ops::MaxPoolOptions;
use nestednet::data::SplitMix64;
use nestednet::kernels::{max_pool2x2_relu, set_own_kernels};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Timed forward + backward passes per shape and path (after 3 warm-up passes).
    #[arg(long, default_value_t = 30)]
    repeats: usize,
    /// Time only one path (`own` or `burn`), e.g. under a profiler.
    #[arg(long)]
    only: Option<String>,
    /// (`cargo bench` passes `--bench`.)
    #[arg(long, hide = true)]
    bench: bool,
}

/// Milliseconds of one forward + backward pass of `op` on `shape` (with `backward`; a forward
/// pass alone without autodiff otherwise), the median of `repeats`. The output's gradient is
/// a dense tensor, as a training step's is.
fn time_ms(op: fn(Tensor<4>) -> Tensor<4>, shape: [usize; 4], repeats: usize, backward: bool) -> f64 {
    let device = if backward { Device::flex().autodiff() } else { Device::flex() };
    let random = |shape: [usize; 4], seed| {
        let n = shape.iter().product();
        Tensor::<4>::from_data(
            TensorData::new(SplitMix64::new(seed).uniform_f32(n, -2.0, 2.0), shape),
            &device,
        )
    };
    let x = random(shape, 1);
    let [b, c, h, w] = shape;
    let weights = random([b, c, h / 2, w / 2], 2);
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats + 3 {
        let start = Instant::now();
        if backward {
            let x = x.clone().detach().require_grad();
            // The operation's input made by an operation, as in a network (there the kernel
            // may write the gradient over its input's buffer), not the leaf itself.
            let grads = (op(x.clone().mul_scalar(1.0)) * weights.clone()).sum().backward();
            let _ = x.grad(&grads).expect("a gradient").into_data();
        } else {
            let _ = op(x.clone()).into_data();
        }
        if i >= 3 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args = Args::parse();
    println!(
        "flex, RAYON_NUM_THREADS={}; forward + backward, median of {} (ms)\n",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into()),
        args.repeats
    );
    println!("| operation | shape | pass | Burn's ops | nestednet-kernels | speed-up |");
    println!("|---|---|---|---|---|---|");
    let burn_pool: fn(Tensor<4>) -> Tensor<4> = |x| relu(max_pool2d(x, MaxPoolOptions::new([2, 2])));
    // The three levels' two pooling layers at batch 64.
    let shapes = [
        [64, 8, 28, 28],
        [64, 16, 28, 28],
        [64, 32, 28, 28],
        [64, 16, 14, 14],
        [64, 32, 14, 14],
        [64, 64, 14, 14],
    ];
    for shape in shapes {
        for (pass, backward) in [("forward", false), ("forward + backward", true)] {
            let run = |path: &str, op, own| {
                set_own_kernels(own);
                let skip = args.only.as_deref().is_some_and(|only| only != path);
                if skip { f64::NAN } else { time_ms(op, shape, args.repeats, backward) }
            };
            // `max_pool2x2_relu` with its kernels switched off runs the same two Burn ops.
            let burn = run("burn", burn_pool, false);
            let own = run("own", max_pool2x2_relu, true);
            println!("| max_pool2x2_relu | {shape:?} | {pass} | {burn:.3} | {own:.3} | {:.2}x |", burn / own);
        }
    }
}
