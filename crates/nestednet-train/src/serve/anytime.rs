//! Using the levels together: consensus of all levels (NestedNet-A) and anytime inference with
//! early exit, computed from every level's softmax outputs on a data set.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use nestednet_models::{NestedNetwork, NetworkOutput};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::trainer::data::{BatchOrder, LabelledSet};
use crate::trainer::labels::HierarchyConfig;

/// Every level's class probabilities on a data set, on the host: one row per output row (per
/// sample, for a classifier).
#[derive(Debug, Clone, PartialEq)]
pub struct LevelOutputs {
    /// Per level, `[rows × classes_k]` softmax probabilities, row-major.
    pub probs: Vec<Vec<f32>>,
    /// Classes of every level.
    pub classes: Vec<usize>,
    /// The data set's target class of every row.
    pub fine_labels: Vec<usize>,
}

/// Runs every level of `model` (evaluation mode) on `set` and keeps the probabilities.
///
/// Only for sets of one target per sample (classifiers): a language model's per-position
/// outputs (a window's positions × its vocabulary, per level) would take memory a multiple of
/// the whole corpus, and consensus and early exit are defined here per sample. Such a set is an
/// error; [`takes_level_outputs`] tells which sets are not.
pub fn level_outputs<M, S>(model: &M, set: &S, batch_size: usize, device: &Device) -> Result<LevelOutputs>
where
    M: NestedNetwork,
    S: LabelledSet<Input = M::Input>,
{
    if !takes_level_outputs(set) {
        return Err(TrainError::Invalid(format!(
            "consensus and early exit take one prediction per sample; these data have {} targets per sample (a language model's next tokens)",
            set.targets_per_sample()
        )));
    }
    let n = model.num_levels();
    let mut probs = vec![Vec::new(); n];
    let mut fine_labels = Vec::new();
    for batch in set.batches(BatchOrder::in_order(batch_size), device)? {
        let batch = batch?;
        fine_labels.extend(
            batch
                .targets
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .expect("labels")
                .iter()
                .map(|&l| l as usize),
        );
        for (level, out) in probs.iter_mut().enumerate() {
            let p = softmax(model.forward_level(batch.input.clone(), level).into_logits(), 1);
            out.extend(p.into_data().convert::<f32>().try_to_vec::<f32>().expect("probabilities"));
        }
    }
    Ok(LevelOutputs { probs, classes: (0..n).map(|k| model.level_classes(k)).collect(), fine_labels })
}

/// Whether [`level_outputs`] takes `set`: one target per sample.
pub fn takes_level_outputs<S: LabelledSet>(set: &S) -> bool {
    set.targets_per_sample() == 1
}

