//! Tests of the nested transformer layers: at the full level each is Burn's own layer with the
//! same weights; a smaller level is the full layer restricted to its heads, units and features.

use burn::module::{Module, Param};
use burn::nn::attention::{MhaInput, MultiHeadAttentionConfig, generate_autoregressive_mask};
use burn::nn::transformer::{
    PositionWiseFeedForwardConfig, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{EmbeddingConfig, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::{Distribution, Tolerance};

use crate::*;

macro_rules! per_device {
    ($f:ident) => {
        mod $f {
            #[test]
            fn flex() {
                super::$f(&burn::tensor::Device::flex());
            }
            #[test]
            fn flex_autodiff() {
                super::$f(&burn::tensor::Device::flex().autodiff());
            }
        }
    };
}

const D_MODEL: usize = 16;
const HEADS: usize = 4;

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

fn close<const D: usize>(a: Tensor<D>, b: Tensor<D>) {
    a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
}

/// A padding mask over `[2, length]`: the second sequence's last two positions are padding.
fn padding(length: usize, device: &Device) -> Tensor<2, Bool> {
    let values: Vec<bool> = (0..2 * length).map(|i| i >= 2 * length - 2).collect();
    Tensor::<1, Bool>::from_bool(TensorData::new(values, [2 * length]), device).reshape([2, length])
}

fn attention_cfg(model_widths: Vec<usize>) -> NestedMultiHeadAttentionConfig {
    NestedMultiHeadAttentionConfig::new(D_MODEL, HEADS, vec![1, 2, 4], model_widths).with_dropout(0.0)
}

/// The full level is Burn's `MultiHeadAttention` with the same weights: context and weights,
/// without masks, with padding and with the causal mask.
fn attention_full_level_is_burns(device: &Device) {
    device.seed(11);
    let dense = MultiHeadAttentionConfig::new(D_MODEL, HEADS).with_dropout(0.0).init(device);
    let mut nested = attention_cfg(vec![D_MODEL; 3]).init(device);
    nested.load_full(&dense);
    let x = random([2, 5, D_MODEL], device);
    let causal = generate_autoregressive_mask(2, 5, device);
    for (pad, attn) in [(false, false), (true, false), (false, true), (true, true)] {
        let (mut theirs, mut ours) = (MhaInput::self_attn(x.clone()), NestedMhaInput::self_attn(x.clone()));
        if pad {
            theirs = theirs.mask_pad(padding(5, device));
            ours = ours.mask_pad(padding(5, device));
        }
        if attn {
            theirs = theirs.mask_attn(causal.clone());
            ours = ours.mask_attn(causal.clone());
        }
        let (theirs, ours) = (dense.forward(theirs), nested.forward(ours, 2));
        close(ours.context, theirs.context);
        close(ours.weights, theirs.weights);
    }
}
per_device!(attention_full_level_is_burns);

/// Level k (its heads, over a nested model width) is the full layer on the input padded with
/// zero features, with the output projection's rows of the other heads zeroed, restricted to
/// the level's features; its attention weights are the full layer's first heads'.
fn attention_level_is_restriction_of_full(device: &Device) {
    device.seed(12);
    let layer = attention_cfg(vec![8, 12, D_MODEL]).init(device);
    for level in 0..3 {
        let (heads, width) = (layer.level_heads(level), layer.level_width(level));
        assert_eq!((heads, width), ([1, 2, 4][level], [8, 12, 16][level]));
        let x = random([2, 6, width], device);
        let mut restricted = attention_cfg(vec![8, 12, D_MODEL]).init(device);
        restricted.load_full(&plain_attention(&layer, device));
        let rows = heads * layer.d_head;
        let kept = Tensor::<1>::from_data(
            TensorData::new((0..D_MODEL).map(|r| if r < rows { 1.0f32 } else { 0.0 }).collect(), [D_MODEL]),
            device,
        );
        restricted.output.weight =
            restricted.output.weight.clone().map(|w| w * kept.clone().reshape([D_MODEL, 1]));
        let padded = Tensor::cat(vec![x.clone(), Tensor::zeros([2, 6, D_MODEL - width], device)], 2);
        let full = restricted.forward(NestedMhaInput::self_attn(padded).mask_pad(padding(6, device)), 2);
        let small = layer.forward(NestedMhaInput::self_attn(x).mask_pad(padding(6, device)), level);
        assert_eq!(small.context.dims(), [2, 6, width]);
        close(small.context, full.context.slice(s![.., .., 0..width]));
        close(small.weights, full.weights.slice(s![.., 0..heads, .., ..]));
    }
}
per_device!(attention_level_is_restriction_of_full);

/// Burn's attention holding the nested layer's full weights.
fn plain_attention(
    layer: &NestedMultiHeadAttention,
    device: &Device,
) -> burn::nn::attention::MultiHeadAttention {
    let mut plain = MultiHeadAttentionConfig::new(D_MODEL, HEADS).with_dropout(0.0).init(device);
    plain.query = layer.query.extract_level(2);
    plain.key = layer.key.extract_level(2);
    plain.value = layer.value.extract_level(2);
    plain.output = layer.output.extract_level(2);
    plain
}

/// A level's one-level copy computes what the level computes; a Mix'n'Match block with a
/// level's counts is that level's copy.
fn attention_copies_compute_their_level(device: &Device) {
    device.seed(13);
    let layer = attention_cfg(vec![D_MODEL; 3]).init(device);
    let x = random([2, 4, D_MODEL], device);
    for level in 0..3 {
        let expected = layer.forward(NestedMhaInput::self_attn(x.clone()), level).context;
        let single = layer.single_level(level);
        assert_eq!(single.num_levels(), 1);
        close(single.forward(NestedMhaInput::self_attn(x.clone()), 0).context, expected.clone());
        let block = layer.single_block(layer.level_heads(level), D_MODEL);
        close(block.forward(NestedMhaInput::self_attn(x.clone()), 0).context, expected);
    }
}
per_device!(attention_copies_compute_their_level);

/// Training the core reaches only the core's heads: the query weight's gradient is exactly
/// zero outside the first head's columns.
#[test]
fn a_level_s_gradient_stays_in_its_heads() {
    let device = Device::flex().autodiff();
    device.seed(14);
    let layer = attention_cfg(vec![D_MODEL; 3]).init(&device);
    let x = random([2, 3, D_MODEL], &device);
    let grads = layer.forward(NestedMhaInput::self_attn(x), 0).context.sum().backward();
    let grad = layer.query.weight.grad(&grads).unwrap();
    let d_head = layer.d_head;
    let outside = grad.clone().slice(s![.., d_head..]).abs().sum().into_scalar::<f32>();
    let inside = grad.slice(s![.., 0..d_head]).abs().sum().into_scalar::<f32>();
    assert_eq!(outside, 0.0);
    assert!(inside > 0.0);
}

#[test]
fn a_head_count_that_does_not_divide_is_an_error() {
    let config = NestedMultiHeadAttentionConfig::new(10, 4, vec![2, 4], vec![10, 10]);
    let error = config.check().unwrap_err().to_string();
    assert_eq!(error, "NestedMultiHeadAttention: 4 heads do not divide the model width 10");
    let config = NestedMultiHeadAttentionConfig::new(16, 4, vec![3, 2, 4], vec![16; 3]);
    assert!(config.check().unwrap_err().to_string().contains("level 1 (2) is narrower than level 0 (3)"));
    let config = NestedMultiHeadAttentionConfig::new(16, 4, vec![2, 4], vec![16; 3]);
    assert!(config.check().unwrap_err().to_string().contains("2 head counts but 3 model widths"));
    let config =
        NestedTransformerConfig::new(16, 4, 32, 3, vec![2, 4], vec![16, 32], vec![16; 2], vec![3, 2]);
    assert!(
        config.check().unwrap_err().to_string().contains("level 1 runs fewer blocks (2) than level 0 (3)")
    );
}

/// The probe counts the projections' parameters and MACs and attention's products over
/// positions (`2 · heads · length² · d_head` per sample).
#[test]
fn attention_costs_count_the_sequence_terms() {
    let device = Device::flex();
    let layer = attention_cfg(vec![D_MODEL; 3]).init(&device);
    let length = 7;
    for level in 0..3 {
        let heads = layer.level_heads(level);
        let x = random([1, length, D_MODEL], &device);
        let (_, cost) = record_costs(|| layer.forward(NestedMhaInput::self_attn(x), level));
        let features = heads * layer.d_head;
        let projections = 4 * D_MODEL * features;
        assert_eq!(cost.params, projections + 3 * features + D_MODEL);
        assert_eq!(cost.params, layer.level_num_params(level));
        assert_eq!(cost.macs, length * projections + 2 * heads * length * length * layer.d_head);
    }
}

/// The feed-forward's full level is Burn's `PositionWiseFeedForward`; a level is its extracted
/// Burn layer, and the full layer with the other hidden units' outer rows zeroed.
fn feed_forward_levels_are_burns_layers(device: &Device) {
    device.seed(15);
    let dense = PositionWiseFeedForwardConfig::new(D_MODEL, 32).with_dropout(0.0).init(device);
    let mut nested = NestedFeedForwardConfig::new(D_MODEL, 32, vec![D_MODEL; 4], vec![4, 8, 16, 32])
        .with_dropout(0.0)
        .init(device);
    nested.load_full(&dense);
    let x = random([3, 5, D_MODEL], device);
    close(nested.forward(x.clone(), 3), dense.forward(x.clone()));
    for level in 0..4 {
        let hidden = nested.level_hidden(level);
        let ours = nested.forward(x.clone(), level);
        close(nested.extract_level(level).forward(x.clone()), ours.clone());
        close(nested.single_block(hidden, D_MODEL).forward(x.clone(), 0), ours.clone());
        close(nested.forward_block(x.clone(), hidden), ours.clone());
        let mut restricted = PositionWiseFeedForwardConfig::new(D_MODEL, 32).with_dropout(0.0).init(device);
        restricted.linear_inner = dense.linear_inner.clone();
        let outer = dense.linear_outer.weight.val();
        let zeroed = Tensor::cat(
            vec![outer.clone().slice(s![0..hidden, ..]), outer.zeros_like().slice(s![hidden.., ..])],
            0,
        );
        restricted.linear_outer.weight = Param::from_tensor(zeroed.detach());
        restricted.linear_outer.bias = dense.linear_outer.bias.clone();
        close(ours, restricted.forward(x.clone()));
    }
}
per_device!(feed_forward_levels_are_burns_layers);

/// Layer norm and embedding: the full level is Burn's, a level uses its leading features (the
/// norm with its own statistics).
fn norm_and_embedding_levels_use_their_features(device: &Device) {
    device.seed(16);
    let mut norm = NestedLayerNormConfig::new(D_MODEL, vec![8, D_MODEL]).init(device);
    norm.gamma = norm.gamma.clone().map(|g| g.random_like(Distribution::Normal(1.0, 0.5)));
    norm.beta = norm.beta.take().map(|b| b.map(|b| b.random_like(Distribution::Normal(0.0, 0.5))));
    let x = random([2, 3, D_MODEL], device);
    let mut dense = LayerNormConfig::new(D_MODEL).init(device);
    dense.gamma = Param::from_tensor(norm.gamma.val());
    dense.beta = norm.beta.as_ref().map(|b| Param::from_tensor(b.val()));
    close(norm.forward(x.clone(), 1), dense.forward(x.clone()));
    let core = x.clone().slice(s![.., .., 0..8]);
    let mut plain = LayerNormConfig::new(8).init(device);
    plain.gamma = Param::from_tensor(norm.gamma.val().slice(s![0..8]).detach());
    plain.beta = norm.beta.as_ref().map(|b| Param::from_tensor(b.val().slice(s![0..8]).detach()));
    close(norm.forward(core.clone(), 0), plain.forward(core.clone()));
    close(norm.extract_level(0).forward(core.clone()), plain.forward(core));

    let table = NestedEmbeddingConfig::new(10, D_MODEL, vec![4, D_MODEL]).init(device);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 3, 9, 9, 1, 2], [2, 3]), device);
    let mut dense = EmbeddingConfig::new(10, D_MODEL).init(device);
    dense.weight = Param::from_tensor(table.weight.val());
    let full = dense.forward(ids.clone());
    close(table.forward(ids.clone(), 1), full.clone());
    close(table.forward(ids.clone(), 0), full.slice(s![.., .., 0..4]));
    close(table.extract_level(0).forward(ids.clone()), table.forward(ids, 0));
}
per_device!(norm_and_embedding_levels_use_their_features);

