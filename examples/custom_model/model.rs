//! A network defined outside nestednet, nested with its layers: two convolutions with batch
//! norm, ReLU and 2×2 max-pooling, then one linear classifier. Level `k` uses the leading
//! channels of every layer (the ratios, core first); the image input and the classes are not
//! split.
//!
//! What is written here is what only its author knows: the layers, their widths per level
//! (from a `ChannelSchedule`), the forward pass. `#[derive(NestedNetwork)]` writes the rest:
//! the number of levels, a level's extraction, the weight layers masks can be learned on, the
//! widths reports show.

use nestednet::burn::prelude::*;
use nestednet::kernels::max_pool2x2_relu;
use nestednet::models::{ModelError, NestedNetworkConfig};
use nestednet::nn::{
    LevelBatchNorm, LevelBatchNormConfig, NestedConv2d, NestedConv2dConfig, NestedLinear, NestedLinearConfig,
};
use nestednet::schedule::{ChannelSchedule, LevelSpec, ScheduledLayer};

/// Configuration of [`TinyNet`].
#[derive(Config, Debug)]
pub struct TinyNetConfig {
    /// Width ratio of every level, core first (the last 1.0).
    pub ratios: Vec<f64>,
    /// Images `[channels, height, width]` (height and width divisible by 4).
    pub input_shape: [usize; 3],
    /// Classes.
    pub classes: usize,
    /// Channels of the two convolutions at the full level.
    #[config(default = "[16, 32]")]
    pub channels: [usize; 2],
}

/// Two nested convolution blocks and a nested linear classifier.
#[derive(Module, Debug, nestednet::NestedNetwork)]
#[nested(input = Tensor<4>, output = Tensor<2>, forward = Self::forward, side_by_side)]
pub struct TinyNet {
    conv1: NestedConv2d,
    bn1: LevelBatchNorm,
    conv2: NestedConv2d,
    bn2: LevelBatchNorm,
    fc: NestedLinear,
    #[nested(input_shape)]
    input_shape: [usize; 3],
}

impl TinyNet {
    /// Logits of level `level` for `images`.
    fn forward(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        // `relu(max_pool2d(x, [2, 2]))` (= the pooled ReLU), as one kernel with its own
        // backward pass on `flex` and Burn's two ops elsewhere: nestednet-kernels' operations
        // serve any network.
        let x = max_pool2x2_relu(self.bn1.forward(self.conv1.forward(images, level), level));
        let x = max_pool2x2_relu(self.bn2.forward(self.conv2.forward(x, level), level));
        self.fc.forward(x.flatten::<2>(1, 3), level)
    }
}

impl NestedNetworkConfig for TinyNetConfig {
    type Network = TinyNet;

    fn init_network(&self, device: &Device) -> Result<TinyNet, ModelError> {
        let [c_in, h, w] = self.input_shape;
        if h % 4 != 0 || w % 4 != 0 {
            return Err(ModelError::Invalid(format!(
                "tiny-net takes images whose sides divide by 4, not {h}x{w}"
            )));
        }
        let [c1, c2] = self.channels;
        let layers = [ScheduledLayer::split("conv1", c1), ScheduledLayer::split("conv2", c2)];
        // Equal widths at two levels are allowed: weight masks can make those levels differ.
        let schedule = ChannelSchedule::new_with(&LevelSpec::Ratios(self.ratios.clone()), &layers, true)?;
        let widths = |name: &str| schedule.widths(name).expect("a scheduled layer").to_vec();
        let (n, pixels) = (schedule.num_levels(), (h / 4) * (w / 4));
        // Flattening is channel-major: level k's features are the first c2_k · pixels.
        let features: Vec<usize> = widths("conv2").iter().map(|c| c * pixels).collect();
        Ok(TinyNet {
            conv1: NestedConv2dConfig::new([c_in, c1], [3, 3], vec![c_in; n], widths("conv1"))
                .with_padding([1, 1])
                .init(device),
            bn1: LevelBatchNormConfig::new(widths("conv1")).init(device),
            conv2: NestedConv2dConfig::new([c1, c2], [3, 3], widths("conv1"), widths("conv2"))
                .with_padding([1, 1])
                .init(device),
            bn2: LevelBatchNormConfig::new(widths("conv2")).init(device),
            fc: NestedLinearConfig::new(c2 * pixels, self.classes, features, vec![self.classes; n])
                .init(device),
            input_shape: self.input_shape,
        })
    }

    fn name(&self) -> String {
        "tiny-net".into()
    }
}
