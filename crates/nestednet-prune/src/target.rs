//! What the user asks of each level's mask (thresholds, densities or compression ratios) and
//! the relaxed mask of the paper's Eq. (3).

use core::fmt;

use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::{PruneError, Result};

/// The paper's γ (footnote 3): the slope of `tanh(γ · relu(|w| − τ))`, large enough that the
/// relaxed mask is a step almost everywhere.
pub const DEFAULT_GAMMA: f64 = 1e5;

/// A relaxed mask is binarised at this value: a weight is kept when
/// `tanh(γ · relu(|w| − τ)) ≥ 0.5`, i.e. when `|w| ≥ τ + atanh(0.5) / γ` (≈ τ + 5.5e-6 for
/// γ = 1e5). The paper's footnote 5 says only that one extra thresholding binarises the mask.
pub const BINARY_MASK_THRESHOLD: f64 = 0.5;

/// How far above τ the binarised mask starts: `atanh(BINARY_MASK_THRESHOLD) / γ`.
pub fn binarisation_offset(gamma: f64) -> f64 {
    BINARY_MASK_THRESHOLD.atanh() / gamma
}

/// The relaxed mask of level `level` while its connections are being learned (paper, Eq. 3):
/// `m(w) = tanh(γ · relu(|w| − τ))`.
///
/// **Gradient.** The level computes with `w · m(w)`, whose derivative is
/// `m(w) + w · m'(w)` with `m'(w) = γ · sech²(γ(|w| − τ)) · sign(w)` for `|w| > τ` and 0
/// below. Below τ the weight is masked out and gets no gradient at all (it stays where it is);
/// well above τ, `m ≈ 1` and `m' ≈ 0`, so the weight trains as if unmasked; only weights
/// within ~1/γ of τ see the extra (large) term, which pushes them across the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SoftThreshold {
    /// The level whose forward pass uses the relaxed mask.
    pub level: usize,
    /// The threshold τ.
    pub tau: f64,
    /// The slope γ.
    pub gamma: f64,
}

impl SoftThreshold {
    /// `tanh(γ · relu(|w| − τ))`, differentiable (see the type's documentation).
    pub fn mask<const D: usize>(&self, weight: Tensor<D>) -> Tensor<D> {
        (relu(weight.abs().sub_scalar(self.tau)) * self.gamma).tanh()
    }

    /// Whether a weight of magnitude `magnitude` survives binarisation.
    pub fn keeps(&self, magnitude: f32) -> bool {
        self.tau == f64::NEG_INFINITY || f64::from(magnitude) >= self.tau + binarisation_offset(self.gamma)
    }
}

/// The threshold that keeps the `keep` largest of `magnitudes` after binarisation with slope
/// `gamma`: halfway between the `keep`-th and the next largest magnitude, less the
/// binarisation offset. `magnitudes` is reordered. When every weight is to be kept, τ is
/// `-∞`: the relaxed mask is then exactly 1 (even for weights at 0) and has no gradient.
pub fn threshold_keeping(magnitudes: &mut [f32], keep: usize, gamma: f64) -> f64 {
    if keep >= magnitudes.len() {
        return f64::NEG_INFINITY;
    }
    magnitudes.sort_unstable_by(|a, b| b.total_cmp(a));
    let above =
        if keep == 0 { f64::from(magnitudes[0]) * 2.0 + 1.0 } else { f64::from(magnitudes[keep - 1]) };
    let below = f64::from(magnitudes[keep]);
    ((above + below) / 2.0 - binarisation_offset(gamma)).max(0.0)
}

/// What each level's mask must reach, core first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "values", rename_all = "lowercase")]
pub enum MaskTargets {
    /// Fraction of the level's parameters kept, in (0, 1], never shrinking towards the full
    /// level. The library finds the global threshold τ that reaches it.
    Densities(Vec<f64>),
    /// One global magnitude threshold τ per level (the paper's way), ≥ 0 and never growing
    /// towards the full level (0 keeps every non-zero weight).
    Thresholds(Vec<f64>),
}

impl MaskTargets {
    /// Densities from compression ratios (`3, 2, 1` → `1/3, 1/2, 1`).
    pub fn from_compression(ratios: &[f64]) -> Result<Self> {
        for (level, &r) in ratios.iter().enumerate() {
            if !(r.is_finite() && r >= 1.0) {
                return Err(PruneError::InvalidCompression { level, value: r });
            }
        }
        let targets = Self::Densities(ratios.iter().map(|r| 1.0 / r).collect());
        targets.validate(ratios.len())?;
        Ok(targets)
    }

    /// Number of levels described.
    pub fn num_levels(&self) -> usize {
        match self {
            Self::Densities(v) | Self::Thresholds(v) => v.len(),
        }
    }

