//! Nested residual networks: CIFAR-style ResNet-n and WRN-n-k, an ImageNet-style ResNet-18
//! and a small `mnist-resnet`, with channel scheduling and layer scheduling combined into a
//! lattice of (width, depth) levels.

use burn::module::Module;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use nestednet_heads::{NestedHead, NestedHeadConfig};
use nestednet_nn::{
    LevelBatchNorm, LevelBatchNormConfig, LevelConv2d, LevelConv2dConfig, Maskable, NestedConv2d,
    NestedConv2dConfig,
};
use nestednet_schedule::{LatticeLevel, LatticeSpec, LevelSpec};
use serde::{Deserialize, Serialize};

use crate::{
    LevelCost, LevelRequest, ModelError, ModelFamily, ModelRequest, NestedNetwork, NestedNetworkConfig,
};

/// How a block's shortcut meets a change of channels or resolution (He et al., 2016).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shortcut {
    /// Option B: a 1×1 strided convolution (followed by batch norm in post-activation blocks).
    Projection,
    /// Option A: the input subsampled (`x[:, :, ::s, ::s]`) and padded with zero channels; no
    /// parameters (He et al.'s CIFAR ResNets).
    ZeroPad,
}

/// The first layers, before the residual stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stem {
    /// One 3×3 convolution at stride 1 (CIFAR and MNIST networks).
    Small,
    /// A 7×7 convolution at stride 2 and a 3×3 max-pool at stride 2 (ImageNet networks).
    ImageNet,
}

/// Configuration of a [`NestedResNet`]: three or four stages of basic blocks, every stage but
/// the first halving the resolution.
#[derive(Config, Debug)]
pub struct NestedResNetConfig {
    /// Architecture name for reports, e.g. `resnet-20`, `wrn-32-4`.
    pub name: String,
    /// Image channels.
    pub in_channels: usize,
    /// Image height and width.
    pub image_size: usize,
    /// Stem layers.
    pub stem: Stem,
    /// Output channels of the stem.
    pub stem_channels: usize,
    /// Output channels of every stage's blocks.
    pub stage_channels: Vec<usize>,
    /// Basic blocks in every stage (of the full network).
    pub blocks_per_stage: usize,
    /// Shortcut of blocks that change channels or resolution.
    pub shortcut: Shortcut,
    /// Pre-activation blocks (BN-ReLU-conv, as WRN) instead of post-activation (conv-BN-ReLU,
    /// as the original ResNet).
    pub pre_activation: bool,
    /// Classes the full level predicts.
    pub num_classes: usize,
    /// The trained (width, depth) levels.
    pub lattice: LatticeSpec,
    /// Coarse-to-fine heads: the classes each level predicts, core first (the last must be
    /// `num_classes`). Empty: every level predicts `num_classes`.
    #[config(default = "Vec::new()")]
    pub level_classes: Vec<usize>,
    /// Give every level its own stem convolution (the paper's un-nested first layer).
    #[config(default = false)]
    pub unnested_first_conv: bool,
    /// Give every level its own classifier (the paper's un-nested output layer).
    #[config(default = false)]
    pub unnested_output: bool,
}

impl NestedResNetConfig {
    fn cifar(name: String, stem: usize, stages: Vec<usize>, blocks: usize, classes: usize) -> Self {
        let lattice = LatticeSpec::grid(vec![1.0], vec![blocks]);
        Self::new(name, 3, 32, Stem::Small, stem, stages, blocks, Shortcut::ZeroPad, false, classes, lattice)
    }

