use burn::module::{Module, Param, ParamId};
use burn::prelude::*;

use crate::{PruneError, Result};

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
        }
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

    fn check_level(&self, level: usize) -> Result<()> {
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
        for level in 0..2 {
            let lower = mask.level_mask::<2>(level).unwrap();
            let upper = mask.level_mask::<2>(level + 1).unwrap();
            let leaked = lower.bool_and(upper.bool_not()).int().sum();
            assert_eq!(int_values(leaked)[0], 0);
        }
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
