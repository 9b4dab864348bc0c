//! The output layer of a nested network, for every level.

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use nestednet_nn::{Maskable, NestedLinear, NestedLinearConfig, NestedMask};
use serde::{Deserialize, Serialize};

use crate::HeadError;

/// How the levels of a [`NestedHead`] relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadKind {
    /// One nested classifier: level `k` uses the rows of its own features and predicts every
    /// class (the NestedNet default: the output layer nests like every other layer).
    Shared,
    /// One nested classifier whose outputs are split too: level `k` predicts the leading
    /// `classes_k` classes.
    Split,
    /// A classifier per level on that level's features (coarse-to-fine levels, each predicting
    /// its own granularity, or the paper's un-nested output layer).
    Private,
}

/// Configuration of a [`NestedHead`].
#[derive(Config, Debug)]
pub struct NestedHeadConfig {
    /// Features of the full level (the input of the full classifier).
    pub d_input: usize,
    /// Features each level gives the head, core first.
    pub input_widths: Vec<usize>,
    /// Classes each level predicts, core first.
    pub level_classes: Vec<usize>,
    /// Give every level its own classifier even if all predict the same classes (the paper's
    /// un-nested output layer).
    #[config(default = false)]
    pub private: bool,
    /// With growing class counts and no `private`: split one shared classifier's outputs
    /// (level `k` predicts the leading `level_classes[k]` classes) instead of giving every
    /// level its own classifier.
    #[config(default = false)]
    pub split: bool,
}

impl NestedHeadConfig {
    /// What the configuration builds, or why it cannot.
    pub fn kind(&self) -> crate::Result<HeadKind> {
        let bad = |m: String| Err(HeadError::Head(m));
        let n = self.input_widths.len();
        if n == 0 {
            return bad("at least one level is required".into());
        }
        if self.level_classes.len() != n {
            return bad(format!("{} class counts given for {n} levels", self.level_classes.len()));
        }
        if let Some(level) = self.level_classes.iter().position(|&c| c == 0) {
            return bad(format!("level {level} predicts 0 classes"));
        }
        if let Some(level) = self.input_widths.iter().position(|&w| w == 0 || w > self.d_input) {
            return bad(format!(
                "level {level} gives {} features but the head takes 1..={}",
                self.input_widths[level], self.d_input
            ));
        }
        let same = self.level_classes.iter().all(|&c| c == self.level_classes[0]);
        Ok(match (self.private, same, self.split) {
            (true, _, true) => return bad("a head is either private per level or split, not both".into()),
            (true, _, false) => HeadKind::Private,
            (false, true, _) => HeadKind::Shared,
            (false, false, true) => {
                if let Some(k) = (1..n).find(|&k| self.level_classes[k] < self.level_classes[k - 1]) {
                    return bad(format!("a split output cannot shrink from level {} to level {k}", k - 1));
                }
                HeadKind::Split
            }
            (false, false, false) => HeadKind::Private,
        })
    }

    /// Initializes the head on `device`, or says what is wrong with the configuration.
    pub fn try_init(&self, device: &Device) -> crate::Result<NestedHead> {
        let n = self.input_widths.len();
        Ok(match self.kind()? {
            HeadKind::Shared | HeadKind::Split => {
                let classes = *self.level_classes.iter().max().expect("at least one level");
                let outputs = match self.kind()? {
                    HeadKind::Split => self.level_classes.clone(),
                    _ => vec![classes; n],
                };
                let shared =
                    NestedLinearConfig::new(self.d_input, classes, self.input_widths.clone(), outputs);
                NestedHead { shared: Some(shared.init(device)), private: Vec::new() }
            }
            // Each level's classifier has its own fans (as a plain `Linear` of its size).
            HeadKind::Private => NestedHead {
                shared: None,
                private: self
                    .input_widths
                    .iter()
                    .zip(&self.level_classes)
                    .map(|(&d_in, &classes)| {
                        NestedLinearConfig::new(d_in, classes, vec![d_in], vec![classes]).init(device)
                    })
                    .collect(),
            },
        })
    }
}

