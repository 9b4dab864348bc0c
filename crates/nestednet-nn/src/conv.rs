use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::module::{conv2d, unfold4d};
use burn::tensor::ops::{ConvOptions, UnfoldOptions};

use nestednet_prune::NestedMask;

use crate::widths::{assert_level, channel_levels, check_level_widths};
use crate::{Maskable, compact_copy};

/// Configuration of a [`NestedConv2d`].
#[derive(Config, Debug)]
pub struct NestedConv2dConfig {
    /// `[input, output]` channels of the full layer.
    pub channels: [usize; 2],
    /// Kernel size `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Input channels each level uses, core first. The image input is never split: give
    /// `[image_channels; n]` for a first layer.
    pub input_widths: Vec<usize>,
    /// Output channels each level uses, core first.
    pub output_widths: Vec<usize>,
    /// Stride `[height, width]`.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Symmetric zero padding `[height, width]`.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the shared weight and bias, with the full layer's fans (as PyTorch's
    /// `nn.Conv2d`).
    #[config(default = "Initializer::KaimingUniform{gain: 0.5773502691896258, fan_out_only: false}")]
    pub initializer: Initializer,
    /// Whether the weight carries a nested unstructured mask (weight connection learning).
    /// It starts dense: every level uses every weight of its block.
    #[config(default = false)]
    pub masked: bool,
}

/// A 2-D convolution whose levels use the leading input and output channels of one shared
/// weight: level `k` convolves with `weight[..out_k, ..in_k, :, :]`.
#[derive(Module, Debug)]
pub struct NestedConv2d {
    /// Shared weight, `[c_out, c_in, kh, kw]` (PyTorch's layout).
    pub weight: Param<Tensor<4>>,
    /// Shared bias, `[c_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Input channels of each level.
    pub input_widths: Vec<usize>,
    /// Output channels of each level.
    pub output_widths: Vec<usize>,
    /// Stride.
    pub stride: [usize; 2],
    /// Symmetric padding.
    pub padding: [usize; 2],
    /// Nested unstructured mask of the weight, if the layer is pruned: level `k` then uses
    /// the weights of its block whose map value is `<= k`.
    pub mask: Option<NestedMask>,
}

impl NestedConv2dConfig {
    /// Initializes the layer on `device`. Panics if the widths are inconsistent.
    pub fn init(&self, device: &Device) -> NestedConv2d {
        let [c_in, c_out] = self.channels;
        check_level_widths("NestedConv2d input", &self.input_widths, c_in);
        check_level_widths("NestedConv2d output", &self.output_widths, c_out);
        assert_eq!(
            self.input_widths.len(),
            self.output_widths.len(),
            "NestedConv2d: input and output widths must describe the same number of levels"
        );
        let [kh, kw] = self.kernel_size;
        let (fan_in, fan_out) = (Some(c_in * kh * kw), Some(c_out * kh * kw));
        let weight = self.initializer.init_with([c_out, c_in, kh, kw], fan_in, fan_out, device);
        let bias = self.bias.then(|| self.initializer.init_with([c_out], fan_in, fan_out, device));
        let mut layer = NestedConv2d {
            weight,
            bias,
            input_widths: self.input_widths.clone(),
            output_widths: self.output_widths.clone(),
            stride: self.stride,
            padding: self.padding,
            mask: None,
        };
        if self.masked {
            layer.mask = Some(layer.dense_mask(device));
        }
        layer
    }
}

