//! Invariant tests of the nested layers, run on plain and autodiff devices.

use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::{Distribution, Tolerance};

use crate::*;

macro_rules! per_device {
    ($f:ident) => {
        mod $f {
            #[test]
            fn flex() {
                super::$f(&burn::tensor::Device::flex());
            }
            #[test]
            fn flex_autodiff() {
                super::$f(&burn::tensor::Device::flex().autodiff());
            }
        }
    };
}

fn linear_cfg() -> NestedLinearConfig {
    NestedLinearConfig::new(8, 12, vec![2, 4, 8], vec![3, 6, 12])
}

fn conv_cfg() -> NestedConv2dConfig {
    NestedConv2dConfig::new([6, 8], [3, 3], vec![2, 4, 6], vec![2, 4, 8]).with_padding([1, 1])
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Level k on x equals the full layer on x padded with zero channels, restricted to level k's
/// outputs.
fn linear_level_is_restriction_of_full(device: &Device) {
    device.seed(1);
    let layer = linear_cfg().init(device);
    for level in 0..3 {
        let (d_in, d_out) = layer.level_dims(level);
        let x = random([5, d_in], device);
        let padded = Tensor::cat(vec![x.clone(), Tensor::zeros([5, 8 - d_in], device)], 1);
        let full = layer.forward(padded, 2).slice(s![.., 0..d_out]);
        let small = layer.forward(x, level);
        assert_eq!(small.dims(), [5, d_out]);
        small.into_data().assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(1e-5));
    }
}
per_device!(linear_level_is_restriction_of_full);

fn conv_level_is_restriction_of_full(device: &Device) {
    device.seed(2);
    let conv = conv_cfg().init(device);
    for level in 0..3 {
        let (c_in, c_out) = conv.level_dims(level);
        let x = random([2, c_in, 5, 7], device);
        let padded = Tensor::cat(vec![x.clone(), Tensor::zeros([2, 6 - c_in, 5, 7], device)], 1);
        let full = conv.forward(padded, 2).slice(s![.., 0..c_out, .., ..]);
        let small = conv.forward(x, level);
        assert_eq!(small.dims(), [2, c_out, 5, 7]);
        small.into_data().assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(1e-5));
    }
}
per_device!(conv_level_is_restriction_of_full);

/// Checks that `grad` is exactly zero outside `block` (given per dimension as an end index)
/// and not identically zero inside it.
fn assert_grad_confined<const D: usize>(grad: Tensor<D>, block: [usize; D]) {
    let dims = grad.dims();
    let values = grad.into_data().try_to_vec::<f32>().unwrap();
    let mut inside_nonzero = false;
    for (flat, v) in values.iter().enumerate() {
        let mut rest = flat;
        let mut inside = true;
        for d in (0..D).rev() {
            let idx = rest % dims[d];
            rest /= dims[d];
            inside &= idx < block[d];
        }
        if inside {
            inside_nonzero |= *v != 0.0;
        } else {
            assert_eq!(*v, 0.0, "gradient leaked outside the level's block at flat index {flat}");
        }
    }
    assert!(inside_nonzero, "the level's block received no gradient at all");
}

#[test]
fn linear_gradients_stay_in_the_level_block() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let layer = linear_cfg().init(&device);
    for level in 0..2 {
        let (d_in, d_out) = layer.level_dims(level);
        let loss = layer.forward(random([4, d_in], &device), level).powf_scalar(2.0).sum();
        let grads = loss.backward();
        assert_grad_confined(layer.weight.grad(&grads).unwrap(), [d_in, d_out]);
        assert_grad_confined(layer.bias.as_ref().unwrap().grad(&grads).unwrap(), [d_out]);
    }
}

#[test]
fn conv_gradients_stay_in_the_level_block() {
    let device = Device::flex().autodiff();
    device.seed(4);
    let conv = conv_cfg().init(&device);
    for level in 0..2 {
        let (c_in, c_out) = conv.level_dims(level);
        let loss = conv.forward(random([2, c_in, 6, 6], &device), level).powf_scalar(2.0).sum();
        let grads = loss.backward();
        assert_grad_confined(conv.weight.grad(&grads).unwrap(), [c_out, c_in, 3, 3]);
        assert_grad_confined(conv.bias.as_ref().unwrap().grad(&grads).unwrap(), [c_out]);
    }
}

