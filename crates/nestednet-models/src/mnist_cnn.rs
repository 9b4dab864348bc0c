//! `mnist-cnn`, the benchmark model of the project:
//! conv 3×3 (32) → BN → ReLU → max-pool 2 → conv 3×3 (64) → BN → ReLU → max-pool 2 →
//! linear (128) → ReLU → linear (classes). Convolutions are zero-padded by 1, so a 28×28 input
//! gives 14×14 and then 7×7 feature maps.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use nestednet_nn::{
    LevelBatchNorm, LevelBatchNormConfig, Maskable, NestedConv2d, NestedConv2dConfig, NestedLinear,
    NestedLinearConfig, compact_copy,
};
use nestednet_schedule::{ChannelSchedule, LevelSpec, ScheduledLayer};

// `Result` stays qualified: `#[derive(Config)]` expands to code naming the prelude's `Result`.
use crate::fused::{norm_pool_relu, pool};
use crate::{LevelCost, ModelError, NestedClassifier};

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
    /// Layers whose weights carry a nested unstructured mask (weight connection learning),
    /// by name (`conv1`, `conv2`, `fc1`, `fc2`). Empty: channel scheduling only.
    #[config(default = "Vec::new()")]
    pub masked_layers: Vec<String>,
    /// Coarse-to-fine heads: the number of classes each level predicts, core first (e.g.
    /// `[3, 10]`: shape groups at the core, digits at the full level). Each level then has its
    /// own output layer on its hidden units instead of the shared `fc2`; the last entry must
    /// be `num_classes`. Empty: every level predicts the `num_classes` classes through `fc2`.
    #[config(default = "Vec::new()")]
    pub level_classes: Vec<usize>,
}

