//! Nested text transformers over token ids (`Tensor<2, Int>`, byte tokens by default): a text
//! classifier (`text-tiny`, `text-small`: [`NestedTextClassifier`]) and a causal language model
//! (`lm-tiny`, `lm-small`: [`NestedLanguageModel`]).
//!
//! Both are a token embedding, learned positions, pre-norm transformer blocks and a final layer
//! norm ([`TextTransformer`]), nested as the sibling `vit`'s ViT is: attention heads (head size
//! fixed), feed-forward width and, by default, the model width; a lattice nests depth too. The
//! classifier averages the features of the window's real tokens (the padding id
//! [`PAD_TOKEN`] is masked out of the attention and of the average) and classifies them, with
//! coarse-to-fine heads if asked; the language model attends causally and predicts every
//! position's next token (its output `[batch, context, vocabulary]`).

use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::prelude::*;
use nestednet_heads::{NestedHead, NestedHeadConfig};
use nestednet_nn::{
    AttentionMasks, FeedForwardActivation, Maskable, NestedEmbedding, NestedEmbeddingConfig, NestedLayer,
    NestedLayerNorm, NestedLayerNormConfig, NestedTransformer, NestedTransformerConfig, weight_name,
};
use nestednet_schedule::{LatticeSpec, LevelSpec};

use crate::family::check_level_classes;
use crate::vit::{
    SIZES, TransformerLevels, VitSize, beyond_depth, check_transformer_dims, mixed_transformer,
    transformer_levels, transformer_mixable_layers,
};
use crate::{
    LevelRequest, MixableLayer, ModelError, ModelFamily, ModelRequest, NestedNetwork, NestedNetworkConfig,
    TokenShape,
};

/// The id that pads a short window (the byte tokenizer's separator, `nestednet_data`'s
/// `SEPARATOR_TOKEN`): a classifier ignores it.
pub const PAD_TOKEN: i64 = 256;
/// Longest context the text models take (the attention is quadratic in it).
const MAX_CONTEXT: usize = 4096;
/// Largest vocabulary.
const MAX_VOCABULARY: usize = 1 << 20;

/// The architecture both text models share.
#[derive(Config, Debug)]
pub struct TextTransformerConfig {
    /// Tokens per window (the positions learned).
    #[config(default = 128)]
    pub context: usize,
    /// Token ids the model takes (`0..vocabulary`; 257 for bytes and the separator).
    #[config(default = 257)]
    pub vocabulary: usize,
    /// Model width of the full level.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads of the full level (`d_model` must be a multiple).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Feed-forward hidden units of the full level.
    #[config(default = 256)]
    pub d_ff: usize,
    /// Transformer blocks of the full level.
    #[config(default = 4)]
    pub n_blocks: usize,
    /// Width levels: ratios of the heads and feed-forward width, or counts for the scheduled
    /// layers `heads` and `ffn`. Ignored when `lattice` is given.
    #[config(default = "LevelSpec::default_ratios()")]
    pub levels: LevelSpec,
    /// Width × depth levels (depths in blocks), instead of `levels`.
    #[config(default = "None")]
    pub lattice: Option<LatticeSpec>,
    /// Nest the model width with the heads; else only heads and feed-forward units nest.
    #[config(default = true)]
    pub nest_model_width: bool,
    /// Dropout of the attention weights, the feed-forward and the residual branches.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl TextTransformerConfig {
    fn check(&self, model: &str) -> crate::Result<TransformerLevels> {
        let bad = |m: String| Err(ModelError::Invalid(format!("{model}: {m}")));
        check_transformer_dims(
            model,
            &[
                ("context", self.context),
                ("vocabulary", self.vocabulary),
                ("d_model", self.d_model),
                ("n_heads", self.n_heads),
                ("d_ff", self.d_ff),
                ("n_blocks", self.n_blocks),
            ],
            self.d_model,
            self.n_heads,
            self.dropout,
        )?;
        if self.context > MAX_CONTEXT || self.vocabulary > MAX_VOCABULARY {
            return bad(format!(
                "a context of {} and a vocabulary of {}: at most {MAX_CONTEXT} and {MAX_VOCABULARY}",
                self.context, self.vocabulary
            ));
        }
        transformer_levels(self.n_heads, self.d_ff, self.n_blocks, &self.levels, self.lattice.as_ref())
    }

