//! `mnist-cnn`, the benchmark model of the project:
//! conv 3×3 (32) → BN → ReLU → max-pool 2 → conv 3×3 (64) → BN → ReLU → max-pool 2 →
//! linear (128) → ReLU → linear (classes). Convolutions are zero-padded by 1, so a 28×28 input
//! gives 14×14 and then 7×7 feature maps.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use nestednet_heads::{NestedHead, NestedHeadConfig};
use nestednet_nn::{
    ChannelImportance, LevelBatchNorm, LevelBatchNormConfig, LevelConv2d, LevelConv2dConfig, Maskable,
    NestedConv2d, NestedConv2dConfig, NestedLinear, NestedLinearConfig,
};
use nestednet_schedule::{ChannelSchedule, LevelSpec, ScheduledLayer};

// `Result` stays qualified: `#[derive(Config)]` expands to code naming the prelude's `Result`.
use crate::{
    LevelCost, LevelRequest, MixableLayer, ModelError, ModelFamily, ModelRequest, NestedNetwork,
    NestedNetworkConfig,
};
use nestednet_kernels::{conv2d_norm_max_pool2x2_relu, norm_max_pool2x2_relu};

/// Configuration of the nested `mnist-cnn`.
#[derive(Config, Debug)]
pub struct NestedMnistCnnConfig {
    /// Image channels (never split across levels).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Image height.
    #[config(default = 28)]
    pub height: usize,
    /// Image width.
    #[config(default = 28)]
    pub width: usize,
    /// Output channels of the first convolution (full level).
    #[config(default = 32)]
    pub conv1_channels: usize,
    /// Output channels of the second convolution (full level).
    #[config(default = 64)]
    pub conv2_channels: usize,
    /// Hidden units of the first linear layer (full level).
    #[config(default = 128)]
    pub hidden: usize,
    /// Classes predicted by the output layer.
    #[config(default = 10)]
    pub num_classes: usize,
    /// The levels: ratios applied to `conv1`, `conv2`, `fc1` (and `fc2` when `split_output`),
    /// or explicit channel counts for those layers.
    #[config(default = "LevelSpec::default_ratios()")]
    pub levels: LevelSpec,
    /// Whether the output layer is split too (level `k` then predicts only its leading
    /// classes). Off by default: every level predicts every class.
    #[config(default = false)]
    pub split_output: bool,
    /// Coarse-to-fine heads: the number of classes each level predicts, core first (e.g.
    /// `[3, 10]`: shape groups at the core, digits at the full level). Each level then has its
    /// own output layer on its hidden units instead of the shared `fc2`; the last entry must
    /// be `num_classes`. Empty: every level predicts the `num_classes` classes through `fc2`.
    #[config(default = "Vec::new()")]
    pub level_classes: Vec<usize>,
    /// Give every level its own first convolution (`conv1` un-nested).
    #[config(default = false)]
    pub unnested_first_conv: bool,
    /// Give every level its own output layer (`fc2` un-nested), even with equal classes.
    #[config(default = false)]
    pub unnested_output: bool,
}

impl NestedMnistCnnConfig {
    /// The layers this model schedules, in forward order.
    pub fn scheduled_layers(&self) -> Vec<ScheduledLayer> {
        let fc2 = if self.split_output {
            ScheduledLayer::split("fc2", self.num_classes)
        } else {
            ScheduledLayer::whole("fc2", self.num_classes)
        };
        vec![
            ScheduledLayer::split("conv1", self.conv1_channels),
            ScheduledLayer::split("conv2", self.conv2_channels),
            ScheduledLayer::split("fc1", self.hidden),
            fc2,
        ]
    }