impl NestedConv2d {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.output_widths.len()
    }

    /// `(input, output)` channels of `level`.
    pub fn level_dims(&self, level: usize) -> (usize, usize) {
        assert_level("NestedConv2d", level, self.num_levels());
        (self.input_widths[level], self.output_widths[level])
    }

    /// Kernel size `[kh, kw]`.
    pub fn kernel_size(&self) -> [usize; 2] {
        // The lazy shape: reading a cost must not draw a weight that is not initialised yet.
        let [_, _, kh, kw] = self.weight.lazy_shape().dims();
        [kh, kw]
    }

    /// Output spatial size for an input of `[height, width]`.
    pub fn output_size(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        let [kh, kw] = self.kernel_size();
        let out = |x: usize, k: usize, p: usize, s: usize| (x + 2 * p - k) / s + 1;
        [out(h, kh, self.padding[0], self.stride[0]), out(w, kw, self.padding[1], self.stride[1])]
    }

    /// The leading `c_out × c_in` block of the shared weight and the leading `c_out` biases,
    /// unmasked (slices of the parameters: gradients reach them).
    fn block_tensors(&self, c_in: usize, c_out: usize) -> (Tensor<4>, Option<Tensor<1>>) {
        let weight = self.weight.val();
        let [full_out, full_in, _, _] = weight.dims();
        assert!(
            c_in <= full_in && c_out <= full_out,
            "NestedConv2d: block {c_out}x{c_in} outside the {full_out}x{full_in} weight"
        );
        let weight = if (c_in, c_out) == (full_in, full_out) {
            weight
        } else {
            weight.slice(s![0..c_out, 0..c_in, .., ..])
        };
        let bias = self.bias.as_ref().map(|b| {
            let b = b.val();
            if c_out == full_out { b } else { b.narrow(0, 0, c_out) }
        });
        (weight, bias)
    }

    fn level_tensors(&self, level: usize) -> (Tensor<4>, Option<Tensor<1>>) {
        let (c_in, c_out) = self.level_dims(level);
        let (weight, bias) = self.block_tensors(c_in, c_out);
        let weight = match &self.mask {
            Some(mask) => {
                let [_, _, kh, kw] = weight.dims();
                mask.apply_block(weight, level, [0..c_out, 0..c_in, 0..kh, 0..kw])
            }
            None => weight,
        };
        (weight, bias)
    }

    /// Applies level `level` to `x` of shape `[batch, in_level, h, w]`.
    pub fn forward(&self, x: Tensor<4>, level: usize) -> Tensor<4> {
        let (c_in, _) = self.level_dims(level);
        let got = x.dims()[1];
        assert_eq!(got, c_in, "NestedConv2d level {level}: expected {c_in} input channels, got {got}");
        if crate::probe::recording() {
            let [_, _, h, w] = x.dims();
            crate::probe::record(
                self.weight.id,
                self.level_num_params(level),
                self.level_macs(level, [h, w]),
            );
        }
        let (weight, bias) = self.level_tensors(level);
        self.convolve(x, weight, bias)
    }

    /// The convolution of `x` with a block's weight and bias: `nestednet-kernels`' convolution
    /// where it has a kernel (`flex`: one matrix product per image, forward and backward), else
    /// Burn's, or for an input that needs no gradient, im2col and one matrix product.
    fn convolve(&self, x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
        let options = ConvOptions::new(self.stride, self.padding, [1, 1], 1);
        if nestednet_kernels::conv2d_has_kernel(&x, &weight, &options) {
            return nestednet_kernels::conv2d(x, weight, bias, options);
        }
        if x.is_autodiff() && !x.is_tracked() {
            return self.forward_untracked_input(x, weight, bias);
        }
        conv2d(x, weight, bias, options)
    }

    /// Training path, on backends without a `nestednet-kernels` convolution, for an input that
    /// needs no gradient (the image batch of a first layer): im2col (`unfold4d`, outside the
    /// graph) and one batched matmul. Only the weight gradient
    /// is then needed, and it becomes a plain matrix product; Burn's generic convolution
    /// backward instead runs a convolution with a kernel as large as the image, ~3x slower on
    /// `flex` for `mnist-cnn`'s first layer. Same result up to float rounding.
    fn forward_untracked_input(&self, x: Tensor<4>, weight: Tensor<4>, bias: Option<Tensor<1>>) -> Tensor<4> {
        let [batch, _, h, w] = x.dims();
        let [c_out, c_in, kh, kw] = weight.dims();
        let [ho, wo] = self.output_size([h, w]);
        let columns = unfold4d(x, [kh, kw], UnfoldOptions::new(self.stride, self.padding, [1, 1]));
        let out = weight.reshape([1, c_out, c_in * kh * kw]).matmul(columns);
        let out = match bias {
            Some(b) => out + b.reshape([1, c_out, 1]),
            None => out,
        };
        out.reshape([batch, c_out, ho, wo])
    }

    /// Parameters level `level` uses: the weights of its block (those its mask keeps, when
    /// masked) plus its bias block.
    pub fn level_num_params(&self, level: usize) -> usize {
        let (c_in, c_out) = self.level_dims(level);
        let [kh, kw] = self.kernel_size();
        let weights = match &self.mask {
            Some(mask) => mask.count_block(level, [0..c_out, 0..c_in, 0..kh, 0..kw]),
            None => c_out * c_in * kh * kw,
        };
        weights + if self.bias.is_some() { c_out } else { 0 }
    }

    /// A mask in which every level uses its whole block: each weight's map value is the
    /// lowest level whose block contains it.
    pub fn dense_mask(&self, device: &Device) -> NestedMask {
        let (outs, ins) = (channel_levels(&self.output_widths), channel_levels(&self.input_widths));
        let [c_out, c_in, kh, kw] = self.weight.dims();
        let map: Vec<i64> = outs
            .iter()
            .flat_map(|&o| ins.iter().flat_map(move |&i| std::iter::repeat_n(o.max(i) as i64, kh * kw)))
            .collect();
        let mut mask =
            NestedMask::dense(&[c_out, c_in, kh, kw], self.num_levels(), device).expect("at least one level");
        mask.set_level_map_values(map).expect("channel levels are valid levels");
        mask
    }

    /// Turns the nested mask on (dense: see [`dense_mask`](Self::dense_mask)) if it is off.
    pub fn with_mask(mut self) -> Self {
        self.enable_mask();
        self
    }

    /// Multiply-accumulates of level `level` for one input of spatial size `input_size`.
    pub fn level_macs(&self, level: usize, input_size: [usize; 2]) -> usize {
        let (c_in, c_out) = self.level_dims(level);
        let [kh, kw] = self.kernel_size();
        let [ho, wo] = self.output_size(input_size);
        ho * wo * c_out * c_in * kh * kw
    }

    /// The plain Burn [`Conv2d`] of level `level`, holding compact copies of the level's block.
    pub fn extract_level(&self, level: usize) -> Conv2d {
        let (c_in, c_out) = self.level_dims(level);
        let (weight, bias) = self.level_tensors(level);
        let device = weight.device();
        let mut conv = Conv2dConfig::new([c_in, c_out], self.kernel_size())
            .with_stride(self.stride)
            // Explicit(top, left, bottom, right).
            .with_padding(PaddingConfig2d::Explicit(
                self.padding[0],
                self.padding[1],
                self.padding[0],
                self.padding[1],
            ))
            .with_bias(bias.is_some())
            .init(&device.inner());
        conv.weight = Param::from_tensor(compact_copy(weight));
        conv.bias = bias.map(|b| Param::from_tensor(compact_copy(b)));
        conv
    }

    /// Level `level` as a one-level `NestedConv2d` holding compact copies of its block (its
    /// mask applied): the layer of a standalone network built from nested layers.
    pub fn single_level(&self, level: usize) -> NestedConv2d {
        let (c_in, c_out) = self.level_dims(level);
        let plain = self.extract_level(level);
        NestedConv2d {
            weight: plain.weight,
            bias: plain.bias,
            input_widths: vec![c_in],
            output_widths: vec![c_out],
            stride: self.stride,
            padding: self.padding,
            mask: None,
        }
    }
}

