//! A nested vision transformer (ViT, Dosovitskiy et al. 2021): patches of the image embedded
//! by a strided convolution, a class token, learned positions, pre-norm transformer blocks, a
//! final layer norm and a classifier on the class token.
//!
//! Its levels nest, as DynaBERT's and HAT's do, the attention heads (the head size fixed), the
//! feed-forward width (MatFormer) and, by default, the model width (every residual stream, the
//! patch embedding, the class token, the positions and the norms use the level's leading
//! `heads_k · d_head` features); with a lattice they nest depth too (level `k` runs its first
//! `L_k` blocks). The layers come from `nestednet-nn` (sibling modules `attention`,
//! `feed_forward`, `transformer`), the classifier from `nestednet-heads`.
//!
//! **Any image size**: an image whose sides are not multiples of the patch size is padded with
//! zeros (the normalised mean) at its bottom and right to the next multiple, so that no pixel is
//! dropped. `vit-tiny` and `vit-small` pick the patch size from the image (`round(min(h, w) /
//! 7)`, at least 1: 4 pixels for 28×28 and 32×32, 2 for 8×8, about 7×7 patches); `-pN` after the
//! name asks for `N` (`vit-tiny-p7`).

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use nestednet_heads::{NestedHead, NestedHeadConfig};
use nestednet_nn::{
    AttentionMasks, FeedForwardActivation, Maskable, NestedConv2d, NestedConv2dConfig, NestedEmbedding,
    NestedEmbeddingConfig, NestedLayer, NestedLayerNorm, NestedLayerNormConfig, NestedTransformer,
    NestedTransformerConfig, weight_name, weight_name_under,
};
use nestednet_schedule::{ChannelSchedule, LatticeSpec, LevelSpec, ScheduledLayer};

use crate::family::check_level_classes;
use crate::mnist_cnn::check_choice;
use crate::{
    LevelRequest, MixableLayer, ModelError, ModelFamily, ModelRequest, NestedNetwork, NestedNetworkConfig,
};

