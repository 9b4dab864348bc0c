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
//!   input rather than stored by the forward pass); then, per channel, `dβ = Σ dy`, `dγ =
//!   Σ dy·x̂` (one pass, which keeps each window's gradient and winner's place) and `dx = γ /
//!   sqrt(var + ε) · (dy − dβ / N − x̂ · dγ / N)` (a second pass, from the kept winners,
//!   written over the input's buffer when the node holds the only reference to it).
//!
//! The values agree with Burn's operations to float rounding (the sums run in another order).

// Without `flex`, the kernels have no caller but their tests: Burn's operations run instead.
#![cfg_attr(not(feature = "flex"), allow(dead_code))]

use burn::prelude::*;

use crate::pool::{map_pool_relu, row_pair_gradients, row_pair_scatter, row_pair_winners};

/// Lanes of the backward pass's per-channel sums: one AVX2 register of `f32`s. The sums'
/// order, and so the gradients' last bits, depend on it: changing it changes training runs.
const BLOCK: usize = 8;

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
    /// Whether every input of the channel is known to give a finite `x − mean` (see
    /// [`moments_bound_inputs`]); when not known, [`plane_sums`] checks each row.
    bounded: bool,
}

impl ChannelAffine {
    /// A channel with nothing known of its inputs.
    pub(crate) fn new(mean: f32, var: f32, gamma: f32, beta: f32, epsilon: f64) -> Self {
        let inv_std = (1.0 / (f64::from(var) + epsilon).sqrt()) as f32;
        let scale = gamma * inv_std;
        Self { mean, inv_std, gamma, scale, shift: beta - mean * scale, bounded: false }
    }

    /// The channel whose `count` inputs have the batch moments `mean` and `var` (as
    /// [`moments`] computes them).
    fn from_moments(mean: f32, var: f32, count: usize, gamma: f32, beta: f32, epsilon: f64) -> Self {
        Self { bounded: moments_bound_inputs(mean, var, count), ..Self::new(mean, var, gamma, beta, epsilon) }
    }

    fn apply(self) -> impl Fn(f32) -> f32 {
        move |x| x * self.scale + self.shift
    }
}

/// Whether the moments of `count` values (their mean and biased variance, from `f64` sums as
/// [`moments`] computes them) prove every `x − mean` finite in `f32`, so that the backward
/// pass need not look: `Σ x² = count · (var + mean²)` bounds every `|x|`, and with a bound of
/// `1e36` (far below `f32::MAX`, so the rounding of the moments cannot matter) neither `x`
/// nor the mean nor their difference can overflow. A NaN or an infinity among the values
/// makes the moments NaN or infinite, and the answer no; so does a variance too large for
/// `f32` (infinite there), which is why this is a sufficient test, not a necessary one.
fn moments_bound_inputs(mean: f32, var: f32, count: usize) -> bool {
    let (mean, var) = (f64::from(mean), f64::from(var));
    let sum_sq = count as f64 * (var + mean * mean);
    sum_sq <= 1e72
}

/// The forward kernel: `relu(max over each 2×2 window of the normalised x)`.
pub(crate) fn forward(x: &[f32], shape: [usize; 4], channels: &[ChannelAffine]) -> Vec<f32> {
    #[cfg(test)]
    crate::pool::tests::count_call();
    assert_eq!(channels.len(), shape[1], "{} channel normalisations for {shape:?}", channels.len());
    map_pool_relu(x, shape, |c| channels[c].apply())
}

