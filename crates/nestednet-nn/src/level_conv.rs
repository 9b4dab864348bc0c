use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use nestednet_prune::NestedMask;

use crate::widths::assert_level;
use crate::{Maskable, NestedConv2d, NestedConv2dConfig};

/// Configuration of a [`LevelConv2d`].
#[derive(Config, Debug)]
pub struct LevelConv2dConfig {
    /// The layer as a nested convolution: channels, kernel, per-level widths, stride, padding.
    pub conv: NestedConv2dConfig,
    /// Whether every level gets its own weights (un-nested) instead of the leading block of
    /// one shared weight.
    #[config(default = false)]
    pub private: bool,
}

/// A convolution that is either nested (every level uses the leading channels of one shared
/// weight, a [`NestedConv2d`]) or private per level (each level has its own weights of its
/// own width and shares none).
///
/// The private form is the paper's "un-nested" first layer of its residual set-ups: the
/// levels stay nested everywhere else, but none of them has to live with the first
/// convolution of another. Private weights cannot carry a nested mask (a mask says which
/// levels share a weight, and no weight is shared).
#[derive(Module, Debug)]
pub struct LevelConv2d {
    /// The shared nested convolution (absent when private).
    pub shared: Option<NestedConv2d>,
    /// One single-level convolution per level (empty when shared).
    pub private: Vec<NestedConv2d>,
}

impl LevelConv2dConfig {
    /// Initializes the layer on `device`. Panics if the widths are inconsistent.
    pub fn init(&self, device: &Device) -> LevelConv2d {
        if !self.private {
            return LevelConv2d { shared: Some(self.conv.init(device)), private: Vec::new() };
        }
        assert!(!self.conv.masked, "LevelConv2d: private (un-nested) levels cannot carry a nested mask");
        assert_eq!(
            self.conv.input_widths.len(),
            self.conv.output_widths.len(),
            "LevelConv2d: input and output widths must describe the same number of levels"
        );
        let private = self
            .conv
            .input_widths
            .iter()
            .zip(&self.conv.output_widths)
            .map(|(&c_in, &c_out)| {
                NestedConv2dConfig {
                    channels: [c_in, c_out],
                    input_widths: vec![c_in],
                    output_widths: vec![c_out],
                    ..self.conv.clone()
                }
                .init(device)
            })
            .collect();
        LevelConv2d { shared: None, private }
    }
}

impl LevelConv2d {
    /// Whether every level has its own weights.
    pub fn is_private(&self) -> bool {
        self.shared.is_none()
    }

    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        match &self.shared {
            Some(conv) => conv.num_levels(),
            None => self.private.len(),
        }
    }

    /// The convolution level `level` runs, and the level it is within that convolution.
    fn of_level(&self, level: usize) -> (&NestedConv2d, usize) {
        match &self.shared {
            Some(conv) => (conv, level),
            None => {
                assert_level("LevelConv2d", level, self.private.len());
                (&self.private[level], 0)
            }
        }
    }

    /// `(input, output)` channels of `level`.
    pub fn level_dims(&self, level: usize) -> (usize, usize) {
        let (conv, k) = self.of_level(level);
        conv.level_dims(k)
    }

    /// Output spatial size for an input of `[height, width]` (the same at every level).
    pub fn output_size(&self, size: [usize; 2]) -> [usize; 2] {
        self.of_level(0).0.output_size(size)
    }

    /// Applies level `level` to `x` of shape `[batch, in_level, h, w]`.
    pub fn forward(&self, x: Tensor<4>, level: usize) -> Tensor<4> {
        let (conv, k) = self.of_level(level);
        conv.forward(x, k)
    }

    /// Parameters level `level` uses.
    pub fn level_num_params(&self, level: usize) -> usize {
        let (conv, k) = self.of_level(level);
        conv.level_num_params(k)
    }

    /// Multiply-accumulates of level `level` for one input of spatial size `input_size`.
    pub fn level_macs(&self, level: usize, input_size: [usize; 2]) -> usize {
        let (conv, k) = self.of_level(level);
        conv.level_macs(k, input_size)
    }

    /// The plain Burn [`Conv2d`] of level `level`, holding compact copies of its weights.
    pub fn extract_level(&self, level: usize) -> Conv2d {
        let (conv, k) = self.of_level(level);
        conv.extract_level(k)
    }

    /// The leading `c_out` output channels (all input channels of the full layer) as a shared
    /// one-level layer: a first layer of a Mix'n'Match sub-network. `None` when private (its
    /// levels share no weight) or masked.
    pub fn single_block(&self, c_out: usize) -> Option<LevelConv2d> {
        let conv = self.shared.as_ref().filter(|c| c.mask.is_none())?;
        let c_in = conv.weight.dims()[1];
        Some(LevelConv2d { shared: Some(conv.single_block(c_in, c_out)), private: Vec::new() })
    }

    /// [`NestedConv2d::forward_block`] of the shared convolution (panics when private: a
    /// network lists such a layer as not mixable).
    pub fn forward_block(&self, x: Tensor<4>, c_out: usize) -> Tensor<4> {
        self.shared
            .as_ref()
            .expect("LevelConv2d: private layers have no shared blocks")
            .forward_block(x, c_out)
    }

    /// Sets the shared weight from `dense` (see [`NestedConv2d::load_full`]); `false` when
    /// private (nothing is set).
    pub fn load_full(&mut self, dense: &Conv2d) -> bool {
        match &mut self.shared {
            Some(conv) => {
                conv.load_full(dense);
                true
            }
            None => false,
        }
    }

    /// Level `level` alone, as a shared one-level layer holding compact copies of its weights.
    pub fn single_level(&self, level: usize) -> LevelConv2d {
        let (conv, k) = self.of_level(level);
        LevelConv2d { shared: Some(conv.single_level(k)), private: Vec::new() }
    }
}

impl Maskable for LevelConv2d {
    fn mask(&self) -> Option<&NestedMask> {
        self.shared.as_ref().and_then(|c| c.mask())
    }

    fn mask_mut(&mut self) -> Option<&mut NestedMask> {
        self.shared.as_mut().and_then(|c| c.mask_mut())
    }

    fn weight_values(&self) -> Vec<f32> {
        match &self.shared {
            Some(conv) => conv.weight_values(),
            None => self.private.iter().flat_map(|c| c.weight_values()).collect(),
        }
    }

    fn set_weight_values(&mut self, values: &[f32]) -> Result<(), nestednet_prune::PruneError> {
        if let Some(conv) = &mut self.shared {
            return conv.set_weight_values(values);
        }
        crate::set_concatenated_weights(&mut self.private, values)
    }

    fn block_weights(&self, level: usize) -> usize {
        let (conv, k) = self.of_level(level);
        conv.block_weights(k)
    }

    fn zero_pruned(&mut self) {
        if let Some(conv) = &mut self.shared {
            conv.zero_pruned();
        }
    }

    fn can_mask(&self) -> bool {
        self.shared.is_some()
    }

    fn enable_mask(&mut self) {
        if let Some(conv) = &mut self.shared {
            conv.enable_mask();
        }
    }
}
