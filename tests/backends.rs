//! The same tests on every compiled backend.
//!
//! Each test body takes a [`Backend`] and is instantiated once per backend compiled into this
//! build (`flex` by default; `--features ndarray,wgpu,tch` adds the others, see the README).
//! The reference is always `flex`: the model is initialised there with a fixed seed and moved
//! to the backend under test, so every backend starts from identical weights.
//!
//! Tolerances (float32 throughout):
//! - logits of every level: `|x − ref| ≤ 1e-4 + 1e-4·|ref|`;
//! - one training step: the weight change `Δ` of every tensor satisfies
//!   `|Δ − Δ_ref| ≤ 1e-3·max|Δ_ref| + 1e-6` (the `1e-6`: `Δ` is a difference of two f32
//!   weights, which carries ~1e-7 of rounding by itself), and every level's loss agrees to
//!   1e-4 (relative) with the same number of correct predictions.
//!
//! The measured deviations are printed (`cargo test --test backends -- --nocapture`).
//! `cuda` tests are compiled with the `cuda` feature but only run with `--ignored` on a machine
//! with an NVIDIA GPU (`scripts/gpu_check.sh`).

mod common;

use nestednet::burn::module::{Module, ModuleVisitor, Param};
use nestednet::burn::prelude::*;
use nestednet::burn::tensor::Distribution;
use nestednet::heads::JointLoss;
use nestednet::models::{
    ModelFamily, NestedMnistCnnConfig, NestedNetwork, NestedNetworkConfig, NestedResNetConfig,
};
use nestednet::train::jobs::Backend;
use nestednet::train::trainer::{JointStep, OptimizerConfig, record_bytes, seeded_model, train_step};

const SEED: u64 = 20;

fn reference() -> Device {
    Backend::Flex.device().expect("the backend tests compare against `flex`: build with --features flex")
}

fn device_of(backend: Backend) -> Device {
    backend.device().unwrap_or_else(|e| panic!("backend {backend}: {e}"))
}

/// A seeded model built on `flex` (autodiff when `device` is), and the same weights loaded
/// into a model built on `device`. (Loading the record, rather than `to_device`, keeps the
/// parameters tracked on an autodiff device.)
fn model_on<C: ImageConfig>(config: &C, device: &Device) -> (C::Network, C::Network) {
    let flex = if device.is_autodiff() { reference().autodiff() } else { reference() };
    let reference = seeded_model(config, None, SEED, &flex).expect("a valid model");
    let bytes = nestednet::burn::tensor::Bytes::from_bytes_vec(record_bytes(&reference).expect("record"));
    let record = nestednet::burn::store::ModuleRecord::from_bytes(bytes).expect("record bytes");
    let moved =
        config.init_network(device).expect("a valid model").try_load_record(record).expect("the record fits");
    (reference, moved)
}

/// A configuration of image classifiers (images in, class logits out).
trait ImageConfig: NestedNetworkConfig<Network: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>> {}

impl<C: NestedNetworkConfig<Network: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>>> ImageConfig
    for C
{
}

fn mnist_cnn() -> NestedMnistCnnConfig {
    NestedMnistCnnConfig::new()
}

/// A 4-level lattice of the small residual network (widths 0.5/1 × depths 1/2).
fn mnist_resnet() -> NestedResNetConfig {
    let mut config = NestedResNetConfig::mnist_resnet(10);
    config.lattice = "0.5,1;1,2".parse().expect("lattice");
    config
}

/// Random images made on `flex` (so every backend sees the same values) and labels.
fn batch(n: usize, seed: u64) -> (Tensor<4>, Tensor<1, Int>) {
    let device = reference();
    // Under the lock seeded trainings hold: the device's generator is shared by every thread.
    let images = nestednet::train::trainer::with_init_lock(|| {
        device.seed(seed);
        Tensor::<4>::random([n, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device)
    });
    let labels = Tensor::<1, Int>::from_data(
        TensorData::new((0..n as i64).map(|i| (i * 7 + 3) % 10).collect::<Vec<_>>(), [n]),
        &device,
    );
    (images, labels)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values")
}

/// Largest `|x − ref| / (1 + |ref|)`: an absolute error for small values, relative for large.
fn deviation(x: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(x.len(), reference.len(), "shapes differ");
    x.iter().zip(reference).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0, f32::max)
}