    /// Validates the dimensions and the level specification and resolves every layer's
    /// per-level widths. Nothing is allocated.
    pub fn schedule(&self) -> crate::Result<ChannelSchedule> {
        let dims = [
            ("in_channels", self.in_channels),
            ("conv1_channels", self.conv1_channels),
            ("conv2_channels", self.conv2_channels),
            ("hidden", self.hidden),
            ("num_classes", self.num_classes),
        ];
        if let Some((name, _)) = dims.iter().find(|(_, v)| *v == 0) {
            return Err(ModelError::Invalid(format!("{name} must be at least 1")));
        }
        if !self.level_classes.is_empty() {
            let n = self.levels.num_levels();
            if self.level_classes.len() != n {
                return Err(ModelError::Invalid(format!(
                    "level_classes gives {} class counts for {n} levels",
                    self.level_classes.len()
                )));
            }
            if let Some(level) = self.level_classes.iter().position(|&c| c == 0) {
                return Err(ModelError::Invalid(format!("level {level} predicts 0 classes")));
            }
            if self.level_classes[n - 1] != self.num_classes {
                return Err(ModelError::Invalid(format!(
                    "the full level predicts {} classes but num_classes is {}",
                    self.level_classes[n - 1],
                    self.num_classes
                )));
            }
            if self.split_output {
                return Err(ModelError::Invalid(
                    "per-level heads replace fc2: it cannot also be split".into(),
                ));
            }
        }
        if self.height < 4 || self.width < 4 {
            return Err(ModelError::Invalid(format!(
                "images of {}x{} are too small for two 2x2 max-pools (need at least 4x4)",
                self.height, self.width
            )));
        }
        // Levels of equal widths are accepted here: they may differ by their weight masks,
        // which training adds (and which it checks).
        Ok(ChannelSchedule::new_with(&self.levels, &self.scheduled_layers(), true)?)
    }