impl LevelOutputs {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.fine_labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.fine_labels.is_empty()
    }

    fn row(&self, level: usize, i: usize) -> &[f32] {
        let c = self.classes[level];
        &self.probs[level][i * c..(i + 1) * c]
    }

    /// Level `level`'s predicted class and its probability for every sample.
    pub fn predictions(&self, level: usize) -> Vec<(usize, f32)> {
        (0..self.len()).map(|i| argmax(self.row(level, i))).collect()
    }

    /// NestedNet-A: the fine class with the largest mean probability over the levels.
    ///
    /// Every level votes with a distribution over the fine classes. A coarse level's
    /// probability of a group is shared among the group's fine classes the way the full level
    /// shares it: `q(c) = p_coarse(g) · p_full(c) / Σ_{c' ∈ g} p_full(c')` with `g` the parent
    /// of `c` (evenly, if the full level gives the whole group probability 0). The coarse level
    /// thus moves probability between groups and leaves the ranking inside a group to the one
    /// level that can tell the fine classes apart; an even split would instead favour the
    /// fine classes of small groups. Without a hierarchy every level must predict the same
    /// classes.
    pub fn consensus_average(&self, hierarchy: Option<&HierarchyConfig>) -> Result<Vec<usize>> {
        let levels = self.classes.len();
        let fine = self.classes[levels - 1];
        let lift: Vec<Option<(Vec<usize>, Vec<f32>)>> = (0..levels)
            .map(|k| match hierarchy {
                Some(h) if h.level_depths[k] != h.hierarchy.num_depths() - 1 => {
                    let of_fine = h.hierarchy.depths[h.level_depths[k]].of_fine.clone();
                    let mut size = vec![0f32; self.classes[k]];
                    of_fine.iter().for_each(|&c| size[c] += 1.0);
                    Ok(Some((of_fine, size)))
                }
                _ if self.classes[k] == fine => Ok(None),
                _ => Err(TrainError::Invalid(format!(
                    "level {k} predicts {} classes and the full level {fine}: averaging them needs a hierarchy",
                    self.classes[k]
                ))),
            })
            .collect::<Result<_>>()?;
        Ok((0..self.len())
            .map(|i| {
                let full = self.row(levels - 1, i);
                let mut mean = vec![0f32; fine];
                for (k, lift) in lift.iter().enumerate() {
                    let p = self.row(k, i);
                    match lift {
                        None => mean.iter_mut().zip(p).for_each(|(m, v)| *m += v),
                        Some((of_fine, size)) => {
                            let mut group_mass = vec![0f32; size.len()];
                            of_fine.iter().zip(full).for_each(|(&g, &v)| group_mass[g] += v);
                            for (c, m) in mean.iter_mut().enumerate() {
                                let g = of_fine[c];
                                let share =
                                    if group_mass[g] > 0.0 { full[c] / group_mass[g] } else { 1.0 / size[g] };
                                *m += p[g] * share;
                            }
                        }
                    }
                }
                argmax(&mean).0
            })
            .collect())
    }

    /// Anytime inference with early exit at `threshold`: each sample runs the core level first
    /// and goes up a level only while the current level's top probability is below the
    /// threshold; the last level always answers. Every level must predict the same classes.
    /// `level_macs` are the levels' MACs per sample; a sample that stops at level `k` has run
    /// levels `0..=k` (the levels do not share computation), so it costs their sum.
    pub fn early_exit(&self, threshold: f64, level_macs: &[usize]) -> Result<EarlyExit> {
        let levels = self.classes.len();
        if self.classes.iter().any(|&c| c != self.classes[0]) {
            return Err(TrainError::Invalid(
                "early exit needs every level to predict the same classes (not coarse-to-fine levels)".into(),
            ));
        }
        if level_macs.len() != levels {
            return Err(TrainError::Invalid(format!("{} MAC counts for {levels} levels", level_macs.len())));
        }
        if !(0.0..=1.0).contains(&threshold) {
            return Err(TrainError::Invalid(format!(
                "an early-exit threshold is a probability in [0, 1], got {threshold}"
            )));
        }
        let preds: Vec<Vec<(usize, f32)>> = (0..levels).map(|k| self.predictions(k)).collect();
        let mut correct = 0;
        let mut macs = 0usize;
        let mut exits = vec![0usize; levels];
        for (i, &label) in self.fine_labels.iter().enumerate() {
            let stop = (0..levels)
                .find(|&k| k == levels - 1 || f64::from(preds[k][i].1) >= threshold)
                .expect("last");
            exits[stop] += 1;
            macs += level_macs[..=stop].iter().sum::<usize>();
            correct += usize::from(preds[stop][i].0 == label);
        }
        let n = self.len().max(1) as f64;
        Ok(EarlyExit {
            threshold,
            accuracy: correct as f64 / n,
            mean_macs: macs as f64 / n,
            exit_fractions: exits.iter().map(|&e| e as f64 / n).collect(),
        })
    }
}

