use burn::module::{Module, Param, ParamId};
use burn::prelude::*;

use crate::{PruneError, Result, SoftThreshold};

/// Nested unstructured masks of one weight tensor, stored as a level map.
///
/// `level_map[i]` is the lowest level whose network uses weight `i`, or `num_levels` if no
/// level does ("pruned"). Level `k` uses exactly the weights with `level_map <= k`, so the
/// masks nest by construction. The map is an integer [`Param`] (never trained, always
/// recorded), stored flat; `shape` is the weight's shape.
#[derive(Module, Debug)]
pub struct NestedMask {
    /// Lowest level using each weight (flattened, row-major), `num_levels` for pruned weights.
    pub level_map: Param<Tensor<1, Int>>,
    /// Shape of the masked weight tensor.
    pub shape: Vec<usize>,
    /// Number of levels.
    pub num_levels: usize,
    /// While level `soft.level`'s connections are being learned, its forward pass also
    /// multiplies by the relaxed mask (paper, Eq. 3). Training state, never recorded.
    #[module(skip)]
    pub soft: Option<SoftThreshold>,
}

impl NestedMask {
    /// A mask in which every level uses every weight (a dense nested layer).
    pub fn dense(shape: &[usize], num_levels: usize, device: &Device) -> Result<Self> {
        if num_levels == 0 {
            return Err(PruneError::NoLevels);
        }
        let n = shape.iter().product::<usize>();
        Ok(Self::from_flat(Tensor::zeros([n], device), shape, num_levels))
    }

    fn from_flat(map: Tensor<1, Int>, shape: &[usize], num_levels: usize) -> Self {
        Self {
            level_map: Param::initialized(ParamId::new(), map).set_require_grad(false),
            shape: shape.to_vec(),
            num_levels,
            soft: None,
        }
    }

    /// The level map as host integers (flat, row-major).
    pub fn level_map_values(&self) -> Vec<i64> {
        int_values(self.level_map.val())
    }

    /// Replaces the level map by `values` (flat, row-major), keeping the parameter's identity.
    /// Checks the length and that every value is a level or the "pruned" marker.
    pub fn set_level_map_values(&mut self, values: Vec<i64>) -> Result<()> {
        let n = self.shape.iter().product::<usize>();
        if values.len() != n {
            return Err(PruneError::ShapeMismatch {
                what: "level map".into(),
                expected: vec![n],
                found: vec![values.len()],
            });
        }
        let num_levels = self.num_levels;
        if let Some(&value) = values.iter().find(|&&v| v < 0 || v > num_levels as i64) {
            return Err(PruneError::LevelMapOutOfRange { value, num_levels });
        }
        let device = self.level_map.val().device();
        let map = Tensor::<1, Int>::from_data(TensorData::new(values, [n]), &device);
        self.level_map = Param::initialized(self.level_map.id, map).set_require_grad(false);
        Ok(())
    }

    /// Drops, from level `level` (and so from every lower level), the weights it uses that
    /// `keep` rejects: their map value becomes `level + 1`. `keep` is called with the flat
    /// index of each weight level `level` uses. Returns how many weights were dropped.
    /// Nesting is preserved by construction: a weight only ever moves up the levels.
    pub fn drop_from_level(&mut self, level: usize, mut keep: impl FnMut(usize) -> bool) -> Result<usize> {
        self.check_level(level)?;
        let mut map = self.level_map_values();
        let mut dropped = 0;
        for (i, v) in map.iter_mut().enumerate() {
            if *v <= level as i64 && !keep(i) {
                *v = level as i64 + 1;
                dropped += 1;
            }
        }
        self.set_level_map_values(map)?;
        Ok(dropped)
    }

