//! Each `nestednet-kernels` operation against the Burn operations it replaces, forward and
//! backward (the product with a random tensor, summed, is the loss), at the shapes of the
//! 3-level `mnist-cnn`'s training step (batch 64), on `flex`.
//! Both paths run alternately in one process, so the ratio is from one run.
//!
//! ```text
//! cargo bench --bench kernels [-- --repeats 30]
//! ```

use std::time::Instant;

use clap::Parser;
use nestednet::burn::prelude::*;
use nestednet::burn::tensor::activation::relu;
use nestednet::burn::tensor::module::conv2d as burn_conv2d;
use nestednet::burn::tensor::module::max_pool2d;
use nestednet::burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use nestednet::data::SplitMix64;
use nestednet::kernels::{
    KernelFamily, batch_norm_max_pool2x2_relu, batch_norm_train, conv2d, max_pool2x2_relu,
    set_kernel_families,
};

#[derive(Parser, Debug)]
struct Args {
    /// Timed forward + backward passes per shape and path (after 3 warm-up passes).
    #[arg(long, default_value_t = 30)]
    repeats: usize,
    /// The kernel families the `own` path switches on (default: all), e.g. `pool,conv,norm`
    /// to time the convolutions without the direct kernel.
    #[arg(long, value_delimiter = ',')]
    own_families: Vec<String>,
    /// Instead of Burn's operations, time the kernels with only these families as the
    /// baseline, e.g. `pool,conv,norm` against the default (all) to see what `direct` buys.
    #[arg(long, value_delimiter = ',')]
    baseline_families: Vec<String>,
    /// Only the cases whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Time only one path (`own` or `burn`), e.g. under a profiler.
    #[arg(long)]
    only: Option<String>,
    /// (`cargo bench` passes `--bench`.)
    #[arg(long, hide = true)]
    bench: bool,
}

/// An operation on an input and parameters (each a leaf that wants a gradient).
type Op = fn(Tensor<4>, &[Tensor<4>]) -> Tensor<4>;

/// One timed case: the operation, its input's shape, its parameters' shapes, and whether the
/// input wants a gradient (an image batch does not).
struct Case {
    name: String,
    burn: Op,
    own: Op,
    input: [usize; 4],
    params: Vec<[usize; 4]>,
    input_grad: bool,
}

