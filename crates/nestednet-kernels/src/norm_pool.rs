//! Inference on the CPU: batch norm, 2×2 max-pooling and ReLU in one pass.
//!
//! Profiling `mnist-cnn` inference on `flex` showed batch norm, pooling and ReLU taking 40% of
//! the full level's time and 45% of the core's: each is a separate pass over the activation
//! (the pooling a generic strided kernel), with a fresh buffer per op. At inference the batch
//! norm uses fixed per-channel statistics, so the three fuse into one read of the
//! convolution's output and one write of a quarter of it. `flex` tensors hand their buffer
//! over without a copy (`into_data` / `from_data` move it), so the kernel runs on the
//! backend's own memory. It evaluates the batch norm with the same f32 operations in the same
//! order as Burn's `batch_norm` (`((x - mean) / sqrt(var + ε)) * γ + β`), so its output is
//! bit-identical to the three separate ops: no accuracy, export or report changes.
//!
//! [`conv2d_norm_max_pool2x2_relu`] goes one step further for a convolution followed by the
//! batch norm: with fixed statistics the batch norm is an affine map per channel, so it is
//! folded into the convolution's weights and bias (`w · s`, `(b − mean) · s + β`, `s = γ /
//! std`), and each image's convolution output is pooled straight from where the convolution
//! wrote it. Its values agree with the separate operations' to float rounding, not bit for
//! bit (exports are verified against the nested model within `EXPORT_TOLERANCE`).
//!
//! Other backends keep Burn's ops: there `into_data` would be a device-to-host copy. Training
//! (batch statistics, gradients) runs Burn's batch norm, then [`max_pool2x2_relu`], which has
//! its own kernel and backward pass on `flex`.

use crate::conv::ConvGeometry;
use crate::pool::{map_pool_relu, max_pool2x2_relu};
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

/// `relu(max_pool2d(norm(x), [2, 2]))` with `norm` in inference mode (running statistics), for
/// `x` of shape `[batch, channels, height, width]` (floor mode: an odd last row or column is
/// dropped). Runs the fused kernel on a `flex` tensor without autodiff, and Burn's batch norm
/// then [`max_pool2x2_relu`] otherwise: the same values, bit for bit.
///
/// # Panics
///
/// If `norm` has another number of channels than `x`.
pub fn norm_max_pool2x2_relu(x: Tensor<4>, norm: &BatchNorm) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [width] = norm.gamma.dims();
    assert_eq!(c, width, "batch norm of {width} channels applied to {c} channels");
    if x.is_autodiff() || h < 2 || w < 2 || !crate::runs_own_kernel(&x, crate::KernelFamily::Pool) {
        return max_pool2x2_relu(norm.forward(x));
    }
    let stats = ChannelStats::of(norm);
    let device = x.device();
    let data = x.into_data();
    let values = data.as_slice::<f32>().expect("an f32 tensor holds f32 values");
    let out = norm_pool_relu_kernel(values, [b, c, h, w], &stats);
    Tensor::from_data(TensorData::new(out, [b, c, h / 2, w / 2]), &device)
}

/// `norm_max_pool2x2_relu(conv2d_layer(conv, x), norm)`: a convolution, then batch norm with
/// running statistics, 2×2 max-pooling and ReLU, for inference. On a `flex` tensor without
/// autodiff it is one kernel: the batch norm folded into the convolution (see the module
/// documentation), each image's output pooled while it is in cache, so the full-resolution
/// activation is never written (for a small level's first layer, those passes over memory
/// were most of its time). The values agree with the two operations' to float rounding.
/// Elsewhere it is those two operations.
///
/// # Panics
///
/// As [`conv2d_layer`](crate::conv2d_layer) and [`norm_max_pool2x2_relu`].
pub fn conv2d_norm_max_pool2x2_relu(x: Tensor<4>, conv: &Conv2d, norm: &BatchNorm) -> Tensor<4> {
    let unfused = |x| norm_max_pool2x2_relu(crate::conv2d_layer(conv, x), norm);
    if x.is_autodiff() || !crate::runs_own_kernel(&x, crate::KernelFamily::Pool) {
        return unfused(x);
    }
    let Some(options) = crate::conv::layer_options(conv) else { return unfused(x) };
    let weight = conv.weight.val();
    if !crate::conv2d_has_kernel(&x, &weight, &options) {
        return unfused(x);
    }
    let g = ConvGeometry::new(x.dims(), weight.dims(), &options);
    if g.h_out < 2 || g.w_out < 2 {
        return unfused(x);
    }
    let [width] = norm.gamma.dims();
    assert_eq!(g.c_out, width, "batch norm of {width} channels applied to {} channels", g.c_out);
    let stats = ChannelStats::of(norm);
    let device = x.device();
    let values = |t: TensorData| t.convert::<f32>().try_into_vec::<f32>().expect("f32 values");
    let (x, weight) = (values(x.into_data()), values(weight.into_data()));
    let bias = conv.bias.as_ref().map(|b| values(b.val().into_data()));
    let (weight, bias) = stats.fold_into(weight, bias.as_deref());
    let out = crate::conv::forward_pooled(&x, &weight, Some(&bias), &g);
    Tensor::from_data(TensorData::new(out, [g.batch, g.c_out, g.h_out / 2, g.w_out / 2]), &device)
}