    /// Model width of each width level.
    fn model_widths(&self, heads: &[usize]) -> Vec<usize> {
        let d_head = self.d_model / self.n_heads;
        heads.iter().map(|&h| if self.nest_model_width { h * d_head } else { self.d_model }).collect()
    }

    /// The shared body, for the network's levels; also each level's model width.
    fn init_body(
        &self,
        levels: &TransformerLevels,
        causal: bool,
        device: &Device,
    ) -> crate::Result<TextTransformer> {
        // One width per network level (a lattice repeats a width at each depth).
        let heads: Vec<usize> = levels.points.iter().map(|&[w, _]| levels.heads[w]).collect();
        let ffn: Vec<usize> = levels.points.iter().map(|&[w, _]| levels.ffn[w]).collect();
        let widths = self.model_widths(&heads);
        let transformer = NestedTransformerConfig::new(
            self.d_model,
            self.n_heads,
            self.d_ff,
            self.n_blocks,
            heads,
            ffn,
            widths.clone(),
            vec![self.n_blocks; widths.len()],
        )
        .with_dropout(self.dropout)
        .with_activation(FeedForwardActivation::Gelu);
        transformer.check().map_err(|e| ModelError::Invalid(e.to_string()))?;
        Ok(TextTransformer {
            embedding: NestedEmbeddingConfig::new(self.vocabulary, self.d_model, widths.clone()).init(device),
            positions: NestedEmbeddingConfig::new(self.context, self.d_model, widths.clone()).init(device),
            transformer: transformer.init(device),
            norm: NestedLayerNormConfig::new(self.d_model, widths).init(device),
            points: levels.points.iter().enumerate().map(|(k, &[_, depth])| [k, depth]).collect(),
            names: levels.names.clone(),
            context: self.context,
            vocabulary: self.vocabulary,
            causal,
        })
    }

    /// Level `level`'s architecture as a one-level configuration.
    fn level_alone(&self, level: usize) -> Option<(Self, usize)> {
        let levels = self.check("text").ok()?;
        let [w, depth] = *levels.points.get(level)?;
        let alone = self
            .clone()
            .with_n_heads(levels.heads[w])
            .with_d_model(self.model_widths(&levels.heads)[w])
            .with_d_ff(levels.ffn[w])
            .with_n_blocks(depth)
            .with_levels(LevelSpec::Ratios(vec![1.0]))
            .with_lattice(None);
        Some((alone, level))
    }

    fn size_name(&self, prefix: &str) -> String {
        let named = SIZES.iter().find(|s| {
            (s.d_model, s.n_heads, s.d_ff, s.n_blocks)
                == (self.d_model, self.n_heads, self.d_ff, self.n_blocks)
        });
        match named {
            Some(size) => format!("{prefix}-{}", size.name.trim_start_matches("vit-")),
            None => format!(
                "{prefix} (d{} h{} ffn{} blocks{})",
                self.d_model, self.n_heads, self.d_ff, self.n_blocks
            ),
        }
    }

    /// The body a request for `size` asks for.
    fn for_request(size: VitSize, request: &ModelRequest<TokenShape>) -> crate::Result<Self> {
        if request.unnested_first_conv {
            return Err(ModelError::Invalid(
                "text models have no first convolution to un-nest (their token embedding nests)".into(),
            ));
        }
        let mut config = Self::new()
            .with_context(request.input_shape.length)
            .with_vocabulary(request.input_shape.vocabulary)
            .with_d_model(size.d_model)
            .with_n_heads(size.n_heads)
            .with_d_ff(size.d_ff)
            .with_n_blocks(size.n_blocks);
        match &request.levels {
            LevelRequest::Channels(spec) => config = config.with_levels(spec.clone()),
            LevelRequest::Lattice(lattice) => config = config.with_lattice(Some(lattice.clone())),
        }
        Ok(config)
    }
}

/// The body of both text models: embeddings, blocks, final norm.
#[derive(Module, Debug)]
pub struct TextTransformer {
    /// Token embedding.
    pub embedding: NestedEmbedding,
    /// Learned positions.
    pub positions: NestedEmbedding,
    /// The blocks.
    pub transformer: NestedTransformer,
    /// The final layer norm.
    pub norm: NestedLayerNorm,
    /// Per level: the level its widths are taken at (itself) and its depth.
    pub points: Vec<[usize; 2]>,
    /// Per level: its name.
    pub names: Vec<String>,
    /// Tokens per window.
    pub context: usize,
    /// Token ids taken (`0..vocabulary`).
    pub vocabulary: usize,
    /// Whether a position attends only to itself and the positions before it.
    pub causal: bool,
}