/// The output layer of a nested network: a shared nested classifier, or one classifier per
/// level (see [`HeadKind`]).
#[derive(Module, Debug)]
pub struct NestedHead {
    /// The shared classifier (absent when private).
    pub shared: Option<NestedLinear>,
    /// One single-level classifier per level (empty when shared).
    pub private: Vec<NestedLinear>,
}

impl NestedHead {
    /// Whether every level has its own classifier.
    pub fn is_private(&self) -> bool {
        self.shared.is_none()
    }

    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        match &self.shared {
            Some(layer) => layer.num_levels(),
            None => self.private.len(),
        }
    }

    fn of_level(&self, level: usize) -> (&NestedLinear, usize) {
        match &self.shared {
            Some(layer) => (layer, level),
            None => {
                assert!(
                    level < self.private.len(),
                    "NestedHead: level {level} does not exist (levels 0..={})",
                    self.private.len().saturating_sub(1)
                );
                (&self.private[level], 0)
            }
        }
    }

    /// `(features, classes)` of level `level`.
    pub fn level_dims(&self, level: usize) -> (usize, usize) {
        let (layer, k) = self.of_level(level);
        layer.level_dims(k)
    }

    /// Classes level `level` predicts.
    pub fn level_classes(&self, level: usize) -> usize {
        self.level_dims(level).1
    }

    /// Logits `[batch, classes_level]` of level `level` for its features `[batch, features]`.
    pub fn forward(&self, features: Tensor<2>, level: usize) -> Tensor<2> {
        let (layer, k) = self.of_level(level);
        layer.forward(features, k)
    }

    /// Parameters level `level` uses.
    pub fn level_num_params(&self, level: usize) -> usize {
        let (layer, k) = self.of_level(level);
        layer.level_num_params(k)
    }

    /// Multiply-accumulates of level `level` per sample.
    pub fn level_macs(&self, level: usize) -> usize {
        let (layer, k) = self.of_level(level);
        layer.level_macs(k)
    }

    /// The plain Burn [`Linear`] of level `level`, with compact copies of its weights.
    pub fn extract_level(&self, level: usize) -> Linear {
        let (layer, k) = self.of_level(level);
        layer.extract_level(k)
    }

    /// The shared classifier on the leading `features` inputs, predicting every class, as a
    /// one-level head: the head of a Mix'n'Match sub-network. `None` when the levels do not
    /// share one classifier over the same classes (private or split heads) or it is masked.
    pub fn single_block(&self, features: usize) -> Option<NestedHead> {
        let layer = self.shared.as_ref().filter(|l| l.mask.is_none())?;
        let classes = layer.level_dims(0).1;
        if (0..layer.num_levels()).any(|k| layer.level_dims(k).1 != classes) {
            return None;
        }
        Some(NestedHead { shared: Some(layer.single_block(features, classes)), private: Vec::new() })
    }

    /// The shared classifier over every class on `features` (any width up to the full one),
    /// sharing its parameters: the training forward pass of a Mix'n'Match sub-network (panics
    /// for heads [`single_block`](Self::single_block) refuses).
    pub fn forward_block(&self, features: Tensor<2>) -> Tensor<2> {
        let layer = self.shared.as_ref().expect("NestedHead: private heads have no shared blocks");
        layer.forward_block(features, layer.level_dims(0).1)
    }

    /// Sets the shared classifier from `dense` (see [`NestedLinear::load_full`]); `false` when
    /// private (nothing is set).
    pub fn load_full(&mut self, dense: &Linear) -> bool {
        match &mut self.shared {
            Some(layer) => {
                layer.load_full(dense);
                true
            }
            None => false,
        }
    }

    /// Level `level` alone, as a shared one-level head with compact copies of its weights.
    pub fn single_level(&self, level: usize) -> NestedHead {
        let (layer, k) = self.of_level(level);
        NestedHead { shared: Some(layer.single_level(k)), private: Vec::new() }
    }
}