    /// Validates the configuration, then initializes the model on `device`.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedMnistCnn> {
        let s = self.schedule()?;
        let n = s.num_levels();
        let w = |name: &str| s.widths(name).expect("scheduled layer").to_vec();
        let (c1, c2, h1, out) = (w("conv1"), w("conv2"), w("fc1"), w("fc2"));
        let spatial = (self.height / 4) * (self.width / 4);
        let level_classes = if !self.level_classes.is_empty() {
            self.level_classes.clone()
        } else if self.split_output {
            out
        } else {
            vec![self.num_classes; n]
        };
        // Built first, so a bad head is reported before anything else is allocated.
        let head = NestedHeadConfig::new(self.hidden, h1.clone(), level_classes)
            .with_private(self.unnested_output)
            .with_split(self.split_output);
        head.kind()?;
        Ok(NestedMnistCnn {
            conv1: LevelConv2dConfig::new(
                NestedConv2dConfig::new(
                    [self.in_channels, self.conv1_channels],
                    [3, 3],
                    vec![self.in_channels; n],
                    c1.clone(),
                )
                .with_padding([1, 1]),
            )
            .with_private(self.unnested_first_conv)
            .init(device),
            bn1: LevelBatchNormConfig::new(c1.clone()).init(device),
            conv2: NestedConv2dConfig::new(
                [self.conv1_channels, self.conv2_channels],
                [3, 3],
                c1,
                c2.clone(),
            )
            .with_padding([1, 1])
            .init(device),
            bn2: LevelBatchNormConfig::new(c2.clone()).init(device),
            // Flattening [c, h, w] is channel-major, so level k's features are exactly the
            // first c2_k · h · w rows of the full weight: the nesting carries through.
            fc1: NestedLinearConfig::new(
                self.conv2_channels * spatial,
                self.hidden,
                c2.iter().map(|c| c * spatial).collect(),
                h1,
            )
            .init(device),
            fc2: head.try_init(device)?,
            input_shape: [self.in_channels, self.height, self.width],
        })
    }

    /// Initializes the model on `device`, panicking with the validation error if the
    /// configuration is invalid (use [`try_init`](Self::try_init) at I/O boundaries).
    pub fn init(&self, device: &Device) -> NestedMnistCnn {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The layers of `mnist-cnn` that hold weights, in forward order.
pub const LAYERS: [&str; 4] = ["conv1", "conv2", "fc1", "fc2"];

/// The nested `mnist-cnn`: one set of weights, `n` levels.
#[derive(Module, Debug)]
pub struct NestedMnistCnn {
    /// First convolution (image input, never split on its input side; nested, or private per
    /// level when un-nested).
    pub conv1: LevelConv2d,
    /// Per-level batch norm after `conv1`.
    pub bn1: LevelBatchNorm,
    /// Second convolution.
    pub conv2: NestedConv2d,
    /// Per-level batch norm after `conv2`.
    pub bn2: LevelBatchNorm,
    /// Hidden linear layer.
    pub fc1: NestedLinear,
    /// Output layer: shared by every level, or one per level (coarse-to-fine heads,
    /// un-nested output).
    pub fc2: NestedHead,
    /// Expected input `[channels, height, width]`.
    pub input_shape: [usize; 3],
}

/// Level `level`'s batch norm, then 2×2 max-pooling, then ReLU. Training (batch statistics,
/// gradients) goes through [`LevelBatchNorm::forward_max_pool2x2_relu`] (one kernel on the
/// CPU); inference through the level's own
/// [`BatchNorm`] and [`norm_max_pool2x2_relu`], fused on the CPU.
///
/// relu(max-pool(x)) == max-pool(relu(x)) exactly (max is monotone), and pooling first runs
/// the ReLU on 4x fewer values.
fn level_norm_pool_relu(x: Tensor<4>, norm: &LevelBatchNorm, level: usize) -> Tensor<4> {
    if x.is_autodiff() || nestednet_nn::recalibrating() {
        return norm.forward_max_pool2x2_relu(x, level);
    }
    let width = norm.width(level);
    let got = x.dims()[1];
    assert_eq!(got, width, "LevelBatchNorm level {level}: expected {width} channels, got {got}");
    norm_max_pool2x2_relu(x, norm.level_norm(level))
}

impl NestedMnistCnn {
    /// The configuration of level `level` as a plain `mnist-cnn`.
    pub fn level_config(&self, level: usize) -> MnistCnnConfig {
        let [in_channels, height, width] = self.input_shape;
        MnistCnnConfig {
            in_channels,
            height,
            width,
            conv1_channels: self.conv1.level_dims(level).1,
            conv2_channels: self.conv2.level_dims(level).1,
            hidden: self.fc1.level_dims(level).1,
            num_classes: self.fc2.level_classes(level),
        }
    }
}

impl NestedNetwork for NestedMnistCnn {
    type Level = MnistCnn;
    type Input = Tensor<4>;
    type Output = Tensor<2>;

    fn num_levels(&self) -> usize {
        self.conv1.num_levels()
    }

    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        let [_, c, h, w] = images.dims();
        assert_eq!(
            [c, h, w],
            self.input_shape,
            "NestedMnistCnn: expected images of [channels, height, width] = {:?}, got {:?}",
            self.input_shape,
            [c, h, w]
        );
        let x = level_norm_pool_relu(self.conv1.forward(images, level), &self.bn1, level);
        let x = level_norm_pool_relu(self.conv2.forward(x, level), &self.bn2, level).flatten::<2>(1, 3);
        let x = relu(self.fc1.forward(x, level));
        self.fc2.forward(x, level)
    }

    /// Every level has its own batch norms (`LevelBatchNorm`): nothing a forward pass writes is
    /// shared.
    fn levels_train_side_by_side(&self) -> bool {
        true
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// The standalone plain-Burn model of level `level`: compact copies of the level's slices
    /// of every layer.
    fn extract_level(&self, level: usize) -> MnistCnn {
        MnistCnn {
            conv1: self.conv1.extract_level(level),
            bn1: self.bn1.extract_level(level),
            conv2: self.conv2.extract_level(level),
            bn2: self.bn2.extract_level(level),
            fc1: self.fc1.extract_level(level),
            fc2: self.fc2.extract_level(level),
            input_shape: self.input_shape,
        }
    }

    fn level_cost(&self, level: usize) -> LevelCost {
        let [_, h, w] = self.input_shape;
        LevelCost {
            params: self.conv1.level_num_params(level)
                + self.bn1.level_num_params(level)
                + self.conv2.level_num_params(level)
                + self.bn2.level_num_params(level)
                + self.fc1.level_num_params(level)
                + self.fc2.level_num_params(level),
            macs: self.conv1.level_macs(level, [h, w])
                + self.conv2.level_macs(level, [h / 2, w / 2])
                + self.fc1.level_macs(level)
                + self.fc2.level_macs(level),
        }
    }

    fn level_classes(&self, level: usize) -> usize {
        self.fc2.level_classes(level)
    }

    fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
        vec![
            ("conv1".into(), self.conv1.level_dims(level).1),
            ("conv2".into(), self.conv2.level_dims(level).1),
            ("fc1".into(), self.fc1.level_dims(level).1),
            ("fc2".into(), self.fc2.level_classes(level)),
        ]
    }

    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        vec![
            ("conv1".into(), &self.conv1),
            ("conv2".into(), &self.conv2),
            ("fc1".into(), &self.fc1),
            ("fc2".into(), &self.fc2),
        ]
    }

    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        vec![
            ("conv1".into(), &mut self.conv1),
            ("conv2".into(), &mut self.conv2),
            ("fc1".into(), &mut self.fc1),
            ("fc2".into(), &mut self.fc2),
        ]
    }

    /// `conv1`, `conv2` and `fc1`, when every level shares them unmasked and one output layer
    /// over the same classes (the head's input follows `fc1`).
    fn mixable_layers(&self) -> Vec<MixableLayer> {
        let masked = self.weight_layers().iter().any(|(_, l)| l.mask().is_some());
        if masked || self.conv1.is_private() || self.fc2.single_block(self.fc1.level_dims(0).1).is_none() {
            return Vec::new();
        }
        let n = self.num_levels();
        let layer = |name: &str, width: &dyn Fn(usize) -> usize| MixableLayer {
            name: name.into(),
            widths: (0..n).map(width).collect(),
        };
        vec![
            layer("conv1", &|k| self.conv1.level_dims(k).1),
            layer("conv2", &|k| self.conv2.level_dims(k).1),
            layer("fc1", &|k| self.fc1.level_dims(k).1),
        ]
    }

    fn mixed(&self, choice: &[usize]) -> crate::Result<Self> {
        let layers = self.mixable_layers();
        check_choice(&layers, choice)?;
        let (c1, c2, h) =
            (layers[0].widths[choice[0]], layers[1].widths[choice[1]], layers[2].widths[choice[2]]);
        let [_, height, width] = self.input_shape;
        let spatial = (height / 4) * (width / 4);
        let unsupported = || ModelError::Unsupported("Mix'n'Match with this head or first layer".into());
        Ok(NestedMnistCnn {
            conv1: self.conv1.single_block(c1).ok_or_else(unsupported)?,
            bn1: self.bn1.single_level(choice[0]),
            conv2: self.conv2.single_block(c1, c2),
            bn2: self.bn2.single_level(choice[1]),
            fc1: self.fc1.single_block(c2 * spatial, h),
            fc2: self.fc2.single_block(h).ok_or_else(unsupported)?,
            input_shape: self.input_shape,
        })
    }

    fn forward_mix(&self, images: Tensor<4>, choice: &[usize]) -> crate::Result<Tensor<2>> {
        let layers = self.mixable_layers();
        check_choice(&layers, choice)?;
        let width = |i: usize| layers[i].widths[choice[i]];
        let x = self.conv1.forward_block(images, width(0));
        let x = self.bn1.forward_batch_stats_max_pool2x2_relu(x, choice[0]);
        let x = self.conv2.forward_block(x, width(1));
        let x = self.bn2.forward_batch_stats_max_pool2x2_relu(x, choice[1]).flatten::<2>(1, 3);
        let x = relu(self.fc1.forward_block(x, width(2)));
        Ok(self.fc2.forward_block(x))
    }

    fn load_dense(&mut self, dense: &MnistCnn) -> crate::Result<()> {
        let full = self.level_config(self.num_levels() - 1);
        let [in_channels, height, width] = dense.input_shape;
        let got = MnistCnnConfig {
            in_channels,
            height,
            width,
            conv1_channels: dense.conv1.weight.dims()[0],
            conv2_channels: dense.conv2.weight.dims()[0],
            hidden: dense.fc1.weight.dims()[1],
            num_classes: dense.fc2.weight.dims()[1],
        };
        if format!("{got:?}") != format!("{full:?}") {
            return Err(ModelError::Invalid(format!(
                "the dense network is {got:?}, but the nested model's full level is {full:?}"
            )));
        }
        if !self.conv1.load_full(&dense.conv1) || !self.fc2.load_full(&dense.fc2) {
            return Err(ModelError::Unsupported(
                "nesting a dense network into un-nested (private per level) layers".into(),
            ));
        }
        self.bn1.load_dense(&dense.bn1);
        self.conv2.load_full(&dense.conv2);
        self.bn2.load_dense(&dense.bn2);
        self.fc1.load_full(&dense.fc1);
        Ok(())
    }
}

