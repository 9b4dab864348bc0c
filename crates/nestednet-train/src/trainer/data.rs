//! What a run trains on and is scored on: any labelled data whose samples a nested network
//! takes ([`LabelledSet`]), read in batches by the data itself. The trainer, evaluation, the
//! consensus, Mix'n'Match calibration and the reports see nothing but batches of the network's
//! input with one target class per output row; [`ImageData`] is the image classifiers' set.

use std::sync::Arc;

use burn::prelude::*;
use nestednet_data::{Augment, ImageSet, epoch_loader, prefetch};
use nestednet_models::{NestedNetwork, NetworkInput, NetworkOutput};

use crate::error::{Result, TrainError};
use crate::trainer::config::TrainingConfig;
use crate::trainer::labels::LevelLabels;

/// One batch: the network's input and the target class of every row its output classifies
/// (one per sample for a classifier, one per position for per-position logits).
#[derive(Debug, Clone)]
pub struct Batch<I> {
    /// The network's input.
    pub input: I,
    /// Target classes, `[rows]`, in the order of the output's rows.
    pub targets: Tensor<1, Int>,
}

/// How one pass reads a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOrder {
    /// Samples per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Seed of the order and of any augmentation.
    pub seed: u64,
    /// The epoch: each epoch has its own order and augmentation, a function of seed and epoch.
    pub epoch: u64,
    /// Shuffle the samples (else: in the data set's order).
    pub shuffle: bool,
    /// Apply the data set's training-time augmentation, if it has one.
    pub augment: bool,
}

impl BatchOrder {
    /// Epoch `epoch` of training: shuffled and augmented.
    pub fn training(batch_size: usize, seed: u64, epoch: u64) -> Self {
        Self { batch_size, seed, epoch, shuffle: true, augment: true }
    }

    /// Every sample once, in order, unaugmented (evaluation).
    pub fn in_order(batch_size: usize) -> Self {
        Self { batch_size, seed: 0, epoch: 0, shuffle: false, augment: false }
    }
}

/// The batches of one pass, in order.
pub type Batches<I> = Box<dyn Iterator<Item = Result<Batch<I>>> + Send>;

/// A labelled data set: samples of one kind of network input, each with its target class per
/// output row. Implement it to train, evaluate, search and report on data of your own (a test
/// in `tests/training.rs` trains a nested network over token ids from such a set).
///
/// Cheap to clone: implementations hold their samples behind an `Arc`.
pub trait LabelledSet: Clone + Send + Sync + 'static {
    /// The input the samples make: what the network takes.
    type Input: NetworkInput;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What every sample looks like.
    fn input_shape(&self) -> <Self::Input as NetworkInput>::Shape;

    /// Number of target classes.
    fn num_classes(&self) -> usize;

    /// Targets per sample: the rows of the network's output for one sample (1 for a
    /// classifier; the context for a language model's per-position targets).
    fn targets_per_sample(&self) -> usize {
        1
    }

    /// One pass over the samples, batched on `device` as `order` says. A pass is a function of
    /// the order alone, so that a resumed run sees the batches the uninterrupted one saw.
    fn batches(&self, order: BatchOrder, device: &Device) -> Result<Batches<Self::Input>>;

    /// `n` samples only (quick runs: `train_limit`): the first `n` for sets in no particular
    /// order (idx, CIFAR), or `n` spread evenly for sets stored class by class or document by
    /// document (text, see `TextData::take`).
    fn take(&self, n: usize) -> Self;

    /// The same samples with target class `c` replaced by `map[c]`, of `classes` classes (a
    /// level trained alone on a coarser depth of a hierarchy). Not every data set can.
    fn relabel(&self, map: &[usize], classes: usize) -> Result<Self> {
        let _ = (map, classes);
        Err(TrainError::Invalid("this data set cannot be relabelled to a coarser hierarchy depth".into()))
    }

    /// The set as the run `training` reads it: a data set may take its reading from the run's
    /// configuration (images take their augmentation, [`TrainingConfig::train_augment`]). The
    /// trainer calls it once, on the training set.
    fn for_training(&self, training: &TrainingConfig) -> Self {
        let _ = training;
        self.clone()
    }

    /// What a sample is called in messages (`images`).
    fn sample_name(&self) -> &'static str {
        "samples"
    }
}

/// The input type of the networks a `C` configuration builds.
pub type InputOf<C> = <<C as nestednet_models::NestedNetworkConfig>::Network as NestedNetwork>::Input;

/// Labelled images ([`ImageSet`]) for image classifiers, with the training-time augmentation
/// the run's configuration asks for.
#[derive(Debug, Clone)]
pub struct ImageData {
    set: Arc<ImageSet>,
    augment: Option<Augment>,
}

impl ImageData {
    /// `set`, unaugmented (training takes the augmentation from the run's configuration).
    pub fn new(set: Arc<ImageSet>) -> Self {
        Self { set, augment: None }
    }

    /// The images.
    pub fn set(&self) -> &Arc<ImageSet> {
        &self.set
    }

    /// The augmentation a training pass applies.
    pub fn augment(&self) -> Option<Augment> {
        self.augment
    }
}

impl From<Arc<ImageSet>> for ImageData {
    fn from(set: Arc<ImageSet>) -> Self {
        Self::new(set)
    }
}

impl From<ImageSet> for ImageData {
    fn from(set: ImageSet) -> Self {
        Self::new(Arc::new(set))
    }
}