/// Configuration of the nested ViT (`vit-tiny`, `vit-small`).
#[derive(Config, Debug)]
pub struct NestedVitConfig {
    /// Image channels (never split across levels).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Image height.
    #[config(default = 28)]
    pub height: usize,
    /// Image width.
    #[config(default = 28)]
    pub width: usize,
    /// Side of a square patch, in pixels.
    #[config(default = 4)]
    pub patch_size: usize,
    /// Model width of the full level.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads of the full level (`d_model` must be a multiple: the head size is fixed).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Feed-forward hidden units of the full level.
    #[config(default = 256)]
    pub d_ff: usize,
    /// Transformer blocks of the full level.
    #[config(default = 4)]
    pub n_blocks: usize,
    /// Classes the full level predicts.
    #[config(default = 10)]
    pub num_classes: usize,
    /// The width levels: ratios applied to the heads and the feed-forward width, or explicit
    /// counts for the scheduled layers `heads` and `ffn`. Ignored when `lattice` is given.
    #[config(default = "LevelSpec::default_ratios()")]
    pub levels: LevelSpec,
    /// Width × depth levels (depths in blocks), instead of `levels`.
    #[config(default = "None")]
    pub lattice: Option<LatticeSpec>,
    /// Nest the model width with the heads (`heads_k · d_head` features per level); else every
    /// level keeps the full width and only heads and feed-forward units nest (DynaBERT).
    #[config(default = true)]
    pub nest_model_width: bool,
    /// Coarse-to-fine heads: classes each level predicts, core first (the last `num_classes`);
    /// empty: every level predicts every class.
    #[config(default = "Vec::new()")]
    pub level_classes: Vec<usize>,
    /// Give every level its own classifier (the paper's un-nested output layer).
    #[config(default = false)]
    pub unnested_output: bool,
    /// Dropout of the attention weights, the feed-forward and the residual branches.
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// Largest image side the ViT takes (its positions grow with the patch count).
const MAX_SIDE: usize = 4096;
/// Largest number of patches (the attention is quadratic in it).
const MAX_PATCHES: usize = 16_384;

/// The levels of a transformer configuration (the ViT's, the text models'): per width level
/// its heads and feed-forward units, and per level its width level and depth, and its name.
#[derive(Debug, Clone)]
pub(crate) struct TransformerLevels {
    pub(crate) heads: Vec<usize>,
    pub(crate) ffn: Vec<usize>,
    pub(crate) points: Vec<[usize; 2]>,
    pub(crate) names: Vec<String>,
}

/// Resolves the levels of a transformer of `n_heads` heads, `d_ff` feed-forward units and
/// `n_blocks` blocks: width levels scheduled on the layers `heads` and `ffn` (ratios or
/// counts), or a width × depth lattice.
pub(crate) fn transformer_levels(
    n_heads: usize,
    d_ff: usize,
    n_blocks: usize,
    levels: &LevelSpec,
    lattice: Option<&LatticeSpec>,
) -> crate::Result<TransformerLevels> {
    let layers = [ScheduledLayer::split("heads", n_heads), ScheduledLayer::split("ffn", d_ff)];
    let (spec, lattice_levels) = match lattice {
        Some(lattice) => {
            lattice.validate(n_blocks)?;
            (LevelSpec::Ratios(lattice.widths.clone()), Some(lattice.levels()))
        }
        None => (levels.clone(), None),
    };
    let schedule = ChannelSchedule::new_with(&spec, &layers, true)?;
    let heads = schedule.widths("heads").expect("scheduled").to_vec();
    let ffn = schedule.widths("ffn").expect("scheduled").to_vec();
    let (points, names) = match lattice_levels {
        Some(levels) => (
            levels.iter().map(|l| [l.width_index, l.depth]).collect(),
            levels.iter().map(|l| l.name()).collect(),
        ),
        None => (
            (0..heads.len()).map(|k| [k, n_blocks]).collect(),
            (0..heads.len()).map(|k| format!("L{k}")).collect(),
        ),
    };
    Ok(TransformerLevels { heads, ffn, points, names })
}

/// Checks a transformer's dimensions for `model`: every one of `dims` at least 1, `d_model` a
/// multiple of `n_heads` (the head size is fixed across levels), dropout in `[0, 1)`.
pub(crate) fn check_transformer_dims(
    model: &str,
    dims: &[(&str, usize)],
    d_model: usize,
    n_heads: usize,
    dropout: f64,
) -> crate::Result<()> {
    let bad = |m: String| Err(ModelError::Invalid(format!("{model}: {m}")));
    if let Some((name, _)) = dims.iter().find(|(_, v)| *v == 0) {
        return bad(format!("{name} must be at least 1"));
    }
    if !d_model.is_multiple_of(n_heads) {
        return bad(format!(
            "a model width of {d_model} does not divide into {n_heads} heads (the head size is fixed across levels)"
        ));
    }
    if !(0.0..1.0).contains(&dropout) {
        return bad(format!("dropout {dropout} must be in [0, 1)"));
    }
    Ok(())
}

/// Whether the weight `layer` lies in block `i` of the stack `stack` (`transformer.blocks`)
/// with `i` beyond `depth`.
pub(crate) fn beyond_depth(layer: &str, stack: &str, depth: usize) -> bool {
    weight_name_under(layer, stack)
        .and_then(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .is_some_and(|block| block >= depth)
}

/// Mix'n'Match over a transformer stack whose levels are `points` (width level, depth): the
/// model width (given per width level when it nests) and each block's attention (its heads'
/// query width) and feed-forward width, at every level's width; empty when a level skips
/// blocks (a mix takes every block). The caller refuses masked weights and per-level heads.
pub(crate) fn transformer_mixable_layers(
    transformer: &NestedTransformer,
    points: &[[usize; 2]],
    model_widths: Option<&[usize]>,
) -> Vec<MixableLayer> {
    let blocks = transformer.blocks.len();
    if points.iter().any(|&[_, depth]| depth != blocks) {
        return Vec::new();
    }
    let layer = |name: String, of_level: &dyn Fn(usize) -> usize| MixableLayer {
        name,
        widths: points.iter().map(|&[w, _]| of_level(w)).collect(),
    };
    let mut out = Vec::with_capacity(2 * blocks + 1);
    if let Some(widths) = model_widths {
        out.push(layer("width".into(), &|w| widths[w]));
    }
    for (i, block) in transformer.blocks.iter().enumerate() {
        out.push(layer(format!("transformer.blocks.{i}.attention"), &|w| {
            block.attention.query.output_widths[w]
        }));
        out.push(layer(format!("transformer.blocks.{i}.feed_forward"), &|w| {
            block.feed_forward.inner.output_widths[w]
        }));
    }
    out
}

/// The one-level stack of the Mix'n'Match `choice` over `layers` (from
/// [`transformer_mixable_layers`]) and its model width (`full_width` when the width does not
/// nest).
pub(crate) fn mixed_transformer(
    transformer: &NestedTransformer,
    layers: &[MixableLayer],
    choice: &[usize],
    full_width: usize,
) -> crate::Result<(NestedTransformer, usize)> {
    check_choice(layers, choice)?;
    let nests_width = layers.first().is_some_and(|l| l.name == "width");
    let offset = usize::from(nests_width);
    let width = if nests_width { layers[0].widths[choice[0]] } else { full_width };
    let d_head = transformer.blocks[0].attention.d_head;
    let blocks = transformer.blocks.iter().enumerate().map(|(i, block)| {
        let (attention, feed_forward) = (offset + 2 * i, offset + 2 * i + 1);
        let heads = layers[attention].widths[choice[attention]] / d_head;
        block.single_block(heads, layers[feed_forward].widths[choice[feed_forward]], width)
    });
    let blocks: Vec<_> = blocks.collect();
    let depths = vec![blocks.len()];
    Ok((NestedTransformer { blocks, depths }, width))
}

impl NestedVitConfig {
    /// Patches along the height and the width (after padding to a multiple of the patch).
    pub fn patch_grid(&self) -> [usize; 2] {
        let p = self.patch_size.max(1);
        [self.height.div_ceil(p), self.width.div_ceil(p)]
    }

    fn check_dims(&self) -> crate::Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        check_transformer_dims(
            "vit",
            &[
                ("in_channels", self.in_channels),
                ("height", self.height),
                ("width", self.width),
                ("patch_size", self.patch_size),
                ("d_model", self.d_model),
                ("n_heads", self.n_heads),
                ("d_ff", self.d_ff),
                ("n_blocks", self.n_blocks),
                ("num_classes", self.num_classes),
            ],
            self.d_model,
            self.n_heads,
            self.dropout,
        )?;
        if self.height > MAX_SIDE || self.width > MAX_SIDE {
            return bad(format!(
                "vit: images of {}x{}: each side must be at most {MAX_SIDE}",
                self.height, self.width
            ));
        }
        let [gh, gw] = self.patch_grid();
        if gh * gw > MAX_PATCHES {
            return bad(format!(
                "vit: {gh}x{gw} patches of {} pixels: at most {MAX_PATCHES} (take a larger patch)",
                self.patch_size
            ));
        }
        Ok(())
    }

    /// Validates the configuration and resolves its levels. Nothing is allocated.
    fn resolve_levels(&self) -> crate::Result<TransformerLevels> {
        self.check_dims()?;
        let levels =
            transformer_levels(self.n_heads, self.d_ff, self.n_blocks, &self.levels, self.lattice.as_ref())?;
        check_level_classes(&self.level_classes, levels.points.len(), self.num_classes)?;
        Ok(levels)
    }

    fn d_head(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Model width of each width level.
    fn model_widths(&self, heads: &[usize]) -> Vec<usize> {
        heads.iter().map(|&h| if self.nest_model_width { h * self.d_head() } else { self.d_model }).collect()
    }

    /// Validates the configuration, then initializes the model on `device`.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedVit> {
        let levels = self.resolve_levels()?;
        // Every layer has one width per level (a lattice repeats a width at each depth), so
        // masks, reports and heads address a layer by the network's level.
        let heads: Vec<usize> = levels.points.iter().map(|&[w, _]| levels.heads[w]).collect();
        let ffn: Vec<usize> = levels.points.iter().map(|&[w, _]| levels.ffn[w]).collect();
        let widths = self.model_widths(&heads);
        let n_width = widths.len();
        let level_widths = widths.clone();
        let level_classes = if self.level_classes.is_empty() {
            vec![self.num_classes; levels.points.len()]
        } else {
            self.level_classes.clone()
        };
        let head = NestedHeadConfig::new(self.d_model, level_widths, level_classes)
            .with_private(self.unnested_output);
        head.kind()?;
        let transformer = NestedTransformerConfig::new(
            self.d_model,
            self.n_heads,
            self.d_ff,
            self.n_blocks,
            heads,
            ffn,
            widths.clone(),
            vec![self.n_blocks; n_width],
        )
        .with_dropout(self.dropout)
        .with_activation(FeedForwardActivation::Gelu);
        transformer.check().map_err(|e| ModelError::Invalid(e.to_string()))?;
        let [gh, gw] = self.patch_grid();
        let p = self.patch_size;
        Ok(NestedVit {
            patch_embedding: NestedConv2dConfig::new(
                [self.in_channels, self.d_model],
                [p, p],
                vec![self.in_channels; n_width],
                widths.clone(),
            )
            .with_stride([p, p])
            .init(device),
            class_token: NestedEmbeddingConfig::new(1, self.d_model, widths.clone()).init(device),
            positions: NestedEmbeddingConfig::new(1 + gh * gw, self.d_model, widths.clone()).init(device),
            transformer: transformer.init(device),
            norm: NestedLayerNormConfig::new(self.d_model, widths).init(device),
            head: head.try_init(device)?,
            points: levels.points.iter().enumerate().map(|(k, &[_, depth])| [k, depth]).collect(),
            names: levels.names,
            nest_model_width: self.nest_model_width,
            input_shape: [self.in_channels, self.height, self.width],
            patch_size: p,
        })
    }
}

/// The nested ViT: one set of weights, `n` levels (see the module's documentation).
#[derive(Module, Debug)]
pub struct NestedVit {
    /// Patches to vectors: a `patch × patch` convolution of stride `patch`.
    pub patch_embedding: NestedConv2d,
    /// The class token (one row).
    pub class_token: NestedEmbedding,
    /// Learned positions: the class token's, then every patch's in row-major order.
    pub positions: NestedEmbedding,
    /// The blocks, nested in heads, feed-forward width and model width.
    pub transformer: NestedTransformer,
    /// The final layer norm.
    pub norm: NestedLayerNorm,
    /// The classifier on the class token.
    pub head: NestedHead,
    /// Per level: the level its layers' widths are taken at (itself) and its depth (blocks
    /// run).
    pub points: Vec<[usize; 2]>,
    /// Per level: its name (`L0`, `w0.5-d2`).
    pub names: Vec<String>,
    /// Whether the model width nests with the heads.
    pub nest_model_width: bool,
    /// `[channels, height, width]` of the images.
    pub input_shape: [usize; 3],
    /// Side of a patch.
    pub patch_size: usize,
}

impl NestedVit {
    /// The logits of the width level `width_level` run to `depth` blocks, through the head of
    /// level `head_level`.
    fn forward_point(
        &self,
        images: Tensor<4>,
        [width_level, depth]: [usize; 2],
        head_level: usize,
    ) -> Tensor<2> {
        let [batch, c, h, w] = images.dims();
        assert_eq!(
            [c, h, w],
            self.input_shape,
            "NestedVit: expected images of [channels, height, width] = {:?}, got {:?}",
            self.input_shape,
            [c, h, w]
        );
        let p = self.patch_size;
        let (pad_h, pad_w) = (h.div_ceil(p) * p - h, w.div_ceil(p) * p - w);
        let images =
            if pad_h + pad_w > 0 { images.pad((0, pad_w, 0, pad_h), PadMode::Constant(0.0)) } else { images };
        let patches = self.patch_embedding.forward(images, width_level);
        let [_, d, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, d, gh * gw]).swap_dims(1, 2);
        let device = patches.device();
        let class = self.class_token.forward(Tensor::zeros([batch, 1], &device), width_level);
        let tokens = Tensor::cat(vec![class, patches], 1);
        let ids = Tensor::<1, Int>::arange(0..(1 + gh * gw) as i64, &device).reshape([1, 1 + gh * gw]);
        let x = tokens + self.positions.forward(ids, width_level);
        let x = self.transformer.forward_lattice(x, &AttentionMasks::default(), width_level, depth);
        let x = self.norm.forward(x, width_level);
        let class = x.narrow(1, 0, 1).reshape([batch, d]);
        self.head.forward(class, head_level)
    }