/// Checks a Mix'n'Match choice against the mixable layers: one level per layer, each a level.
pub(crate) fn check_choice(layers: &[MixableLayer], choice: &[usize]) -> crate::Result<()> {
    if layers.is_empty() {
        return Err(ModelError::Unsupported(
            "Mix'n'Match sub-networks in this configuration (masked, un-nested, split or per-level layers)"
                .into(),
        ));
    }
    if choice.len() != layers.len() {
        return Err(ModelError::Invalid(format!(
            "a sub-network gives one level per mixable layer ({}), not {} levels",
            layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", "),
            choice.len()
        )));
    }
    let levels = layers[0].widths.len();
    if let Some((layer, &k)) = layers.iter().zip(choice).find(|(_, k)| **k >= levels) {
        return Err(ModelError::Invalid(format!(
            "layer {} takes level {k}'s width, but the levels are 0..={}",
            layer.name,
            levels - 1
        )));
    }
    Ok(())
}

impl NestedNetworkConfig for NestedMnistCnnConfig {
    type Network = NestedMnistCnn;

    fn init_network(&self, device: &Device) -> crate::Result<NestedMnistCnn> {
        self.try_init(device)
    }

    fn name(&self) -> String {
        "mnist-cnn".into()
    }

    /// Level `level`'s widths as the full widths of a one-level `mnist-cnn`.
    fn level_alone(&self, level: usize) -> Option<Self> {
        let schedule = self.schedule().ok()?;
        let width = |name: &str| schedule.width(name, level).ok();
        let classes = match self.level_classes.get(level) {
            Some(&c) => c,
            None => width("fc2")?,
        };
        Some(
            self.clone()
                .with_conv1_channels(width("conv1")?)
                .with_conv2_channels(width("conv2")?)
                .with_hidden(width("fc1")?)
                .with_num_classes(classes)
                .with_levels(LevelSpec::Ratios(vec![1.0]))
                .with_split_output(false)
                .with_level_classes(Vec::new()),
        )
    }
}