impl NestedMnistCnnConfig {
    /// Whether layer `name` carries a nested mask.
    pub fn is_masked(&self, name: &str) -> bool {
        self.masked_layers.iter().any(|n| n == name)
    }

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
        if let Some(name) = self.masked_layers.iter().find(|n| !LAYERS.contains(&n.as_str())) {
            return Err(ModelError::Invalid(format!(
                "unknown layer `{name}` among the masked layers (mnist-cnn has {})",
                LAYERS.join(", ")
            )));
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
            if self.split_output || self.is_masked("fc2") {
                return Err(ModelError::Invalid(
                    "per-level heads replace fc2: it cannot also be split or masked".into(),
                ));
            }
        }
        if self.height < 4 || self.width < 4 {
            return Err(ModelError::Invalid(format!(
                "images of {}x{} are too small for two 2x2 max-pools (need at least 4x4)",
                self.height, self.width
            )));
        }
        let masked = !self.masked_layers.is_empty();
        Ok(ChannelSchedule::new_with(&self.levels, &self.scheduled_layers(), masked)?)
    }

    /// Channel scheduling by parameter budget: width ratios (one per level, core first) whose
    /// levels hold, as nearly as whole channels allow, the fractions `densities` of the full
    /// level's parameters (`0.5, 1.0` = "2 levels at 2× and 1× compression"). Densities must lie
    /// in (0, 1], grow strictly and end at 1. Only shapes are used: `device` allocates nothing
    /// on backends that initialise lazily.
    pub fn ratios_for_densities(&self, densities: &[f64], device: &Device) -> crate::Result<LevelSpec> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if densities.is_empty() {
            return bad("give at least one density".into());
        }
        for (level, &d) in densities.iter().enumerate() {
            if !(d > 0.0 && d <= 1.0) {
                return bad(format!("density of level {level} is {d}: it must be in (0, 1]"));
            }
            if level > 0 && d <= densities[level - 1] {
                return bad(format!(
                    "density of level {level} ({d}) is not larger than level {}'s ({}): channel levels must grow",
                    level - 1,
                    densities[level - 1]
                ));
            }
        }
        if densities[densities.len() - 1] != 1.0 {
            return bad("the full (last) level has density 1".into());
        }
        let unmasked = self.clone().with_masked_layers(Vec::new());
        // Parameters of the core of a 2-level model at ratio r (None if r leaves a layer empty).
        let params = |r: f64| {
            unmasked
                .clone()
                .with_levels(LevelSpec::Ratios(vec![r, 1.0]))
                .try_init(device)
                .ok()
                .map(|m| m.level_cost(0).params as f64)
        };
        let full =
            unmasked.clone().with_levels(LevelSpec::Ratios(vec![1.0])).try_init(device)?.level_cost(0).params
                as f64;
        let mut ratios = Vec::new();
        for &d in &densities[..densities.len() - 1] {
            // The level's parameters grow with r: bisect for the smallest r reaching d.
            let (mut lo, mut hi) = (0.0f64, 1.0f64);
            for _ in 0..50 {
                let mid = 0.5 * (lo + hi);
                match params(mid) {
                    Some(p) if p / full >= d => hi = mid,
                    _ => lo = mid,
                }
            }
            // Whole channels: take whichever neighbour of the crossing is closer to d.
            let below = params(lo).map_or(f64::INFINITY, |p| (p / full - d).abs());
            let above = params(hi).map_or(f64::INFINITY, |p| (p / full - d).abs());
            ratios.push(if below < above { lo } else { hi });
        }
        ratios.push(1.0);
        let spec = LevelSpec::Ratios(ratios);
        self.clone().with_levels(spec.clone()).schedule()?;
        Ok(spec)
    }

    /// Validates the configuration, then initializes the model on `device`.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedMnistCnn> {
        let s = self.schedule()?;
        let n = s.num_levels();
        let w = |name: &str| s.widths(name).expect("scheduled layer").to_vec();
        let (c1, c2, h1, out) = (w("conv1"), w("conv2"), w("fc1"), w("fc2"));
        let spatial = (self.height / 4) * (self.width / 4);
        Ok(NestedMnistCnn {
            conv1: NestedConv2dConfig::new(
                [self.in_channels, self.conv1_channels],
                [3, 3],
                vec![self.in_channels; n],
                c1.clone(),
            )
            .with_padding([1, 1])
            .with_masked(self.is_masked("conv1"))
            .init(device),
            bn1: LevelBatchNormConfig::new(c1.clone()).init(device),
            conv2: NestedConv2dConfig::new(
                [self.conv1_channels, self.conv2_channels],
                [3, 3],
                c1,
                c2.clone(),
            )
            .with_padding([1, 1])
            .with_masked(self.is_masked("conv2"))
            .init(device),
            bn2: LevelBatchNormConfig::new(c2.clone()).init(device),
            // Flattening [c, h, w] is channel-major, so level k's features are exactly the
            // first c2_k · h · w rows of the full weight: the nesting carries through.
            fc1: NestedLinearConfig::new(
                self.conv2_channels * spatial,
                self.hidden,
                c2.iter().map(|c| c * spatial).collect(),
                h1.clone(),
            )
            .with_masked(self.is_masked("fc1"))
            .init(device),
            fc2: self.level_classes.is_empty().then(|| {
                NestedLinearConfig::new(self.hidden, self.num_classes, h1.clone(), out)
                    .with_masked(self.is_masked("fc2"))
                    .init(device)
            }),
            heads: self
                .level_classes
                .iter()
                .zip(&h1)
                .map(|(&classes, &hidden)| LinearConfig::new(hidden, classes).init(device))
                .collect(),
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
    /// First convolution (image input, never split on its input side).
    pub conv1: NestedConv2d,
    /// Per-level batch norm after `conv1`.
    pub bn1: LevelBatchNorm,
    /// Second convolution.
    pub conv2: NestedConv2d,
    /// Per-level batch norm after `conv2`.
    pub bn2: LevelBatchNorm,
    /// Hidden linear layer.
    pub fc1: NestedLinear,
    /// Output layer shared by every level (absent with per-level heads).
    pub fc2: Option<NestedLinear>,
    /// Per-level output layers (coarse-to-fine heads): level `k` classifies its own hidden
    /// units into its own classes. Empty when `fc2` is used.
    pub heads: Vec<Linear>,
    /// Expected input `[channels, height, width]`.
    pub input_shape: [usize; 3],
}

/// Level `level`'s batch norm, then 2×2 max-pooling, then ReLU. Training (batch statistics,
/// gradients) goes through [`LevelBatchNorm::forward`]; inference through the level's own
/// [`BatchNorm`] and [`norm_pool_relu`], fused on the CPU.
///
/// relu(max-pool(x)) == max-pool(relu(x)) exactly (max is monotone), and pooling first runs
/// the ReLU on 4x fewer values.
fn level_norm_pool_relu(x: Tensor<4>, norm: &LevelBatchNorm, level: usize) -> Tensor<4> {
    if x.is_autodiff() {
        return relu(pool(norm.forward(x, level)));
    }
    let width = norm.width(level);
    let got = x.dims()[1];
    assert_eq!(got, width, "LevelBatchNorm level {level}: expected {width} channels, got {got}");
    norm_pool_relu(x, &norm.norms[level])
}

impl NestedMnistCnn {
    /// Parameters of level `level`'s output layer.
    fn output_params(&self, level: usize) -> usize {
        match &self.fc2 {
            Some(fc2) => fc2.level_num_params(level),
            None => {
                let [d_in, d_out] = self.heads[level].weight.dims();
                d_in * d_out + if self.heads[level].bias.is_some() { d_out } else { 0 }
            }
        }
    }

    /// Multiply-accumulates of level `level`'s output layer per sample.
    fn output_macs(&self, level: usize) -> usize {
        match &self.fc2 {
            Some(fc2) => fc2.level_macs(level),
            None => {
                let [d_in, d_out] = self.heads[level].weight.dims();
                d_in * d_out
            }
        }
    }

    /// The standalone plain-Burn model of level `level`: compact copies of the level's slices
    /// of every layer, and the configuration that rebuilds it.
    pub fn extract_level(&self, level: usize) -> (MnistCnnConfig, MnistCnn) {
        let [in_channels, height, width] = self.input_shape;
        let config = MnistCnnConfig {
            in_channels,
            height,
            width,
            conv1_channels: self.conv1.level_dims(level).1,
            conv2_channels: self.conv2.level_dims(level).1,
            hidden: self.fc1.level_dims(level).1,
            num_classes: self.level_classes(level),
        };
        let model = MnistCnn {
            conv1: self.conv1.extract_level(level),
            bn1: self.bn1.extract_level(level),
            conv2: self.conv2.extract_level(level),
            bn2: self.bn2.extract_level(level),
            fc1: self.fc1.extract_level(level),
            fc2: match &self.fc2 {
                Some(fc2) => fc2.extract_level(level),
                None => {
                    let head = &self.heads[level];
                    Linear {
                        weight: Param::from_tensor(compact_copy(head.weight.val())),
                        bias: head.bias.as_ref().map(|b| Param::from_tensor(compact_copy(b.val()))),
                    }
                }
            },
        };
        (config, model)
    }
}

impl NestedClassifier for NestedMnistCnn {
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
        match &self.fc2 {
            Some(fc2) => fc2.forward(x, level),
            None => self.heads[level].forward(x),
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
                + self.output_params(level),
            macs: self.conv1.level_macs(level, [h, w])
                + self.conv2.level_macs(level, [h / 2, w / 2])
                + self.fc1.level_macs(level)
                + self.output_macs(level),
        }
    }

    fn level_classes(&self, level: usize) -> usize {
        match &self.fc2 {
            Some(fc2) => fc2.level_dims(level).1,
            None => self.heads[level].weight.dims()[1],
        }
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        let mut layers: Vec<(String, &dyn Maskable)> =
            vec![("conv1".into(), &self.conv1), ("conv2".into(), &self.conv2), ("fc1".into(), &self.fc1)];
        if let Some(fc2) = &self.fc2 {
            layers.push(("fc2".into(), fc2));
        }
        layers
    }

    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        let mut layers: Vec<(String, &mut dyn Maskable)> = vec![
            ("conv1".into(), &mut self.conv1),
            ("conv2".into(), &mut self.conv2),
            ("fc1".into(), &mut self.fc1),
        ];
        if let Some(fc2) = &mut self.fc2 {
            layers.push(("fc2".into(), fc2));
        }
        layers
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
}