    /// Heads of width level `width_level` (its query width over the head size).
    fn heads(&self, width_level: usize) -> usize {
        let attention = &self.transformer.blocks[0].attention;
        attention.query.output_widths[width_level] / attention.d_head
    }

    fn ffn(&self, width_level: usize) -> usize {
        self.transformer.blocks[0].feed_forward.inner.output_widths[width_level]
    }

    fn model_width(&self, width_level: usize) -> usize {
        self.norm.widths[width_level]
    }
}

impl NestedNetwork for NestedVit {
    type Level = NestedVit;
    type Input = Tensor<4>;
    type Output = Tensor<2>;

    fn num_levels(&self) -> usize {
        self.points.len()
    }

    fn forward_level(&self, images: Tensor<4>, level: usize) -> Tensor<2> {
        assert!(level < self.num_levels(), "NestedVit: level {level} of {}", self.num_levels());
        self.forward_point(images, self.points[level], level)
    }

    /// Nothing a forward pass writes is shared (layer norms keep no statistics), and without
    /// dropout nothing is drawn.
    fn levels_train_side_by_side(&self) -> bool {
        self.transformer.blocks[0].dropout.prob == 0.0
    }

    fn level_name(&self, level: usize) -> String {
        self.names[level].clone()
    }

    fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Level `level` alone: its blocks only, each layer a compact copy of the level's slice.
    fn extract_level(&self, level: usize) -> NestedVit {
        let [width_level, depth] = self.points[level];
        NestedVit {
            patch_embedding: self.patch_embedding.single_level(width_level),
            class_token: self.class_token.single_level(width_level),
            positions: self.positions.single_level(width_level),
            transformer: self.transformer.single_lattice_point(width_level, depth),
            norm: self.norm.single_level(width_level),
            head: self.head.single_level(level),
            points: vec![[0, depth]],
            names: vec![self.names[level].clone()],
            nest_model_width: self.nest_model_width,
            input_shape: self.input_shape,
            patch_size: self.patch_size,
        }
    }

    fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
        let [w, depth] = self.points[level];
        vec![
            ("width".into(), self.model_width(w)),
            ("heads".into(), self.heads(w)),
            ("ffn".into(), self.ffn(w)),
            ("blocks".into(), depth),
        ]
    }

    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        let mut out: Vec<(String, &dyn Maskable)> = vec![("patch_embedding".into(), &self.patch_embedding)];
        out.extend(
            self.transformer.layer_weights().into_iter().map(|(n, w)| (weight_name("transformer", &n), w)),
        );
        out.push(("head".into(), &self.head));
        out
    }

    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        let mut out: Vec<(String, &mut dyn Maskable)> =
            vec![("patch_embedding".into(), &mut self.patch_embedding)];
        out.extend(
            self.transformer
                .layer_weights_mut()
                .into_iter()
                .map(|(n, w)| (weight_name("transformer", &n), w)),
        );
        out.push(("head".into(), &mut self.head));
        out
    }

    fn level_uses_layer(&self, layer: &str, level: usize) -> bool {
        !beyond_depth(layer, "transformer.blocks", self.points[level][1])
    }

    /// Mix'n'Match: each block's heads and feed-forward width from any level, and the model
    /// width from any level when it nests; only when every level runs every block, no weight is
    /// masked and one classifier serves every level.
    fn mixable_layers(&self) -> Vec<MixableLayer> {
        let masked = self.weight_layers().iter().any(|(_, l)| l.mask().is_some());
        if masked || self.head.single_block(self.model_width(0)).is_none() {
            return Vec::new();
        }
        let widths = self.nest_model_width.then_some(self.norm.widths.as_slice());
        transformer_mixable_layers(&self.transformer, &self.points, widths)
    }

    fn mixed(&self, choice: &[usize]) -> crate::Result<Self> {
        let layers = self.mixable_layers();
        let (transformer, width) =
            mixed_transformer(&self.transformer, &layers, choice, self.model_width(0))?;
        let depth = transformer.blocks.len();
        let head = self
            .head
            .single_block(width)
            .ok_or_else(|| ModelError::Unsupported("Mix'n'Match with a classifier per level".into()))?;
        Ok(NestedVit {
            patch_embedding: self.patch_embedding.single_block(self.input_shape[0], width),
            class_token: self.class_token.single_block(width),
            positions: self.positions.single_block(width),
            transformer,
            norm: self.norm.single_block(width),
            head,
            points: vec![[0, depth]],
            names: vec!["mix".into()],
            nest_model_width: self.nest_model_width,
            input_shape: self.input_shape,
            patch_size: self.patch_size,
        })
    }
}