impl ModelFamily for NestedMnistCnnConfig {
    const FAMILY: &'static str = "mnist-cnn";

    fn names() -> &'static [&'static str] {
        &["mnist-cnn"]
    }

    fn claims(name: &str) -> bool {
        name == "mnist-cnn"
    }

    fn from_request(request: &ModelRequest) -> Option<crate::Result<Self>> {
        if !Self::claims(&request.name) {
            return None;
        }
        let [in_channels, height, width] = request.input_shape;
        if height < 4 || width < 4 {
            return Some(Err(
                request.input_error("mnist-cnn", "its two 2x2 max-pools need at least 4x4 pixels")
            ));
        }
        let levels = match &request.levels {
            LevelRequest::Channels(spec) => spec.clone(),
            LevelRequest::Lattice(_) => {
                return Some(Err(ModelError::Invalid(
                    "mnist-cnn has no residual blocks to schedule: give its levels as widths, not depths"
                        .into(),
                )));
            }
        };
        let config = Self::new()
            .with_in_channels(in_channels)
            .with_height(height)
            .with_width(width)
            .with_num_classes(request.num_classes)
            .with_levels(levels)
            .with_level_classes(request.level_classes.clone())
            .with_unnested_first_conv(request.unnested_first_conv)
            .with_unnested_output(request.unnested_output);
        Some(config.schedule().map(|_| config))
    }
}

/// Configuration of a plain (non-nested) `mnist-cnn`, e.g. one exported level.
#[derive(Config, Debug)]
pub struct MnistCnnConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Output channels of the first convolution.
    pub conv1_channels: usize,
    /// Output channels of the second convolution.
    pub conv2_channels: usize,
    /// Hidden units.
    pub hidden: usize,
    /// Classes.
    pub num_classes: usize,
}

impl MnistCnnConfig {
    /// Initializes the plain model on `device`.
    pub fn init(&self, device: &Device) -> MnistCnn {
        let pad = || PaddingConfig2d::Explicit(1, 1, 1, 1);
        let spatial = (self.height / 4) * (self.width / 4);
        MnistCnn {
            conv1: Conv2dConfig::new([self.in_channels, self.conv1_channels], [3, 3])
                .with_padding(pad())
                .init(device),
            bn1: BatchNormConfig::new(self.conv1_channels).init(device),
            conv2: Conv2dConfig::new([self.conv1_channels, self.conv2_channels], [3, 3])
                .with_padding(pad())
                .init(device),
            bn2: BatchNormConfig::new(self.conv2_channels).init(device),
            fc1: LinearConfig::new(self.conv2_channels * spatial, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.num_classes).init(device),
            input_shape: [self.in_channels, self.height, self.width],
        }
    }
}