/// Every level's logits on `backend` match `flex`'s, in evaluation mode, both through
/// `forward_level` and through the level extracted once for inference.
fn levels_match_reference<C: ImageConfig>(backend: Backend, config: C) {
    let device = device_of(backend);
    let (reference_model, model) = model_on(&config, &device);
    let (images, _) = batch(8, 1);
    let on_device = images.clone().to_device(&device);
    for level in 0..reference_model.num_levels() {
        let expected = values(reference_model.forward_level(images.clone(), level));
        let got = values(model.forward_level(on_device.clone(), level));
        let extracted = values(model.extract_level(level).forward_level(on_device.clone(), 0));
        let (d, e) = (deviation(&got, &expected), deviation(&extracted, &expected));
        println!("{backend} {} level {level}: logits deviation {d:.2e}, extracted {e:.2e}", config.name());
        assert!(d <= 1e-4, "{backend} level {level}: logits deviate by {d:e} from flex");
        assert!(e <= 1e-4, "{backend} level {level}: the extracted level deviates by {e:e} from flex");
    }
}

/// Every float parameter of `model`, tensor by tensor, in visiting order.
fn parameters<M: Module>(model: &M) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(values(param.val()));
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// One joint training step (SGD with momentum and weight decay, batch statistics in batch
/// norm) moves every weight the same way on `backend` as on `flex`.
fn training_step_matches_reference<C: ImageConfig>(backend: Backend, config: C) {
    let device = device_of(backend).autodiff();
    let (reference_model, model) = model_on(&config, &device);
    let before = parameters(&reference_model);
    let (images, labels) = batch(16, 2);
    let joint = JointLoss::mean(model.num_levels());
    let levels: Vec<usize> = (0..model.num_levels()).collect();
    let step = |model: C::Network, images: Tensor<4>, labels: Tensor<1, Int>| {
        let mut optim = OptimizerConfig::sgd().init();
        let (model, stats) =
            train_step(model, &mut optim, JointStep::new(images, labels, &levels, &joint), 0.1);
        (model, stats.means())
    };
    let (expected_model, expected_stats) = step(reference_model, images.clone(), labels.clone());
    let (got_model, got_stats) = step(model, images.to_device(&device), labels.to_device(&device));
    for (level, (got, expected)) in got_stats.iter().zip(&expected_stats).enumerate() {
        assert!(
            (got.0 - expected.0).abs() <= 1e-4 * (1.0 + expected.0.abs()),
            "{backend} level {level} loss"
        );
        assert_eq!(got.1, expected.1, "{backend} level {level}: correct predictions");
    }
    let (expected, got) = (parameters(&expected_model), parameters(&got_model));
    let mut worst = 0.0f32;
    let mut moved = 0;
    for (i, ((b, e), g)) in before.iter().zip(&expected).zip(&got).enumerate() {
        let delta_ref: Vec<f32> = e.iter().zip(b).map(|(e, b)| e - b).collect();
        let delta: Vec<f32> = g.iter().zip(b).map(|(g, b)| g - b).collect();
        let scale = delta_ref.iter().fold(0.0f32, |m, d| m.max(d.abs()));
        let err = delta.iter().zip(&delta_ref).fold(0.0f32, |m, (d, r)| m.max((d - r).abs()));
        assert!(
            err <= 1e-3 * scale + 1e-7,
            "{backend} tensor {i}: update differs by {err:e} (largest {scale:e})"
        );
        worst = worst.max(err / scale.max(1e-12));
        moved += delta_ref.iter().filter(|d| **d != 0.0).count();
    }
    let total: usize = before.iter().map(Vec::len).sum();
    println!("{backend} {}: one SGD step, update deviation {worst:.2e} of the largest change", config.name());
    // Most values are weights that every level uses: a step that moves few of them is a no-op.
    assert!(moved * 2 > total, "{backend}: the step moved only {moved} of {total} values");
}

