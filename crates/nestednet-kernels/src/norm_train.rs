//! Training batch norm (batch statistics), then 2×2 max-pooling and ReLU, as one autodiff
//! node.
//!
//! Written with Burn's operations, a training batch norm is a dozen autodiff nodes (sums,
//! squares, scale and shift, each a pass over the activation and a fresh buffer) and its
//! backward pass as many again; a profile of a joint `mnist-cnn` step after the convolution
//! kernels put Burn's element-wise operations at about a fifth of it. Here:
//!
//! - statistics: one pass, per channel, summing in `f64` (mean and biased variance);
//! - forward: `relu(max over each 2×2 window of γ̂·x + β̂)` with `γ̂ = γ / sqrt(var + ε)`,
//!   `β̂ = β − mean·γ̂`, one read of the input and one write of a quarter of it;
//! - backward: the gradient `dy` reaching the normalised activation is that of
//!   [`max_pool2x2_relu`](crate::max_pool2x2_relu) (same window rule, found again from the
//!   input rather than stored); then, per channel, `dβ = Σ dy`, `dγ = Σ dy·x̂` (one pass) and
//!   `dx = γ / sqrt(var + ε) · (dy − dβ / N − x̂ · dγ / N)` (a second pass, written over the
//!   input's buffer when the node holds the only reference to it).
//!
//! The values agree with Burn's operations to float rounding (the sums run in another order).

// Without `flex`, the kernels have no caller but their tests: Burn's operations run instead.
#![cfg_attr(not(feature = "flex"), allow(dead_code))]

use burn::prelude::*;

use crate::pool::{BLOCK, deinterleave, map_pool_relu, window_gradients};

/// The output of [`batch_norm_max_pool2x2_relu`].
#[derive(Debug, Clone)]
pub struct NormPoolOutput {
    /// `relu(max_pool2d(batch_norm(x), [2, 2]))`, `[batch, channels, height / 2, width / 2]`.
    pub output: Tensor<4>,
    /// The batch mean of each channel (no gradient), for the running statistics.
    pub mean: Tensor<1>,
    /// The batch's biased variance of each channel (no gradient).
    pub variance: Tensor<1>,
}

/// A training batch norm of `x` (`[batch, channels, height, width]`) with the batch's own
/// statistics and the affine parameters `gamma`, `beta` (`[channels]`), then 2×2 max-pooling
/// (stride 2, floor mode), then ReLU.
///
/// On a `flex` device with `f32` values it is one kernel forward and one backward (see the
/// module documentation), agreeing with Burn's operations to float rounding; elsewhere it is
/// [`batch_norm_train`] then [`max_pool2x2_relu`](crate::max_pool2x2_relu).
///
/// # Panics
///
/// If `gamma` or `beta` do not have one value per channel.
pub fn batch_norm_max_pool2x2_relu(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> NormPoolOutput {
    let [b, c, h, w] = x.dims();
    for (name, p) in [("gamma", &gamma), ("beta", &beta)] {
        assert_eq!(p.dims(), [c], "batch norm: {name} of {:?} for {c} channels", p.dims());
    }
    #[cfg(feature = "flex")]
    if h >= 2 && w >= 2 && b > 0 && crate::runs_own_kernel(&x, crate::KernelFamily::Norm) {
        return flex::batch_norm_max_pool2x2_relu(x, gamma, beta, epsilon);
    }
    let _ = (b, h, w);
    let (y, mean, variance) = batch_norm_train(x, gamma, beta, epsilon);
    NormPoolOutput { output: crate::max_pool2x2_relu(y), mean, variance }
}

/// A training batch norm with Burn's operations: `x` (`[batch, channels, ...]`) normalised by
/// its batch statistics over every axis but the channels', then `γ·x̂ + β`. Returns the output
/// and the batch mean and biased variance (no gradient).
///
/// The statistics are one pass over the input (a sum and a sum of squares per channel) and
/// the normalisation one fused affine transform, differentiated by autodiff: compared with
/// Burn's `batch_norm_train`, about half the passes over the activation.
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    let dims = x.dims();
    let (batch, channels) = (dims[0], dims[1]);
    let spatial = dims[2..].iter().product::<usize>();
    let n = (batch * spatial) as f64;
    let x3 = x.reshape([batch, channels, spatial]);
    let sum = x3.clone().sum_dim(2).sum_dim(0);
    let sum_sq = (x3.clone() * x3.clone()).sum_dim(2).sum_dim(0);
    let mean = sum.div_scalar(n);
    // E[x²] - E[x]²; clamped because rounding can push it a hair below zero.
    let var = (sum_sq.div_scalar(n) - mean.clone() * mean.clone()).clamp_min(0.0);
    let scale = var.clone().add_scalar(epsilon).sqrt().recip() * gamma.reshape([1, channels, 1]);
    let shift = beta.reshape([1, channels, 1]) - mean.clone() * scale.clone();
    let y = (x3 * scale + shift).reshape(dims);
    (y, mean.detach().reshape([channels]), var.detach().reshape([channels]))
}