#[test]
fn batch_norm_gradients_only_reach_the_level_norm() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let bn = LevelBatchNormConfig::new(vec![2, 4]).init(&device);
    let loss = (bn.forward(random([3, 2, 4, 4], &device), 0) * random([3, 2, 4, 4], &device)).sum();
    let grads = loss.backward();
    assert!(bn.norms[0].gamma.grad(&grads).is_some());
    assert!(bn.norms[1].gamma.grad(&grads).is_none());
}

/// The widest level is exactly a plain Burn layer with the same weights.
fn widest_linear_equals_plain_linear(device: &Device) {
    device.seed(6);
    let plain = LinearConfig::new(8, 12).init(device);
    let mut nested = linear_cfg().init(device);
    nested.weight = plain.weight.clone();
    nested.bias = plain.bias.clone();
    let x = random([5, 8], device);
    let expected = plain.forward(x.clone()).into_data();
    nested.forward(x.clone(), 2).into_data().assert_eq(&expected, true);
    nested.extract_level(2).forward(x).into_data().assert_eq(&expected, true);
}
per_device!(widest_linear_equals_plain_linear);

fn widest_conv_equals_plain_conv(device: &Device) {
    device.seed(7);
    let plain =
        Conv2dConfig::new([6, 8], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
    let mut nested = conv_cfg().init(device);
    nested.weight = plain.weight.clone();
    nested.bias = plain.bias.clone();
    let x = random([2, 6, 5, 5], device);
    // Burn's layer, and the same layer through nestednet-kernels' convolution (its kernel on
    // flex: the sums run in another order, so the last bits differ from Burn's).
    let burns = plain.forward(x.clone()).into_data();
    let expected = nestednet_kernels::conv2d_layer(&plain, x.clone()).into_data();
    expected.assert_approx_eq::<f32>(&burns, Tolerance::absolute(1e-5));
    nested.forward(x.clone(), 2).into_data().assert_eq(&expected, true);
    let extracted = nested.extract_level(2);
    nestednet_kernels::conv2d_layer(&extracted, x.inner_if_needed()).into_data().assert_eq(&expected, true);
}
per_device!(widest_conv_equals_plain_conv);

/// Extracted levels are compact (physically the level's size) and compute what the level does.
fn extracted_levels_match_nested_levels(device: &Device) {
    device.seed(8);
    let conv = conv_cfg().init(device);
    let linear = linear_cfg().init(device);
    for level in 0..3 {
        let (c_in, c_out) = conv.level_dims(level);
        let plain = conv.extract_level(level);
        assert_eq!(plain.weight.dims(), [c_out, c_in, 3, 3]);
        assert_eq!(plain.num_params(), conv.level_num_params(level));
        let x = random([2, c_in, 4, 4], device);
        plain
            .forward(x.clone().inner_if_needed())
            .into_data()
            .assert_approx_eq::<f32>(&conv.forward(x, level).into_data(), Tolerance::absolute(1e-6));

        let (d_in, d_out) = linear.level_dims(level);
        let plain = linear.extract_level(level);
        assert_eq!(plain.weight.dims(), [d_in, d_out]);
        assert_eq!(plain.num_params(), linear.level_num_params(level));
    }
}
per_device!(extracted_levels_match_nested_levels);

/// Training one level's batch norm moves only that level's running statistics.
#[test]
fn batch_norm_levels_keep_private_statistics() {
    let device = Device::flex().autodiff();
    device.seed(9);
    let bn = LevelBatchNormConfig::new(vec![2, 4]).init(&device);
    let _ = bn.forward(random([8, 4, 3, 3], &device).add_scalar(5.0), 1);
    let mean0 = bn.norms[0].running_mean.value_sync().into_data();
    let mean1 = bn.norms[1].running_mean.value_sync().into_data().try_to_vec::<f32>().unwrap();
    mean0.assert_eq(&TensorData::from([0.0f32, 0.0]), true);
    assert!(mean1.iter().all(|m| (m - 0.5).abs() < 0.2), "running mean {mean1:?}");

    // In evaluation mode the running statistics are used, deterministically.
    let bn = bn.valid();
    let x = random([4, 4, 3, 3], &device.inner());
    let a = bn.forward(x.clone(), 1).into_data();
    bn.forward(x, 1).into_data().assert_eq(&a, true);
    assert_eq!(bn.extract_level(0).gamma.dims(), [2]);
}

#[test]
#[should_panic(expected = "NestedLinear level 1: expected 4 input features, got 8")]
fn wrong_input_width_is_a_clear_panic() {
    let device = Device::flex();
    let layer = linear_cfg().init(&device);
    let _ = layer.forward(Tensor::<2>::zeros([1, 8], &device), 1);
}

#[test]
#[should_panic(expected = "level 3 does not exist")]
fn unknown_level_is_a_clear_panic() {
    let device = Device::flex();
    let _ = conv_cfg().init(&device).level_dims(3);
}

#[test]
#[should_panic(expected = "NestedLinear output: level 1 (2) is narrower than level 0 (3)")]
fn shrinking_widths_are_rejected_at_init() {
    let _ = NestedLinearConfig::new(4, 4, vec![4, 4], vec![3, 2]).init(&Device::flex());
}

/// `Tensor::inner_if_needed` helper: plain layers extracted from an autodiff model live on the
/// plain device, so inputs must too.
trait InnerIfNeeded {
    fn inner_if_needed(self) -> Self;
}
impl<const D: usize> InnerIfNeeded for Tensor<D> {
    fn inner_if_needed(self) -> Self {
        let device = self.device().inner();
        self.to_device(&device)
    }
}

/// The training path of `LevelBatchNorm` (one-pass statistics) computes what Burn's
/// `batch_norm_train` computes, forward and backward, and updates the running statistics with
/// the unbiased variance.
#[test]
fn batch_norm_training_path_matches_burn() {
    use burn::tensor::module::batch_norm_train;
    let device = Device::flex().autodiff();
    device.seed(10);
    let bn = LevelBatchNormConfig::new(vec![3, 6]).init(&device);
    let x = random([5, 6, 4, 3], &device).mul_scalar(3.0).add_scalar(2.0).require_grad();
    let weights = random([5, 6, 4, 3], &device);
    let ours = bn.forward(x.clone(), 1);
    let grads = (ours.clone() * weights.clone()).sum().backward();
    let our_grad = x.grad(&grads).unwrap();

    let x2 = Tensor::<4>::from_data(x.clone().into_data(), &device).require_grad();
    let theirs = batch_norm_train(x2.clone(), bn.norms[1].gamma.val(), bn.norms[1].beta.val(), 1e-5).output;
    let grads2 = (theirs.clone() * weights).sum().backward();
    ours.into_data().assert_approx_eq::<f32>(&theirs.into_data(), Tolerance::absolute(1e-4));
    our_grad
        .into_data()
        .assert_approx_eq::<f32>(&x2.grad(&grads2).unwrap().into_data(), Tolerance::absolute(1e-4));

    // Running statistics: momentum 0.1 from (0, 1) towards the batch mean and unbiased variance.
    let values = x.clone().inner().swap_dims(0, 1).reshape([6, 60]);
    let mean = values.clone().mean_dim(1).reshape([6]);
    let var = values.var(1).reshape([6]);
    let expected_mean = mean.mul_scalar(0.1);
    let expected_var = var.mul_scalar(0.1).add_scalar(0.9);
    let got_mean = bn.norms[1].running_mean.value_sync().inner();
    let got_var = bn.norms[1].running_var.value_sync().inner();
    got_mean.into_data().assert_approx_eq::<f32>(&expected_mean.into_data(), Tolerance::absolute(1e-4));
    got_var.into_data().assert_approx_eq::<f32>(&expected_var.into_data(), Tolerance::absolute(1e-4));
}

/// The first-layer training path (im2col + matmul, for inputs that need no gradient) gives the
/// convolution's output and weight gradient.
#[test]
fn untracked_input_convolution_matches_conv2d() {
    let device = Device::flex().autodiff();
    device.seed(11);
    let conv =
        NestedConv2dConfig::new([3, 8], [3, 3], vec![3, 3], vec![4, 8]).with_padding([1, 1]).init(&device);
    let x = random([2, 3, 6, 5], &device); // not tracked: takes the im2col path
    let weights = random([2, 4, 6, 5], &device);
    let ours = conv.forward(x.clone(), 0);
    let grads = (ours.clone() * weights.clone()).sum().backward();
    let our_grad = conv.weight.grad(&grads).unwrap();

    let plain = conv.extract_level(0);
    let w = Tensor::<4>::from_data(plain.weight.val().into_data(), &device).require_grad();
    let b = Tensor::<1>::from_data(plain.bias.as_ref().unwrap().val().into_data(), &device);
    let reference = burn::tensor::module::conv2d(
        x,
        w.clone(),
        Some(b),
        burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    );
    let grads2 = (reference.clone() * weights).sum().backward();
    ours.into_data().assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-4));
    our_grad
        .slice(s![0..4, 0..3, .., ..])
        .into_data()
        .assert_approx_eq::<f32>(&w.grad(&grads2).unwrap().into_data(), Tolerance::absolute(1e-4));
}

