use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear};
use burn::prelude::*;
use burn::tensor::module::linear;

use nestednet_prune::NestedMask;

use crate::widths::{assert_level, channel_levels, check_level_widths};
use crate::{Maskable, compact_copy};

/// Configuration of a [`NestedLinear`].
#[derive(Config, Debug)]
pub struct NestedLinearConfig {
    /// Input features of the full layer.
    pub d_input: usize,
    /// Output features of the full layer.
    pub d_output: usize,
    /// Input features each level uses, core first. Use `[d_input; n]` when the input is not
    /// split (for instance the image, or a layer after an unsplit one).
    pub input_widths: Vec<usize>,
    /// Output features each level uses, core first. Use `[d_output; n]` to leave the output
    /// unsplit (for instance a classifier every level predicts all classes with).
    pub output_widths: Vec<usize>,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the shared weight and bias. Fans are those of the full layer, as in
    /// PyTorch's `nn.Linear` (uniform in ±1/√d_input).
    #[config(default = "Initializer::KaimingUniform{gain: 0.5773502691896258, fan_out_only: false}")]
    pub initializer: Initializer,
    /// Whether the weight carries a nested unstructured mask (weight connection learning).
    /// It starts dense: every level uses every weight of its block.
    #[config(default = false)]
    pub masked: bool,
}

/// A linear layer whose levels use the leading input and output features of one shared weight.
///
/// Level `k` computes `x · weight[..in_k, ..out_k] + bias[..out_k]`.
#[derive(Module, Debug)]
pub struct NestedLinear {
    /// Shared weight, `[d_input, d_output]` (Burn's layout: the transpose of PyTorch's).
    pub weight: Param<Tensor<2>>,
    /// Shared bias, `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Input features of each level.
    pub input_widths: Vec<usize>,
    /// Output features of each level.
    pub output_widths: Vec<usize>,
    /// Nested unstructured mask of the weight, if the layer is pruned: level `k` then uses
    /// the weights of its block whose map value is `<= k`.
    pub mask: Option<NestedMask>,
}

impl NestedLinearConfig {
    /// Initializes the layer on `device`. Panics if the widths are inconsistent (see
    /// [`check_level_widths`]).
    pub fn init(&self, device: &Device) -> NestedLinear {
        check_level_widths("NestedLinear input", &self.input_widths, self.d_input);
        check_level_widths("NestedLinear output", &self.output_widths, self.d_output);
        assert_eq!(
            self.input_widths.len(),
            self.output_widths.len(),
            "NestedLinear: input and output widths must describe the same number of levels"
        );
        let (fan_in, fan_out) = (Some(self.d_input), Some(self.d_output));
        let weight = self.initializer.init_with([self.d_input, self.d_output], fan_in, fan_out, device);
        let bias = self.bias.then(|| self.initializer.init_with([self.d_output], fan_in, fan_out, device));
        let mut layer = NestedLinear {
            weight,
            bias,
            input_widths: self.input_widths.clone(),
            output_widths: self.output_widths.clone(),
            mask: None,
        };
        if self.masked {
            layer.mask = Some(layer.dense_mask(device));
        }
        layer
    }
}