    /// Random nested masks (the paper's ablation): starting from this map (which may already
    /// hold a channel schedule's levels), each weight level `k` uses is kept at `k` with
    /// probability `densities[k]`, independently of its value, and the draws nest: one uniform
    /// number `u` per weight, kept at `k` when `u < densities[k]`. Densities are core first
    /// and must not shrink; `seed` makes the draw reproducible.
    pub fn randomize(&mut self, densities: &[f64], seed: u64) -> Result<()> {
        crate::MaskTargets::Densities(densities.to_vec()).validate(self.num_levels)?;
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut map = self.level_map_values();
        for v in map.iter_mut() {
            // SplitMix64: a fixed, portable generator, so the masks depend only on the seed.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let u = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
            let first = (*v as usize..self.num_levels).find(|&k| u < densities[k]);
            *v = first.unwrap_or(self.num_levels) as i64;
        }
        self.set_level_map_values(map)
    }

    /// `weight_block` (the block `ranges` of the masked weight) as level `level` uses it: the
    /// weights the level does not use are zero, and while the level's connections are being
    /// learned (`soft`), the rest is multiplied by the relaxed mask.
    pub fn apply_block<const D: usize>(
        &self,
        weight_block: Tensor<D>,
        level: usize,
        ranges: [core::ops::Range<usize>; D],
    ) -> Tensor<D> {
        let shape: [usize; D] = core::array::from_fn(|i| self.shape[i]);
        let full = ranges.iter().zip(shape.iter()).all(|(r, &n)| r.start == 0 && r.end == n);
        let map = self.level_map.val().reshape(shape);
        let map = if full { map } else { map.slice(ranges) };
        let dropped = map.greater_elem(level as i64).to_device(&weight_block.device());
        let weight = match self.soft.filter(|s| s.level == level && s.tau.is_finite()) {
            Some(soft) => weight_block.clone() * soft.mask(weight_block),
            None => weight_block,
        };
        weight.mask_fill(dropped, 0.0)
    }

    /// `weight` (the masked parameter) with the weights no level uses set to exactly zero, as
    /// a fresh leaf that still requires a gradient exactly when the parameter did.
    pub fn zero_unused<const D: usize>(&self, weight: Param<Tensor<D>>) -> Result<Param<Tensor<D>>> {
        let keep = self.level_mask::<D>(self.num_levels - 1)?;
        self.check_shape(&weight.dims())?;
        Ok(weight.map(|w| {
            let autodiff = w.is_autodiff();
            let require_grad = w.is_require_grad();
            let w = w.inner();
            let dropped = keep.inner().to_device(&w.device()).bool_not();
            let zeroed = w.mask_fill(dropped, 0.0);
            if autodiff { zeroed.autodiff().set_require_grad(require_grad) } else { zeroed }
        }))
    }

    /// Number of weights level `level` uses within the block `ranges`.
    pub fn count_block<const D: usize>(&self, level: usize, ranges: [core::ops::Range<usize>; D]) -> usize {
        let shape: [usize; D] = core::array::from_fn(|i| self.shape[i]);
        let map = self.level_map.val().reshape(shape).slice(ranges);
        int_values(map.lower_equal_elem(level as i64).int().sum())[0] as usize
    }

    /// Builds the mask from a level map, checking that every value is a level or the "pruned"
    /// marker `num_levels`.
    pub fn from_level_map<const D: usize>(map: Tensor<D, Int>, num_levels: usize) -> Result<Self> {
        if num_levels == 0 {
            return Err(PruneError::NoLevels);
        }
        let shape = map.dims().to_vec();
        let values = int_values(map.clone());
        if let Some(&value) = values.iter().find(|&&v| v < 0 || v > num_levels as i64) {
            return Err(PruneError::LevelMapOutOfRange { value, num_levels });
        }
        let n = values.len();
        Ok(Self::from_flat(map.reshape([n]), &shape, num_levels))
    }

    /// Builds the mask from one boolean mask per level (core first), checking that they nest.
    pub fn from_masks<const D: usize>(masks: Vec<Tensor<D, Bool>>) -> Result<Self> {
        let num_levels = masks.len();
        let first = masks.first().ok_or(PruneError::NoLevels)?;
        let shape = first.dims();
        for (level, mask) in masks.iter().enumerate() {
            if mask.dims() != shape {
                return Err(PruneError::ShapeMismatch {
                    what: format!("mask of level {level}"),
                    expected: shape.to_vec(),
                    found: mask.dims().to_vec(),
                });
            }
        }
        for level in 0..num_levels.saturating_sub(1) {
            // Weights kept by `level` but dropped by `level + 1`.
            let broken = masks[level].clone().bool_and(masks[level + 1].clone().bool_not());
            let count = int_values(broken.int().sum())[0] as usize;
            if count > 0 {
                return Err(PruneError::NotNested { level, count });
            }
        }
        // With nested masks, a weight first used at level `l` is used by `n - l` levels.
        let used_by = masks.into_iter().map(|m| m.int()).reduce(|a, b| a + b).expect("at least one mask");
        let map = used_by.neg().add_scalar(num_levels as i64);
        Ok(Self::from_flat(map.reshape([shape.iter().product::<usize>()]), &shape, num_levels))
    }