impl NestedConv2d {
    /// The block of the leading `c_in` input and `c_out` output channels as a one-level layer
    /// with compact copies of its weights, whatever levels those widths belong to: a layer of a
    /// Mix'n'Match sub-network. The layer must not be masked (a mask belongs to its levels).
    pub fn single_block(&self, c_in: usize, c_out: usize) -> NestedConv2d {
        assert!(self.mask.is_none(), "NestedConv2d: a masked layer has no blocks outside its levels");
        let (weight, bias) = self.block_tensors(c_in, c_out);
        NestedConv2d {
            weight: Param::from_tensor(compact_copy(weight)),
            bias: bias.map(|b| Param::from_tensor(compact_copy(b))),
            input_widths: vec![c_in],
            output_widths: vec![c_out],
            stride: self.stride,
            padding: self.padding,
            mask: None,
        }
    }

    /// Applies the block of the leading `c_out` output channels over the input's channels to
    /// `x` (`[batch, c_in, h, w]`, any `c_in` up to the full layer's), sharing the layer's
    /// parameters: the training forward pass of a Mix'n'Match sub-network. The layer must not
    /// be masked.
    pub fn forward_block(&self, x: Tensor<4>, c_out: usize) -> Tensor<4> {
        assert!(self.mask.is_none(), "NestedConv2d: a masked layer has no blocks outside its levels");
        let (weight, bias) = self.block_tensors(x.dims()[1], c_out);
        self.convolve(x, weight, bias)
    }

    /// Sets the full shared weight and bias from `dense` (same shape; parameter ids kept): the
    /// full level then computes what `dense` does, every level its leading block.
    pub fn load_full(&mut self, dense: &Conv2d) {
        assert_eq!(self.weight.dims(), dense.weight.dims(), "NestedConv2d: the dense weight's shape differs");
        assert_eq!(self.bias.is_some(), dense.bias.is_some(), "NestedConv2d: bias in one layer only");
        let weight = compact_copy(dense.weight.val());
        self.weight = self.weight.clone().map(|_| weight);
        if let (Some(bias), Some(dense)) = (self.bias.take(), dense.bias.as_ref()) {
            let values = compact_copy(dense.val());
            self.bias = Some(bias.map(|_| values));
        }
    }
}

// The shared parts (mask access, weight values, pruning) come from `maskable_layer!`.
crate::maskable_layer!(NestedConv2d, |layer: &NestedConv2d, level| {
    let (c_in, c_out) = layer.level_dims(level);
    let [kh, kw] = layer.kernel_size();
    c_out * c_in * kh * kw
});