impl NestedLinear {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.output_widths.len()
    }

    /// `(input, output)` features of `level`.
    pub fn level_dims(&self, level: usize) -> (usize, usize) {
        assert_level("NestedLinear", level, self.num_levels());
        (self.input_widths[level], self.output_widths[level])
    }

    /// The level's block of the shared weight and bias. Slicing keeps the autodiff link, so
    /// gradients flow back into the shared parameter (and are exactly zero outside the block).
    /// The leading `d_in × d_out` block of the shared weight and the leading `d_out` biases,
    /// unmasked (slices of the parameters: gradients reach them).
    fn block_tensors(&self, d_in: usize, d_out: usize) -> (Tensor<2>, Option<Tensor<1>>) {
        let weight = self.weight.val();
        let [full_in, full_out] = weight.dims();
        assert!(
            d_in <= full_in && d_out <= full_out,
            "NestedLinear: block {d_in}x{d_out} outside the {full_in}x{full_out} weight"
        );
        let weight =
            if (d_in, d_out) == (full_in, full_out) { weight } else { weight.slice(s![0..d_in, 0..d_out]) };
        let bias = self.bias.as_ref().map(|b| {
            let b = b.val();
            if d_out == full_out { b } else { b.narrow(0, 0, d_out) }
        });
        (weight, bias)
    }

    fn level_tensors(&self, level: usize) -> (Tensor<2>, Option<Tensor<1>>) {
        let (d_in, d_out) = self.level_dims(level);
        let (weight, bias) = self.block_tensors(d_in, d_out);
        let weight = match &self.mask {
            Some(mask) => mask.apply_block(weight, level, [0..d_in, 0..d_out]),
            None => weight,
        };
        (weight, bias)
    }

    /// Applies level `level` to `x` of shape `[..., in_level]`, giving `[..., out_level]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, level: usize) -> Tensor<D> {
        let (d_in, _) = self.level_dims(level);
        let got = x.dims()[D - 1];
        assert_eq!(got, d_in, "NestedLinear level {level}: expected {d_in} input features, got {got}");
        if crate::probe::recording() {
            // Rows per sample: everything but the batch and feature axes.
            let dims = x.dims();
            let rows: usize = dims.get(1..D.saturating_sub(1)).map_or(1, |d| d.iter().product());
            crate::probe::record(self.weight.id, self.level_num_params(level), rows * self.level_macs(level));
        }
        let (weight, bias) = self.level_tensors(level);
        linear(x, weight, bias)
    }

    /// Parameters level `level` uses: the weights of its block (those its mask keeps, when
    /// masked) plus its bias block.
    pub fn level_num_params(&self, level: usize) -> usize {
        let (d_in, d_out) = self.level_dims(level);
        let weights = match &self.mask {
            Some(mask) => mask.count_block(level, [0..d_in, 0..d_out]),
            None => d_in * d_out,
        };
        weights + if self.bias.is_some() { d_out } else { 0 }
    }

    /// A mask in which every level uses its whole block: each weight's map value is the
    /// lowest level whose block contains it.
    pub fn dense_mask(&self, device: &Device) -> NestedMask {
        let (rows, cols) = (channel_levels(&self.input_widths), channel_levels(&self.output_widths));
        let map: Vec<i64> = rows.iter().flat_map(|&r| cols.iter().map(move |&c| r.max(c) as i64)).collect();
        let [d_in, d_out] = self.weight.dims();
        let mut mask =
            NestedMask::dense(&[d_in, d_out], self.num_levels(), device).expect("at least one level");
        mask.set_level_map_values(map).expect("channel levels are valid levels");
        mask
    }

    /// Multiply-accumulates of level `level` per input row.
    pub fn level_macs(&self, level: usize) -> usize {
        let (d_in, d_out) = self.level_dims(level);
        d_in * d_out
    }

    /// Turns the nested mask on (dense: see [`dense_mask`](Self::dense_mask)) if it is off.
    pub fn with_mask(mut self) -> Self {
        self.enable_mask();
        self
    }

    /// The plain Burn [`Linear`] of level `level`, holding compact copies of the level's block.
    pub fn extract_level(&self, level: usize) -> Linear {
        let (weight, bias) = self.level_tensors(level);
        Linear {
            weight: Param::from_tensor(compact_copy(weight)),
            bias: bias.map(|b| Param::from_tensor(compact_copy(b))),
        }
    }

    /// Level `level` as a one-level `NestedLinear` holding compact copies of its block (its
    /// mask applied).
    pub fn single_level(&self, level: usize) -> NestedLinear {
        let (d_in, d_out) = self.level_dims(level);
        let plain = self.extract_level(level);
        NestedLinear {
            weight: plain.weight,
            bias: plain.bias,
            input_widths: vec![d_in],
            output_widths: vec![d_out],
            mask: None,
        }
    }
}

impl NestedLinear {
    /// The block of the leading `d_in` inputs and `d_out` outputs as a one-level layer with
    /// compact copies of its weights: a layer of a Mix'n'Match sub-network. The layer must not
    /// be masked.
    pub fn single_block(&self, d_in: usize, d_out: usize) -> NestedLinear {
        assert!(self.mask.is_none(), "NestedLinear: a masked layer has no blocks outside its levels");
        let (weight, bias) = self.block_tensors(d_in, d_out);
        NestedLinear {
            weight: Param::from_tensor(compact_copy(weight)),
            bias: bias.map(|b| Param::from_tensor(compact_copy(b))),
            input_widths: vec![d_in],
            output_widths: vec![d_out],
            mask: None,
        }
    }

    /// Applies the block of the leading `d_out` outputs over the input's features (any number
    /// up to the full layer's) to `x`, sharing the layer's parameters: the training forward
    /// pass of a Mix'n'Match sub-network. The layer must not be masked.
    pub fn forward_block<const D: usize>(&self, x: Tensor<D>, d_out: usize) -> Tensor<D> {
        assert!(self.mask.is_none(), "NestedLinear: a masked layer has no blocks outside its levels");
        let (weight, bias) = self.block_tensors(x.dims()[D - 1], d_out);
        linear(x, weight, bias)
    }

    /// Sets the full shared weight and bias from `dense` (same shape; parameter ids kept).
    pub fn load_full(&mut self, dense: &Linear) {
        assert_eq!(self.weight.dims(), dense.weight.dims(), "NestedLinear: the dense weight's shape differs");
        assert_eq!(self.bias.is_some(), dense.bias.is_some(), "NestedLinear: bias in one layer only");
        let weight = compact_copy(dense.weight.val());
        self.weight = self.weight.clone().map(|_| weight);
        if let (Some(bias), Some(dense)) = (self.bias.take(), dense.bias.as_ref()) {
            let values = compact_copy(dense.val());
            self.bias = Some(bias.map(|_| values));
        }
    }
}

// The shared parts (mask access, weight values, pruning) come from `maskable_layer!`.
crate::maskable_layer!(NestedLinear, |layer: &NestedLinear, level| {
    let (d_in, d_out) = layer.level_dims(level);
    d_in * d_out
});
