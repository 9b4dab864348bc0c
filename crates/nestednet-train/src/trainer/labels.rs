//! What each level is trained and scored against: the data set's labels, or, for
//! coarse-to-fine classification, their classes at the level's depth of a hierarchy.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use nestednet_heads::Hierarchy;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// A hierarchy and the depth each level predicts (saved in `config.json`, so a run folder is
/// self-contained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HierarchyConfig {
    /// The validated class hierarchy.
    pub hierarchy: Hierarchy,
    /// The hierarchy depth each level predicts, core first (never decreasing; the full level
    /// predicts the finest depth, the data set's labels).
    pub level_depths: Vec<usize>,
}

impl HierarchyConfig {
    /// Level `k` predicts depth `k` (as many levels as depths).
    pub fn one_level_per_depth(hierarchy: Hierarchy) -> Self {
        let level_depths = (0..hierarchy.num_depths()).collect();
        Self { hierarchy, level_depths }
    }

    /// Checks the depths against a model of `num_levels` levels.
    pub fn validate(&self, num_levels: usize) -> Result<()> {
        self.hierarchy.validate()?;
        let depths = &self.level_depths;
        let bad = |m: String| Err(TrainError::Invalid(m));
        if depths.len() != num_levels {
            return bad(format!(
                "the hierarchy assigns depths to {} levels but the model has {num_levels}",
                depths.len()
            ));
        }
        let last = self.hierarchy.num_depths() - 1;
        if let Some(level) = depths.iter().position(|&d| d > last) {
            return bad(format!(
                "level {level} predicts depth {} but the hierarchy has depths 0..={last}",
                depths[level]
            ));
        }
        if let Some(level) = (1..depths.len()).find(|&k| depths[k] < depths[k - 1]) {
            return bad(format!(
                "level {level} predicts a coarser depth than level {}: depths must not decrease",
                level - 1
            ));
        }
        if depths[num_levels - 1] != last {
            return bad("the full level must predict the finest depth (the data set's labels)".into());
        }
        Ok(())
    }

    /// Number of classes each level predicts.
    pub fn level_classes(&self) -> Vec<usize> {
        self.level_depths.iter().map(|&d| self.hierarchy.num_classes(d)).collect()
    }
}

/// Per level, the map from a data-set label to the level's class (`None`: the label itself).
#[derive(Debug, Clone, PartialEq)]
pub struct LevelLabels {
    maps: Vec<Option<Vec<i64>>>,
    classes: Vec<Option<usize>>,
}

impl LevelLabels {
    /// Every level predicts the data set's labels.
    pub fn fine(num_levels: usize) -> Self {
        Self { maps: vec![None; num_levels], classes: vec![None; num_levels] }
    }

    /// Level `k` predicts depth `level_depths[k]` of the hierarchy.
    pub fn from_hierarchy(config: &HierarchyConfig) -> Self {
        let last = config.hierarchy.num_depths() - 1;
        let maps = config
            .level_depths
            .iter()
            .map(|&d| {
                (d != last).then(|| config.hierarchy.depths[d].of_fine.iter().map(|&c| c as i64).collect())
            })
            .collect();
        let classes = config.level_depths.iter().map(|&d| Some(config.hierarchy.num_classes(d))).collect();
        Self { maps, classes }
    }

    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.maps.len()
    }

    /// The classes level `level` must predict (`None`: as many as the data set has).
    pub fn classes(&self, level: usize) -> Option<usize> {
        self.classes[level]
    }

    /// Maps probabilities over the data set's classes (`[batch, fine]`) to level `level`'s
    /// classes: a coarse class gets the summed probability of its fine classes (a one-hot
    /// `[fine, coarse]` matrix product), so the result is again a distribution.
    pub fn lift_probs(&self, probs: Tensor<2>, level: usize) -> Tensor<2> {
        match (&self.maps[level], self.classes[level]) {
            (Some(map), Some(coarse)) => {
                let fine = map.len();
                let mut onehot = vec![0f32; fine * coarse];
                map.iter().enumerate().for_each(|(c, &g)| onehot[c * coarse + g as usize] = 1.0);
                let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [fine, coarse]), &probs.device());
                probs.matmul(onehot)
            }
            _ => probs,
        }
    }

    /// Whether level `level` predicts other classes than the data set's (a coarser depth).
    pub fn is_lifted(&self, level: usize) -> bool {
        self.maps[level].is_some()
    }

    /// Maps logits over the data set's classes to level `level`'s classes as log-probabilities:
    /// a coarse class gets `log Σ_{c ∈ class} softmax(z)_c` (a log-sum-exp of its fine logits,
    /// up to a per-row constant). Softening *these* with a temperature gives a coarse teacher
    /// that is as sure of a group as the fine teacher is of the group's classes together;
    /// summing probabilities already softened at `T` would instead pull every coarse target
    /// towards the groups' sizes.
    pub fn lift_logits(&self, logits: Tensor<2>, level: usize) -> Tensor<2> {
        match self.maps[level] {
            Some(_) => self.lift_probs(softmax(logits, 1), level).clamp_min(1e-30).log(),
            None => logits,
        }
    }

    /// Level `level`'s labels of a batch of data-set labels.
    pub fn labels(&self, fine: &Tensor<1, Int>, level: usize) -> Tensor<1, Int> {
        match &self.maps[level] {
            None => fine.clone(),
            Some(map) => {
                let lookup =
                    Tensor::<1, Int>::from_data(TensorData::new(map.clone(), [map.len()]), &fine.device());
                lookup.select(0, fine.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_levels_get_lifted_labels() {
        let config = HierarchyConfig::one_level_per_depth(Hierarchy::mnist_shapes());
        config.validate(2).unwrap();
        assert_eq!(config.level_classes(), vec![3, 10]);
        let labels = LevelLabels::from_hierarchy(&config);
        let device = Device::flex();
        let fine = Tensor::<1, Int>::from_data([0, 1, 2, 6, 9], &device);
        let coarse = labels.labels(&fine, 0).into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        assert_eq!(coarse, vec![0, 1, 2, 0, 0]);
        labels.labels(&fine, 1).into_data().assert_eq(&fine.into_data(), true);
        // Digit probabilities summed by shape: loop {0,6,8,9}, line {1,4,7}, curve {2,3,5}.
        let probs = Tensor::<2>::from_floats([[0.1, 0.2, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]], &device);
        let lifted = labels.lift_probs(probs.clone(), 0).into_data().try_to_vec::<f32>().unwrap();
        let expected = [0.4f32, 0.4, 0.2];
        assert!(lifted.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{lifted:?}");
        labels.lift_probs(probs.clone(), 1).into_data().assert_eq(&probs.clone().into_data(), true);
        // Lifted logits are the log of the lifted probabilities.
        let logits = probs.clone().log();
        let lifted = labels.lift_logits(logits.clone(), 0).exp().into_data().try_to_vec::<f32>().unwrap();
        assert!(lifted.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-5), "{lifted:?}");
        labels.lift_logits(logits.clone(), 1).into_data().assert_eq(&logits.into_data(), true);
        let bad = |depths: Vec<usize>, n: usize| {
            HierarchyConfig { level_depths: depths, ..config.clone() }.validate(n).unwrap_err().to_string()
        };
        assert!(bad(vec![0, 1, 1], 2).contains("3 levels but the model has 2"));
        assert!(bad(vec![0, 2], 2).contains("depths 0..=1"));
        assert!(bad(vec![1, 0], 2).contains("must not decrease"));
        assert!(bad(vec![0, 0], 2).contains("finest depth"));
    }
}