    /// He et al.'s CIFAR ResNet-`depth` (`depth = 6n + 2`: 3 stages of `n` basic blocks with 16,
    /// 32 and 64 channels, zero-padding shortcuts), e.g. ResNet-20, -32, -56.
    pub fn resnet(depth: usize, num_classes: usize) -> crate::Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(ModelError::Invalid(format!(
                "ResNet-{depth}: a CIFAR ResNet has depth 6n+2 (8, 14, 20, 32, 56, 110, ...)"
            )));
        }
        Ok(Self::cifar(format!("resnet-{depth}"), 16, vec![16, 32, 64], (depth - 2) / 6, num_classes))
    }

    /// Zagoruyko & Komodakis' WRN-`depth`-`k`: pre-activation basic blocks with 16k, 32k and
    /// 64k channels and projection shortcuts. `depth = 6n + 4` is the authors' count (WRN-16-2,
    /// WRN-28-10: `n = (depth − 4)/6` blocks per stage); `depth = 6n + 2` is the NestedNet
    /// paper's count (WRN-32-4, WRN-14-4: `n = (depth − 2)/6`). The two forms never overlap.
    pub fn wrn(depth: usize, k: usize, num_classes: usize) -> crate::Result<Self> {
        let blocks = match depth {
            d if d >= 10 && (d - 4).is_multiple_of(6) => (d - 4) / 6,
            d if d >= 8 && (d - 2).is_multiple_of(6) => (d - 2) / 6,
            _ => {
                return Err(ModelError::Invalid(format!(
                    "WRN-{depth}-{k}: the depth must be 6n+4 (WRN-16-2, WRN-28-10) or 6n+2 (WRN-32-4, WRN-14-4)"
                )));
            }
        };
        if k == 0 {
            return Err(ModelError::Invalid("WRN width factor k must be at least 1".into()));
        }
        let mut config =
            Self::cifar(format!("wrn-{depth}-{k}"), 16, vec![16 * k, 32 * k, 64 * k], blocks, num_classes);
        config.shortcut = Shortcut::Projection;
        config.pre_activation = true;
        Ok(config)
    }

    /// The ImageNet ResNet-18: 7×7 stem and max-pool, 4 stages of 2 basic blocks with 64 to
    /// 512 channels, projection shortcuts.
    pub fn resnet18(num_classes: usize, image_size: usize) -> Self {
        Self::new(
            "resnet-18".into(),
            3,
            image_size,
            Stem::ImageNet,
            64,
            vec![64, 128, 256, 512],
            2,
            Shortcut::Projection,
            false,
            num_classes,
            LatticeSpec::grid(vec![1.0], vec![2]),
        )
    }

    /// `mnist-resnet`: a small ResNet-14 for 28×28 grey images (3 stages of 2 blocks with 8,
    /// 16 and 32 channels, zero-padding shortcuts).
    pub fn mnist_resnet(num_classes: usize) -> Self {
        let mut config = Self::cifar("mnist-resnet".into(), 8, vec![8, 16, 32], 2, num_classes);
        config.in_channels = 1;
        config.image_size = 28;
        config
    }

    /// The residual network called `name` (`resnet-N`, `wrn-D-K`, `resnet-18`, `mnist-resnet`)
    /// for images of `in_channels` × `image_size`² and `num_classes` classes, with one level
    /// (set [`lattice`](Self::lattice) for more).
    pub fn from_name(
        name: &str,
        in_channels: usize,
        image_size: usize,
        num_classes: usize,
    ) -> crate::Result<Self> {
        let number = |text: &str| {
            text.parse::<usize>()
                .map_err(|_| ModelError::Invalid(format!("`{name}`: `{text}` is not a number")))
        };
        let mut config = match name {
            "mnist-resnet" => Self::mnist_resnet(num_classes),
            "resnet-18" => Self::resnet18(num_classes, image_size),
            _ => match name.split('-').collect::<Vec<_>>()[..] {
                ["resnet", depth] => Self::resnet(number(depth)?, num_classes)?,
                ["wrn", depth, k] => Self::wrn(number(depth)?, number(k)?, num_classes)?,
                _ => {
                    return Err(ModelError::Invalid(format!(
                        "unknown model `{name}` (use mnist-cnn, mnist-resnet, resnet-N, wrn-D-K or resnet-18)"
                    )));
                }
            },
        };
        config.in_channels = in_channels;
        config.image_size = image_size;
        config.num_classes = num_classes;
        Ok(config)
    }

    /// Checks the dimensions and the lattice.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(format!("{}: {m}", self.name)));
        if self.in_channels == 0 || self.stem_channels == 0 || self.num_classes == 0 || self.image_size == 0 {
            return bad("image channels, image size, stem channels and classes must be positive".into());
        }
        if self.stage_channels.is_empty() || self.stage_channels.contains(&0) {
            return bad("give at least one stage, each with at least one channel".into());
        }
        if self.blocks_per_stage == 0 {
            return bad("a stage needs at least one block".into());
        }
        let mut previous = self.stem_channels;
        for &c in &self.stage_channels {
            if self.shortcut == Shortcut::ZeroPad && c < previous {
                return bad(format!("zero-padding shortcuts cannot shrink {previous} channels to {c}"));
            }
            previous = c;
        }
        self.lattice.validate(self.blocks_per_stage)?;
        let n = self.lattice.num_levels();
        crate::family::check_level_classes(&self.level_classes, n, self.num_classes)
    }

    /// The classes each level predicts.
    fn resolved_level_classes(&self) -> Vec<usize> {
        if self.level_classes.is_empty() {
            vec![self.num_classes; self.lattice.num_levels()]
        } else {
            self.level_classes.clone()
        }
    }

    /// The smallest square image the network takes: every stride-2 stage (and the ImageNet
    /// stem's two stride-2 steps) must see at least 2 pixels.
    pub fn min_image_size(&self) -> usize {
        let halvings =
            self.stage_channels.len().saturating_sub(1) + if self.stem == Stem::ImageNet { 2 } else { 0 };
        1 << halvings
    }

    /// Initializes the network on `device`, or says what is wrong with the configuration.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedResNet> {
        self.validate()?;
        let levels = self.lattice.levels();
        let widths = |c: usize| -> Vec<usize> {
            levels.iter().map(|l| ((l.width * c as f64).round() as usize).clamp(1, c)).collect()
        };
        let n = levels.len();
        let conv = |c_in: usize, c_out: usize, in_widths: Vec<usize>, kernel: usize, stride: usize| {
            NestedConv2dConfig::new([c_in, c_out], [kernel, kernel], in_widths, widths(c_out))
                .with_stride([stride, stride])
                .with_padding([kernel / 2, kernel / 2])
                .with_bias(false)
                // He et al.'s initialisation, as torchvision's ResNets.
                .with_initializer(Initializer::KaimingNormal { gain: 2f64.sqrt(), fan_out_only: true })
                .init(device)
        };
        let norm = |c: usize| LevelBatchNormConfig::new(widths(c)).init(device);
        let (stem_kernel, stem_stride) = match self.stem {
            Stem::Small => (3, 1),
            Stem::ImageNet => (7, 2),
        };
        let head = NestedHeadConfig::new(
            *self.stage_channels.last().expect("validated"),
            widths(*self.stage_channels.last().expect("validated")),
            self.resolved_level_classes(),
        )
        .with_private(self.unnested_output);
        head.kind()?;
        let stem = LevelConv2dConfig::new(
            NestedConv2dConfig::new(
                [self.in_channels, self.stem_channels],
                [stem_kernel, stem_kernel],
                vec![self.in_channels; n],
                widths(self.stem_channels),
            )
            .with_stride([stem_stride, stem_stride])
            .with_padding([stem_kernel / 2, stem_kernel / 2])
            .with_bias(false)
            .with_initializer(Initializer::KaimingNormal { gain: 2f64.sqrt(), fan_out_only: true }),
        )
        .with_private(self.unnested_first_conv)
        .init(device);
        // A pre-activation network's first block normalises the stem's output itself.
        let stem_norm = (!self.pre_activation).then(|| norm(self.stem_channels));
        let mut blocks = Vec::new();
        let mut c_in = self.stem_channels;
        for (s, &c_out) in self.stage_channels.iter().enumerate() {
            for b in 0..self.blocks_per_stage {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let changes = stride != 1 || c_in != c_out;
                let projection = (changes && self.shortcut == Shortcut::Projection).then(|| {
                    let sc = conv(c_in, c_out, widths(c_in), 1, stride);
                    (sc, (!self.pre_activation).then(|| norm(c_out)))
                });
                blocks.push(NestedBasicBlock {
                    conv1: conv(c_in, c_out, widths(c_in), 3, stride),
                    bn1: norm(if self.pre_activation { c_in } else { c_out }),
                    conv2: conv(c_out, c_out, widths(c_out), 3, 1),
                    bn2: norm(c_out),
                    shortcut_conv: projection.as_ref().map(|(c, _)| c.clone()),
                    shortcut_norm: projection.and_then(|(_, bn)| bn),
                    stage: s,
                    index: b,
                    stride,
                    zero_pad: changes && self.shortcut == Shortcut::ZeroPad,
                    pre_activation: self.pre_activation,
                });
                c_in = c_out;
            }
        }
        let last = *self.stage_channels.last().expect("validated");
        let fc = head.try_init(device)?;
        Ok(NestedResNet {
            stem,
            stem_norm,
            stem_pool: (self.stem == Stem::ImageNet).then(|| {
                MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init()
            }),
            blocks,
            final_norm: self.pre_activation.then(|| norm(last)),
            fc,
            depths: levels.iter().map(|l| l.depth).collect(),
            input_shape: [self.in_channels, self.image_size, self.image_size],
            name: self.name.clone(),
            level_names: {
                // Levels of equal width and depth (they differ by their weight masks) go by
                // number.
                let names: Vec<String> = levels.iter().map(LatticeLevel::name).collect();
                let unique = names.iter().enumerate().all(|(i, n)| !names[..i].contains(n));
                if unique { names } else { (0..names.len()).map(|k| format!("L{k}")).collect() }
            },
        })
    }

    /// [`try_init`](Self::try_init), panicking on an invalid configuration.
    pub fn init(&self, device: &Device) -> NestedResNet {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A basic residual block (two 3×3 convolutions) with per-level batch norms.
#[derive(Module, Debug)]
pub struct NestedBasicBlock {
    /// First 3×3 convolution (strided when the block halves the resolution).
    pub conv1: NestedConv2d,
    /// Batch norm before `conv1` (pre-activation) or after it (post-activation).
    pub bn1: LevelBatchNorm,
    /// Second 3×3 convolution.
    pub conv2: NestedConv2d,
    /// Batch norm before or after `conv2`.
    pub bn2: LevelBatchNorm,
    /// Projection shortcut, when the block changes shape and shortcuts project.
    pub shortcut_conv: Option<NestedConv2d>,
    /// Batch norm of the projection (post-activation blocks).
    pub shortcut_norm: Option<LevelBatchNorm>,
    /// Stage of the block.
    pub stage: usize,
    /// Position of the block in its stage.
    pub index: usize,
    /// Stride of the block.
    pub stride: usize,
    /// Whether the shortcut subsamples and zero-pads.
    pub zero_pad: bool,
    /// Pre-activation ordering.
    pub pre_activation: bool,
}

impl NestedBasicBlock {
    fn forward(&self, x: Tensor<4>, level: usize) -> Tensor<4> {
        let shortcut_conv = |input: Tensor<4>| {
            let conv = self.shortcut_conv.as_ref().expect("projection");
            let y = conv.forward(input, level);
            match &self.shortcut_norm {
                Some(bn) => bn.forward(y, level),
                None => y,
            }
        };
        if self.pre_activation {
            let activated = relu(self.bn1.forward(x.clone(), level));
            let y = self.conv1.forward(activated.clone(), level);
            let y = self.conv2.forward(relu(self.bn2.forward(y, level)), level);
            let identity = if self.shortcut_conv.is_some() {
                shortcut_conv(activated)
            } else if self.zero_pad {
                self.zero_pad_shortcut(x, level)
            } else {
                x
            };
            y + identity
        } else {
            let y = relu(self.bn1.forward(self.conv1.forward(x.clone(), level), level));
            let y = self.bn2.forward(self.conv2.forward(y, level), level);
            let identity = if self.shortcut_conv.is_some() {
                shortcut_conv(x)
            } else if self.zero_pad {
                self.zero_pad_shortcut(x, level)
            } else {
                x
            };
            relu(y + identity)
        }
    }

    /// Option A: `x[:, :, ::s, ::s]` padded with zero channels up to the level's output width.
    fn zero_pad_shortcut(&self, x: Tensor<4>, level: usize) -> Tensor<4> {
        let x = match self.stride {
            1 => x,
            s => {
                let [b, c, h, w] = x.dims();
                if h % s == 0 && w % s == 0 {
                    // The first pixel of every s×s cell, by reshape and unit-step slices: the
                    // same values as a step slice, whose backward (a step `slice_assign`)
                    // fails on `tch` for non-contiguous gradients (burn-tch 0.22.1 calls
                    // `view(-1)` there).
                    x.reshape([b, c, h / s, s, w / s, s]).slice(s![.., .., .., 0..1, .., 0..1]).reshape([
                        b,
                        c,
                        h / s,
                        w / s,
                    ])
                } else {
                    let s = s as isize;
                    x.slice(s![.., .., ..;s, ..;s])
                }
            }
        };
        let [b, c, h, w] = x.dims();
        let (_, out) = self.conv2.level_dims(level);
        if out == c {
            return x;
        }
        let zeros = Tensor::<4>::zeros([b, out - c, h, w], &x.device());
        Tensor::cat(vec![x, zeros], 1)
    }

    fn level_params(&self, level: usize) -> usize {
        self.conv1.level_num_params(level)
            + self.bn1.level_num_params(level)
            + self.conv2.level_num_params(level)
            + self.bn2.level_num_params(level)
            + self.shortcut_conv.as_ref().map_or(0, |c| c.level_num_params(level))
            + self.shortcut_norm.as_ref().map_or(0, |n| n.level_num_params(level))
    }

    /// MACs for an input of `size`, and the output size.
    fn level_macs(&self, level: usize, size: [usize; 2]) -> (usize, [usize; 2]) {
        let out = self.conv1.output_size(size);
        let macs = self.conv1.level_macs(level, size)
            + self.conv2.level_macs(level, out)
            + self.shortcut_conv.as_ref().map_or(0, |c| c.level_macs(level, size));
        (macs, out)
    }
}

/// A nested residual network: level `k` is a (width, depth) pair of its lattice; it runs the
/// leading channels of every layer and the first `depth` blocks of every stage, with its own
/// batch norms throughout. The stem and the classifier are shared; the image input and the
/// classes are not split.
#[derive(Module, Debug)]
pub struct NestedResNet {
    /// Stem convolution (nested, or private per level when un-nested).
    pub stem: LevelConv2d,
    /// Stem batch norm (post-activation networks).
    pub stem_norm: Option<LevelBatchNorm>,
    /// ImageNet stem's max-pool.
    pub stem_pool: Option<MaxPool2d>,
    /// Every block, stage by stage.
    pub blocks: Vec<NestedBasicBlock>,
    /// Final batch norm of pre-activation networks.
    pub final_norm: Option<LevelBatchNorm>,
    /// Classifier on the globally average-pooled features (shared, or one per level).
    pub fc: NestedHead,
    /// Blocks per stage each level runs.
    pub depths: Vec<usize>,
    /// `[channels, height, width]` of the images.
    pub input_shape: [usize; 3],
    /// Architecture name.
    pub name: String,
    /// Each level's name (`w0.25-d2`).
    pub level_names: Vec<String>,
}

impl NestedResNet {
    fn runs(&self, block: &NestedBasicBlock, level: usize) -> bool {
        block.index < self.depths[level]
    }

    fn stem_size(&self) -> [usize; 2] {
        let [_, h, w] = self.input_shape;
        let size = self.stem.output_size([h, w]);
        match &self.stem_pool {
            Some(_) => size.map(|x| (x + 2 - 3) / 2 + 1),
            None => size,
        }
    }

    /// The configuration of level `level` as a standalone one-level network (its widths and
    /// depth, named e.g. `wrn-32-4/w0.25-d2`).
    pub fn level_config(&self, level: usize) -> NestedResNetConfig {
        let depth = self.depths[level];
        let running = || self.blocks.iter().filter(move |b| self.runs(b, level));
        let stages = running().map(|b| b.stage).max().map_or(0, |s| s + 1);
        let stage_channels: Vec<usize> = (0..stages)
            .map(|s| running().find(|b| b.stage == s).expect("every stage runs").conv2.level_dims(level).1)
            .collect();
        let [in_channels, image_size, _] = self.input_shape;
        NestedResNetConfig::new(
            format!("{}/{}", self.name, self.level_names[level]),
            in_channels,
            image_size,
            if self.stem_pool.is_some() { Stem::ImageNet } else { Stem::Small },
            self.stem.level_dims(level).1,
            stage_channels,
            depth,
            if running().any(|b| b.zero_pad) { Shortcut::ZeroPad } else { Shortcut::Projection },
            self.blocks[0].pre_activation,
            self.level_classes(level),
            LatticeSpec::grid(vec![1.0], vec![depth]),
        )
    }

    /// `stage{s}.block{b}.` of a weight layer's name, as (stage, block) indices from 0.
    fn block_of_layer(layer: &str) -> Option<(usize, usize)> {
        let rest = layer.strip_prefix("stage")?;
        let (stage, rest) = rest.split_once(".block")?;
        let (block, _) = rest.split_once('.')?;
        Some((stage.parse::<usize>().ok()?.checked_sub(1)?, block.parse::<usize>().ok()?.checked_sub(1)?))
    }
}

impl NestedNetwork for NestedResNet {
    type Level = NestedResNet;
    type Input = Tensor<4>;
    type Output = Tensor<2>;

    fn num_levels(&self) -> usize {
        self.depths.len()
    }

    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        let [_, c, h, w] = images.dims();
        assert_eq!(
            [c, h, w],
            self.input_shape,
            "{}: expected images of [channels, height, width] = {:?}, got {:?}",
            self.name,
            self.input_shape,
            [c, h, w]
        );
        let mut x = self.stem.forward(images, level);
        if let Some(norm) = &self.stem_norm {
            x = relu(norm.forward(x, level));
        }
        if let Some(pool) = &self.stem_pool {
            x = pool.forward(x);
        }
        for block in self.blocks.iter().filter(|b| self.runs(b, level)) {
            x = block.forward(x, level);
        }
        if let Some(norm) = &self.final_norm {
            x = relu(norm.forward(x, level));
        }
        let [b, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([b, c]);
        self.fc.forward(pooled, level)
    }

    /// Every level has its own batch norms (`LevelBatchNorm`): nothing a forward pass writes is
    /// shared.
    fn levels_train_side_by_side(&self) -> bool {
        true
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Level `level` as a standalone network: a one-level `NestedResNet` with compact copies of
    /// the level's channels and only its blocks ([`level_config`](NestedResNet::level_config)
    /// rebuilds its shape).
    fn extract_level(&self, level: usize) -> NestedResNet {
        let blocks: Vec<NestedBasicBlock> = self
            .blocks
            .iter()
            .filter(|b| self.runs(b, level))
            .map(|b| NestedBasicBlock {
                conv1: b.conv1.single_level(level),
                bn1: b.bn1.single_level(level),
                conv2: b.conv2.single_level(level),
                bn2: b.bn2.single_level(level),
                shortcut_conv: b.shortcut_conv.as_ref().map(|c| c.single_level(level)),
                shortcut_norm: b.shortcut_norm.as_ref().map(|n| n.single_level(level)),
                stage: b.stage,
                index: b.index,
                stride: b.stride,
                zero_pad: b.zero_pad,
                pre_activation: b.pre_activation,
            })
            .collect();
        let depth = self.depths[level];
        NestedResNet {
            stem: self.stem.single_level(level),
            stem_norm: self.stem_norm.as_ref().map(|n| n.single_level(level)),
            stem_pool: self.stem_pool.clone(),
            blocks,
            final_norm: self.final_norm.as_ref().map(|n| n.single_level(level)),
            fc: self.fc.single_level(level),
            depths: vec![depth],
            input_shape: self.input_shape,
            name: format!("{}/{}", self.name, self.level_names[level]),
            level_names: vec![format!("w1-d{depth}")],
        }
    }

    fn level_name(&self, level: usize) -> String {
        self.level_names[level].clone()
    }

    /// A number, a name (`w0.25-d2`) or a pair (`0.25,2`: width, depth).
    fn find_level(&self, key: &str) -> crate::Result<usize> {
        let by_pair = key.split_once(',').and_then(|(w, d)| {
            let (w, d) = (w.trim().parse::<f64>().ok()?, d.trim().parse::<usize>().ok()?);
            let name = format!("w{w}-d{d}");
            self.level_names.iter().position(|n| *n == name)
        });
        match by_pair {
            Some(level) => Ok(level),
            None => {
                let n = self.num_levels();
                let key = key.trim();
                let number = key.strip_prefix('L').unwrap_or(key).parse::<usize>().ok();
                number
                    .filter(|&k| k < n)
                    .or_else(|| self.level_names.iter().position(|l| l == key))
                    .ok_or_else(|| ModelError::UnknownLevel {
                        key: key.to_string(),
                        levels: format!(
                            "{} (by number 0..={}, name, or pair `width,depth`)",
                            self.level_names.join(", "),
                            n - 1
                        ),
                    })
            }
        }
    }

    fn level_cost(&self, level: usize) -> LevelCost {
        let [_, h, w] = self.input_shape;
        let mut params = self.stem.level_num_params(level)
            + self.stem_norm.as_ref().map_or(0, |n| n.level_num_params(level));
        let mut macs = self.stem.level_macs(level, [h, w]);
        let mut size = self.stem_size();
        for block in &self.blocks {
            if self.runs(block, level) {
                params += block.level_params(level);
                let (m, out) = block.level_macs(level, size);
                macs += m;
                size = out;
            } else if block.index == 0 {
                unreachable!("every level runs the first block of every stage");
            }
        }
        params += self.final_norm.as_ref().map_or(0, |n| n.level_num_params(level));
        params += self.fc.level_num_params(level);
        macs += self.fc.level_macs(level);
        LevelCost { params, macs }
    }

    fn level_classes(&self, level: usize) -> usize {
        self.fc.level_classes(level)
    }

    fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
        let mut widths = vec![("stem".to_string(), self.stem.level_dims(level).1)];
        for block in self.blocks.iter().filter(|b| b.index == 0) {
            widths.push((format!("stage{}", block.stage + 1), block.conv2.level_dims(level).1));
        }
        widths.push(("blocks_per_stage".into(), self.depths[level]));
        widths
    }

    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        let mut layers: Vec<(String, &dyn Maskable)> = vec![("stem".into(), &self.stem)];
        for block in &self.blocks {
            let name = |layer: &str| format!("stage{}.block{}.{layer}", block.stage + 1, block.index + 1);
            layers.push((name("conv1"), &block.conv1));
            layers.push((name("conv2"), &block.conv2));
            if let Some(sc) = &block.shortcut_conv {
                layers.push((name("shortcut"), sc));
            }
        }
        layers.push(("fc".into(), &self.fc));
        layers
    }

    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        let mut layers: Vec<(String, &mut dyn Maskable)> = vec![("stem".into(), &mut self.stem)];
        for block in &mut self.blocks {
            let prefix = format!("stage{}.block{}.", block.stage + 1, block.index + 1);
            layers.push((format!("{prefix}conv1"), &mut block.conv1));
            layers.push((format!("{prefix}conv2"), &mut block.conv2));
            if let Some(sc) = &mut block.shortcut_conv {
                layers.push((format!("{prefix}shortcut"), sc));
            }
        }
        layers.push(("fc".into(), &mut self.fc));
        layers
    }

    fn level_uses_layer(&self, layer: &str, level: usize) -> bool {
        match Self::block_of_layer(layer) {
            Some((_, block)) => block < self.depths[level],
            None => true,
        }
    }

    /// torchvision's ResNet names: `conv1`, `bn1`, `layer{s}.{b}.{conv1,bn1,conv2,bn2}`,
    /// `layer{s}.{b}.downsample.{0,1}` (projection and its batch norm), `fc`; pre-activation
    /// networks' final batch norm is `final_bn`.
    fn export_name(&self, path: &str) -> String {
        // A single level's batch norms are one-element `LevelBatchNorm`s, its stem and head
        // one-level shared layers.
        let path = path.replace(".norms.0.", ".").replace(".shared.", ".");
        if let Some(rest) = path.strip_prefix("stem.") {
            return format!("conv1.{rest}");
        }
        if let Some(rest) = path.strip_prefix("stem_norm.") {
            return format!("bn1.{rest}");
        }
        if let Some(rest) = path.strip_prefix("final_norm.") {
            return format!("final_bn.{rest}");
        }
        if let Some(rest) = path.strip_prefix("blocks.")
            && let Some((index, rest)) = rest.split_once('.')
            && let Some(block) = index.parse::<usize>().ok().and_then(|i| self.blocks.get(i))
        {
            let rest =
                rest.replace("shortcut_conv.", "downsample.0.").replace("shortcut_norm.", "downsample.1.");
            return format!("layer{}.{}.{rest}", block.stage + 1, block.index);
        }
        path
    }
}