    /// Checks the values against a model of `num_levels` levels.
    pub fn validate(&self, num_levels: usize) -> Result<()> {
        let (what, values) = match self {
            Self::Densities(v) => ("densities", v),
            Self::Thresholds(v) => ("thresholds", v),
        };
        if values.is_empty() {
            return Err(PruneError::NoLevels);
        }
        if values.len() != num_levels {
            return Err(PruneError::LevelCountMismatch {
                what: what.into(),
                expected: num_levels,
                found: values.len(),
            });
        }
        for (level, &v) in values.iter().enumerate() {
            match self {
                Self::Densities(_) if !(v > 0.0 && v <= 1.0) => {
                    return Err(PruneError::InvalidDensity { level, value: v });
                }
                Self::Thresholds(_) if !(v.is_finite() && v >= 0.0) => {
                    return Err(PruneError::InvalidThreshold { level, value: v });
                }
                _ => {}
            }
            if level == 0 {
                continue;
            }
            let previous = values[level - 1];
            match self {
                Self::Densities(_) if v < previous => {
                    return Err(PruneError::DensitiesNotIncreasing { level, density: v, previous });
                }
                Self::Thresholds(_) if v > previous => {
                    return Err(PruneError::ThresholdsNotDecreasing { level, threshold: v, previous });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for MaskTargets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, values) = match self {
            Self::Densities(v) => ("densities", v),
            Self::Thresholds(v) => ("thresholds", v),
        };
        // Four decimals are plenty for a report and keep 1/3 readable.
        let values =
            values.iter().map(|v| format!("{}", (v * 1e4).round() / 1e4)).collect::<Vec<_>>().join(",");
        write!(f, "{name} {values}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_targets_are_rejected_with_the_level() {
        let d = |v: &[f64]| MaskTargets::Densities(v.to_vec()).validate(v.len());
        assert!(d(&[0.33, 0.5, 1.0]).is_ok());
        assert_eq!(d(&[0.0, 1.0]).unwrap_err(), PruneError::InvalidDensity { level: 0, value: 0.0 });
        assert_eq!(d(&[0.5, 1.5]).unwrap_err(), PruneError::InvalidDensity { level: 1, value: 1.5 });
        assert!(matches!(d(&[0.5, 0.3]).unwrap_err(), PruneError::DensitiesNotIncreasing { level: 1, .. }));
        assert!(matches!(d(&[f64::NAN]).unwrap_err(), PruneError::InvalidDensity { level: 0, .. }));
        let t = |v: &[f64]| MaskTargets::Thresholds(v.to_vec()).validate(v.len());
        assert!(t(&[0.025, 0.015, 0.0]).is_ok());
        assert!(matches!(
            t(&[0.01, 0.02]).unwrap_err(),
            PruneError::ThresholdsNotDecreasing { level: 1, .. }
        ));
        assert_eq!(t(&[-0.1]).unwrap_err(), PruneError::InvalidThreshold { level: 0, value: -0.1 });
        let err = MaskTargets::Densities(vec![0.5, 1.0]).validate(3).unwrap_err();
        assert!(err.to_string().contains("gives 2 values but the model has 3 levels"), "{err}");
        let c = MaskTargets::from_compression(&[3.0, 2.0, 1.0]).unwrap();
        assert_eq!(c, MaskTargets::Densities(vec![1.0 / 3.0, 0.5, 1.0]));
        assert!(matches!(
            MaskTargets::from_compression(&[0.5, 1.0]).unwrap_err(),
            PruneError::InvalidCompression { level: 0, .. }
        ));
    }

    #[test]
    fn calibrated_threshold_keeps_exactly_the_requested_count() {
        let mut values: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 * 1e-4).collect();
        for keep in [0, 1, 333, 999, 1000] {
            let tau = threshold_keeping(&mut values.clone(), keep, DEFAULT_GAMMA);
            let soft = SoftThreshold { level: 0, tau, gamma: DEFAULT_GAMMA };
            let kept = values.iter().filter(|&&m| soft.keeps(m)).count();
            assert_eq!(kept, keep, "keep {keep}");
        }
        values.clear();
        assert_eq!(threshold_keeping(&mut values, 3, DEFAULT_GAMMA), f64::NEG_INFINITY);
    }

    #[test]
    fn relaxed_mask_is_a_step_with_a_gradient_only_near_tau() {
        let device = Device::flex().autodiff();
        let w = Tensor::<1>::from_floats([0.001, -0.02, 0.5, 0.0100001], &device).require_grad();
        let soft = SoftThreshold { level: 0, tau: 0.01, gamma: DEFAULT_GAMMA };
        let m = soft.mask(w.clone());
        let values = m.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert_eq!(values[0], 0.0);
        assert!((values[1] - 1.0).abs() < 1e-6 && (values[2] - 1.0).abs() < 1e-6);
        assert!(values[3] > 0.0 && values[3] < 0.5);
        let grads = (w.clone() * m).sum().backward();
        let g = w.grad(&grads).unwrap().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        // Masked-out weight: no gradient. Far above τ: d(w·m)/dw = m = 1. Near τ: m + w·m' ≫ 1.
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 1.0).abs() < 1e-4 && (g[2] - 1.0).abs() < 1e-4);
        assert!(g[3] > 100.0, "{}", g[3]);
    }
}