    /// Builds the mask by magnitude: level `k` uses the weights with `|w| > thresholds[k]`.
    /// Thresholds are given core first and must not grow towards the full level (the core is
    /// the sparsest), which makes the masks nest.
    pub fn from_thresholds<const D: usize>(weight: Tensor<D>, thresholds: &[f64]) -> Result<Self> {
        if thresholds.is_empty() {
            return Err(PruneError::NoLevels);
        }
        for level in 1..thresholds.len() {
            if thresholds[level] > thresholds[level - 1] {
                return Err(PruneError::ThresholdsNotDecreasing {
                    level,
                    threshold: thresholds[level],
                    previous: thresholds[level - 1],
                });
            }
        }
        let magnitude = weight.abs();
        let masks = thresholds.iter().map(|&t| magnitude.clone().greater_elem(t)).collect::<Vec<_>>();
        Self::from_masks(masks)
    }

    pub(crate) fn check_level(&self, level: usize) -> Result<()> {
        if level < self.num_levels {
            Ok(())
        } else {
            Err(PruneError::LevelOutOfRange { level, num_levels: self.num_levels })
        }
    }

    fn check_shape(&self, dims: &[usize]) -> Result<()> {
        if dims == self.shape.as_slice() {
            Ok(())
        } else {
            Err(PruneError::ShapeMismatch {
                what: "masked weight".into(),
                expected: self.shape.clone(),
                found: dims.to_vec(),
            })
        }
    }

    /// The binary mask of `level` (true = the level uses the weight), in the weight's shape.
    pub fn level_mask<const D: usize>(&self, level: usize) -> Result<Tensor<D, Bool>> {
        self.check_level(level)?;
        if self.shape.len() != D {
            return Err(PruneError::ShapeMismatch {
                what: format!("rank-{D} view of the mask"),
                expected: self.shape.clone(),
                found: vec![0; D],
            });
        }
        let shape: [usize; D] = core::array::from_fn(|i| self.shape[i]);
        Ok(self.level_map.val().lower_equal_elem(level as i64).reshape(shape))
    }

    /// `weight` with the weights that `level` does not use set to zero.
    pub fn apply<const D: usize>(&self, weight: Tensor<D>, level: usize) -> Result<Tensor<D>> {
        self.check_shape(&weight.dims())?;
        let keep = self.level_mask::<D>(level)?.to_device(&weight.device());
        Ok(weight.mask_fill(keep.bool_not(), 0.0))
    }

    /// Number of weights `level` uses.
    pub fn count(&self, level: usize) -> Result<usize> {
        self.check_level(level)?;
        let kept = self.level_map.val().lower_equal_elem(level as i64).int().sum();
        Ok(int_values(kept)[0] as usize)
    }

    /// Fraction of the weights `level` uses.
    pub fn density(&self, level: usize) -> Result<f64> {
        let total = self.shape.iter().product::<usize>().max(1);
        Ok(self.count(level)? as f64 / total as f64)
    }
}

