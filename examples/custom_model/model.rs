//! A network defined outside nestednet, nested with its layers: two convolutions with batch
//! norm, ReLU and 2×2 max-pooling, then one linear classifier. Level `k` uses the leading
//! channels of every layer (the ratios, core first); the image input and the classes are not
//! split.

use nestednet::burn::prelude::*;
use nestednet::kernels::max_pool2x2_relu;
use nestednet::models::{ModelError, NestedNetwork, NestedNetworkConfig};
use nestednet::nn::{
    LevelBatchNorm, LevelBatchNormConfig, Maskable, NestedConv2d, NestedConv2dConfig, NestedLinear,
    NestedLinearConfig,
};
use nestednet::schedule::LevelSpec;

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
#[derive(Module, Debug)]
pub struct TinyNet {
    conv1: NestedConv2d,
    bn1: LevelBatchNorm,
    conv2: NestedConv2d,
    bn2: LevelBatchNorm,
    fc: NestedLinear,
    input_shape: [usize; 3],
}

impl NestedNetworkConfig for TinyNetConfig {
    type Network = TinyNet;

    fn init_network(&self, device: &Device) -> Result<TinyNet, ModelError> {
        LevelSpec::Ratios(self.ratios.clone()).validate()?;
        let [c_in, h, w] = self.input_shape;
        if h % 4 != 0 || w % 4 != 0 {
            return Err(ModelError::Invalid(format!(
                "tiny-net takes images whose sides divide by 4, not {h}x{w}"
            )));
        }
        let widths = |c: usize| {
            self.ratios.iter().map(|r| ((r * c as f64).round() as usize).max(1)).collect::<Vec<_>>()
        };
        let [c1, c2] = self.channels;
        let (n, pixels) = (self.ratios.len(), (h / 4) * (w / 4));
        Ok(TinyNet {
            conv1: NestedConv2dConfig::new([c_in, c1], [3, 3], vec![c_in; n], widths(c1))
                .with_padding([1, 1])
                .init(device),
            bn1: LevelBatchNormConfig::new(widths(c1)).init(device),
            conv2: NestedConv2dConfig::new([c1, c2], [3, 3], widths(c1), widths(c2))
                .with_padding([1, 1])
                .init(device),
            bn2: LevelBatchNormConfig::new(widths(c2)).init(device),
            // Flattening is channel-major: level k's features are the first c2_k · pixels.
            fc: NestedLinearConfig::new(
                c2 * pixels,
                self.classes,
                widths(c2).iter().map(|c| c * pixels).collect(),
                vec![self.classes; n],
            )
            .init(device),
            input_shape: self.input_shape,
        })
    }

    fn name(&self) -> String {
        "tiny-net".into()
    }
}

impl NestedNetwork for TinyNet {
    type Level = TinyNet;
    type Input = Tensor<4>;
    type Output = Tensor<2>;

    fn num_levels(&self) -> usize {
        self.bn1.num_levels()
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        // `relu(max_pool2d(x, [2, 2]))` (= the pooled ReLU), as one kernel with its own
        // backward pass on `flex` and Burn's two ops elsewhere: nestednet-kernels' operations
        // serve any network.
        let x = max_pool2x2_relu(self.bn1.forward(self.conv1.forward(images, level), level));
        let x = max_pool2x2_relu(self.bn2.forward(self.conv2.forward(x, level), level));
        self.fc.forward(x.flatten::<2>(1, 3), level)
    }

    fn extract_level(&self, level: usize) -> TinyNet {
        TinyNet {
            conv1: self.conv1.single_level(level),
            bn1: self.bn1.single_level(level),
            conv2: self.conv2.single_level(level),
            bn2: self.bn2.single_level(level),
            fc: self.fc.single_level(level),
            input_shape: self.input_shape,
        }
    }

    // Each level has its own batch norms (`LevelBatchNorm`) and nothing else a forward pass
    // writes: the trainer may run two levels at once on the CPU's threads.
    fn levels_train_side_by_side(&self) -> bool {
        true
    }

    // Listing the weight layers lets nested weight masks be learned on them too.
    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        vec![("conv1".into(), &self.conv1), ("conv2".into(), &self.conv2), ("fc".into(), &self.fc)]
    }

    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        vec![
            ("conv1".into(), &mut self.conv1),
            ("conv2".into(), &mut self.conv2),
            ("fc".into(), &mut self.fc),
        ]
    }
}