impl TextTransformer {
    /// The features `[batch, context, width]` of `level` for `tokens`, and, for a classifier,
    /// the mask of the padding positions.
    fn features(&self, tokens: Tensor<2, Int>, level: usize) -> (Tensor<3>, Option<Tensor<2, Bool>>) {
        let [batch, length] = tokens.dims();
        assert_eq!(
            length, self.context,
            "text transformer: windows of {} tokens expected, got {length}",
            self.context
        );
        let [width_level, depth] = self.points[level];
        let device = tokens.device();
        let ids = Tensor::<1, Int>::arange(0..length as i64, &device).reshape([1, length]);
        let x =
            self.embedding.forward(tokens.clone(), width_level) + self.positions.forward(ids, width_level);
        let (masks, pad) = match self.causal {
            true => (
                AttentionMasks {
                    pad: None,
                    attn: Some(generate_autoregressive_mask(batch, length, &device)),
                },
                None,
            ),
            false => {
                let pad = tokens.equal_elem(PAD_TOKEN);
                (AttentionMasks { pad: Some(pad.clone()), attn: None }, Some(pad))
            }
        };
        let x = self.transformer.forward_lattice(x, &masks, width_level, depth);
        (self.norm.forward(x, width_level), pad)
    }

    fn single_level(&self, level: usize) -> Self {
        let [width_level, depth] = self.points[level];
        Self {
            embedding: self.embedding.single_level(width_level),
            positions: self.positions.single_level(width_level),
            transformer: self.transformer.single_lattice_point(width_level, depth),
            norm: self.norm.single_level(width_level),
            points: vec![[0, depth]],
            names: vec![self.names[level].clone()],
            context: self.context,
            vocabulary: self.vocabulary,
            causal: self.causal,
        }
    }

    fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
        let [w, depth] = self.points[level];
        let block = &self.transformer.blocks[0];
        vec![
            ("width".into(), self.norm.widths[w]),
            ("heads".into(), block.attention.query.output_widths[w] / block.attention.d_head),
            ("ffn".into(), block.feed_forward.inner.output_widths[w]),
            ("blocks".into(), depth),
        ]
    }

    fn weight_layers<'a>(&'a self, head: &'a NestedHead) -> Vec<(String, &'a dyn Maskable)> {
        let mut out: Vec<(String, &dyn Maskable)> = self
            .transformer
            .layer_weights()
            .into_iter()
            .map(|(n, w)| (weight_name("transformer", &n), w))
            .collect();
        out.push(("head".into(), head));
        out
    }

    fn weight_layers_mut<'a>(&'a mut self, head: &'a mut NestedHead) -> Vec<(String, &'a mut dyn Maskable)> {
        let mut out: Vec<(String, &mut dyn Maskable)> = self
            .transformer
            .layer_weights_mut()
            .into_iter()
            .map(|(n, w)| (weight_name("transformer", &n), w))
            .collect();
        out.push(("head".into(), head));
        out
    }

    fn level_uses_layer(&self, layer: &str, level: usize) -> bool {
        !beyond_depth(layer, "transformer.blocks", self.points[level][1])
    }

    /// Nothing a forward pass writes is shared; without dropout nothing is drawn.
    fn side_by_side(&self) -> bool {
        self.transformer.blocks[0].dropout.prob == 0.0
    }

    /// Mix'n'Match (see the sibling `vit`'s helpers): only when no weight is masked and one
    /// output layer serves every level.
    fn mixable_layers(&self, head: &NestedHead) -> Vec<MixableLayer> {
        let masked = self.weight_layers(head).iter().any(|(_, l)| l.mask().is_some());
        if masked || head.single_block(self.norm.widths[0]).is_none() {
            return Vec::new();
        }
        let widths = self.nests_model_width().then_some(self.norm.widths.as_slice());
        transformer_mixable_layers(&self.transformer, &self.points, widths)
    }

    /// The one-level body and output layer of the Mix'n'Match `choice`.
    fn mixed(&self, head: &NestedHead, choice: &[usize]) -> crate::Result<(Self, NestedHead)> {
        let layers = self.mixable_layers(head);
        let full_width = self.embedding.weight.dims()[1];
        let (transformer, width) = mixed_transformer(&self.transformer, &layers, choice, full_width)?;
        let head = head
            .single_block(width)
            .ok_or_else(|| ModelError::Unsupported("Mix'n'Match with an output layer per level".into()))?;
        let depth = transformer.blocks.len();
        let body = Self {
            embedding: self.embedding.single_block(width),
            positions: self.positions.single_block(width),
            transformer,
            norm: self.norm.single_block(width),
            points: vec![[0, depth]],
            names: vec!["mix".into()],
            context: self.context,
            vocabulary: self.vocabulary,
            causal: self.causal,
        };
        Ok((body, head))
    }

    /// Whether the levels' model widths differ (else only heads and feed-forward units nest).
    fn nests_model_width(&self) -> bool {
        self.norm.widths.windows(2).any(|w| w[0] != w[1])
    }

    fn level_model_widths(&self) -> Vec<usize> {
        self.points.iter().map(|&[w, _]| self.norm.widths[w]).collect()
    }
}

