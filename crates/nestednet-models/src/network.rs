//! What every nested network offers: the trait that training, masks, heads, reports, exports
//! and checkpoints are written against, built-in models and a user's own alike.

use burn::module::Module;
use burn::prelude::*;
use nestednet_nn::{ChannelImportance, Maskable, record_costs};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// What one level costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCost {
    /// Trainable parameters the level uses (weights, biases and its batch-norm affine
    /// parameters; running statistics are buffers, not parameters, as in PyTorch).
    pub params: usize,
    /// Multiply-accumulates of the convolution and linear layers for one input sample.
    pub macs: usize,
}

/// What a nested network takes: one batch of its inputs (images `Tensor<4>`, token ids
/// `Tensor<2, Int>`, or a user's own type). The trainer, the exports and the serving tools move
/// batches between devices, cut them into shards and draw probe batches through this trait
/// alone, so that any input can be trained and served.
pub trait NetworkInput: Clone + Send + Sync + core::fmt::Debug + 'static {
    /// What one sample looks like, recorded in exports and compared with the data's
    /// (`[channels, height, width]` for images).
    type Shape: Clone + PartialEq + core::fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Samples in the batch.
    fn batch_size(&self) -> usize;

    /// Samples `start..start + len` of the batch (a data-parallel shard).
    fn narrow_batch(self, start: usize, len: usize) -> Self;

    /// The device the batch is on.
    fn device(&self) -> Device;

    /// The batch on `device`.
    fn to_device(self, device: &Device) -> Self;

    /// The batch without its autodiff association (what a detached teacher reads).
    fn without_autodiff(self) -> Self;

    /// A batch of `batch` zero samples (what the cost probe runs).
    fn zeros(shape: &Self::Shape, batch: usize, device: &Device) -> Self;

    /// A batch of `batch` valid samples made from the random bits `draw` gives (probe batches
    /// for latency, export checks and comparisons). `draw` is the caller's own generator, so
    /// that the device's shared one, which seeded runs depend on, is left alone.
    fn random(shape: &Self::Shape, batch: usize, draw: &mut dyn FnMut() -> u64, device: &Device) -> Self;

    /// The shape in words, for messages (`1x28x28 images`).
    fn describe(shape: &Self::Shape) -> String;
}

/// A uniform float in `[0, 1)` from 53 random bits.
fn unit(draw: &mut dyn FnMut() -> u64) -> f64 {
    (draw() >> 11) as f64 / (1u64 << 53) as f64
}

/// Images `[batch, channels, height, width]`.
impl NetworkInput for Tensor<4> {
    type Shape = [usize; 3];

    fn batch_size(&self) -> usize {
        self.dims()[0]
    }

    fn narrow_batch(self, start: usize, len: usize) -> Self {
        self.narrow(0, start, len)
    }

    fn device(&self) -> Device {
        Tensor::device(self)
    }

    fn to_device(self, device: &Device) -> Self {
        Tensor::to_device(self, device)
    }

    fn without_autodiff(self) -> Self {
        self.inner()
    }

    fn zeros(&[c, h, w]: &[usize; 3], batch: usize, device: &Device) -> Self {
        Tensor::zeros([batch, c, h, w], device)
    }

    /// Standard-normal-ish pixels: a centred sum of four uniforms, scaled.
    fn random(&[c, h, w]: &[usize; 3], batch: usize, draw: &mut dyn FnMut() -> u64, device: &Device) -> Self {
        let values: Vec<f32> = (0..batch * c * h * w)
            .map(|_| (((0..4).map(|_| unit(draw)).sum::<f64>() - 2.0) * 1.7) as f32)
            .collect();
        Tensor::from_data(TensorData::new(values, [batch, c, h, w]), device)
    }

    fn describe(&[c, h, w]: &[usize; 3]) -> String {
        format!("{c}x{h}x{w} images")
    }
}

/// The shape of a token-id sequence: its length and the ids it may hold (`0..vocabulary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenShape {
    /// Tokens per sequence.
    pub length: usize,
    /// Size of the vocabulary: every id lies in `0..vocabulary`.
    pub vocabulary: usize,
}