/// NestedNet-L: a linear layer on the concatenated log-probabilities of every level, predicting
/// the fine classes. It is trained after the levels, on their outputs for the training set
/// (full batch, Adam 1e-2, `steps` steps, cross-entropy), starting from "the full level alone"
/// (identity on the full level's block, zero elsewhere), so it begins at the full level's
/// training accuracy and can only learn to use the other levels on top of it.
pub fn train_learned_consensus(outputs: &LevelOutputs, steps: usize, device: &Device) -> Result<Linear> {
    if outputs.is_empty() {
        return Err(TrainError::Invalid("no samples to train the learned consensus on".into()));
    }
    let train_device = device.clone().autodiff();
    let features = outputs.log_features(&train_device);
    let fine = *outputs.classes.last().expect("at least one level");
    let width: usize = outputs.classes.iter().sum();
    let offset = width - fine;
    let mut init = vec![0f32; width * fine];
    for c in 0..fine {
        init[(offset + c) * fine + c] = 1.0;
    }
    let mut layer = LinearConfig::new(width, fine).init(&train_device);
    layer.weight =
        Param::from_tensor(Tensor::<2>::from_data(TensorData::new(init, [width, fine]), &train_device));
    layer.bias = Some(Param::from_tensor(Tensor::<1>::zeros([fine], &train_device)));
    let labels: Vec<i64> = outputs.fine_labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [outputs.len()]), &train_device);
    let mut optim = AdamConfig::new().init();
    for _ in 0..steps {
        let loss = nestednet_heads::cross_entropy(layer.forward(features.clone()), labels.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(1e-2, layer, grads);
    }
    Ok(layer.valid())
}

impl LevelOutputs {
    /// `[samples, Σ classes]`: every level's log-probabilities side by side.
    fn log_features(&self, device: &Device) -> Tensor<2> {
        let width: usize = self.classes.iter().sum();
        let mut data = Vec::with_capacity(self.len() * width);
        for i in 0..self.len() {
            for k in 0..self.classes.len() {
                data.extend(self.row(k, i).iter().map(|p| (p.max(1e-8)).ln()));
            }
        }
        Tensor::from_data(TensorData::new(data, [self.len(), width]), device)
    }

    /// NestedNet-L's fine-class predictions.
    pub fn consensus_learned(&self, layer: &Linear) -> Result<Vec<usize>> {
        let width: usize = self.classes.iter().sum();
        let [d_in, _] = layer.weight.dims();
        if d_in != width {
            return Err(TrainError::Invalid(format!(
                "the learned consensus takes {d_in} level outputs but the levels give {width}"
            )));
        }
        let device = layer.weight.device();
        let logits = layer.forward(self.log_features(&device));
        let preds = logits
            .argmax(1)
            .flatten::<1>(0, 1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("classes");
        Ok(preds.into_iter().map(|p| p as usize).collect())
    }

    /// Accuracy of fine-class predictions against the data set's labels.
    pub fn accuracy_of(&self, predictions: &[usize]) -> f64 {
        let correct = predictions.iter().zip(&self.fine_labels).filter(|(p, l)| p == l).count();
        correct as f64 / self.len().max(1) as f64
    }
}

/// The outcome of early exit at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyExit {
    /// Confidence threshold.
    pub threshold: f64,
    /// Accuracy of the answers.
    pub accuracy: f64,
    /// Mean MACs spent per sample.
    pub mean_macs: f64,
    /// Fraction of samples answered by each level.
    pub exit_fractions: Vec<f64>,
}

