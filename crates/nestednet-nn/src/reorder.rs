//! Channel importance and channel permutations of plain Burn layers: what turns a dense
//! network into a nested one whose leading channels are its most important ("nestify").
//!
//! Permuting a layer's output channels and the next layer's input channels by the same order
//! leaves the network's function unchanged; ordering them by importance puts the channels a
//! small level keeps (the leading ones) where the dense network put most of its weight.

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;

use crate::host_values;

/// How the channels of a dense layer are ranked before nesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelImportance {
    /// The L1 norm of each output channel's weights (a convolution's filter, a linear unit's
    /// incoming weights), as in Li et al., "Pruning Filters for Efficient ConvNets".
    FilterL1,
    /// The magnitude of the batch-norm scale γ following the layer (Liu et al., "Network
    /// Slimming"); layers without a batch norm fall back to the filter L1 norm.
    BatchNormGamma,
}

/// Per output channel of `conv`: the L1 norm of its filter.
pub fn conv_filter_l1(conv: &Conv2d) -> Vec<f32> {
    let [c_out, c_in, kh, kw] = conv.weight.dims();
    let values = host_values(conv.weight.val());
    let per = c_in * kh * kw;
    (0..c_out).map(|o| values[o * per..(o + 1) * per].iter().map(|v| v.abs()).sum()).collect()
}

/// Per output unit of `linear` (Burn's `[d_in, d_out]` weight): the L1 norm of its incoming
/// weights.
pub fn linear_unit_l1(linear: &Linear) -> Vec<f32> {
    let [d_in, d_out] = linear.weight.dims();
    let values = host_values(linear.weight.val());
    (0..d_out).map(|o| (0..d_in).map(|i| values[i * d_out + o].abs()).sum()).collect()
}

/// Per channel of `norm`: |γ|.
pub fn batch_norm_gamma(norm: &BatchNorm) -> Vec<f32> {
    host_values(norm.gamma.val()).into_iter().map(f32::abs).collect()
}

/// The channel order by decreasing `scores` (ties keep their original order, so equal scores
/// leave a layer as it is). A NaN score ranks last.
pub fn importance_order(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| if scores[i].is_nan() { f32::NEG_INFINITY } else { scores[i] };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    order
}

/// `values` (row-major, of shape `dims`) with the index of axis `axis` permuted in groups of
/// `group`: new index `g·group + r` takes old index `order[g]·group + r`.
fn permute_axis(values: &[f32], dims: &[usize], axis: usize, order: &[usize], group: usize) -> Vec<f32> {
    assert_eq!(
        order.len() * group,
        dims[axis],
        "a permutation of {} groups of {group} for an axis of {}",
        order.len(),
        dims[axis]
    );
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(values.len());
    for o in 0..outer {
        for &g in order {
            for r in 0..group {
                let start = (o * dims[axis] + g * group + r) * inner;
                out.extend_from_slice(&values[start..start + inner]);
            }
        }
    }
    out
}

/// `param` with its values permuted along `axis` (see [`permute_axis`]), id kept.
fn permuted<const D: usize>(
    param: &Param<Tensor<D>>,
    axis: usize,
    order: &[usize],
    group: usize,
) -> Param<Tensor<D>> {
    let dims = param.dims();
    let values = permute_axis(&host_values(param.val()), &dims, axis, order, group);
    param.clone().map(|t| Tensor::from_data(TensorData::new(values, dims), &t.device()))
}

/// `conv` with its output channels in `order` (new channel `i` = old channel `order[i]`).
pub fn permute_conv_outputs(conv: &Conv2d, order: &[usize]) -> Conv2d {
    let mut out = conv.clone();
    out.weight = permuted(&conv.weight, 0, order, 1);
    out.bias = conv.bias.as_ref().map(|b| permuted(b, 0, order, 1));
    out
}

/// `conv` reading its input channels in `order` (the previous layer's outputs, permuted).
pub fn permute_conv_inputs(conv: &Conv2d, order: &[usize]) -> Conv2d {
    let mut out = conv.clone();
    out.weight = permuted(&conv.weight, 1, order, 1);
    out
}