impl LabelledSet for ImageData {
    type Input = Tensor<4>;

    fn len(&self) -> usize {
        self.set.len()
    }

    fn input_shape(&self) -> [usize; 3] {
        [self.set.channels, self.set.height, self.set.width]
    }

    fn num_classes(&self) -> usize {
        self.set.num_classes
    }

    /// Burn's data loader over the images, two batches prefetched on a background thread.
    fn batches(&self, order: BatchOrder, device: &Device) -> Result<Batches<Tensor<4>>> {
        let augment = self.augment.filter(|_| order.augment);
        let loader = epoch_loader(
            self.set.clone(),
            order.batch_size,
            order.seed,
            order.epoch,
            order.shuffle,
            augment,
            device,
        )?;
        Ok(Box::new(prefetch(loader, 2).map(|batch| {
            batch
                .map(|b| Batch { input: b.images, targets: b.labels })
                .map_err(|e| TrainError::Invalid(format!("loading a batch of images failed: {e}")))
        })))
    }

    fn take(&self, n: usize) -> Self {
        Self { set: Arc::new(self.set.take(n)), augment: self.augment }
    }

    fn relabel(&self, map: &[usize], classes: usize) -> Result<Self> {
        Ok(Self { set: Arc::new(self.set.relabel(map, classes)?), augment: self.augment })
    }

    fn for_training(&self, training: &TrainingConfig) -> Self {
        Self { set: self.set.clone(), augment: training.train_augment() }
    }

    fn sample_name(&self) -> &'static str {
        "images"
    }
}

/// A batch of `batch` random inputs of `shape`, drawn from a generator of their own seeded
/// with `seed`, not Burn's: that one is shared by the whole process, and a draw here while a
/// training in another thread seeds and draws its weights would change that training's
/// network.
pub fn probe_input<I: NetworkInput>(shape: &I::Shape, batch: usize, seed: u64, device: &Device) -> I {
    let mut rng = nestednet_data::SplitMix64::new(seed);
    I::random(shape, batch, &mut || rng.next_u64(), device)
}

/// The device `model`'s parameters are on.
fn model_device<M: NestedNetwork>(model: &M) -> Device {
    model.devices().into_iter().next().map_or_else(Device::default, |d| d.inner())
}

/// Checks that a data set fits a model: the shape of its samples, and that every level
/// predicts as many classes as its targets have (the data set's, or its depth's of the
/// hierarchy).
pub fn check_compatible<M: NestedNetwork, S: LabelledSet<Input = M::Input>>(
    model: &M,
    set: &S,
    labels: &LevelLabels,
    what: &str,
) -> Result<()> {
    let (expected, got) = (model.input_shape(), set.input_shape());
    if got != expected {
        return Err(TrainError::Invalid(format!(
            "the {what} set has {} but the model takes {}",
            M::Input::describe(&got),
            M::Input::describe(&expected)
        )));
    }
    // One zero sample through the core, in evaluation mode: the rows its output classifies.
    let probe = M::Input::zeros(&expected, 1, &model_device(model));
    let rows = model.valid().forward_level(probe, 0).into_logits().dims()[0];
    if rows != set.targets_per_sample() {
        let per = |n: usize| {
            if n == 1 { "one target per sample".to_string() } else { format!("{n} targets per sample") }
        };
        return Err(TrainError::Invalid(format!(
            "the model's output has {} but the {what} set has {} (a language model trains on a text corpus, a text classifier on a text folder)",
            per(rows),
            per(set.targets_per_sample())
        )));
    }
    if labels.num_levels() != model.num_levels() {
        return Err(TrainError::Invalid(format!(
            "labels are given for {} levels but the model has {}",
            labels.num_levels(),
            model.num_levels()
        )));
    }
    for level in 0..model.num_levels() {
        let classes = model.level_classes(level);
        match labels.classes(level) {
            None if classes != set.num_classes() => {
                return Err(TrainError::Invalid(format!(
                    "level {level} predicts {classes} classes but the {what} set has {} (a split output layer needs per-level labels)",
                    set.num_classes()
                )));
            }
            Some(expected) if expected != classes => {
                return Err(TrainError::Invalid(format!(
                    "level {level} predicts {classes} classes but its depth of the hierarchy has {expected}"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestednet_data::Normalization;

    fn set(channels: usize, side: usize, classes: usize) -> ImageData {
        ImageData::from(ImageSet {
            pixels: vec![0; 4 * channels * side * side],
            labels: vec![0; 4],
            coarse_labels: None,
            channels,
            height: side,
            width: side,
            num_classes: classes,
            num_coarse_classes: 0,
            normalization: Normalization { mean: vec![0.5; channels], std: vec![0.5; channels] },
            class_names: Vec::new(),
        })
    }

    #[test]
    fn data_that_does_not_fit_the_model_is_a_clear_error() {
        let device = Device::flex();
        let model = nestednet_models::NestedMnistCnnConfig::new().init(&device);
        let fine = LevelLabels::fine(3);
        check_compatible(&model, &set(1, 28, 10), &fine, "test").unwrap();
        let err = check_compatible(&model, &set(3, 32, 10), &fine, "test").unwrap_err().to_string();
        assert!(err.contains("3x32x32") && err.contains("1x28x28"), "{err}");
        let err = check_compatible(&model, &set(1, 28, 100), &fine, "training").unwrap_err().to_string();
        assert!(err.contains("level 0 predicts 10 classes but the training set has 100"), "{err}");
    }
}