fn argmax(values: &[f32]) -> (usize, f32) {
    values
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, v)| if v > best.1 { (i, v) } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestednet_heads::Hierarchy;

    fn outputs(probs: Vec<Vec<f32>>, classes: Vec<usize>, labels: Vec<usize>) -> LevelOutputs {
        LevelOutputs { probs, classes, fine_labels: labels }
    }

    #[test]
    fn early_exit_stops_at_the_first_confident_level() {
        // Two samples, two levels of 2 classes. Sample 0: core confident and right. Sample 1:
        // core unsure (wrong), full level right.
        let o = outputs(vec![vec![0.95, 0.05, 0.6, 0.4], vec![0.9, 0.1, 0.2, 0.8]], vec![2, 2], vec![0, 1]);
        let e = o.early_exit(0.9, &[10, 100]).unwrap();
        assert_eq!(e.accuracy, 1.0);
        assert_eq!(e.exit_fractions, vec![0.5, 0.5]);
        assert_eq!(e.mean_macs, (10.0 + 110.0) / 2.0);
        // Threshold 0: everything exits at the core.
        let e = o.early_exit(0.0, &[10, 100]).unwrap();
        assert_eq!((e.accuracy, e.mean_macs), (0.5, 10.0));
        assert!(o.early_exit(1.5, &[10, 100]).is_err());
        let coarse = outputs(vec![vec![1.0, 0.0], vec![0.5, 0.5]], vec![2, 1], vec![0]);
        assert!(coarse.early_exit(0.5, &[1, 2]).is_err());
    }

    #[test]
    fn consensus_lifts_coarse_levels_to_fine_classes() {
        // Hierarchy: fine {0, 1} under coarse 0, fine {2} under coarse 1.
        let h = Hierarchy::from_csv("label,g,f\n0,a,x\n1,a,y\n2,b,z\n").unwrap();
        let config = HierarchyConfig::one_level_per_depth(h);
        // The full level hesitates between y and z; the coarse level is sure it is group a.
        let o = outputs(vec![vec![1.0, 0.0], vec![0.1, 0.35, 0.55]], vec![2, 3], vec![1]);
        // The coarse vote for a is shared as the full level shares a (x 0.1 : y 0.35):
        // x 0.222, y 0.778, z 0; mean: x 0.161, y 0.564, z 0.275 → y.
        assert_eq!(o.consensus_average(Some(&config)).unwrap(), vec![1]);
        assert_eq!(argmax(&o.probs[1]).0, 2);
        // Inside a group the full level decides: an even split would tie x and y here.
        let o = outputs(vec![vec![1.0, 0.0], vec![0.3, 0.2, 0.5]], vec![2, 3], vec![0]);
        assert_eq!(o.consensus_average(Some(&config)).unwrap(), vec![0]);
        // A group the full level rules out entirely is split evenly (no 0/0): x 0.5, y 0.5
        // against z's 1.0 from the full level.
        let o = outputs(vec![vec![1.0, 0.0], vec![0.0, 0.0, 1.0]], vec![2, 3], vec![2]);
        assert_eq!(o.consensus_average(Some(&config)).unwrap(), vec![2]);
        let o = outputs(vec![vec![1.0, 0.0], vec![0.0, 0.0, 0.4]], vec![2, 3], vec![0]);
        assert_eq!(o.consensus_average(Some(&config)).unwrap(), vec![0]);
        assert!(o.consensus_average(None).is_err());
    }

    #[test]
    fn learned_consensus_starts_from_the_full_level_and_learns_to_use_the_others() {
        // Two levels of 2 classes: the full level is always unsure (0.5/0.5, predicting class 0),
        // the core always right. The learned layer must learn to follow the core.
        let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let core: Vec<f32> =
            labels.iter().flat_map(|&l| if l == 0 { [0.9, 0.1] } else { [0.1, 0.9] }).collect();
        let full: Vec<f32> = labels.iter().flat_map(|_| [0.5, 0.5]).collect();
        let o = outputs(vec![core, full], vec![2, 2], labels);
        let device = Device::flex();
        let untrained = train_learned_consensus(&o, 0, &device).unwrap();
        assert_eq!(o.accuracy_of(&o.consensus_learned(&untrained).unwrap()), 0.5);
        let layer = train_learned_consensus(&o, 100, &device).unwrap();
        assert_eq!(o.accuracy_of(&o.consensus_learned(&layer).unwrap()), 1.0);
        let three = outputs(vec![vec![0.5; 6]], vec![3], vec![0, 1]);
        assert!(three.consensus_learned(&layer).is_err());
    }
}