impl nestednet_nn::NestedLayer for NestedHead {
    fn layer_levels(&self) -> usize {
        self.num_levels()
    }

    fn layer_for_level(&self, level: usize) -> Self {
        self.single_level(level)
    }

    fn layer_width(&self, level: usize) -> Option<usize> {
        Some(self.level_classes(level))
    }

    fn as_maskable(&self) -> Option<&dyn Maskable> {
        Some(self)
    }

    fn as_maskable_mut(&mut self) -> Option<&mut dyn Maskable> {
        Some(self)
    }
}

impl Maskable for NestedHead {
    fn mask(&self) -> Option<&NestedMask> {
        self.shared.as_ref().and_then(|l| l.mask())
    }

    fn mask_mut(&mut self) -> Option<&mut NestedMask> {
        self.shared.as_mut().and_then(|l| l.mask_mut())
    }

    fn weight_values(&self) -> Vec<f32> {
        match &self.shared {
            Some(layer) => layer.weight_values(),
            None => self.private.iter().flat_map(|l| l.weight_values()).collect(),
        }
    }

    fn set_weight_values(&mut self, values: &[f32]) -> Result<(), nestednet_nn::PruneError> {
        match &mut self.shared {
            Some(layer) => layer.set_weight_values(values),
            None => nestednet_nn::set_concatenated_weights(&mut self.private, values),
        }
    }

    fn block_weights(&self, level: usize) -> usize {
        let (layer, k) = self.of_level(level);
        layer.block_weights(k)
    }

    fn zero_pruned(&mut self) {
        if let Some(layer) = &mut self.shared {
            layer.zero_pruned();
        }
    }

    fn can_mask(&self) -> bool {
        self.shared.is_some()
    }

    fn enable_mask(&mut self) {
        if let Some(layer) = &mut self.shared {
            layer.enable_mask();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_shared_split_or_private() {
        let device = Device::flex();
        let config = |classes: Vec<usize>| NestedHeadConfig::new(8, vec![4, 8], classes);
        let shared = config(vec![10, 10]).try_init(&device).unwrap();
        assert!(!shared.is_private());
        assert_eq!((shared.level_dims(0), shared.level_num_params(0)), ((4, 10), 4 * 10 + 10));
        // Coarse-to-fine: every level its own classifier on its own features.
        let private = config(vec![3, 10]).try_init(&device).unwrap();
        assert!(private.is_private());
        assert_eq!((private.level_dims(0), private.level_dims(1)), ((4, 3), (8, 10)));
        assert_eq!(private.level_num_params(0), 4 * 3 + 3);
        let x = Tensor::<2>::ones([2, 4], &device);
        assert_eq!(private.forward(x.clone(), 0).dims(), [2, 3]);
        // The paper's un-nested output layer: private even with equal classes.
        let unnested = config(vec![10, 10]).with_private(true).try_init(&device).unwrap();
        assert!(unnested.is_private() && !unnested.can_mask());
        let split = config(vec![5, 10]).with_split(true).try_init(&device).unwrap();
        assert_eq!(split.level_dims(0), (4, 5));
        // A single level of any head computes what the head computes.
        let single = private.single_level(0);
        single
            .forward(x.clone(), 0)
            .into_data()
            .assert_approx_eq::<f32>(&private.forward(x, 0).into_data(), burn::tensor::Tolerance::default());
        for (bad, why) in [
            (config(vec![3]), "1 class counts given for 2 levels"),
            (config(vec![0, 10]), "level 0 predicts 0 classes"),
            (config(vec![10, 5]).with_split(true), "cannot shrink"),
            (NestedHeadConfig::new(8, vec![4, 9], vec![2, 2]), "level 1 gives 9 features"),
        ] {
            let err = bad.try_init(&device).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