/// Milliseconds of one forward + backward pass of `op` (with `backward`; a forward pass alone
/// without autodiff otherwise), the median of `repeats`. The output's gradient is a dense
/// tensor, as a training step's is.
fn time_ms(case: &Case, op: Op, repeats: usize, backward: bool) -> f64 {
    let device = if backward { Device::flex().autodiff() } else { Device::flex() };
    let random = |shape: [usize; 4], seed| {
        let n = shape.iter().product();
        Tensor::<4>::from_data(
            TensorData::new(SplitMix64::new(seed).uniform_f32(n, -2.0, 2.0), shape),
            &device,
        )
    };
    let x = random(case.input, 1);
    let params: Vec<Tensor<4>> =
        case.params.iter().zip(3..).map(|(&shape, seed)| random(shape, seed).mul_scalar(0.1)).collect();
    let out = op(x.clone(), &params).dims();
    let weights = random(out, 2);
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats + 3 {
        let start = Instant::now();
        if backward {
            let x = x.clone().detach();
            let x = if case.input_grad { x.require_grad() } else { x };
            let params: Vec<Tensor<4>> = params.iter().map(|p| p.clone().detach().require_grad()).collect();
            // The operation's input made by an operation, as in a network (there the pooling
            // kernel may write the gradient over its input's buffer), not the leaf itself.
            let grads = (op(x.clone().mul_scalar(1.0), &params) * weights.clone()).sum().backward();
            if case.input_grad {
                let _ = x.grad(&grads).expect("a gradient").into_data();
            }
            for p in &params {
                let _ = p.grad(&grads).expect("a gradient").into_data();
            }
        } else {
            let _ = op(x.clone(), &params).into_data();
        }
        if i >= 3 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn conv3x3(
    conv: fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>,
    x: Tensor<4>,
    params: &[Tensor<4>],
) -> Tensor<4> {
    let c_out = params[0].dims()[0];
    let bias = params[1].clone().reshape([c_out]);
    conv(x, params[0].clone(), Some(bias), ConvOptions::new([1, 1], [1, 1], [1, 1], 1))
}

/// The activations the 3-level `mnist-cnn` pools at batch 64: each level's two layers.
const ACTIVATIONS: [[usize; 4]; 6] = [
    [64, 8, 28, 28],
    [64, 16, 28, 28],
    [64, 32, 28, 28],
    [64, 16, 14, 14],
    [64, 32, 14, 14],
    [64, 64, 14, 14],
];

/// The kernel families named in `names`, or `default` if there are none.
fn families(names: &[String], default: &[KernelFamily]) -> Vec<KernelFamily> {
    if names.is_empty() {
        return default.to_vec();
    }
    let family = |name: &String| {
        *KernelFamily::ALL
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("unknown kernel family {name:?} (pool, conv, norm, direct)"))
    };
    names.iter().map(family).collect()
}

fn main() {
    // First, before anything uses the CPU thread pool: this thread is one of its threads (the
    // bench times its work directly, not through the trainer, which would do it).
    nestednet::train::trainer::join_cpu_thread_pool();
    let args = Args::parse();
    let own_families = families(&args.own_families, &KernelFamily::ALL);
    let baseline_families = families(&args.baseline_families, &[]);
    println!(
        "flex, RAYON_NUM_THREADS={}; median of {} (ms); nestednet-kernels' families: {}\n",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into()),
        args.repeats,
        own_families.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
    );
    let baseline = if baseline_families.is_empty() {
        "Burn's ops".to_string()
    } else {
        format!("kernels {}", baseline_families.iter().map(|f| f.name()).collect::<Vec<_>>().join("+"))
    };
    println!("| operation | input | pass | {baseline} | nestednet-kernels | speed-up |");
    println!("|---|---|---|---|---|---|");
    let mut cases = Vec::new();
    // The three levels' two convolutions (3x3, padding 1, with a bias) at batch 64: the first
    // on the image batch (no input gradient), the second on the first's pooled output.
    for (c_in, c_out, size, input_grad) in [
        (1, 8, 28, false),
        (1, 16, 28, false),
        (1, 32, 28, false),
        (8, 16, 14, true),
        (16, 32, 14, true),
        (32, 64, 14, true),
    ] {
        cases.push(Case {
            name: format!("conv2d 3x3 → {c_out} channels"),
            burn: |x, p| conv3x3(burn_conv2d, x, p),
            own: |x, p| conv3x3(conv2d, x, p),
            input: [64, c_in, size, size],
            params: vec![[c_out, c_in, 3, 3], [c_out, 1, 1, 1]],
            input_grad,
        });
    }
    // The three levels' two pooling layers.
    for shape in ACTIVATIONS {
        cases.push(Case {
            name: "max_pool2x2_relu".into(),
            burn: |x, _| relu(max_pool2d(x, MaxPoolOptions::new([2, 2]))),
            own: |x, _| max_pool2x2_relu(x),
            input: shape,
            params: Vec::new(),
            input_grad: true,
        });
    }
    // The three levels' two training batch norms (then pooling and ReLU), on the
    // convolutions' outputs: Burn's operations (nestednet's own formula, then the pooling
    // kernel) against the fused kernel.
    for shape in ACTIVATIONS {
        let c = shape[1];
        cases.push(Case {
            name: "batch_norm_max_pool2x2_relu".into(),
            burn: |x, p| {
                let c = p[0].dims()[0];
                let (y, _, _) =
                    batch_norm_train(x, p[0].clone().reshape([c]), p[1].clone().reshape([c]), 1e-5);
                max_pool2x2_relu(y)
            },
            own: |x, p| {
                let c = p[0].dims()[0];
                batch_norm_max_pool2x2_relu(x, p[0].clone().reshape([c]), p[1].clone().reshape([c]), 1e-5)
                    .output
            },
            input: shape,
            params: vec![[c, 1, 1, 1], [c, 1, 1, 1]],
            input_grad: true,
        });
    }
    let filter = args.filter.as_deref().unwrap_or("");
    for case in cases.iter().filter(|case| case.name.contains(filter)) {
        for (pass, backward) in [("forward", false), ("forward + backward", true)] {
            let run = |path: &str, op, own| {
                set_kernel_families(if own { &own_families } else { &baseline_families });
                let skip = args.only.as_deref().is_some_and(|only| only != path);
                if skip { f64::NAN } else { time_ms(case, op, args.repeats, backward) }
            };
            let baseline_op = if baseline_families.is_empty() { case.burn } else { case.own };
            let burn = run("burn", baseline_op, false);
            let own = run("own", case.own, true);
            println!(
                "| {} | {:?} | {pass} | {burn:.3} | {own:.3} | {:.2}x |",
                case.name,
                case.input,
                burn / own
            );
        }
    }
}