/// Token ids `[batch, length]`.
impl NetworkInput for Tensor<2, Int> {
    type Shape = TokenShape;

    fn batch_size(&self) -> usize {
        self.dims()[0]
    }

    fn narrow_batch(self, start: usize, len: usize) -> Self {
        self.narrow(0, start, len)
    }

    fn device(&self) -> Device {
        Tensor::device(self)
    }

    fn to_device(self, device: &Device) -> Self {
        Tensor::to_device(self, device)
    }

    fn without_autodiff(self) -> Self {
        self.inner()
    }

    fn zeros(shape: &TokenShape, batch: usize, device: &Device) -> Self {
        Tensor::zeros([batch, shape.length], device)
    }

    fn random(shape: &TokenShape, batch: usize, draw: &mut dyn FnMut() -> u64, device: &Device) -> Self {
        let ids: Vec<i64> =
            (0..batch * shape.length).map(|_| (draw() % shape.vocabulary.max(1) as u64) as i64).collect();
        Tensor::from_data(TensorData::new(ids, [batch, shape.length]), device)
    }

    fn describe(shape: &TokenShape) -> String {
        format!("sequences of {} tokens from a vocabulary of {}", shape.length, shape.vocabulary)
    }
}

/// What a nested network outputs: logits that classify one or more rows per sample. Training
/// (the cross-entropy of each row against its target class), distillation, evaluation and
/// consensus see them as a `[rows, classes]` matrix ([`into_logits`](Self::into_logits)).
pub trait NetworkOutput: Clone + Send + Sync + core::fmt::Debug + 'static {
    /// The logits as `[rows, classes]`: one row per prediction, in the order of the targets.
    fn into_logits(self) -> Tensor<2>;
}

/// Class logits `[batch, classes]`: one row per sample.
impl NetworkOutput for Tensor<2> {
    fn into_logits(self) -> Tensor<2> {
        self
    }
}

/// Per-position logits `[batch, positions, classes]` (a language model's): one row per
/// position, sample by sample.
impl NetworkOutput for Tensor<3> {
    fn into_logits(self) -> Tensor<2> {
        self.flatten::<2>(0, 1)
    }
}

/// The shape of one sample `M` takes.
pub type InputShape<M> = <<M as NestedNetwork>::Input as NetworkInput>::Shape;

/// Each re-ordered layer's channel order (new channel `i` = old channel `order[i]`), by name.
pub type ChannelOrders = Vec<(String, Vec<usize>)>;

/// A layer whose width a Mix'n'Match sub-network chooses among the trained levels' widths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixableLayer {
    /// The layer's name (`conv2`).
    pub name: String,
    /// Its output width at every level, core first.
    pub widths: Vec<usize>,
}

/// A nested network: `n` levels in one set of weights, level 0 the core and level `n − 1`
/// the full network, each taking the same [`Input`](Self::Input) and giving an
/// [`Output`](Self::Output) of logits (images → class logits for the built-in models; token
/// ids → class or per-position logits for a user's own).
///
/// Only the input and output types and four items have no default: [`num_levels`](Self::num_levels),
/// [`forward_level`](Self::forward_level), [`input_shape`](Self::input_shape) and
/// [`extract_level`](Self::extract_level) with its [`Level`](Self::Level) type. A network built
/// from `nestednet-nn`'s layers then gets its per-level costs and classes measured
/// ([`measure_level`]); listing its maskable layers in [`weight_layers`](Self::weight_layers)
/// and [`weight_layers_mut`](Self::weight_layers_mut) lets weight masks be learned on it.
pub trait NestedNetwork: Module {
    /// One level as a standalone network (exports and serving): its own type, with one level,
    /// is the simplest choice (`type Level = Self`, built with each layer's `single_level`).
    type Level: NestedNetwork<Input = Self::Input, Output = Self::Output>;

    /// What every level takes: a batch of inputs (`Tensor<4>` images for the built-in models).
    type Input: NetworkInput;

    /// What every level gives: logits (`Tensor<2>` class logits for the built-in models).
    type Output: NetworkOutput;