/// `Σ dy` and `Σ dy · (x − mean)` over one plane `x` (`h × w`) in [`BLOCK`] lanes, `dy`
/// the gradient reaching each normalised input through the pooling and ReLU from the output
/// gradient `grad`: window `i` of a row adds to lane `i mod BLOCK`, its four inputs in order.
/// Only a window's winner gets a nonzero `dy`, and adding the others' `0 · (x − mean)` changes
/// no bit while every `x − mean` is finite (the lanes never hold -0): then the winners alone
/// are summed. A plane with a non-finite `x − mean` takes [`plane_sums_by_position`], where
/// `0 · ∞` makes its NaN; each row is checked for one, unless the channel's moments already
/// rule it out ([`moments_bound_inputs`]: a pass over the input saved, a sixth of the
/// backward pass). `winners` is scratch of `2 · wo` rounded up to whole blocks, zero
/// past `wo`. Each window's gradient and winner's place go to `kept` (`h/2 · w/2` of each),
/// for the second pass; `false` with the sums when the plane took the four-position sums
/// (nothing kept).
#[inline(always)]
fn plane_sums(
    x: &[f32],
    grad: &[f32],
    [h, w]: [usize; 2],
    affine: ChannelAffine,
    winners: &mut [f32],
    kept: (&mut [f32], &mut [u8]),
) -> ([f32; BLOCK], [f32; BLOCK], bool) {
    let wo = w / 2;
    let normalise = affine.apply();
    let (gw, xw) = winners.split_at_mut(winners.len() / 2);
    let (kept_g, kept_place) = kept;
    let (mut s, mut q) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
    for (oy, g) in grad.chunks_exact(wo).take(h / 2).enumerate() {
        let (top, bottom) = (&x[2 * oy * w..][..2 * wo], &x[(2 * oy + 1) * w..][..2 * wo]);
        let finite = |row: &[f32]| row.iter().fold(true, |all, &v| all & (v - affine.mean).is_finite());
        if !affine.bounded && !(finite(top) & finite(bottom)) {
            let (s, q) = plane_sums_by_position(x, grad, [h, w], affine);
            return (s, q, false);
        }
        let place = &mut kept_place[oy * wo..][..wo];
        row_pair_winners(top, bottom, g, &normalise, gw, xw, place);
        kept_g[oy * wo..][..wo].copy_from_slice(&gw[..wo]);
        for (g, x) in gw.chunks_exact(BLOCK).zip(xw.chunks_exact(BLOCK)) {
            for i in 0..BLOCK {
                s[i] += g[i];
                q[i] += g[i] * (x[i] - affine.mean);
            }
        }
    }
    (s, q, true)
}

/// [`plane_sums`] with every input's `dy`, zeros included, in window order (as the kernel's
/// blocks of windows summed them): the reference its shortcut is tested against, and the path
/// of a plane whose `x − mean` is not finite.
#[inline(never)]
fn plane_sums_by_position(
    x: &[f32],
    grad: &[f32],
    [h, w]: [usize; 2],
    affine: ChannelAffine,
) -> ([f32; BLOCK], [f32; BLOCK]) {
    let wo = w / 2;
    let normalise = affine.apply();
    let (mut dtop, mut dbottom) = (vec![0.0f32; 2 * wo], vec![0.0f32; 2 * wo]);
    let (mut s, mut q) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
    for (oy, g) in grad.chunks_exact(wo).take(h / 2).enumerate() {
        let (top, bottom) = (&x[2 * oy * w..][..2 * wo], &x[(2 * oy + 1) * w..][..2 * wo]);
        row_pair_gradients(top, bottom, g, &normalise, &mut dtop, &mut dbottom);
        for start in (0..wo).step_by(BLOCK) {
            let n = BLOCK.min(wo - start);
            for (xs, ds, column) in
                [(top, &dtop, 0), (top, &dtop, 1), (bottom, &dbottom, 0), (bottom, &dbottom, 1)]
            {
                for i in 0..BLOCK {
                    // The lanes past the row's last window: zero inputs and gradients.
                    let (x, d) = if i < n {
                        (xs[2 * (start + i) + column], ds[2 * (start + i) + column])
                    } else {
                        (0.0, 0.0)
                    };
                    s[i] += d;
                    q[i] += d * (x - affine.mean);
                }
            }
        }
    }
    (s, q)
}