/// Per-channel mean and biased variance of a row-major `[b, c, h, w]` buffer, summed in
/// `f64`.
pub(crate) fn moments(x: &[f32], [b, c, h, w]: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    let plane = h * w;
    let n = (b * plane) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
            for image in 0..b {
                let values = &x[(image * c + ch) * plane..][..plane];
                // Eight f32 lanes per plane (vectorised), then f64 across planes.
                let (s, q) = crate::simd::lane_sums(values);
                for &v in &values[values.len() / 8 * 8..] {
                    sum += f64::from(v);
                    sum_sq += f64::from(v) * f64::from(v);
                }
                sum += s.iter().map(|&v| f64::from(v)).sum::<f64>();
                sum_sq += q.iter().map(|&v| f64::from(v)).sum::<f64>();
            }
            let mean = sum / n;
            ((mean) as f32, (sum_sq / n - mean * mean).max(0.0) as f32)
        })
        .unzip()
}

/// A channel's normalisation as the kernels apply it: `x ↦ scale·x + shift`, with `x̂ =
/// (x − mean)·inv_std`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelAffine {
    mean: f32,
    inv_std: f32,
    gamma: f32,
    scale: f32,
    shift: f32,
}

impl ChannelAffine {
    pub(crate) fn new(mean: f32, var: f32, gamma: f32, beta: f32, epsilon: f64) -> Self {
        let inv_std = (1.0 / (f64::from(var) + epsilon).sqrt()) as f32;
        let scale = gamma * inv_std;
        Self { mean, inv_std, gamma, scale, shift: beta - mean * scale }
    }

    fn apply(self) -> impl Fn(f32) -> f32 {
        move |x| x * self.scale + self.shift
    }
}

/// The forward kernel: `relu(max over each 2×2 window of the normalised x)`.
pub(crate) fn forward(x: &[f32], shape: [usize; 4], channels: &[ChannelAffine]) -> Vec<f32> {
    #[cfg(test)]
    crate::pool::tests::count_call();
    assert_eq!(channels.len(), shape[1], "{} channel normalisations for {shape:?}", channels.len());
    map_pool_relu(x, shape, |c| channels[c].apply())
}