/// A masked layer's channel map says which level's block each weight belongs to, and a level
/// that is both narrower and sparser computes with exactly its block times its mask.
fn masked_levels_are_narrower_and_sparser(device: &Device) {
    device.seed(5);
    let mut conv = conv_cfg().with_masked(true).init(device);
    let mut linear = linear_cfg().with_masked(true).init(device);
    // Channel map: linear weight (i, o) belongs to the lowest level whose block holds both.
    let map = linear.mask.as_ref().unwrap().level_map_values();
    assert_eq!(map[0], 0); // (0, 0)
    assert_eq!(map[3], 1); // (0, 3): output 3 is first used by level 1
    assert_eq!(map[2 * 12], 1); // (2, 0): input 2 is first used by level 1
    assert_eq!(map[7 * 12 + 11], 2);
    for level in 0..3 {
        assert_eq!(linear.level_num_params(level), [2 * 3, 4 * 6, 8 * 12][level] + [3, 6, 12][level]);
    }
    // Prune: drop every weight with a negative value from level 1 (and so from level 0).
    let weights = linear.weight_values();
    let dropped = linear.mask.as_mut().unwrap().drop_from_level(1, |i| weights[i] >= 0.0).unwrap();
    assert!(dropped > 0);
    let conv_weights = conv.weight_values();
    conv.mask.as_mut().unwrap().drop_from_level(2, |i| conv_weights[i].abs() > 0.5).unwrap();
    conv.zero_pruned();
    for level in 0..3 {
        let (d_in, d_out) = linear.level_dims(level);
        let keep = linear.mask.as_ref().unwrap().level_mask::<2>(level).unwrap();
        let manual = linear.weight.val().mask_fill(keep.bool_not(), 0.0).slice(s![0..d_in, 0..d_out]);
        let x = random([4, d_in], device);
        let expected =
            x.clone().matmul(manual) + linear.bias.as_ref().unwrap().val().narrow(0, 0, d_out).unsqueeze();
        linear
            .forward(x, level)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        // The extracted plain layer holds the masked block.
        let plain = linear.extract_level(level);
        let zeros = plain.weight.val().equal_elem(0.0).int().sum().into_scalar::<i64>() as usize;
        assert_eq!(d_in * d_out - zeros, linear.level_num_params(level) - d_out);
        // The level's mask against its definition, computed here on the host: its block of the
        // [8, 12] weight, less the negative weights the level-1 stage dropped from levels 0
        // and 1. (These nest because blocks grow and the drop spares level 2; a map that got
        // either wrong differs.)
        let got = linear.mask.as_ref().unwrap().level_mask::<2>(level).unwrap();
        let got = got.into_data().convert::<bool>().try_to_vec::<bool>().unwrap();
        let want: Vec<bool> = (0..8 * 12)
            .map(|idx| idx / 12 < d_in && idx % 12 < d_out && (level == 2 || weights[idx] >= 0.0))
            .collect();
        assert_eq!(got, want, "level {level}");
    }
    // Weights no level uses are exactly zero after `zero_pruned`.
    let full_mask = conv.mask.as_ref().unwrap().level_mask::<4>(2).unwrap();
    let leaked = conv.weight.val().mask_fill(full_mask, 0.0).abs().sum().into_scalar::<f32>();
    assert_eq!(leaked, 0.0);
    let (c_in, c_out) = conv.level_dims(2);
    let x = random([2, c_in, 5, 5], device);
    let plain = conv.extract_level(2);
    plain
        .forward(x.clone())
        .into_data()
        .assert_approx_eq::<f32>(&conv.forward(x, 2).into_data(), Tolerance::absolute(1e-5));
    assert_eq!(c_out, 8);
}
per_device!(masked_levels_are_narrower_and_sparser);