fn int_values<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().expect("integer tensor data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::store::ModuleRecord;
    use burn::tensor::Distribution;

    #[test]
    fn thresholds_give_nested_masks_and_densities() {
        let device = Device::flex();
        let w = Tensor::<2>::from_floats([[0.1, -0.5, 0.9], [-0.05, 0.3, 0.0]], &device);
        let mask = NestedMask::from_thresholds(w.clone(), &[0.4, 0.2, 0.0]).unwrap();
        assert_eq!(mask.count(0).unwrap(), 2);
        assert_eq!(mask.count(1).unwrap(), 3);
        assert_eq!(mask.count(2).unwrap(), 5);
        assert!((mask.density(0).unwrap() - 2.0 / 6.0).abs() < 1e-12);
        int_values(mask.level_map.val()).iter().zip([2, 0, 0, 2, 1, 3]).for_each(|(a, b)| {
            assert_eq!(*a, b);
        });
        let pruned = mask.apply(w, 0).unwrap();
        pruned.into_data().assert_eq(&TensorData::from([[0.0f32, -0.5, 0.9], [0.0, 0.0, 0.0]]), true);
        // Each level's mask against the definition, computed here on the host: level k keeps
        // |w| > τ_k (so the full level, τ = 0, drops the weight that is exactly zero). Masks
        // that did not nest would differ from it.
        let values = [0.1f32, -0.5, 0.9, -0.05, 0.3, 0.0];
        for (level, tau) in [(0, 0.4f32), (1, 0.2), (2, 0.0)] {
            let want: Vec<bool> = values.iter().map(|v| v.abs() > tau).collect();
            assert_eq!(bools(mask.level_mask::<2>(level).unwrap()), want, "level {level}");
        }
    }

    fn bools(mask: Tensor<2, Bool>) -> Vec<bool> {
        mask.into_data().convert::<bool>().try_to_vec::<bool>().unwrap()
    }

    #[test]
    fn masks_that_do_not_nest_are_rejected() {
        let device = Device::flex();
        let core = Tensor::<1, Bool>::from_data([true, true, false], &device);
        let full = Tensor::<1, Bool>::from_data([true, false, true], &device);
        let err = NestedMask::from_masks(vec![core, full]).unwrap_err();
        assert_eq!(err, PruneError::NotNested { level: 0, count: 1 });
        let err = NestedMask::from_thresholds(Tensor::<1>::zeros([3], &device), &[0.1, 0.2]).unwrap_err();
        assert!(matches!(err, PruneError::ThresholdsNotDecreasing { level: 1, .. }));
        let bad = Tensor::<1, Int>::from_data([0, 4], &device);
        assert_eq!(
            NestedMask::from_level_map(bad, 3).unwrap_err(),
            PruneError::LevelMapOutOfRange { value: 4, num_levels: 3 }
        );
        let mask = NestedMask::dense(&[2, 2], 2, &device).unwrap();
        assert!(matches!(mask.count(2), Err(PruneError::LevelOutOfRange { .. })));
        assert!(matches!(
            mask.apply(Tensor::<2>::zeros([2, 3], &device), 0),
            Err(PruneError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn level_map_survives_a_record_round_trip() {
        let device = Device::flex();
        device.seed(0);
        let w = Tensor::<2>::random([16, 8], Distribution::Normal(0.0, 1.0), &device);
        let mask = NestedMask::from_thresholds(w, &[1.0, 0.5, 0.0]).unwrap();
        let bytes = mask.clone().into_record().into_bytes().unwrap();
        let fresh = NestedMask::dense(&[16, 8], 3, &device).unwrap();
        let loaded = fresh.load_record(ModuleRecord::from_bytes(bytes).unwrap());
        loaded.level_map.val().into_data().assert_eq(&mask.level_map.val().into_data(), true);
        assert_eq!(loaded.count(0).unwrap(), mask.count(0).unwrap());
    }
}

#[cfg(test)]
mod learning_tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Whether every level's mask is what the stages done so far define, computed on the host
    /// from the weights: dropping at level `s` with threshold τ_s drops from every level up to
    /// `s`, so level `j` keeps |w| > max{τ_s : s ≥ j, stage s done} (everything before any
    /// stage). A map that lost nesting, or dropped the wrong weights, differs from it.
    fn matches_stages(mask: &NestedMask, values: &[f32], done: &[(usize, f32)]) -> bool {
        (0..mask.num_levels).all(|j| {
            let tau = done
                .iter()
                .filter(|(s, _)| *s >= j)
                .map(|(_, t)| *t)
                .fold(None, |m: Option<f32>, t| Some(m.map_or(t, |m| m.max(t))));
            let want: Vec<bool> = values.iter().map(|v| tau.is_none_or(|t| v.abs() > t)).collect();
            let got =
                mask.level_mask::<2>(j).unwrap().into_data().convert::<bool>().try_to_vec::<bool>().unwrap();
            got == want
        })
    }

    #[test]
    fn dropping_from_a_level_keeps_the_masks_nested() {
        let device = Device::flex();
        device.seed(4);
        let w = Tensor::<2>::random([40, 30], Distribution::Normal(0.0, 1.0), &device);
        let values = w.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let mut mask = NestedMask::dense(&[40, 30], 3, &device).unwrap();
        // Full level to core, growing thresholds, as weight connection learning does.
        let mut done = Vec::new();
        for (level, tau) in [(2, 0.2f32), (1, 0.6), (0, 1.2)] {
            mask.drop_from_level(level, |i| values[i].abs() > tau).unwrap();
            done.push((level, tau));
            assert!(matches_stages(&mask, &values, &done), "after the stage of level {level}");
        }
        // The check can fail: the stages in another order (a level dropping less than the one
        // below it) define other masks.
        assert!(!matches_stages(&mask, &values, &[(2, 1.2), (1, 0.6), (0, 0.2)]));
        let expected = NestedMask::from_thresholds(w, &[1.2, 0.6, 0.2]).unwrap();
        assert_eq!(mask.level_map_values(), expected.level_map_values());
        assert!(matches!(mask.drop_from_level(3, |_| true), Err(PruneError::LevelOutOfRange { .. })));
    }

    #[test]
    fn random_masks_reach_their_densities_and_nest() {
        let device = Device::flex();
        let mut mask = NestedMask::dense(&[200, 100], 3, &device).unwrap();
        mask.randomize(&[0.2, 0.5, 1.0], 7).unwrap();
        // (Nesting holds by the level map's construction; what it means is checked against
        // the definition in `dropping_from_a_level_keeps_the_masks_nested`.) The core is a
        // random subset, not a block: both halves of the weight hold some of it.
        let core = mask.level_map_values();
        let half = core.len() / 2;
        assert!(core[..half].contains(&0) && core[half..].contains(&0));
        for (level, d) in [(0, 0.2), (1, 0.5), (2, 1.0)] {
            assert!((mask.density(level).unwrap() - d).abs() < 0.01, "level {level}");
        }
        let mut again = NestedMask::dense(&[200, 100], 3, &device).unwrap();
        again.randomize(&[0.2, 0.5, 1.0], 7).unwrap();
        assert_eq!(again.level_map_values(), mask.level_map_values());
        assert!(matches!(
            mask.randomize(&[0.5, 0.2, 1.0], 7),
            Err(PruneError::DensitiesNotIncreasing { .. })
        ));
        assert!(matches!(
            mask.randomize(&[0.0, 0.5, 1.0], 7),
            Err(PruneError::InvalidDensity { level: 0, .. })
        ));
    }

    #[test]
    fn soft_threshold_applies_to_its_level_only() {
        let device = Device::flex();
        let w = Tensor::<2>::from_floats([[0.1, -0.5], [0.9, 0.02]], &device);
        let mut mask = NestedMask::dense(&[2, 2], 2, &device).unwrap();
        mask.soft = Some(SoftThreshold { level: 0, tau: 0.3, gamma: 1e5 });
        let core = mask.apply_block(w.clone(), 0, [0..2, 0..2]);
        core.into_data().assert_approx_eq::<f32>(
            &TensorData::from([[0.0f32, -0.5], [0.9, 0.0]]),
            burn::tensor::Tolerance::absolute(1e-6),
        );
        let full = mask.apply_block(w.clone(), 1, [0..2, 0..2]);
        full.into_data().assert_eq(&w.clone().into_data(), true);
        // A block of the weight, as a channel-scheduled level uses it.
        let block = mask.apply_block(w.slice(s![0..1, 0..2]), 0, [0..1, 0..2]);
        assert_eq!(block.dims(), [1, 2]);
        assert_eq!(mask.count_block(1, [0..1, 0..2]), 2);
    }
}