/// Configuration of the nested text classifier (`text-tiny`, `text-small`).
#[derive(Config, Debug)]
pub struct NestedTextClassifierConfig {
    /// The shared architecture.
    pub body: TextTransformerConfig,
    /// Classes the full level predicts.
    #[config(default = 2)]
    pub num_classes: usize,
    /// Coarse-to-fine heads: classes each level predicts, core first; empty: every class.
    #[config(default = "Vec::new()")]
    pub level_classes: Vec<usize>,
    /// Give every level its own classifier.
    #[config(default = false)]
    pub unnested_output: bool,
}

/// The nested text classifier: windows of tokens in, class logits out.
#[derive(Module, Debug)]
pub struct NestedTextClassifier {
    /// Embeddings, blocks and final norm.
    pub body: TextTransformer,
    /// The classifier on the mean of the real tokens' features.
    pub head: NestedHead,
}

/// Configuration of the nested causal language model (`lm-tiny`, `lm-small`).
#[derive(Config, Debug)]
pub struct NestedLanguageModelConfig {
    /// The shared architecture.
    pub body: TextTransformerConfig,
    /// Give every level its own output layer.
    #[config(default = false)]
    pub unnested_output: bool,
}

/// The nested causal language model: windows of tokens in, every position's next-token logits
/// `[batch, context, vocabulary]` out.
#[derive(Module, Debug)]
pub struct NestedLanguageModel {
    /// Embeddings, causal blocks and final norm.
    pub body: TextTransformer,
    /// The next-token classifier of every position.
    pub head: NestedHead,
}

fn init_head(
    body: &TextTransformer,
    d_model: usize,
    classes: Vec<usize>,
    private: bool,
    device: &Device,
) -> crate::Result<NestedHead> {
    let head = NestedHeadConfig::new(d_model, body.level_model_widths(), classes).with_private(private);
    head.kind()?;
    Ok(head.try_init(device)?)
}

impl NestedTextClassifierConfig {
    /// Validates the configuration, then initializes the model on `device`.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedTextClassifier> {
        let levels = self.body.check("text classifier")?;
        check_level_classes(&self.level_classes, levels.points.len(), self.num_classes)?;
        let body = self.body.init_body(&levels, false, device)?;
        let classes = match self.level_classes.is_empty() {
            true => vec![self.num_classes; levels.points.len()],
            false => self.level_classes.clone(),
        };
        let head = init_head(&body, self.body.d_model, classes, self.unnested_output, device)?;
        Ok(NestedTextClassifier { body, head })
    }
}

impl NestedLanguageModelConfig {
    /// Validates the configuration, then initializes the model on `device`.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedLanguageModel> {
        let levels = self.body.check("language model")?;
        let body = self.body.init_body(&levels, true, device)?;
        let classes = vec![self.body.vocabulary; levels.points.len()];
        let head = init_head(&body, self.body.d_model, classes, self.unnested_output, device)?;
        Ok(NestedLanguageModel { body, head })
    }
}