/// The backward kernel: given the forward input `x` (`[b, c, h, w]`), the channels'
/// normalisations and the output gradient `grad` (`[b, c, h/2, w/2]`), `dγ` and `dβ`
/// (`[c]`), and `dx` written over `x` when `input` (left as it is otherwise).
///
/// Per channel, two passes over its planes: [`plane_sums`] sums `dβ = Σ dy` and
/// `Σ dy·(x − mean)` in [`BLOCK`] lanes, then in `f64` per plane, keeping each window's
/// gradient and winner's place; the second pass, row pair by row pair, rebuilds the gradient
/// `dy` reaching each normalised input from them ([`row_pair_scatter`]; measured 10–20%
/// faster than finding the winners again, [`row_pair_gradients`], which a plane that took
/// the four-position sums still does) and writes `dx` over the input.
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
    let (plane, (ho, wo)) = (h * w, (h / 2, w / 2));
    let out_plane = ho * wo;
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
            let affine = channels[ch];
            let normalise = affine.apply();
            let grads = |image: usize| &grad[(image * c + ch) * out_plane..][..out_plane];
            let mut rows = vec![0.0f32; 4 * wo];
            let (dtop, dbottom) = rows.split_at_mut(2 * wo);
            // Each window's gradient and winning input, padded with zeros to whole blocks of
            // lanes, as the lanes past a row's last window always were (they add zeros).
            let padded = wo.div_ceil(BLOCK) * BLOCK;
            let mut winners = vec![0.0f32; 2 * padded];
            // Every plane's windows' gradients and winners' places from the first pass, so
            // that the second need not find the winners again.
            let (mut kept_g, mut kept_place) = (vec![0.0f32; b * out_plane], vec![0u8; b * out_plane]);
            let mut kept = vec![false; b];
            crate::simd::vectorised!({
                let (mut sum_dy, mut sum_dy_xc) = (0.0f64, 0.0f64);
                let keep = kept_g
                    .chunks_exact_mut(out_plane.max(1))
                    .zip(kept_place.chunks_exact_mut(out_plane.max(1)));
                for (((image, x), was_kept), keep) in
                    planes.iter_mut().enumerate().zip(kept.iter_mut()).zip(keep)
                {
                    let (s, q, winners_kept) =
                        plane_sums(x, grads(image), [h, w], affine, &mut winners, keep);
                    *was_kept = winners_kept;
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
                        for (oy, g) in grads(image).chunks_exact(wo).enumerate() {
                            let (top, bottom) = x[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
                            if kept[image] {
                                let row = (image * ho + oy) * wo;
                                row_pair_scatter(
                                    &kept_g[row..][..wo],
                                    &kept_place[row..][..wo],
                                    dtop,
                                    dbottom,
                                );
                            } else {
                                row_pair_gradients(top, bottom, g, &normalise, dtop, dbottom);
                            }
                            // Two loops: a chained iterator did not vectorise.
                            for (v, &d) in top.iter_mut().zip(&*dtop) {
                                *v = dx(*v, d);
                            }
                            for (v, &d) in bottom.iter_mut().zip(&*dbottom) {
                                *v = dx(*v, d);
                            }
                            // An odd last column is in no window: no gradient from the pooling.
                            if w % 2 == 1 {
                                top[w - 1] = dx(top[w - 1], 0.0);
                                bottom[w - 1] = dx(bottom[w - 1], 0.0);
                            }
                        }
                        // Nor is an odd last row.
                        x[2 * ho * w..h * w].iter_mut().for_each(|v| *v = dx(*v, 0.0));
                    }
                }
                (d_gamma, d_beta)
            })
        })
        .unzip()
}