/// A plain `mnist-cnn` built from Burn's own layers: what an exported level loads into.
#[derive(Module, Debug)]
pub struct MnistCnn {
    /// First convolution.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// Second convolution.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// Hidden linear layer.
    pub fc1: Linear,
    /// Output layer.
    pub fc2: Linear,
    /// Expected input `[channels, height, width]`.
    pub input_shape: [usize; 3],
}

impl MnistCnn {
    /// Logits `[batch, classes]` for images `[batch, c, h, w]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = conv2d_norm_max_pool2x2_relu(images, &self.conv1, &self.bn1);
        let x = conv2d_norm_max_pool2x2_relu(x, &self.conv2, &self.bn2).flatten::<2>(1, 3);
        self.fc2.forward(relu(self.fc1.forward(x)))
    }
}

fn conv_params(conv: &Conv2d) -> usize {
    conv.weight.shape().num_elements() + conv.bias.as_ref().map_or(0, |b| b.shape().num_elements())
}

fn linear_params(linear: &Linear) -> usize {
    linear.weight.shape().num_elements() + linear.bias.as_ref().map_or(0, |b| b.shape().num_elements())
}

/// A plain `mnist-cnn` is a one-level network (what an exported level loads into).
impl NestedNetwork for MnistCnn {
    type Level = MnistCnn;
    type Input = Tensor<4>;
    type Output = Tensor<2>;

    fn num_levels(&self) -> usize {
        1
    }

    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        assert_eq!(level, 0, "a plain mnist-cnn has one level");
        self.forward(images)
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn extract_level(&self, level: usize) -> MnistCnn {
        assert_eq!(level, 0, "a plain mnist-cnn has one level");
        self.clone()
    }

    fn level_cost(&self, _level: usize) -> LevelCost {
        let [_, h, w] = self.input_shape;
        let [c1, c_in, kh, kw] = self.conv1.weight.dims();
        let [c2, _, kh2, kw2] = self.conv2.weight.dims();
        let [d_in, hidden] = self.fc1.weight.dims();
        let [_, classes] = self.fc2.weight.dims();
        LevelCost {
            params: conv_params(&self.conv1)
                + 2 * c1
                + conv_params(&self.conv2)
                + 2 * c2
                + linear_params(&self.fc1)
                + linear_params(&self.fc2),
            macs: h * w * c1 * c_in * kh * kw
                + (h / 2) * (w / 2) * c2 * c1 * kh2 * kw2
                + d_in * hidden
                + hidden * classes,
        }
    }

    fn level_classes(&self, _level: usize) -> usize {
        self.fc2.weight.dims()[1]
    }