/// The `NestedNetwork` items both text models delegate to their body.
macro_rules! text_network_items {
    () => {
        fn num_levels(&self) -> usize {
            self.body.points.len()
        }

        fn input_shape(&self) -> TokenShape {
            TokenShape { length: self.body.context, vocabulary: self.body.vocabulary }
        }

        fn levels_train_side_by_side(&self) -> bool {
            self.body.side_by_side()
        }

        fn level_name(&self, level: usize) -> String {
            self.body.names[level].clone()
        }

        fn extract_level(&self, level: usize) -> Self {
            Self { body: self.body.single_level(level), head: self.head.single_level(level) }
        }

        fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
            self.body.level_widths(level)
        }

        fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
            self.body.weight_layers(&self.head)
        }

        fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
            self.body.weight_layers_mut(&mut self.head)
        }

        fn level_uses_layer(&self, layer: &str, level: usize) -> bool {
            self.body.level_uses_layer(layer, level)
        }

        /// Mix'n'Match: each block's heads and feed-forward width from any level, and the
        /// model width from any level when it nests.
        fn mixable_layers(&self) -> Vec<MixableLayer> {
            self.body.mixable_layers(&self.head)
        }

        fn mixed(&self, choice: &[usize]) -> crate::Result<Self> {
            let (body, head) = self.body.mixed(&self.head, choice)?;
            Ok(Self { body, head })
        }
    };
}

impl NestedNetwork for NestedTextClassifier {
    type Level = NestedTextClassifier;
    type Input = Tensor<2, Int>;
    type Output = Tensor<2>;

    text_network_items!();

    /// The head on the mean of the features of the window's real (non-padding) tokens.
    fn forward_level(&self, tokens: Tensor<2, Int>, level: usize) -> Tensor<2> {
        assert!(level < self.num_levels(), "NestedTextClassifier: level {level} of {}", self.num_levels());
        let (x, pad) = self.body.features(tokens, level);
        let [batch, length, width] = x.dims();
        let real = match pad {
            Some(pad) => pad.bool_not().float().reshape([batch, length, 1]),
            None => Tensor::ones([batch, length, 1], &x.device()),
        };
        let count = real.clone().sum_dim(1).clamp_min(1.0).reshape([batch, 1]);
        let pooled = (x * real).sum_dim(1).reshape([batch, width]) / count;
        self.head.forward(pooled, level)
    }
}

impl NestedNetwork for NestedLanguageModel {
    type Level = NestedLanguageModel;
    type Input = Tensor<2, Int>;
    type Output = Tensor<3>;

    text_network_items!();

    fn forward_level(&self, tokens: Tensor<2, Int>, level: usize) -> Tensor<3> {
        assert!(level < self.num_levels(), "NestedLanguageModel: level {level} of {}", self.num_levels());
        let (x, _) = self.body.features(tokens, level);
        let [batch, length, width] = x.dims();
        let logits = self.head.forward(x.reshape([batch * length, width]), level);
        let classes = logits.dims()[1];
        logits.reshape([batch, length, classes])
    }
}

/// The size of a text model's name with `prefix` (`text-tiny`, `lm-small`).
fn parse_name(name: &str, prefix: &str) -> Option<VitSize> {
    let size = name.strip_prefix(prefix)?.strip_prefix('-')?;
    SIZES.iter().find(|s| s.name.strip_prefix("vit-") == Some(size)).copied()
}

impl NestedNetworkConfig for NestedTextClassifierConfig {
    type Network = NestedTextClassifier;

    fn init_network(&self, device: &Device) -> crate::Result<NestedTextClassifier> {
        self.try_init(device)
    }

    fn name(&self) -> String {
        self.body.size_name("text")
    }

    fn level_alone(&self, level: usize) -> Option<Self> {
        let (body, level) = self.body.level_alone(level)?;
        let classes = self.level_classes.get(level).copied().unwrap_or(self.num_classes);
        Some(Self { body, num_classes: classes, level_classes: Vec::new(), ..self.clone() })
    }
}

impl NestedNetworkConfig for NestedLanguageModelConfig {
    type Network = NestedLanguageModel;

    fn init_network(&self, device: &Device) -> crate::Result<NestedLanguageModel> {
        self.try_init(device)
    }

    fn name(&self) -> String {
        self.body.size_name("lm")
    }

    fn level_alone(&self, level: usize) -> Option<Self> {
        let (body, _) = self.body.level_alone(level)?;
        Some(Self { body, ..self.clone() })
    }
}

impl ModelFamily for NestedTextClassifierConfig {
    const FAMILY: &'static str = "text-classifier";