fn transformer_cfg() -> NestedTransformerConfig {
    NestedTransformerConfig::new(
        D_MODEL,
        HEADS,
        32,
        3,
        vec![1, 2, 4],
        vec![8, 16, 32],
        vec![D_MODEL; 3],
        vec![1, 2, 3],
    )
    .with_dropout(0.0)
}

/// The stack's full level is Burn's pre-norm `TransformerEncoder` with the same weights
/// (causal mask included).
fn transformer_full_level_is_burns_encoder(device: &Device) {
    device.seed(17);
    let dense = TransformerEncoderConfig::new(D_MODEL, 32, HEADS, 3)
        .with_norm_first(true)
        .with_dropout(0.0)
        .init(device);
    let mut nested = transformer_cfg().init(device);
    nested.load_full(&dense);
    let x = random([2, 5, D_MODEL], device);
    let causal = generate_autoregressive_mask(2, 5, device);
    let masks = AttentionMasks { pad: Some(padding(5, device)), attn: Some(causal.clone()) };
    let theirs =
        dense.forward(TransformerEncoderInput::new(x.clone()).mask_pad(padding(5, device)).mask_attn(causal));
    close(nested.forward(x, &masks, 2), theirs);
}
per_device!(transformer_full_level_is_burns_encoder);

/// Depth nests as width does: level k runs its first blocks; its one-level copy holds only
/// those and computes the same; a lattice point runs any depth at a level's width.
fn transformer_levels_nest_depth(device: &Device) {
    device.seed(18);
    let stack = transformer_cfg().init(device);
    let x = random([2, 4, D_MODEL], device);
    let masks = AttentionMasks::default();
    for level in 0..3 {
        let expected = stack.forward(x.clone(), &masks, level);
        let single = stack.single_level(level);
        assert_eq!(single.blocks.len(), level + 1);
        close(single.forward(x.clone(), &masks, 0), expected.clone());
        close(stack.forward_lattice(x.clone(), &masks, level, level + 1), expected);
    }
    let by_hand = stack.blocks[..2].iter().fold(x.clone(), |x, b| b.forward(x, &masks, 0));
    close(stack.forward_lattice(x, &masks, 0, 2), by_hand);
}
per_device!(transformer_levels_nest_depth);