impl MnistCnn {
    /// Logits `[batch, classes]` for images `[batch, c, h, w]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = norm_pool_relu(self.conv1.forward(images), &self.bn1);
        let x = norm_pool_relu(self.conv2.forward(x), &self.bn2).flatten::<2>(1, 3);
        self.fc2.forward(relu(self.fc1.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
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
            let (config, plain) = model.extract_level(level);
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
    fn inference_pooling_equals_max_pool2d() {
        let device = Device::flex();
        device.seed(3);
        for shape in [[2, 3, 8, 6], [1, 2, 7, 5]] {
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let expected = max_pool2d(x.clone(), MaxPoolOptions::new([2, 2])).into_data();
            pool(x).into_data().assert_eq(&expected, true);
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
        assert!(model.fc2.is_none());
        assert_eq!((model.level_classes(0), model.level_classes(1)), (3, 10));
        let x = Tensor::<4>::random([2, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(model.forward_level(x.clone(), 0).dims(), [2, 3]);
        // The core's head sits on its 64 hidden units: 64·3 + 3 parameters.
        let base = NestedMnistCnnConfig::new().with_levels("0.5,1.0".parse().unwrap()).init(&device);
        assert_eq!(model.level_cost(0).params, base.level_cost(0).params - (64 * 10 + 10) + 64 * 3 + 3);
        let (plain_config, plain) = model.extract_level(0);
        assert_eq!(plain_config.num_classes, 3);
        plain
            .forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&model.forward_level(x, 0).into_data(), Tolerance::absolute(1e-5));
        for bad in [vec![3], vec![3, 9], vec![0, 10]] {
            let err = config.clone().with_level_classes(bad.clone()).schedule().unwrap_err();
            assert!(matches!(err, ModelError::Invalid(_)), "{bad:?}: {err}");
        }
        assert!(config.clone().with_split_output(true).schedule().is_err());
    }

    #[test]
    fn channel_levels_from_parameter_budgets() {
        let device = Device::flex();
        let config = NestedMnistCnnConfig::new();
        let spec = config.ratios_for_densities(&[0.25, 0.5, 1.0], &device).unwrap();
        let model = config.clone().with_levels(spec).init(&device);
        let full = model.level_cost(2).params as f64;
        for (level, d) in [(0, 0.25), (1, 0.5)] {
            let got = model.level_cost(level).params as f64 / full;
            assert!((got - d).abs() < 0.01, "level {level}: {got}");
        }
        for bad in [&[0.5, 0.5, 1.0][..], &[0.0, 1.0], &[0.5, 0.9], &[]] {
            assert!(config.ratios_for_densities(bad, &device).is_err(), "{bad:?}");
        }
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