/// A batch norm's per-channel inference coefficients, as Burn's `batch_norm` uses them.
pub(crate) struct ChannelStats {
    mean: Vec<f32>,
    /// `sqrt(running_var + ε)`, computed in f32 as Burn does.
    std: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl ChannelStats {
    fn of(norm: &BatchNorm) -> Self {
        let read = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 statistics");
        let epsilon = norm.epsilon as f32;
        ChannelStats {
            mean: read(norm.running_mean.value()),
            std: read(norm.running_var.value()).into_iter().map(|v| (v + epsilon).sqrt()).collect(),
            gamma: read(norm.gamma.val()),
            beta: read(norm.beta.val()),
        }
    }

    /// A convolution's weight (`[c_out, …]`) and bias followed by this batch norm, as one
    /// convolution: channel `c`'s weights scaled by `s = γ / std`, its bias `(b − mean) · s + β`.
    fn fold_into(&self, mut weight: Vec<f32>, bias: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
        let channels = self.mean.len();
        let scale: Vec<f32> = self.gamma.iter().zip(&self.std).map(|(g, s)| g / s).collect();
        let per_channel = (weight.len() / channels.max(1)).max(1);
        for (row, s) in weight.chunks_exact_mut(per_channel).zip(&scale) {
            row.iter_mut().for_each(|w| *w *= s);
        }
        let bias = (0..channels)
            .map(|c| (bias.map_or(0.0, |b| b[c]) - self.mean[c]) * scale[c] + self.beta[c])
            .collect();
        (weight, bias)
    }

    /// Channel `c`'s normalisation, `x ↦ ((x - mean) / std) * γ + β`: Burn's operations in
    /// Burn's order, so the result is bit-identical to its `batch_norm`.
    fn channel(&self, c: usize) -> impl Fn(f32) -> f32 {
        let (mean, std, gamma, beta) = (self.mean[c], self.std[c], self.gamma[c], self.beta[c]);
        move |x| ((x - mean) / std) * gamma + beta
    }
}

/// The kernel: for each `[batch, channel]` plane of `x` (`[b, c, h, w]`, row-major, `h` and
/// `w` at least 2), `max(0, max over each 2×2 window of norm(x))`, by the rule of Burn's
/// pooling and ReLU: a NaN in a window makes its output NaN.
pub(crate) fn norm_pool_relu_kernel(x: &[f32], shape: [usize; 4], stats: &ChannelStats) -> Vec<f32> {
    let c = shape[1];
    assert_eq!(stats.mean.len(), c, "statistics of {} channels for {c} channels", stats.mean.len());
    map_pool_relu(x, shape, |channel| stats.channel(channel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;

    /// Burn's own operations, the reference.
    fn reference(x: Tensor<4>) -> Tensor<4> {
        relu(max_pool2d(x, MaxPoolOptions::new([2, 2])))
    }

    /// A batch norm whose running statistics and affine parameters are not the identity, with
    /// negative γ in some channels (where max and the normalisation do not commute).
    fn trained_like_norm(channels: usize, device: &Device) -> BatchNorm {
        let mut norm = BatchNormConfig::new(channels).init(device);
        let random =
            |low: f64, high: f64| Tensor::<1>::random([channels], Distribution::Uniform(low, high), device);
        norm.gamma = burn::module::Param::from_tensor(random(-1.5, 1.5));
        norm.beta = burn::module::Param::from_tensor(random(-0.5, 0.5));
        norm.running_mean = burn::module::RunningState::new(random(-1.0, 1.0));
        norm.running_var = burn::module::RunningState::new(random(0.2, 2.0));
        norm
    }

    #[test]
    fn kernel_equals_norm_then_pool_then_relu() {
        let device = Device::flex();
        device.seed(11);
        for shape in [[3, 5, 8, 6], [1, 1, 2, 2], [2, 16, 28, 28]] {
            let norm = trained_like_norm(shape[1], &device);
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 2.0), &device);
            let expected = reference(norm.forward(x.clone())).into_data();
            let values = x.into_data().try_to_vec::<f32>().unwrap();
            let got = norm_pool_relu_kernel(&values, shape, &ChannelStats::of(&norm));
            let [b, c, h, w] = shape;
            // Bit for bit: the kernel repeats Burn's batch norm arithmetic exactly.
            TensorData::new(got, [b, c, h / 2, w / 2]).assert_eq(&expected, true);
        }
    }

    #[test]
    fn nan_in_a_window_gives_nan() {
        let mut x = vec![1.0f32; 16];
        x[5] = f32::NAN; // row 1, column 1: the top-left window
        x[15] = -3.0;
        let identity = ChannelStats { mean: vec![0.0], std: vec![1.0], gamma: vec![1.0], beta: vec![0.0] };
        let out = norm_pool_relu_kernel(&x, [1, 1, 4, 4], &identity);
        assert!(out[0].is_nan());
        assert_eq!(&out[1..], &[1.0, 1.0, 1.0]);
    }

    /// The convolution fused in (the batch norm folded into its weights) gives the two kernels'
    /// values and Burn's layers' values to float rounding, for layers with and without a bias,
    /// padded or not, strided, narrow (the direct convolution) and wide (the matrix product).
    #[test]
    fn convolution_then_norm_pool_relu_equals_the_two_kernels() {
        use burn::nn::PaddingConfig2d;
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex();
        device.seed(13);
        let x = Tensor::<4>::random([5, 3, 12, 10], Distribution::Normal(0.0, 1.0), &device);
        let same = PaddingConfig2d::Explicit(1, 1, 1, 1);
        let layers = [
            Conv2dConfig::new([3, 6], [3, 3]).with_padding(same.clone()),
            Conv2dConfig::new([3, 6], [3, 3]).with_bias(false),
            Conv2dConfig::new([3, 6], [3, 3]).with_stride([2, 2]).with_padding(same.clone()),
            Conv2dConfig::new([3, 20], [3, 3]).with_padding(same),
        ];
        for config in layers {
            let conv = config.init(&device);
            let channels = conv.weight.dims()[0];
            let norm = trained_like_norm(channels, &device);
            let calls = crate::pool::tests::kernel_calls();
            let fused = conv2d_norm_max_pool2x2_relu(x.clone(), &conv, &norm).into_data();
            #[cfg(feature = "flex")]
            assert_eq!(crate::pool::tests::kernel_calls(), calls + 1, "one fused kernel");
            let _ = calls;
            let tolerance = burn::tensor::Tolerance::absolute(1e-4);
            let kernels = norm_max_pool2x2_relu(crate::conv2d_layer(&conv, x.clone()), &norm).into_data();
            fused.assert_approx_eq::<f32>(&kernels, tolerance);
            let burns = reference(norm.forward(conv.forward(x.clone()))).into_data();
            fused.assert_approx_eq::<f32>(&burns, tolerance);
        }
    }

    /// A plain flex tensor takes the fused kernel and an autodiff one Burn's batch norm; both
    /// give Burn's values, for odd sizes too.
    #[test]
    fn norm_pool_relu_matches_burn_on_every_path() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            device.seed(12);
            let norm = trained_like_norm(4, &device);
            for shape in [[2, 4, 6, 10], [2, 4, 7, 5]] {
                let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let expected = reference(norm.forward(x.clone())).into_data();
                let got = norm_max_pool2x2_relu(x, &norm);
                assert_eq!(got.device(), device);
                got.into_data().assert_eq(&expected, true);
            }
        }
    }
}