impl NestedNetworkConfig for NestedResNetConfig {
    type Network = NestedResNet;

    fn init_network(&self, device: &Device) -> crate::Result<NestedResNet> {
        self.try_init(device)
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    /// Level `level`'s channels and depth as a one-level network of its own.
    fn level_alone(&self, level: usize) -> Option<Self> {
        self.validate().ok()?;
        let lattice = self.lattice.levels();
        let l = lattice.get(level)?;
        let width = |c: usize| ((l.width * c as f64).round() as usize).clamp(1, c);
        let classes = self.resolved_level_classes()[level];
        let alone = Self {
            name: format!("{}/{}", self.name, l.name()),
            stem_channels: width(self.stem_channels),
            stage_channels: self.stage_channels.iter().map(|&c| width(c)).collect(),
            blocks_per_stage: l.depth,
            num_classes: classes,
            lattice: LatticeSpec::grid(vec![1.0], vec![l.depth]),
            level_classes: Vec::new(),
            unnested_first_conv: false,
            unnested_output: false,
            ..self.clone()
        };
        alone.validate().ok().map(|_| alone)
    }
}

impl ModelFamily for NestedResNetConfig {
    const FAMILY: &'static str = "resnet";

    fn claims(name: &str) -> bool {
        name == "mnist-resnet" || name.starts_with("resnet-") || name.starts_with("wrn-")
    }