    fn names() -> &'static [&'static str] {
        &["text-tiny", "text-small"]
    }

    fn claims(name: &str) -> bool {
        parse_name(name, "text").is_some()
    }

    fn from_request(request: &ModelRequest<TokenShape>) -> Option<crate::Result<Self>> {
        let size = parse_name(&request.name, "text")?;
        Some(TextTransformerConfig::for_request(size, request).and_then(|body| {
            let config = Self::new(body)
                .with_num_classes(request.num_classes)
                .with_level_classes(request.level_classes.clone())
                .with_unnested_output(request.unnested_output);
            let levels = config.body.check("text classifier")?;
            check_level_classes(&config.level_classes, levels.points.len(), config.num_classes)?;
            Ok(config)
        }))
    }
}

impl ModelFamily for NestedLanguageModelConfig {
    const FAMILY: &'static str = "language-model";

    fn names() -> &'static [&'static str] {
        &["lm-tiny", "lm-small"]
    }

    fn claims(name: &str) -> bool {
        parse_name(name, "lm").is_some()
    }

    fn from_request(request: &ModelRequest<TokenShape>) -> Option<crate::Result<Self>> {
        let size = parse_name(&request.name, "lm")?;
        Some(TextTransformerConfig::for_request(size, request).and_then(|body| {
            if !request.level_classes.is_empty() {
                return Err(ModelError::Invalid(
                    "a language model predicts the next token at every level: coarse-to-fine heads are for classifiers".into(),
                ));
            }
            if request.num_classes != body.vocabulary {
                return Err(ModelError::Invalid(format!(
                    "a language model predicts its vocabulary's {} tokens, but the data have {} classes: train it on a text corpus",
                    body.vocabulary, request.num_classes
                )));
            }
            let config = Self::new(body).with_unnested_output(request.unnested_output);
            config.body.check("language model")?;
            Ok(config)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure_level;

    fn tokens(batch: usize, length: usize, device: &Device) -> Tensor<2, Int> {
        let ids: Vec<i64> = (0..batch * length).map(|i| (i * 31 % 250) as i64).collect();
        Tensor::from_data(TensorData::new(ids, [batch, length]), device)
    }

    fn request(name: &str, classes: usize, levels: &[f64]) -> ModelRequest<TokenShape> {
        ModelRequest::new(
            name,
            TokenShape { length: 16, vocabulary: 257 },
            classes,
            LevelRequest::Channels(LevelSpec::Ratios(levels.to_vec())),
        )
    }

    fn close(a: Tensor<2>, b: Tensor<2>, what: &str) {
        let diff = (a - b).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "{what}: max |diff| {diff}");
    }

    #[test]
    fn mix_and_match_takes_each_block_from_any_level_of_both_text_models() {
        let device = Device::flex();
        let classifier = NestedTextClassifierConfig::from_request(&request("text-tiny", 15, &[0.5, 1.0]))
            .unwrap()
            .unwrap()
            .try_init(&device)
            .unwrap();
        let x = tokens(2, 16, &device);
        let layers = classifier.mixable_layers();
        assert_eq!(layers.len(), 1 + 2 * 4, "the width, then each block's attention and feed-forward");
        assert_eq!(layers[0].widths, [32, 64]);
        for level in 0..2 {
            let same = classifier.mixed(&vec![level; layers.len()]).unwrap();
            close(
                same.forward_level(x.clone(), 0),
                classifier.forward_level(x.clone(), level),
                "a level as a mix",
            );
        }
        let mut choice = vec![1; layers.len()];
        choice[1] = 0;
        choice[4] = 0;
        let mix = classifier.mixed(&choice).unwrap();
        let (core, full) = (measure_level(&classifier, 0).0.params, measure_level(&classifier, 1).0.params);
        let mixed = measure_level(&mix, 0).0.params;
        assert!(core < mixed && mixed < full, "{core} < {mixed} < {full}");
        assert!(classifier.mixed(&[0, 1]).is_err(), "a choice of the wrong length is refused");

        // MatFormer's setting: the width stays whole, only heads and feed-forward units mix.
        let mut config =
            NestedLanguageModelConfig::from_request(&request("lm-tiny", 257, &[0.5, 1.0])).unwrap().unwrap();
        config.body.nest_model_width = false;
        let lm = config.try_init(&device).unwrap();
        let layers = lm.mixable_layers();
        assert_eq!(layers.len(), 2 * 4);
        assert_eq!(layers[1].widths, [128, 256], "feed-forward units of the levels");
        let same = lm.mixed(&[0; 8]).unwrap().forward_level(x.clone(), 0);
        let level = lm.forward_level(x.clone(), 0);
        let diff = (same - level).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "the core as a mix differs by {diff}");
        assert_eq!(lm.mixed(&[1, 0, 1, 0, 1, 0, 1, 0]).unwrap().forward_level(x, 0).dims(), [2, 16, 257]);

        // Per-level output layers cannot be mixed.
        let private = NestedLanguageModelConfig::from_request(&request("lm-tiny", 257, &[0.5, 1.0]))
            .unwrap()
            .unwrap()
            .with_unnested_output(true)
            .try_init(&device)
            .unwrap();
        assert!(private.mixable_layers().is_empty());
    }

    #[test]
    fn the_classifier_nests_and_extracts_its_levels() {
        let device = Device::flex();
        let config = NestedTextClassifierConfig::from_request(&request("text-tiny", 15, &[0.25, 0.5, 1.0]))
            .unwrap()
            .unwrap();
        let model = config.try_init(&device).unwrap();
        let x = tokens(2, 16, &device);
        for level in 0..3 {
            let out = model.forward_level(x.clone(), level);
            assert_eq!(out.dims(), [2, 15]);
            close(model.extract_level(level).forward_level(x.clone(), 0), out, "extracted level");
        }
        let costs: Vec<_> = (0..3).map(|k| measure_level(&model, k).0).collect();
        assert!(costs[0].macs < costs[1].macs && costs[1].macs < costs[2].macs);
        assert_eq!(costs[2].params, model.extract_level(2).num_params(), "every parameter is counted");
        assert_eq!(config.name(), "text-tiny");
    }

    #[test]
    fn the_language_model_is_causal_and_predicts_every_position() {
        let device = Device::flex();
        let config =
            NestedLanguageModelConfig::from_request(&request("lm-tiny", 257, &[0.5, 1.0])).unwrap().unwrap();
        let model = config.try_init(&device).unwrap();
        let x = tokens(2, 16, &device);
        let out = model.forward_level(x.clone(), 0);
        assert_eq!(out.dims(), [2, 16, 257]);
        // Changing the last token changes no earlier position's prediction.
        let mut ids: Vec<i64> = x.to_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        ids[15] = 7;
        let changed = model.forward_level(Tensor::from_data(TensorData::new(ids, [2, 16]), &device), 0);
        let early = |t: Tensor<3>| t.narrow(1, 0, 15).reshape([2 * 15, 257]);
        close(early(out.clone()), early(changed), "causal");
        let alone = model.extract_level(0).forward_level(x, 0);
        close(alone.reshape([32, 257]), out.reshape([32, 257]), "extracted level");
        let lattice = ModelRequest {
            levels: LevelRequest::Lattice("0.5,1;2,4".parse().unwrap()),
            ..request("lm-tiny", 257, &[1.0])
        };
        let model =
            NestedLanguageModelConfig::from_request(&lattice).unwrap().unwrap().try_init(&device).unwrap();
        assert_eq!((model.num_levels(), model.level_name(0).as_str()), (4, "w0.5-d2"));
        assert!(!model.level_uses_layer("transformer.blocks.3.feed_forward.inner", 0));
    }

    #[test]
    fn bad_requests_are_named() {
        let e =
            NestedLanguageModelConfig::from_request(&request("lm-tiny", 15, &[1.0])).unwrap().unwrap_err();
        assert!(e.to_string().contains("train it on a text corpus"), "{e}");
        let body = TextTransformerConfig::new().with_n_heads(3);
        let e = NestedTextClassifierConfig::new(body).try_init(&Device::flex()).unwrap_err().to_string();
        assert!(e.contains("does not divide into 3 heads"), "{e}");
        assert!(
            NestedTextClassifierConfig::claims("text-small")
                && !NestedTextClassifierConfig::claims("text-huge")
        );
        assert!(NestedLanguageModelConfig::claims("lm-tiny") && !NestedLanguageModelConfig::claims("lm"));
        let mut r = request("text-tiny", 2, &[1.0]);
        r.unnested_first_conv = true;
        assert!(NestedTextClassifierConfig::from_request(&r).unwrap().is_err());
    }
}