/// The channels' normalisations from their batch moments (`[mean…, variance…]`, each over
/// `count` values) and affine parameters.
fn channel_affines(
    moments: &[f32],
    count: usize,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> Vec<ChannelAffine> {
    let c = gamma.len();
    assert_eq!(moments.len(), 2 * c, "{} moments for {c} channels", moments.len());
    assert_eq!(beta.len(), c, "{} shifts for {c} channels", beta.len());
    (0..c)
        .map(|ch| {
            ChannelAffine::from_moments(moments[ch], moments[c + ch], count, gamma[ch], beta[ch], epsilon)
        })
        .collect()
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
        let [b, c, h, w] = dims4(&x);
        let channels = channel_affines(f32s(&moments), b * h * w, f32s(&gamma), f32s(&beta), epsilon);
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

    /// The winners-only sums are the four-position sums, bit for bit: ties, ±0, a NaN, ±∞
    /// (with the mean they make), odd sizes, negative scales.
    #[test]
    fn winner_sums_equal_the_four_position_sums() {
        for [h, w] in [[28, 28], [14, 14], [7, 9], [2, 2], [5, 4], [4, 34]] {
            for special in [None, Some(f32::NAN), Some(f32::INFINITY), Some(f32::NEG_INFINITY), Some(-0.0)] {
                let mut x: Vec<f32> = (0..h * w).map(|i| ((i * 7919 % 113) as f32 - 56.0) / 17.0).collect();
                x[1] = x[0];
                x[w] = 0.0;
                if let Some(v) = special {
                    x[w + 1] = v;
                }
                let grad: Vec<f32> =
                    (0..(h / 2) * (w / 2)).map(|i| ((i * 31 % 29) as f32 - 14.0) / 7.0).collect();
                let mean = match special {
                    Some(v) if !v.is_finite() => v,
                    // Finite, but `x − mean` overflows for the largest input.
                    Some(_) => -3.4e38,
                    None => 0.15,
                };
                if special == Some(-0.0) {
                    x[2] = 3.3e38;
                }
                for gamma in [1.3, -0.6] {
                    let affine = ChannelAffine::new(mean, 1.7, gamma, 0.2, 1e-5);
                    let mut winners = vec![0.0f32; 2 * (w / 2).div_ceil(BLOCK) * BLOCK];
                    let windows = (h / 2) * (w / 2);
                    let (mut kept_g, mut kept_place) = (vec![0.0f32; windows], vec![0u8; windows]);
                    let (s, q, _) =
                        plane_sums(&x, &grad, [h, w], affine, &mut winners, (&mut kept_g, &mut kept_place));
                    let got = (s, q);
                    let expected = plane_sums_by_position(&x, &grad, [h, w], affine);
                    let bits =
                        |(s, q): ([f32; BLOCK], [f32; BLOCK])| (s.map(f32::to_bits), q.map(f32::to_bits));
                    let (got, expected) = (bits(got), bits(expected));
                    assert_eq!(got, expected, "{h}x{w} {special:?} γ {gamma}");
                }
            }
        }
    }

    /// A channel marked bounded from its moments has a finite `x − mean` everywhere (so the
    /// backward pass may skip its check); ordinary activations are marked, and values whose
    /// variance overflows `f32`, infinities and NaN are not.
    #[test]
    fn moments_bound_only_finite_differences() {
        let (b, h, w) = (3, 4, 6);
        let ordinary: Vec<f32> = (0..b * h * w).map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0).collect();
        let cases: Vec<(Vec<f32>, bool)> = vec![
            (ordinary.clone(), true),
            (ordinary.iter().map(|v| v * 1e15).collect(), true),
            // A variance past `f32::MAX` (infinite in `f32`) proves nothing.
            (ordinary.iter().map(|v| v * 1e30).collect(), false),
            (ordinary.iter().map(|v| v * 6e37).collect(), false),
            ([&[3.3e38, -3.3e38][..], &ordinary[2..]].concat(), false),
            ([&[f32::INFINITY][..], &ordinary[1..]].concat(), false),
            ([&[f32::NEG_INFINITY, f32::INFINITY][..], &ordinary[2..]].concat(), false),
            ([&[f32::NAN][..], &ordinary[1..]].concat(), false),
        ];
        for (i, (x, expected)) in cases.iter().enumerate() {
            let (mean, var) = moments(x, [b, 1, h, w]);
            let affine = ChannelAffine::from_moments(mean[0], var[0], b * h * w, 1.0, 0.0, 1e-5);
            assert_eq!(affine.bounded, *expected, "case {i}: mean {} var {}", mean[0], var[0]);
            if affine.bounded {
                assert!(x.iter().all(|&v| (v - affine.mean).is_finite()), "case {i}");
            }
        }
    }

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