    /// Number of levels (level 0 = core, last = full).
    fn num_levels(&self) -> usize;

    /// The output of level `level` for `input` (class logits `[batch, classes_level]` for a
    /// classifier).
    fn forward_level(&self, input: Self::Input, level: usize) -> Self::Output;

    /// What one sample of the input looks like (`[channels, height, width]` for images).
    fn input_shape(&self) -> InputShape<Self>;

    /// Level `level` as a standalone network whose weights are compact copies of the level's
    /// (masks applied); its level 0 computes what `forward_level(·, level)` computes in
    /// evaluation mode.
    fn extract_level(&self, level: usize) -> Self::Level;

    /// Outputs of every level, core first.
    fn forward_all(&self, input: Self::Input) -> Vec<Self::Output> {
        (0..self.num_levels()).map(|k| self.forward_level(input.clone(), k)).collect()
    }

    /// Whether two levels may run their training forward and backward passes at the same time,
    /// on two threads: true only if no state that a level's forward pass writes is shared with
    /// another level. Batch-norm running statistics are such state: Burn's `BatchNorm` keeps
    /// an update per thread and averages them, so a batch norm that two levels share would
    /// average their updates, in an order that depends on which thread ran which level. False
    /// by default; the built-in networks, whose levels each have their own batch norms
    /// ([`LevelBatchNorm`](nestednet_nn::LevelBatchNorm)), say true, and the trainer then runs
    /// their smaller levels side by side on the CPU (same gradients, bit for bit).
    fn levels_train_side_by_side(&self) -> bool {
        false
    }

    /// Level `level`'s name in reports and on the command line (`L0`, `L1`, … by default).
    fn level_name(&self, level: usize) -> String {
        format!("L{level}")
    }