    fn names() -> &'static [&'static str] {
        &[
            "mnist-resnet",
            "resnet-N (N = 6n+2: resnet-20, resnet-56, ...)",
            "wrn-D-K (wrn-16-2, wrn-32-4, ...)",
            "resnet-18",
        ]
    }

    fn from_request(request: &ModelRequest) -> Option<crate::Result<Self>> {
        let name = request.name.as_str();
        if !Self::claims(name) {
            return None;
        }
        Some((|| {
            let [channels, height, width] = request.input_shape;
            if height != width {
                return Err(request.input_error(name, "residual networks here take square images"));
            }
            let mut config = Self::from_name(name, channels, height, request.num_classes)?;
            if height < config.min_image_size() {
                return Err(request.input_error(
                    name,
                    format!("its stride-2 steps need images of at least {0}x{0}", config.min_image_size()),
                ));
            }
            config.lattice = match &request.levels {
                LevelRequest::Lattice(lattice) => lattice.clone(),
                LevelRequest::Channels(LevelSpec::Ratios(ratios)) => {
                    LatticeSpec::widths_only(ratios.clone(), config.blocks_per_stage)
                }
                LevelRequest::Channels(LevelSpec::Channels(_)) => {
                    return Err(ModelError::Invalid(format!(
                        "{name}: give its levels as width ratios (and depths), not per-layer channel counts"
                    )));
                }
            };
            config.level_classes = request.level_classes.clone();
            config.unnested_first_conv = request.unnested_first_conv;
            config.unnested_output = request.unnested_output;
            config.validate()?;
            Ok(config)
        })())
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;

    use super::*;

    fn cost(config: &NestedResNetConfig, level: usize) -> LevelCost {
        config.init(&Device::flex()).level_cost(level)
    }

    /// ResNet-20 on CIFAR-10, counted by hand (He et al.: 0.27M parameters).
    #[test]
    fn resnet20_costs_match_a_hand_count() {
        let stem = 16 * 3 * 9 + 2 * 16;
        // Stage 1: 3 blocks of two 16→16 convs, each with a BN.
        let stage1 = 3 * (2 * 16 * 16 * 9 + 2 * 2 * 16);
        // Stage 2: 16→32 (stride 2) + 32→32, then 2 blocks of 32→32; option A: no parameters.
        let stage2 = (32 * 16 * 9 + 32 * 32 * 9 + 2 * 64) + 2 * (2 * 32 * 32 * 9 + 2 * 64);
        let stage3 = (64 * 32 * 9 + 64 * 64 * 9 + 2 * 128) + 2 * (2 * 64 * 64 * 9 + 2 * 128);
        let fc = 64 * 10 + 10;
        let params = stem + stage1 + stage2 + stage3 + fc;
        assert_eq!(params, 269_722);
        let macs = 32 * 32 * 16 * 3 * 9
            + 32 * 32 * 6 * 16 * 16 * 9
            + 16 * 16 * (32 * 16 * 9 + 5 * 32 * 32 * 9)
            + 8 * 8 * (64 * 32 * 9 + 5 * 64 * 64 * 9)
            + 64 * 10;
        assert_eq!(macs, 40_551_040);
        let config = NestedResNetConfig::resnet(20, 10).unwrap();
        assert_eq!(cost(&config, 0), LevelCost { params, macs });
    }

    /// WRN-16-2 on CIFAR-10 (pre-activation, projection shortcuts), counted by hand.
    #[test]
    fn wrn16_2_costs_match_a_hand_count() {
        let stem = 16 * 3 * 9; // no BN: the first block's pre-activation normalises it
        // (BN of the input, conv1, BN, conv2, 1×1 projection) + a block without projection.
        let stage = |c_in: usize, c: usize| {
            (2 * c_in + c * c_in * 9 + 2 * c + c * c * 9 + c_in * c) + (2 * c + c * c * 9 + 2 * c + c * c * 9)
        };
        let params = stem + stage(16, 32) + stage(32, 64) + stage(64, 128) + 2 * 128 + 128 * 10 + 10;
        assert_eq!(params, 691_674);
        let stage_macs = |c_in: usize, c: usize, pixels: usize| {
            pixels * (c * c_in * 9 + c * c * 9 + c_in * c + 2 * c * c * 9)
        };
        let macs = 32 * 32 * 16 * 3 * 9
            + stage_macs(16, 32, 32 * 32)
            + stage_macs(32, 64, 16 * 16)
            + stage_macs(64, 128, 8 * 8)
            + 128 * 10;
        assert_eq!(macs, 101_106_944);
        let config = NestedResNetConfig::wrn(16, 2, 10).unwrap();
        assert_eq!(cost(&config, 0), LevelCost { params, macs });
    }

    /// The depth-1 level of a ResNet-20 is a ResNet-8, parameter for parameter; the lattice
    /// levels of WRN-32-4 (paper convention) order as the paper's Figure 4.
    #[test]
    fn layer_scheduling_gives_the_shallower_network() {
        let mut r20 = NestedResNetConfig::resnet(20, 10).unwrap();
        r20.lattice = "1;1,3".parse().unwrap();
        let r8 = NestedResNetConfig::resnet(8, 10).unwrap();
        assert_eq!(cost(&r20, 0), cost(&r8, 0));
        let mut wrn = NestedResNetConfig::wrn(32, 4, 100).unwrap();
        assert_eq!(wrn.blocks_per_stage, 5);
        wrn.lattice = "0.25,1;2,5".parse().unwrap();
        let model = wrn.init(&Device::flex());
        let costs: Vec<LevelCost> = (0..4).map(|k| model.level_cost(k)).collect();
        assert_eq!(model.level_names, ["w0.25-d2", "w0.25-d5", "w1-d2", "w1-d5"]);
        // WRN-14-1 < WRN-32-1 < WRN-14-4 < WRN-32-4 in parameters and MACs.
        assert!(costs.windows(2).all(|w| w[0].params < w[1].params && w[0].macs < w[1].macs), "{costs:?}");
        // The paper's Table 2: WRN-32-4 holds 7.4M parameters, WRN-14-4 2.7M.
        assert!((7_300_000..7_500_000).contains(&costs[3].params), "{}", costs[3].params);
        assert!((2_600_000..2_800_000).contains(&costs[2].params), "{}", costs[2].params);
    }

    /// A level runs only its blocks and channels: zeroing the second block of every stage
    /// leaves the depth-1 levels' outputs unchanged and changes the depth-2 levels'.
    #[test]
    fn levels_run_only_their_blocks() {
        let device = Device::flex();
        let mut config = NestedResNetConfig::mnist_resnet(10);
        config.lattice = "0.5,1;1,2".parse().unwrap();
        let model = config.init(&device);
        let images = Tensor::<4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        let before: Vec<Tensor<2>> = (0..4).map(|k| model.forward_level(images.clone(), k)).collect();
        let mut changed = model.clone();
        for block in changed.blocks.iter_mut().filter(|b| b.index == 1) {
            let w = block.conv2.weight.val();
            block.conv2.weight = Param::from_tensor(w.clone().add_scalar(1.0));
        }
        for (k, before) in before.iter().enumerate() {
            let after = changed.forward_level(images.clone(), k);
            assert_eq!(after.dims(), [2, 10]);
            let same = after.into_data() == before.clone().into_data();
            assert_eq!(same, model.depths[k] == 1, "level {}", model.level_names[k]);
        }
    }

    /// An extracted level computes what the nested level computes, and its configuration
    /// rebuilds a network of the same shape.
    #[test]
    fn extracted_levels_equal_nested_levels() {
        let device = Device::flex();
        for mut config in [NestedResNetConfig::mnist_resnet(10), {
            let mut w = NestedResNetConfig::wrn(16, 2, 10).unwrap();
            w.in_channels = 1;
            w.image_size = 28;
            w
        }] {
            config.lattice = "0.5,1;1,2".parse().unwrap();
            let model = config.init(&device);
            let images = Tensor::<4>::random([3, 1, 28, 28], burn::tensor::Distribution::Default, &device);
            for level in 0..4 {
                let (small_config, small) = (model.level_config(level), model.extract_level(level));
                let nested = model.forward_level(images.clone(), level);
                let alone = small.forward_level(images.clone(), 0);
                nested
                    .into_data()
                    .assert_approx_eq::<f32>(&alone.into_data(), burn::tensor::Tolerance::default());
                assert_eq!(small.level_cost(0), model.level_cost(level));
                let rebuilt = small_config.init(&device);
                assert_eq!(rebuilt.level_cost(0), small.level_cost(0), "{}", small_config.name);
            }
        }
    }

    /// A level alone is the configuration of the level's extracted network (the baseline a
    /// level is compared with trains exactly that architecture).
    #[test]
    fn a_level_alone_is_the_extracted_levels_architecture() {
        let device = Device::flex();
        for name in ["mnist-resnet", "wrn-16-2", "resnet-20"] {
            let mut config = NestedResNetConfig::from_name(name, 1, 28, 10).unwrap();
            config.lattice = LatticeSpec::grid(vec![0.5, 1.0], vec![1, config.blocks_per_stage]);
            let model = config.init(&device);
            for level in 0..model.num_levels() {
                let alone = config.level_alone(level).unwrap();
                let json = |c: &NestedResNetConfig| serde_json::to_value(c).unwrap();
                assert_eq!(json(&alone), json(&model.level_config(level)), "{name} level {level}");
                assert_eq!(alone.init(&device).level_cost(0), model.level_cost(level));
            }
        }
    }

    #[test]
    fn imagenet_resnet18_and_bad_configs() {
        let config = NestedResNetConfig::resnet18(100, 64);
        let model = config.init(&Device::flex());
        // 11.2M parameters with 100 classes (torchvision: 11,689,512 with 1000 classes).
        let params = model.level_cost(0).params;
        assert_eq!(params, 11_689_512 - 512 * 900 - 900);
        let out = model.forward_level(Tensor::zeros([1, 3, 64, 64], &Device::flex()), 0);
        assert_eq!(out.dims(), [1, 100]);
        let err = |r: crate::Result<NestedResNetConfig>| r.unwrap_err().to_string();
        let named = NestedResNetConfig::from_name("wrn-32-4", 3, 32, 100).unwrap();
        assert_eq!((named.blocks_per_stage, named.stage_channels.clone()), (5, vec![64, 128, 256]));
        let named = NestedResNetConfig::from_name("resnet-32", 1, 28, 10).unwrap();
        assert_eq!((named.blocks_per_stage, named.in_channels, named.image_size), (5, 1, 28));
        assert!(err(NestedResNetConfig::from_name("vgg-16", 3, 32, 10)).contains("unknown model `vgg-16`"));
        assert!(err(NestedResNetConfig::from_name("wrn-x-4", 3, 32, 10)).contains("`x` is not a number"));
        assert!(err(NestedResNetConfig::resnet(21, 10)).contains("6n+2"));
        assert!(err(NestedResNetConfig::wrn(15, 4, 10)).contains("6n+4"));
        let mut bad = NestedResNetConfig::mnist_resnet(10);
        bad.lattice = "0.5,1;1,3".parse().unwrap();
        assert!(bad.try_init(&Device::flex()).unwrap_err().to_string().contains("2 blocks per stage"));
    }
}