impl NestedNetworkConfig for NestedVitConfig {
    type Network = NestedVit;

    fn init_network(&self, device: &Device) -> crate::Result<NestedVit> {
        self.try_init(device)
    }

    fn name(&self) -> String {
        let named = SIZES.iter().find(|s| {
            (s.d_model, s.n_heads, s.d_ff, s.n_blocks)
                == (self.d_model, self.n_heads, self.d_ff, self.n_blocks)
        });
        match named {
            Some(size) => size.name.into(),
            None => {
                format!("vit (d{} h{} ffn{} blocks{})", self.d_model, self.n_heads, self.d_ff, self.n_blocks)
            }
        }
    }

    /// Level `level`'s heads, feed-forward width, model width and depth as the full level of a
    /// one-level ViT.
    fn level_alone(&self, level: usize) -> Option<Self> {
        let levels = self.resolve_levels().ok()?;
        let [w, depth] = *levels.points.get(level)?;
        let heads = levels.heads[w];
        let classes = self.level_classes.get(level).copied().unwrap_or(self.num_classes);
        Some(
            self.clone()
                .with_n_heads(heads)
                .with_d_model(self.model_widths(&levels.heads)[w])
                .with_d_ff(levels.ffn[w])
                .with_n_blocks(depth)
                .with_num_classes(classes)
                .with_levels(LevelSpec::Ratios(vec![1.0]))
                .with_lattice(None)
                .with_level_classes(Vec::new()),
        )
    }
}