/// A masked stack lists its attention and feed-forward weights under their paths, and a level
/// runs only its blocks' weights.
#[test]
fn a_stack_names_its_weights_and_the_blocks_a_level_runs() {
    let device = Device::flex();
    let stack = transformer_cfg().with_masked(true).init(&device);
    let names: Vec<String> = stack.layer_weights().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 3 * 6);
    assert_eq!(
        &names[..6],
        [
            "blocks.0.attention.query",
            "blocks.0.attention.key",
            "blocks.0.attention.value",
            "blocks.0.attention.output",
            "blocks.0.feed_forward.inner",
            "blocks.0.feed_forward.outer"
        ]
    );
    assert!(stack.layer_weights().iter().all(|(_, w)| w.mask().is_some()));
    assert!(
        stack.layer_runs("blocks.0.feed_forward.inner", 0)
            && !stack.layer_runs("blocks.1.attention.query", 0)
    );
    assert!(stack.layer_runs("blocks.1.attention.query", 1) && stack.layer_runs("blocks.2.attention.key", 2));
    assert_eq!(weight_name_under("blocks.2.attention.key", "blocks"), Some("2.attention.key"));
    assert_eq!(weight_name_under("blocks", "blocks"), Some(""));
    assert_eq!(weight_name_under("blocks2.x", "blocks"), None);
    let params: usize = stack.level_num_params(0);
    let x = Tensor::<3>::zeros([1, 3, stack.blocks[0].norm_attention.level_width(0)], &device);
    let (_, recorded) = record_costs(|| stack.forward(x, &AttentionMasks::default(), 0));
    assert_eq!(recorded.params, params, "the probe sees every parameter, layer norms included");
    let extracted = stack.single_level(0);
    assert_eq!(params, extracted.num_params(), "a level's copy holds exactly its parameters");
}