/// `linear` with its output units in `order`.
pub fn permute_linear_outputs(linear: &Linear, order: &[usize]) -> Linear {
    Linear {
        weight: permuted(&linear.weight, 1, order, 1),
        bias: linear.bias.as_ref().map(|b| permuted(b, 0, order, 1)),
    }
}

/// `linear` reading its inputs permuted in groups of `group` consecutive features: a linear
/// layer after a flattened `[channels, h, w]` map reads each channel as `h·w` features.
pub fn permute_linear_inputs(linear: &Linear, order: &[usize], group: usize) -> Linear {
    Linear { weight: permuted(&linear.weight, 0, order, group), bias: linear.bias.clone() }
}

/// `norm` with its channels in `order` (affine parameters and running statistics).
pub fn permute_batch_norm(norm: &BatchNorm, order: &[usize]) -> BatchNorm {
    let mut out = norm.clone();
    out.gamma = permuted(&norm.gamma, 0, order, 1);
    out.beta = permuted(&norm.beta, 0, order, 1);
    let state = |s: &RunningState<Tensor<1>>| {
        let t = s.value_sync();
        let values = permute_axis(&host_values(t.clone()), &t.dims(), 0, order, 1);
        RunningState::new(Tensor::from_data(TensorData::new(values, t.dims()), &t.device()))
    };
    out.running_mean = state(&norm.running_mean);
    out.running_var = state(&norm.running_var);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, LinearConfig, PaddingConfig2d};
    use burn::tensor::Distribution;

    #[test]
    fn importance_orders_channels_and_permutations_keep_the_function() {
        let device = Device::flex();
        assert_eq!(importance_order(&[1.0, 3.0, f32::NAN, 3.0, 2.0]), vec![1, 3, 4, 0, 2]);
        device.seed(7);
        let conv1 = Conv2dConfig::new([2, 4], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
        let mut norm = BatchNormConfig::new(4).init(&device);
        norm.running_mean = RunningState::new(Tensor::random([4], Distribution::Normal(0.0, 1.0), &device));
        let conv2 = Conv2dConfig::new([4, 3], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
        let fc = LinearConfig::new(3 * 5 * 5, 6).init(&device);
        let x = Tensor::<4>::random([2, 2, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let run = |c1: &Conv2d, n: &BatchNorm, c2: &Conv2d, f: &Linear| {
            f.forward(c2.forward(n.forward(c1.forward(x.clone()))).flatten::<2>(1, 3))
        };
        let before = run(&conv1, &norm, &conv2, &fc);
        let o1 = importance_order(&conv_filter_l1(&conv1));
        let o2 = importance_order(&conv_filter_l1(&conv2));
        let conv1p = permute_conv_outputs(&conv1, &o1);
        let normp = permute_batch_norm(&norm, &o1);
        let conv2p = permute_conv_inputs(&permute_conv_outputs(&conv2, &o2), &o1);
        let fcp = permute_linear_inputs(&fc, &o2, 25);
        let after = run(&conv1p, &normp, &conv2p, &fcp);
        after
            .into_data()
            .assert_approx_eq::<f32>(&before.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        // The leading channels are now the most important ones.
        let scores = conv_filter_l1(&conv1p);
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        // Permuting a linear layer's outputs permutes its logits.
        let h = Tensor::<2>::random([2, 75], Distribution::Normal(0.0, 1.0), &device);
        let order = importance_order(&linear_unit_l1(&fc));
        let y = host_values(fc.forward(h.clone()));
        let yp = host_values(permute_linear_outputs(&fc, &order).forward(h));
        for (i, &o) in order.iter().enumerate() {
            assert!((yp[i] - y[o]).abs() < 1e-6 && (yp[6 + i] - y[6 + o]).abs() < 1e-6);
        }
        assert!(batch_norm_gamma(&norm).iter().all(|&g| g == 1.0));
    }
}