/// The size of a named transformer (ViT, text models).
#[derive(Debug, Clone, Copy)]
pub(crate) struct VitSize {
    pub(crate) name: &'static str,
    pub(crate) d_model: usize,
    pub(crate) n_heads: usize,
    pub(crate) d_ff: usize,
    pub(crate) n_blocks: usize,
}

/// The named ViTs.
pub(crate) const SIZES: [VitSize; 2] = [
    VitSize { name: "vit-tiny", d_model: 64, n_heads: 4, d_ff: 256, n_blocks: 4 },
    VitSize { name: "vit-small", d_model: 128, n_heads: 8, d_ff: 512, n_blocks: 6 },
];

/// The size and the patch (`None`: from the image) of a ViT name (`vit-tiny`, `vit-small-p4`).
fn parse_name(name: &str) -> Option<(VitSize, Option<usize>)> {
    let (base, patch) = match name.rsplit_once("-p") {
        Some((base, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (base, Some(p.parse().ok()?))
        }
        _ => (name, None),
    };
    Some((*SIZES.iter().find(|s| s.name == base)?, patch))
}

impl ModelFamily for NestedVitConfig {
    const FAMILY: &'static str = "vit";

    fn names() -> &'static [&'static str] {
        &["vit-tiny", "vit-small", "vit-tiny-pN", "vit-small-pN"]
    }

    fn claims(name: &str) -> bool {
        parse_name(name).is_some()
    }

    fn from_request(request: &ModelRequest) -> Option<crate::Result<Self>> {
        let (size, patch) = parse_name(&request.name)?;
        let [in_channels, height, width] = request.input_shape;
        let patch = patch.unwrap_or_else(|| ((height.min(width) as f64 / 7.0).round() as usize).max(1));
        if patch == 0 {
            return Some(Err(request.input_error(&request.name, "a patch of 0 pixels")));
        }
        if request.unnested_first_conv {
            return Some(Err(ModelError::Invalid(
                "vit: its patch embedding cannot be un-nested (give every level its own first layer to the CNNs)"
                    .into(),
            )));
        }
        let mut config = Self::new()
            .with_in_channels(in_channels)
            .with_height(height)
            .with_width(width)
            .with_patch_size(patch)
            .with_d_model(size.d_model)
            .with_n_heads(size.n_heads)
            .with_d_ff(size.d_ff)
            .with_n_blocks(size.n_blocks)
            .with_num_classes(request.num_classes)
            .with_level_classes(request.level_classes.clone())
            .with_unnested_output(request.unnested_output);
        match &request.levels {
            LevelRequest::Channels(spec) => config = config.with_levels(spec.clone()),
            LevelRequest::Lattice(lattice) => config = config.with_lattice(Some(lattice.clone())),
        }
        Some(config.resolve_levels().map(|_| config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure_level;

    fn images(shape: [usize; 4], device: &Device) -> Tensor<4> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn close(a: Tensor<2>, b: Tensor<2>, what: &str) {
        let diff = (a - b).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "{what}: max |diff| {diff}");
    }

    fn request(name: &str, shape: [usize; 3], levels: LevelRequest) -> ModelRequest {
        ModelRequest::new(name, shape, 10, levels)
    }

    fn ratios(r: &[f64]) -> LevelRequest {
        LevelRequest::Channels(LevelSpec::Ratios(r.to_vec()))
    }

    #[test]
    fn levels_nest_heads_ffn_and_width_and_extract_to_themselves() {
        let device = Device::flex();
        let config =
            NestedVitConfig::from_request(&request("vit-tiny", [1, 28, 28], ratios(&[0.25, 0.5, 1.0])))
                .unwrap()
                .unwrap();
        assert_eq!(config.patch_size, 4);
        let model = config.try_init(&device).unwrap();
        let x = images([3, 1, 28, 28], &device);
        let widths: Vec<_> = (0..3).map(|k| model.level_widths(k)).collect();
        assert_eq!(
            widths[0],
            [("width".into(), 16), ("heads".into(), 1), ("ffn".into(), 64), ("blocks".into(), 4)]
        );
        assert_eq!(widths[2][0].1, 64);
        for level in 0..3 {
            let out = model.forward_level(x.clone(), level);
            assert_eq!(out.dims(), [3, 10]);
            close(model.extract_level(level).forward_level(x.clone(), 0), out, &format!("level {level}"));
        }
        // Costs grow with the level; the core holds about a sixteenth of the blocks' weights.
        let costs: Vec<_> = (0..3).map(|k| measure_level(&model, k).0).collect();
        assert!(costs[0].params < costs[1].params && costs[1].params < costs[2].params);
        assert_eq!(costs[2].params, model.extract_level(2).num_params(), "every parameter is counted");
        // 50 tokens: 4 blocks of Q, K, V, O (4·64²), the FFN (2·64·256) and attention (2·50·64)
        // per token, the patch embedding (16·64 per patch), the head.
        let per_token = 4 * 64 * 64 + 2 * 64 * 256 + 2 * 50 * 64;
        assert_eq!(costs[2].macs, 4 * 50 * per_token + 49 * 16 * 64 + 64 * 10);
    }

    #[test]
    fn any_image_size_is_padded_to_whole_patches() {
        let device = Device::flex();
        let config = NestedVitConfig::from_request(&request("vit-tiny-p3", [3, 8, 10], ratios(&[0.5, 1.0])))
            .unwrap()
            .unwrap();
        assert_eq!(config.patch_grid(), [3, 4]);
        let model = config.try_init(&device).unwrap();
        assert_eq!(model.forward_level(images([2, 3, 8, 10], &device), 1).dims(), [2, 10]);
        let auto =
            NestedVitConfig::from_request(&request("vit-tiny", [1, 8, 8], ratios(&[1.0]))).unwrap().unwrap();
        assert_eq!(auto.patch_size, 1);
    }

    #[test]
    fn a_lattice_nests_depth_and_names_its_levels() {
        let device = Device::flex();
        let lattice = LevelRequest::Lattice("0.5,1;2,4".parse().unwrap());
        let config =
            NestedVitConfig::from_request(&request("vit-tiny", [1, 16, 16], lattice)).unwrap().unwrap();
        let model = config.try_init(&device).unwrap();
        assert_eq!(model.num_levels(), 4);
        assert_eq!(model.level_name(1), "w0.5-d4");
        assert_eq!(model.find_level("w1-d2").unwrap(), 2);
        assert!(!model.level_uses_layer("transformer.blocks.2.attention.query", 0));
        assert!(model.level_uses_layer("transformer.blocks.2.attention.query", 1));
        assert!(model.level_uses_layer("head", 0));
        let x = images([2, 1, 16, 16], &device);
        for level in 0..4 {
            let alone = model.extract_level(level);
            assert_eq!(alone.transformer.blocks.len(), model.points[level][1]);
            close(alone.forward_level(x.clone(), 0), model.forward_level(x.clone(), level), "lattice level");
        }
        let alone = config.level_alone(2).unwrap();
        assert_eq!((alone.n_blocks, alone.n_heads, alone.d_model), (2, 4, 64));
        assert!(model.mixable_layers().is_empty(), "depth levels are not mixed");
    }

    #[test]
    fn mix_and_match_takes_each_block_from_any_level() {
        let device = Device::flex();
        let config = NestedVitConfig::from_request(&request("vit-tiny", [1, 12, 12], ratios(&[0.5, 1.0])))
            .unwrap()
            .unwrap();
        let model = config.try_init(&device).unwrap();
        let layers = model.mixable_layers();
        assert_eq!(layers.len(), 1 + 2 * 4);
        assert_eq!(layers[0].widths, [32, 64]);
        let x = images([2, 1, 12, 12], &device);
        for level in 0..2 {
            let same = model.mixed(&vec![level; layers.len()]).unwrap();
            close(
                same.forward_level(x.clone(), 0),
                model.forward_level(x.clone(), level),
                "a level as a mix",
            );
            assert_eq!(same.mixable_layers().len(), layers.len());
        }
        let mut choice = vec![1; layers.len()];
        choice[1] = 0;
        choice[4] = 0;
        let mix = model.mixed(&choice).unwrap();
        let (core, full) = (measure_level(&model, 0).0.params, measure_level(&model, 1).0.params);
        let mixed = measure_level(&mix, 0).0.params;
        assert!(core < mixed && mixed < full, "{core} < {mixed} < {full}");
        assert!(model.mixed(&[0, 1]).is_err());
    }

    #[test]
    fn bad_requests_are_named() {
        let err = |config: NestedVitConfig| config.try_init(&Device::flex()).unwrap_err().to_string();
        let e = err(NestedVitConfig::new().with_n_heads(3));
        assert!(e.contains("does not divide into 3 heads"), "{e}");
        let e = err(NestedVitConfig::new().with_levels(LevelSpec::Ratios(vec![0.1, 1.0])));
        assert!(e.contains("heads"), "{e}");
        let e = err(NestedVitConfig::new().with_patch_size(0));
        assert!(e.contains("patch_size must be at least 1"), "{e}");
        let e = err(NestedVitConfig::new().with_height(5000));
        assert!(e.contains("at most 4096"), "{e}");
        let mut r = request("vit-tiny", [1, 28, 28], ratios(&[1.0]));
        r.unnested_first_conv = true;
        assert!(NestedVitConfig::from_request(&r).unwrap().is_err());
        assert!(NestedVitConfig::from_request(&request("vit-huge", [1, 28, 28], ratios(&[1.0]))).is_none());
        assert!(NestedVitConfig::claims("vit-small-p7") && !NestedVitConfig::claims("vit-tiny-p"));
    }
}