/// A level's gradient is zero outside its slice of the shared weights, on `backend`.
fn gradients_stay_inside_the_level(backend: Backend) {
    let device = device_of(backend).autodiff();
    let (_, model) = model_on(&mnist_cnn(), &device);
    let cnn = &model;
    let (images, labels) = batch(4, 3);
    let logits = cnn.forward_level(images.to_device(&device), 0);
    let loss = nestednet::heads::cross_entropy(logits, labels.to_device(&device));
    let grads = loss.backward();
    let grad = cnn.conv2.weight.grad(&grads).expect("conv2 has a gradient");
    let (c_in, c_out) = cnn.conv2.level_dims(0);
    let inside = values(grad.clone().slice(s![0..c_out, 0..c_in, .., ..]));
    let outside_rows = values(grad.clone().slice(s![c_out.., .., .., ..]));
    let outside_cols = values(grad.slice(s![0..c_out, c_in.., .., ..]));
    assert!(inside.iter().any(|g| *g != 0.0), "{backend}: the core's own weights got no gradient");
    assert!(outside_rows.iter().chain(&outside_cols).all(|g| *g == 0.0), "{backend}: gradient leaked");
}

/// Saving and loading the one checkpoint on `backend` gives back every weight bit for bit.
fn checkpoint_round_trip(backend: Backend) {
    let device = device_of(backend);
    let (_, model) = model_on(&mnist_cnn(), &device);
    let bytes = record_bytes(&model).expect("record");
    let fresh = mnist_cnn().init_network(&device).expect("a valid model");
    let bytes = nestednet::burn::tensor::Bytes::from_bytes_vec(bytes);
    let record = nestednet::burn::store::ModuleRecord::from_bytes(bytes).expect("record bytes");
    let loaded = fresh.try_load_record(record).expect("the record fits");
    assert_eq!(parameters(&loaded), parameters(&model), "{backend}: the round trip changed weights");
}