/// Visits a `h × w` plane `x` (`h`, `w` at least 2) in blocks of up to [`BLOCK`] neighbouring
/// 2×2 windows: `block(xs, dy)` receives the block's inputs and the gradients `dy` reaching
/// their normalised values through `relu(max_pool2d(·, [2, 2]))` given the output gradient
/// `grad` (`h/2 × w/2`), both deinterleaved into a window's four positions (zeros past the
/// block's windows); what it returns, if anything, is written over the block's inputs (after
/// they were read: blocks do not overlap). `outside(x)` does the same for each position in
/// no window (its `dy` is 0).
#[inline(always)]
fn visit_windows(
    x: &mut [f32],
    grad: &[f32],
    [h, w]: [usize; 2],
    affine: ChannelAffine,
    mut block: impl FnMut(&[[f32; BLOCK]; 4], &[[f32; BLOCK]; 4]) -> Option<[[f32; BLOCK]; 4]>,
    mut outside: impl FnMut(f32) -> Option<f32>,
) {
    let (ho, wo) = (h / 2, w / 2);
    let normalise = affine.apply();
    let mut visit_outside = |v: &mut f32| {
        if let Some(new) = outside(*v) {
            *v = new;
        }
    };
    for (oy, g) in grad.chunks_exact(wo).enumerate() {
        let (top_row, bottom_row) = x[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
        for (start, g) in (0..wo).step_by(BLOCK).zip(g.chunks(BLOCK)) {
            let n = g.len();
            let top = &mut top_row[2 * start..2 * (start + n)];
            let bottom = &mut bottom_row[2 * start..2 * (start + n)];
            let (xs, g) = deinterleave(top, bottom, g, |v| v);
            let ys = xs.map(|lane| lane.map(&normalise));
            let dy = window_gradients(&ys, &g, n);
            if let Some(out) = block(&xs, &dy) {
                for i in 0..n {
                    (top[2 * i], top[2 * i + 1]) = (out[0][i], out[1][i]);
                    (bottom[2 * i], bottom[2 * i + 1]) = (out[2][i], out[3][i]);
                }
            }
        }
        if w % 2 == 1 {
            visit_outside(&mut top_row[w - 1]);
            visit_outside(&mut bottom_row[w - 1]);
        }
    }
    x[2 * ho * w..h * w].iter_mut().for_each(visit_outside);
}

/// The backward kernel: given the forward input `x` (`[b, c, h, w]`), the channels'
/// normalisations and the output gradient `grad` (`[b, c, h/2, w/2]`), `dγ` and `dβ`
/// (`[c]`), and `dx` written over `x` when `input` (left as it is otherwise).
pub(crate) fn backward_in_place(
    x: &mut [f32],
    grad: &[f32],
    [b, c, h, w]: [usize; 4],
    channels: &[ChannelAffine],
    input: bool,
) -> (Vec<f32>, Vec<f32>) {
    use rayon::prelude::*;
    #[cfg(test)]
    crate::pool::tests::count_call();
    let (plane, out_plane) = (h * w, (h / 2) * (w / 2));
    assert_eq!(x.len(), b * c * plane, "an input of {} values for {:?}", x.len(), [b, c, h, w]);
    assert_eq!(grad.len(), b * c * out_plane, "a gradient of {} values for {:?}", grad.len(), [b, c, h, w]);
    assert_eq!(channels.len(), c, "{} channel normalisations for {c} channels", channels.len());
    let n = (b * plane) as f32;
    // Each channel's planes (one per image), so that channels run in parallel.
    let mut planes: Vec<Vec<&mut [f32]>> = (0..c).map(|_| Vec::with_capacity(b)).collect();
    for (i, p) in x.chunks_exact_mut(plane.max(1)).enumerate() {
        planes[i % c].push(p);
    }
    planes
        .into_par_iter()
        .enumerate()
        .map(|(ch, mut planes)| {
            crate::simd::vectorised!({
                let affine = channels[ch];
                let grads = |image: usize| &grad[(image * c + ch) * out_plane..][..out_plane];
                // dβ = Σ dy and Σ dy·(x − mean), in lanes, then in f64 per plane.
                let (mut sum_dy, mut sum_dy_xc) = (0.0f64, 0.0f64);
                for (image, x) in planes.iter_mut().enumerate() {
                    let (mut s, mut q) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
                    let block = |xs: &[[f32; BLOCK]; 4], dy: &[[f32; BLOCK]; 4]| {
                        for (xs, dy) in xs.iter().zip(dy) {
                            for i in 0..BLOCK {
                                s[i] += dy[i];
                                q[i] += dy[i] * (xs[i] - affine.mean);
                            }
                        }
                        None
                    };
                    visit_windows(x, grads(image), [h, w], affine, block, |_| None);
                    sum_dy += s.iter().map(|&v| f64::from(v)).sum::<f64>();
                    sum_dy_xc += q.iter().map(|&v| f64::from(v)).sum::<f64>();
                }
                let d_beta = sum_dy as f32;
                let d_gamma = (sum_dy_xc * f64::from(affine.inv_std)) as f32;
                if input {
                    // dx = γ·inv_std · (dy − dβ/N − x̂·dγ/N), x̂ = (x − mean)·inv_std.
                    let k = affine.gamma * affine.inv_std;
                    let (a, slope) = (d_beta / n, d_gamma / n * affine.inv_std);
                    let dx = move |x: f32, dy: f32| k * (dy - a - (x - affine.mean) * slope);
                    for (image, x) in planes.iter_mut().enumerate() {
                        let block = |xs: &[[f32; BLOCK]; 4], dy: &[[f32; BLOCK]; 4]| {
                            let mut out = [[0.0f32; BLOCK]; 4];
                            for ((out, xs), dy) in out.iter_mut().zip(xs).zip(dy) {
                                for i in 0..BLOCK {
                                    out[i] = dx(xs[i], dy[i]);
                                }
                            }
                            Some(out)
                        };
                        visit_windows(x, grads(image), [h, w], affine, block, |x| Some(dx(x, 0.0)));
                    }
                }
                (d_gamma, d_beta)
            })
        })
        .unzip()
}

/// The channels' normalisations from their batch moments (`[mean…, variance…]`) and affine
/// parameters.
fn channel_affines(moments: &[f32], gamma: &[f32], beta: &[f32], epsilon: f64) -> Vec<ChannelAffine> {
    let c = gamma.len();
    assert_eq!(moments.len(), 2 * c, "{} moments for {c} channels", moments.len());
    assert_eq!(beta.len(), c, "{} shifts for {c} channels", beta.len());
    (0..c).map(|ch| ChannelAffine::new(moments[ch], moments[c + ch], gamma[ch], beta[ch], epsilon)).collect()
}

/// The backend extension: the kernels on `Flex`, the backward pass on `Autodiff<Flex>`.
#[cfg(feature = "flex")]
mod flex {
    use super::{ChannelAffine, NormPoolOutput, channel_affines};
    use crate::flex_tensor::{contiguous, dims4, f32s};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
    use burn::prelude::*;

    #[backend_extension(Autodiff, Flex)]
    pub(super) trait NormKernels: Backend {
        /// The per-channel batch mean and biased variance of `x`, as `[2, channels]`; never
        /// differentiated.
        fn batch_moments(x: FloatTensor<Self>) -> FloatTensor<Self>;

        /// `relu(max_pool2d(γ·(x − mean)/sqrt(var + ε) + β, [2, 2]))`, with `moments` the
        /// output of `batch_moments(x)`: differentiated as a function of `x` (through the
        /// statistics too), `gamma` and `beta`.
        fn batch_norm_pool_relu(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            moments: FloatTensor<Self>,
            epsilon: f64,
        ) -> FloatTensor<Self>;
    }

    pub(super) fn batch_norm_max_pool2x2_relu(
        x: Tensor<4>,
        gamma: Tensor<1>,
        beta: Tensor<1>,
        epsilon: f64,
    ) -> NormPoolOutput {
        let c = x.dims()[1];
        let moments =
            Tensor::<2>::from_dispatch(<Dispatch as NormKernels>::batch_moments(x.clone().into_dispatch()));
        let output = Tensor::from_dispatch(<Dispatch as NormKernels>::batch_norm_pool_relu(
            x.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
            moments.clone().into_dispatch(),
            epsilon,
        ));
        let mean = moments.clone().narrow(0, 0, 1).reshape([c]);
        let variance = moments.narrow(0, 1, 1).reshape([c]);
        NormPoolOutput { output, mean, variance }
    }

    fn moments(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let shape = dims4(&x);
        let (mean, var) = super::moments(f32s(&x), shape);
        FlexTensor::from_data(TensorData::new([mean, var].concat(), [2, shape[1]]))
    }

    /// The forward kernel on flex tensors; also returns the input (contiguous) and the
    /// channels' normalisations, for the backward pass.
    fn forward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        moments: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, Vec<ChannelAffine>, FlexTensor) {
        let x = contiguous(x);
        let [gamma, beta, moments] = [gamma, beta, moments].map(contiguous);
        let channels = channel_affines(f32s(&moments), f32s(&gamma), f32s(&beta), epsilon);
        let [b, c, h, w] = dims4(&x);
        let out = super::forward(f32s(&x), [b, c, h, w], &channels);
        (x, channels, FlexTensor::from_data(TensorData::new(out, [b, c, h / 2, w / 2])))
    }

    impl NormKernels for Flex {
        fn batch_moments(x: FlexTensor) -> FlexTensor {
            moments(x)
        }

        fn batch_norm_pool_relu(
            x: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            moments: FlexTensor,
            epsilon: f64,
        ) -> FlexTensor {
            forward(x, gamma, beta, moments, epsilon).2
        }
    }

    /// The autodiff node (parents: input, γ, β); keeps the input (shared, not copied) and the
    /// channels' normalisations.
    #[derive(Debug)]
    struct BatchNormPoolRelu;

    impl Backward<Flex, 3> for BatchNormPoolRelu {
        type State = (FlexTensor, Vec<ChannelAffine>);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [input, gamma, beta] = ops.parents.map(|parent| parent.map(|node| node.id));
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let (mut x, channels) = ops.state;
            let shape = dims4(&x);
            let n: usize = shape.iter().product();
            // The input's buffer becomes its gradient's where this node holds the only
            // reference to it (the usual case); a copy of it otherwise.
            let (dx, (d_gamma, d_beta)) = match x.try_storage_mut::<f32>() {
                Some(buffer) if buffer.len() == n => {
                    let d = super::backward_in_place(buffer, f32s(&grad), shape, &channels, input.is_some());
                    (x, d)
                }
                _ => {
                    let mut dx = f32s(&x).to_vec();
                    let d = super::backward_in_place(&mut dx, f32s(&grad), shape, &channels, input.is_some());
                    (FlexTensor::from_data(TensorData::new(dx, shape)), d)
                }
            };
            let c = shape[1];
            if let Some(id) = input {
                grads.register::<Flex>(id, dx);
            }
            if let Some(id) = gamma {
                grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(d_gamma, [c])));
            }
            if let Some(id) = beta {
                grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(d_beta, [c])));
            }
        }
    }

    impl<C: CheckpointStrategy> NormKernels for Autodiff<Flex, C> {
        fn batch_moments(x: FloatTensor<Self>) -> FloatTensor<Self> {
            // A leaf outside the graph: the statistics are constants to autodiff, their
            // dependence on `x` is in `batch_norm_pool_relu`'s backward pass.
            Self::from_inner(moments(x.into_primitive()))
        }

        fn batch_norm_pool_relu(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            moments: FloatTensor<Self>,
            epsilon: f64,
        ) -> FloatTensor<Self> {
            let nodes = [x.node(), gamma.node(), beta.node()];
            let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
            let moments = moments.into_primitive();
            match BatchNormPoolRelu.prepare::<C>(nodes).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (x, channels, output) = forward(x, gamma, beta, moments, epsilon);
                    prep.finish((x, channels), output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(x, gamma, beta, moments, epsilon).2),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// Deterministic values in `[offset − scale, offset + scale)` (the tests draw nothing
    /// from the device's generator, which tests running at the same time share).
    fn tensor<const D: usize>(
        shape: [usize; D],
        seed: u32,
        offset: f32,
        scale: f32,
        device: &Device,
    ) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let values = (0..n as u32)
            .map(|i| {
                let bits =
                    (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761).wrapping_add(seed)
                        ^ (i >> 5);
                offset + ((bits.wrapping_mul(2_246_822_519) >> 8) as f32 / 8_388_608.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// Burn's operations (and the pooling kernel, bit-identical to Burn's pooling).
    fn reference(x: Tensor<4>, gamma: Tensor<1>, beta: Tensor<1>, epsilon: f64) -> NormPoolOutput {
        let (y, mean, variance) = batch_norm_train(x, gamma, beta, epsilon);
        NormPoolOutput { output: crate::max_pool2x2_relu(y), mean, variance }
    }

    type Op = fn(Tensor<4>, Tensor<1>, Tensor<1>, f64) -> NormPoolOutput;

    const SHAPES: [[usize; 4]; 6] =
        [[4, 3, 6, 8], [3, 2, 7, 5], [64, 8, 28, 28], [5, 4, 2, 2], [2, 3, 3, 9], [1, 2, 5, 2]];

    /// Output, mean, variance and the gradients of the input (when tracked), γ and β.
    fn run(op: Op, shape: [usize; 4], input_tracked: bool, device: &Device) -> Vec<TensorData> {
        let c = shape[1];
        let x = tensor(shape, 1, 0.3, 2.0, device);
        let x = if input_tracked { x.require_grad() } else { x };
        // γ of both signs: where it is negative the pooling picks the smallest input.
        let gamma = tensor([c], 2, 0.0, 1.5, device).require_grad();
        let beta = tensor([c], 3, 0.0, 0.5, device).require_grad();
        // The input made by an operation, as in a network: the kernel may then write the
        // gradient over it.
        let out = op(x.clone().mul_scalar(1.0), gamma.clone(), beta.clone(), 1e-5);
        let [b, c, h, w] = shape;
        let r = tensor([b, c, h / 2, w / 2], 4, 0.0, 1.0, device);
        let grads = (out.output.clone() * r).sum().backward();
        let mut all = vec![out.output.into_data(), out.mean.into_data(), out.variance.into_data()];
        if input_tracked {
            all.push(x.grad(&grads).expect("an input gradient").into_data());
        } else {
            assert!(x.grad(&grads).is_none());
        }
        all.push(gamma.grad(&grads).expect("a gamma gradient").into_data());
        all.push(beta.grad(&grads).expect("a beta gradient").into_data());
        all
    }

    #[test]
    fn values_statistics_and_gradients_agree_with_burns_operations() {
        let device = Device::flex().autodiff();
        for shape in SHAPES {
            for input_tracked in [true, false] {
                let calls = crate::pool::tests::kernel_calls();
                let ours = run(batch_norm_max_pool2x2_relu, shape, input_tracked, &device);
                #[cfg(feature = "flex")]
                assert_eq!(
                    crate::pool::tests::kernel_calls(),
                    calls + 2,
                    "forward and backward kernels for {shape:?}"
                );
                let _ = calls;
                let burns = run(reference, shape, input_tracked, &device);
                for (ours, burns) in ours.iter().zip(&burns) {
                    ours.assert_approx_eq::<f32>(burns, Tolerance::rel_abs(1e-4, 1e-4));
                }
            }
        }
    }

    #[test]
    fn without_autodiff_the_values_agree_with_burns_operations() {
        let device = Device::flex();
        for shape in SHAPES {
            let c = shape[1];
            let x = tensor(shape, 5, -0.2, 1.0, &device);
            let (gamma, beta) = (tensor([c], 6, 0.0, 1.0, &device), tensor([c], 7, 0.0, 1.0, &device));
            let ours = batch_norm_max_pool2x2_relu(x.clone(), gamma.clone(), beta.clone(), 1e-3);
            let burns = reference(x, gamma, beta, 1e-3);
            let output = ours.output.into_data();
            output.assert_approx_eq::<f32>(&burns.output.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
            ours.variance
                .into_data()
                .assert_approx_eq::<f32>(&burns.variance.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
        }
    }

    #[test]
    fn moments_are_summed_accurately() {
        // A large offset: E[x²] − E[x]² in f32 would lose the variance of 1/12 entirely.
        let (b, c, h, w) = (3, 2, 10, 10);
        let x: Vec<f32> = (0..b * c * h * w).map(|i| 1000.0 + (i % 2) as f32).collect();
        let (mean, var) = moments(&x, [b, c, h, w]);
        assert_eq!(mean, vec![1000.5; 2]);
        assert_eq!(var, vec![0.25; 2]);
    }

    #[test]
    #[should_panic(expected = "gamma of [3] for 2 channels")]
    fn parameters_of_another_width_are_refused() {
        let device = Device::flex();
        let x = tensor([1, 2, 4, 4], 1, 0.0, 1.0, &device);
        batch_norm_max_pool2x2_relu(
            x,
            tensor([3], 2, 1.0, 0.1, &device),
            tensor([2], 3, 0.0, 0.1, &device),
            1e-5,
        );
    }
}