    /// The level called `key`: its number (`2`, `L2`) or its [`level_name`](Self::level_name).
    fn find_level(&self, key: &str) -> crate::Result<usize> {
        let n = self.num_levels();
        let key = key.trim();
        let number = key.strip_prefix('L').unwrap_or(key).parse::<usize>().ok();
        number.filter(|&k| k < n).or_else(|| (0..n).find(|&k| self.level_name(k) == key)).ok_or_else(|| {
            ModelError::UnknownLevel {
                key: key.to_string(),
                levels: (0..n)
                    .map(|k| format!("{k} ({})", self.level_name(k)))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
    }

    /// Parameters and MACs of level `level`; by default measured ([`measure_level`]).
    fn level_cost(&self, level: usize) -> LevelCost {
        measure_level(self, level).0
    }

    /// Number of classes level `level` predicts; by default measured ([`measure_level`]).
    fn level_classes(&self, level: usize) -> usize {
        measure_level(self, level).1
    }

    /// Output widths of the network's main layers at `level`, for reports (may be empty).
    fn level_widths(&self, level: usize) -> Vec<(String, usize)> {
        let _ = level;
        Vec::new()
    }

    /// Every layer that could carry a nested weight mask, by name, in forward order (masked or
    /// not: see [`Maskable::mask`]). Empty by default: no masks.
    fn weight_layers(&self) -> Vec<(String, &dyn Maskable)> {
        Vec::new()
    }

    /// The same layers, mutably, in the same order.
    fn weight_layers_mut(&mut self) -> Vec<(String, &mut dyn Maskable)> {
        Vec::new()
    }

    /// Whether level `level` runs the weight layer `layer` at all (a residual level skips the
    /// blocks beyond its depth). Mask densities count only the layers a level runs.
    fn level_uses_layer(&self, layer: &str, level: usize) -> bool {
        let _ = (layer, level);
        true
    }

    /// Mix'n'Match: the layers whose width a sub-network may take from any trained level,
    /// independently of the others, in forward order. Empty (the default) when only the
    /// trained levels exist (no channel scheduling, masks, private or split layers).
    fn mixable_layers(&self) -> Vec<MixableLayer> {
        Vec::new()
    }

    /// The sub-network whose mixable layer `i` has level `choice[i]`'s width (see
    /// [`mixable_layers`](Self::mixable_layers)), as a one-level network holding compact copies
    /// of its weights. A batch norm after a layer is that of the level whose width it takes;
    /// since its input comes from other widths than that level's, recalibrate its statistics
    /// before use (`nestednet_nn::recalibrate_batch_norms`). `choice = [k; layers]` is level `k`.
    fn mixed(&self, choice: &[usize]) -> crate::Result<Self> {
        let _ = choice;
        Err(ModelError::Unsupported("Mix'n'Match sub-networks (it lists no mixable layer)".into()))
    }

    /// The logits of the sub-network `choice` (see [`mixed`](Self::mixed)) for training: it
    /// shares this network's parameters, and its batch norms normalise with batch statistics
    /// without touching any level's running statistics. Training a few random sub-networks in
    /// every step beside the levels (the "sandwich rule" of US-Nets) makes the untrained
    /// combinations worth serving.
    fn forward_mix(&self, input: Self::Input, choice: &[usize]) -> crate::Result<Self::Output> {
        let _ = (input, choice);
        Err(ModelError::Unsupported("training Mix'n'Match sub-networks (it lists no mixable layer)".into()))
    }

    /// This network with the channels of every scheduled layer re-ordered by decreasing
    /// `importance`, the next layer's inputs permuted alike, so that it computes the same
    /// function (up to float rounding) and a level's leading channels are the most important
    /// ones; also returns each layer's order (new channel `i` = old channel `order[i]`). Run on
    /// a dense network before [`load_dense`](Self::load_dense) nests it.
    fn reorder_channels(&self, importance: ChannelImportance) -> crate::Result<(Self, ChannelOrders)> {
        let _ = importance;
        Err(ModelError::Unsupported("re-ordering its channels by importance".into()))
    }

    /// Nestify: sets the weights of every level from `dense`, a standalone network with the
    /// full level's architecture (the full level then computes what `dense` computes; level
    /// `k` takes the leading channels of every layer, and the leading channels of each batch
    /// norm's statistics).
    fn load_dense(&mut self, dense: &Self::Level) -> crate::Result<()> {
        let _ = dense;
        Err(ModelError::Unsupported("loading a dense network into its levels".into()))
    }

    /// The name under which the tensor at module path `path` is exported for PyTorch
    /// (safetensors exports), after Burn's own PyTorch conventions are applied (`gamma` →
    /// `weight`, `beta` → `bias`). Identity by default.
    fn export_name(&self, path: &str) -> String {
        path.to_string()
    }
}

/// The configuration of a nested network: what a run folder stores to rebuild it.
pub trait NestedNetworkConfig: Serialize + DeserializeOwned + Clone + core::fmt::Debug + 'static {
    /// The network it builds.
    type Network: NestedNetwork;

    /// Validates the configuration, then initializes the network on `device` (parameters are
    /// initialized lazily, on first use).
    fn init_network(&self, device: &Device) -> crate::Result<Self::Network>;

    /// The architecture's name for reports (`mnist-cnn`, `wrn-32-4`, …).
    fn name(&self) -> String;

    /// A configuration of one level only, with exactly the architecture (widths, depth,
    /// classes) of this configuration's level `level`: the network a level is compared with
    /// when trained alone, and the one network per budget of baselines such as magnitude
    /// pruning. `None` (the default) when the model cannot say.
    fn level_alone(&self, level: usize) -> Option<Self> {
        let _ = level;
        None
    }
}

/// Measures level `level` of `network` by running it once on a single zero sample in
/// evaluation mode (no batch-norm statistics change): the parameters and MACs its nested
/// layers record (see [`nestednet_nn::record_costs`]) and the number of classes it outputs.
pub fn measure_level<M: NestedNetwork>(network: &M, level: usize) -> (LevelCost, usize) {
    let device = network.devices().into_iter().next().map_or_else(Device::default, |d| d.inner());
    let network = network.valid();
    let input = M::Input::zeros(&network.input_shape(), 1, &device);
    let (output, recorded) = record_costs(|| network.forward_level(input, level));
    (LevelCost { params: recorded.params, macs: recorded.macs }, output.into_logits().dims()[1])
}