    /// `conv1` by its filters' L1 norm or `bn1`'s |γ|, `conv2` likewise with `bn2`, `fc1` by its
    /// units' L1 norm (no batch norm follows it); the output layer keeps its classes.
    fn reorder_channels(&self, importance: ChannelImportance) -> crate::Result<(Self, crate::ChannelOrders)> {
        use nestednet_nn::{
            batch_norm_gamma, conv_filter_l1, importance_order, linear_unit_l1, permute_batch_norm,
            permute_conv_inputs, permute_conv_outputs, permute_linear_inputs, permute_linear_outputs,
        };
        let score = |conv: &Conv2d, norm: &BatchNorm| match importance {
            ChannelImportance::FilterL1 => conv_filter_l1(conv),
            ChannelImportance::BatchNormGamma => batch_norm_gamma(norm),
        };
        let o1 = importance_order(&score(&self.conv1, &self.bn1));
        let o2 = importance_order(&score(&self.conv2, &self.bn2));
        let o3 = importance_order(&linear_unit_l1(&self.fc1));
        let [_, h, w] = self.input_shape;
        let spatial = (h / 4) * (w / 4);
        let model = MnistCnn {
            conv1: permute_conv_outputs(&self.conv1, &o1),
            bn1: permute_batch_norm(&self.bn1, &o1),
            conv2: permute_conv_outputs(&permute_conv_inputs(&self.conv2, &o1), &o2),
            bn2: permute_batch_norm(&self.bn2, &o2),
            fc1: permute_linear_outputs(&permute_linear_inputs(&self.fc1, &o2, spatial), &o3),
            fc2: permute_linear_inputs(&self.fc2, &o3, 1),
            input_shape: self.input_shape,
        };
        Ok((model, vec![("conv1".into(), o1), ("conv2".into(), o2), ("fc1".into(), o3)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure_level;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn default_levels_have_the_expected_costs() {
        let device = Device::flex();
        let model = NestedMnistCnnConfig::new().init(&device);
        assert_eq!(model.num_levels(), 3);
        let full = model.level_cost(2);
        // conv1 320 + bn1 64 + conv2 18496 + bn2 128 + fc1 401536 + fc2 1290.
        assert_eq!(full.params, 421_834);
        assert_eq!(full.macs, 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 3136 * 128 + 1280);
        let core = model.level_cost(0);
        assert_eq!(core.macs, 28 * 28 * 8 * 9 + 14 * 14 * 16 * 8 * 9 + 784 * 32 + 320);
        assert!(full.macs as f64 / core.macs as f64 > 13.0);
        // The full level holds exactly the parameters of the plain network. (Burn's
        // `num_params` also counts the batch norms' running mean and variance.)
        let plain = MnistCnnConfig::new(1, 28, 28, 32, 64, 128, 10).init(&device);
        assert_eq!(plain.num_params(), full.params + 2 * (32 + 64));
    }

    #[test]
    fn extracted_levels_equal_nested_levels() {
        let device = Device::flex();
        device.seed(0);
        let model = NestedMnistCnnConfig::new().init(&device);
        let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        for level in 0..3 {
            let (config, plain) = (model.level_config(level), model.extract_level(level));
            let bn_buffers = 2 * (config.conv1_channels + config.conv2_channels);
            assert_eq!(plain.num_params(), model.level_cost(level).params + bn_buffers);
            assert_eq!(config.conv1_channels, [8, 16, 32][level]);
            plain.forward(x.clone()).into_data().assert_approx_eq::<f32>(
                &model.forward_level(x.clone(), level).into_data(),
                Tolerance::absolute(1e-5),
            );
        }
    }

    #[test]
    fn per_level_heads_predict_their_own_classes_and_export() {
        let device = Device::flex();
        device.seed(4);
        let config = NestedMnistCnnConfig::new()
            .with_levels("0.5,1.0".parse().unwrap())
            .with_level_classes(vec![3, 10]);
        let model = config.init(&device);
        assert!(model.fc2.is_private());
        assert_eq!((model.level_classes(0), model.level_classes(1)), (3, 10));
        let x = Tensor::<4>::random([2, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(model.forward_level(x.clone(), 0).dims(), [2, 3]);
        // The core's head sits on its 64 hidden units: 64·3 + 3 parameters.
        let base = NestedMnistCnnConfig::new().with_levels("0.5,1.0".parse().unwrap()).init(&device);
        assert_eq!(model.level_cost(0).params, base.level_cost(0).params - (64 * 10 + 10) + 64 * 3 + 3);
        let plain = model.extract_level(0);
        assert_eq!(model.level_config(0).num_classes, 3);
        plain
            .forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&model.forward_level(x, 0).into_data(), Tolerance::absolute(1e-5));
        for bad in [vec![3], vec![3, 9], vec![0, 10]] {
            let err = config.clone().with_level_classes(bad.clone()).try_init(&device).unwrap_err();
            assert!(matches!(err, ModelError::Invalid(_) | ModelError::Head(_)), "{bad:?}: {err}");
        }
        assert!(config.clone().with_split_output(true).schedule().is_err());
    }

    #[test]
    fn mixed_sub_networks_take_each_layer_from_its_level() {
        let device = Device::flex();
        device.seed(5);
        let model = NestedMnistCnnConfig::new().init(&device);
        let layers = model.mixable_layers();
        assert_eq!(
            layers.iter().map(|l| l.widths.clone()).collect::<Vec<_>>(),
            [[8, 16, 32], [16, 32, 64], [32, 64, 128]]
        );
        let x = Tensor::<4>::random([2, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        // A uniform choice is the level itself.
        for k in 0..3 {
            let mixed = model.mixed(&[k, k, k]).unwrap();
            assert_eq!(mixed.num_levels(), 1);
            assert_eq!(mixed.level_cost(0), model.level_cost(k));
            mixed.forward_level(x.clone(), 0).into_data().assert_approx_eq::<f32>(
                &model.forward_level(x.clone(), k).into_data(),
                Tolerance::absolute(1e-5),
            );
        }
        // A mixed one has the widths asked for, costs between its neighbours', and exports.
        let mixed = model.mixed(&[2, 0, 1]).unwrap();
        assert_eq!(
            mixed.level_widths(0)[..3],
            [("conv1".into(), 32), ("conv2".into(), 16), ("fc1".into(), 64)]
        );
        let (cost, classes) = measure_level(&mixed, 0);
        assert_eq!((cost, classes), (mixed.level_cost(0), 10));
        assert!(cost.macs > model.level_cost(0).macs && cost.macs < model.level_cost(2).macs);
        mixed
            .extract_level(0)
            .forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&mixed.forward_level(x, 0).into_data(), Tolerance::absolute(1e-5));
        for bad in [&[0, 1][..], &[0, 1, 3]] {
            assert!(matches!(model.mixed(bad), Err(ModelError::Invalid(_))), "{bad:?}");
        }
        // The training forward of a mix shares the parameters: on an autodiff device, a uniform
        // choice computes the level in training mode, and gradients reach the shared weights.
        let train = NestedMnistCnnConfig::new().init(&device.clone().autodiff());
        let xt =
            Tensor::<4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device.clone().autodiff());
        let running = train.bn2.norms[1].running_mean.value_sync().into_data();
        let mix = train.forward_mix(xt.clone(), &[1, 1, 1]).unwrap();
        assert_eq!(
            train.bn2.norms[1].running_mean.value_sync().into_data(),
            running,
            "running statistics untouched"
        );
        mix.clone().into_data().assert_approx_eq::<f32>(
            &train.forward_level(xt.clone(), 1).into_data(),
            Tolerance::absolute(1e-4),
        );
        let grads = train.forward_mix(xt, &[2, 0, 1]).unwrap().sum().backward();
        let g = train.conv1.shared.as_ref().unwrap().weight.grad(&grads).unwrap();
        assert_eq!(g.dims(), [32, 1, 3, 3]);
        let masked = NestedMnistCnnConfig::new().init(&device);
        let mut masked = masked;
        masked.conv2.enable_mask();
        assert!(
            masked.mixable_layers().is_empty()
                && matches!(masked.mixed(&[0, 0, 0]), Err(ModelError::Unsupported(_)))
        );
        let coarse = NestedMnistCnnConfig::new()
            .with_levels("0.5,1.0".parse().unwrap())
            .with_level_classes(vec![3, 10]);
        assert!(coarse.init(&device).mixable_layers().is_empty());
    }

    #[test]
    fn a_dense_network_nests_after_its_channels_are_ordered() {
        let device = Device::flex();
        device.seed(6);
        let dense = MnistCnnConfig::new(1, 12, 12, 8, 16, 20, 10).init(&device);
        let x = Tensor::<4>::random([3, 1, 12, 12], Distribution::Normal(0.0, 1.0), &device);
        for importance in [ChannelImportance::FilterL1, ChannelImportance::BatchNormGamma] {
            let (ordered, orders) = dense.reorder_channels(importance).unwrap();
            assert_eq!(orders.len(), 3);
            ordered
                .forward(x.clone())
                .into_data()
                .assert_approx_eq::<f32>(&dense.forward(x.clone()).into_data(), Tolerance::absolute(1e-5));
            let config = NestedMnistCnnConfig::new()
                .with_height(12)
                .with_width(12)
                .with_conv1_channels(8)
                .with_conv2_channels(16)
                .with_hidden(20)
                .with_levels("0.5,1.0".parse().unwrap());
            let mut nested = config.init(&device);
            nested.load_dense(&ordered).unwrap();
            nested
                .forward_level(x.clone(), 1)
                .into_data()
                .assert_approx_eq::<f32>(&dense.forward(x.clone()).into_data(), Tolerance::absolute(1e-5));
            // The core is the leading block of the ordered dense network.
            let core = nested.extract_level(0);
            assert_eq!(
                core.conv1.weight.val().into_data(),
                ordered.conv1.weight.val().slice(s![0..4, .., .., ..]).into_data()
            );
        }
        let mut other = NestedMnistCnnConfig::new().init(&device);
        let err = other.load_dense(&dense).unwrap_err().to_string();
        assert!(err.contains("full level"), "{err}");
    }

    #[test]
    fn invalid_specs_fail_before_allocation() {
        let err = NestedMnistCnnConfig::new()
            .with_levels("0.01,0.5,1.0".parse().unwrap())
            .try_init(&Device::flex())
            .unwrap_err();
        assert!(err.to_string().contains("layer `conv1`, level 0"), "{err}");
        let err = NestedMnistCnnConfig::new().with_height(3).schedule().unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }
}