/// `nestednet-kernels`' operations on `backend` give the values and gradients of Burn's own
/// operations on `flex`: the kernels' path on `flex`, Burn's everywhere else.
fn kernels_match_burns_ops(backend: Backend) {
    use nestednet::burn::tensor::activation::relu;
    use nestednet::burn::tensor::module::{conv2d, max_pool2d};
    use nestednet::burn::tensor::ops::{ConvOptions, MaxPoolOptions};
    use nestednet::kernels::{batch_norm_max_pool2x2_relu, batch_norm_train, max_pool2x2_relu};
    // Rounded to quarters: windows with equal values, where the choice of maximum shows.
    let input = |device: &Device| {
        let quarters =
            common::random_images([3, 5, 9, 12], 17, &reference()).mul_scalar(4.0).round().div_scalar(4.0);
        Tensor::<4>::from_data(quarters.sub_scalar(1.0).into_data(), device).require_grad()
    };
    let parameter = |dims: usize, seed: u64, device: &Device| {
        let values = values(common::random_images([1, 1, 1, dims], seed, &reference()));
        Tensor::<1>::from_data(TensorData::new(values, [dims]), device).require_grad()
    };
    let pool = |device: &Device, op: &dyn Fn(Tensor<4>) -> Tensor<4>| {
        let x = input(device);
        let weights = common::random_images([3, 5, 4, 6], 18, device);
        let y = op(x.clone());
        let grads = (y.clone() * weights).sum().backward();
        vec![values(y), values(x.grad(&grads).expect("a gradient for the input"))]
    };
    let check = |name: &str, ours: Vec<Vec<f32>>, burns: Vec<Vec<f32>>, tolerance: f32| {
        for (i, (ours, burns)) in ours.iter().zip(&burns).enumerate() {
            let d = deviation(ours, burns);
            assert!(d <= tolerance, "{backend}: {name}, output {i} differs from Burn's on flex by {d}");
            assert!(
                ours.iter().filter(|g| **g != 0.0).count() > ours.len() / 8,
                "{backend}: {name}, output {i} is mostly zeros"
            );
        }
    };
    let burn_pool = |x: Tensor<4>| relu(max_pool2d(x, MaxPoolOptions::new([2, 2])));
    check(
        "max_pool2x2_relu",
        pool(&device_of(backend).autodiff(), &max_pool2x2_relu),
        pool(&reference().autodiff(), &burn_pool),
        1e-6,
    );

    // A 3x3 convolution with padding 1 and a bias: the output and the three gradients.
    type Conv = fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>;
    let convolve = |device: &Device, op: Conv| {
        let x = input(device);
        let w = common::random_images([4, 5, 3, 3], 19, device).mul_scalar(0.3).require_grad();
        let b = parameter(4, 20, device);
        let y = op(x.clone(), w.clone(), Some(b.clone()), ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
        let grads = (y.clone() * common::random_images([3, 4, 9, 12], 21, device)).sum().backward();
        let grad = |g: Option<Vec<f32>>| g.expect("a gradient");
        vec![
            values(y),
            grad(x.grad(&grads).map(values)),
            grad(w.grad(&grads).map(values)),
            grad(b.grad(&grads).map(|g| values(g.reshape([1, 1, 1, 4])))),
        ]
    };
    check(
        "conv2d",
        convolve(&device_of(backend).autodiff(), nestednet::kernels::conv2d),
        convolve(&reference().autodiff(), conv2d),
        1e-4,
    );

    // A training batch norm, then pooling and ReLU: the output, the batch statistics and
    // the gradients of the input, γ and β.
    let normalise = |device: &Device, fused: bool| {
        let x = input(device);
        let (gamma, beta) = (parameter(5, 22, device), parameter(5, 23, device));
        let out = if fused {
            batch_norm_max_pool2x2_relu(x.clone(), gamma.clone(), beta.clone(), 1e-5)
        } else {
            let (y, mean, variance) = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
            nestednet::kernels::NormPoolOutput { output: burn_pool(y), mean, variance }
        };
        let grads = (out.output.clone() * common::random_images([3, 5, 4, 6], 24, device)).sum().backward();
        let vector = |t: Tensor<1>| values(t.reshape([1, 1, 1, 5]));
        vec![
            values(out.output),
            vector(out.mean),
            vector(out.variance),
            values(x.grad(&grads).expect("a gradient for the input")),
            vector(gamma.grad(&grads).expect("a gradient for gamma")),
            vector(beta.grad(&grads).expect("a gradient for beta")),
        ]
    };
    check(
        "batch_norm_max_pool2x2_relu",
        normalise(&device_of(backend).autodiff(), true),
        normalise(&reference().autodiff(), false),
        1e-4,
    );
}

macro_rules! backend_tests {
    ($name:ident, $backend:expr, $feature:literal $(, #[$attr:meta])?) => {
        #[cfg(feature = $feature)]
        mod $name {
            use super::*;

            #[test]
            $(#[$attr])?
            fn mnist_cnn_levels_match_flex() {
                levels_match_reference($backend, mnist_cnn());
            }

            #[test]
            $(#[$attr])?
            fn mnist_resnet_levels_match_flex() {
                levels_match_reference($backend, mnist_resnet());
            }

            #[test]
            $(#[$attr])?
            fn mnist_cnn_training_step_matches_flex() {
                training_step_matches_reference($backend, mnist_cnn());
            }

            #[test]
            $(#[$attr])?
            fn mnist_resnet_training_step_matches_flex() {
                training_step_matches_reference($backend, mnist_resnet());
            }

            #[test]
            $(#[$attr])?
            fn gradients_stay_inside_the_level() {
                super::gradients_stay_inside_the_level($backend);
            }

            #[test]
            $(#[$attr])?
            fn checkpoint_round_trip() {
                super::checkpoint_round_trip($backend);
            }

            #[test]
            $(#[$attr])?
            fn kernels_match_burns_ops() {
                super::kernels_match_burns_ops($backend);
            }
        }
    };
}

// `flex` against itself: these check the harness (seeding, record moves, the step) and that
// flex is deterministic, not flex's values; `flex_matches_pytorch` below checks those.
backend_tests!(flex_against_itself, Backend::Flex, "flex");
backend_tests!(ndarray, Backend::Ndarray, "ndarray");
backend_tests!(wgpu, Backend::Wgpu, "wgpu");
backend_tests!(tch, Backend::Tch, "tch");
backend_tests!(
    cuda,
    Backend::Cuda,
    "cuda",
    #[ignore = "needs an NVIDIA GPU: run with --ignored (scripts/gpu_check.sh)"]
);

/// Which backends this test binary exercises, printed so CI logs say it plainly.
#[test]
fn compiled_backends_are_listed() {
    let compiled: Vec<String> = Backend::compiled().iter().map(|b| b.to_string()).collect();
    println!("backends compiled into this test run: {}", compiled.join(", "));
    assert!(compiled.contains(&"flex".to_string()), "the backend tests need flex as the reference");
}

/// On a machine without a usable wgpu adapter, asking for the `wgpu` backend is an error that
/// names the cause (it was a panic inside cubecl at the first operation). The test runs
/// itself again in a child process whose Vulkan loader finds no driver (and which is told to
/// answer the question), so that no other test's device is affected.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_without_an_adapter_is_an_error_not_a_panic() {
    const CHILD: &str = "NESTEDNET_TEST_NO_WGPU_ADAPTER";
    if std::env::var_os(CHILD).is_some() {
        let err = Backend::Wgpu.device().expect_err("no adapter should be found").to_string();
        assert!(err.contains("backend `wgpu`") && err.contains("mesa-vulkan-drivers"), "{err}");
        println!("the error: {err}");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "wgpu_without_an_adapter_is_an_error_not_a_panic", "--nocapture"])
        .env(CHILD, "1")
        // No Vulkan driver (the older and the newer loader's variable) and no EGL vendor
        // library (glvnd's variable), so no OpenGL adapter either.
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/nonexistent/egl.json")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
    println!("{}", text.lines().find(|l| l.starts_with("the error:")).unwrap_or_default());
}

/// `flex`'s logits against values computed independently of nestednet's forward passes:
/// PyTorch's output for the same seeded, untrained networks (exported and rebuilt in plain
/// PyTorch), stored in `tests/fixtures/pytorch_logits.json` (written, and re-checked by CI, by
/// `tests/pytorch_exports.rs`). Every level of `mnist-cnn` and of the `mnist-resnet` lattice.
#[cfg(feature = "flex")]
#[test]
fn flex_matches_pytorch() {
    use nestednet::models::{LevelRequest, ModelRequest};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_logits.json");
    let fixture: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(fixture["seed"], SEED);
    let device = reference();
    for stored in fixture["models"].as_array().unwrap() {
        let name = stored["name"].as_str().unwrap();
        let levels = match name {
            "mnist-cnn" => {
                LevelRequest::Channels(nestednet::schedule::LevelSpec::Ratios(vec![0.25, 0.5, 1.0]))
            }
            _ => LevelRequest::Lattice("0.5,1;1,2".parse().unwrap()),
        };
        let request = ModelRequest::new(name, [1, 28, 28], 10, levels);
        let images: Vec<f32> =
            stored["images"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let images = Tensor::<4>::from_data(TensorData::new(images, [2, 1, 28, 28]), &device);
        let expected = stored["levels"].as_array().unwrap();
        if name == "mnist-cnn" {
            let config = NestedMnistCnnConfig::from_request(&request).unwrap().unwrap();
            matches_pytorch(&seeded_model(&config, None, SEED, &device).unwrap(), name, &images, expected);
        } else {
            let config = NestedResNetConfig::from_request(&request).unwrap().unwrap();
            matches_pytorch(&seeded_model(&config, None, SEED, &device).unwrap(), name, &images, expected);
        }
    }
}

/// Every level of `model` gives the logits `expected` (PyTorch's) for `images`.
#[cfg(feature = "flex")]
fn matches_pytorch<M>(model: &M, name: &str, images: &Tensor<4>, expected: &[serde_json::Value])
where
    M: NestedNetwork<Input = Tensor<4>, Output = Tensor<2>>,
{
    {
        assert_eq!(expected.len(), model.num_levels());
        for (level, logits) in expected.iter().enumerate() {
            let want: Vec<f32> = logits
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
                .collect();
            let d = deviation(&values(model.forward_level(images.clone(), level)), &want);
            println!("flex {name} level {level}: logits deviate {d:.2e} from PyTorch's");
            assert!(d <= 1e-4, "flex {name} level {level}: logits deviate by {d:e} from PyTorch's");
        }
    }
}
