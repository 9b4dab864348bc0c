use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{HeadError, Result};

/// The joint objective of a nested network (paper, Eq. 5): `Σ_k w_k · L_k` with `Σ_k w_k = 1`.
///
/// With the default weights `1/n` this is the plain mean of the level losses. A weight
/// shared by several levels therefore receives `Σ_{k ≥ its level} w_k ∂L_k/∂w`: core weights
/// learn from every level, full-only weights only from the full level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JointLoss {
    weights: Vec<f64>,
}

impl JointLoss {
    /// Equal weights `1/n` for `num_levels` levels.
    pub fn mean(num_levels: usize) -> Self {
        Self { weights: vec![1.0 / num_levels as f64; num_levels] }
    }

    /// Weights for `num_levels` levels: `None` gives the mean; given weights must be finite,
    /// non-negative, one per level and not all zero. They are normalised to sum to 1.
    pub fn new(num_levels: usize, weights: Option<&[f64]>) -> Result<Self> {
        let Some(weights) = weights else {
            return Ok(Self::mean(num_levels));
        };
        if weights.len() != num_levels {
            return Err(HeadError::WeightCount { expected: num_levels, found: weights.len() });
        }
        for (level, &weight) in weights.iter().enumerate() {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(HeadError::BadWeight { level, weight });
            }
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(HeadError::ZeroWeights);
        }
        Ok(Self { weights: weights.iter().map(|w| w / total).collect() })
    }

    /// The normalised weight of each level.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Combines one scalar loss per level into the joint loss. Levels with weight 0 are
    /// skipped (their graph is not part of the backward pass).
    pub fn combine(&self, level_losses: Vec<Tensor<1>>) -> Tensor<1> {
        assert_eq!(
            level_losses.len(),
            self.weights.len(),
            "JointLoss: {} level losses for {} levels",
            level_losses.len(),
            self.weights.len()
        );
        level_losses
            .into_iter()
            .zip(&self.weights)
            .filter(|(_, w)| **w > 0.0)
            .map(|(loss, &w)| loss.mul_scalar(w))
            .reduce(|a, b| a + b)
            .expect("at least one level has a positive weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_mean_and_weights_are_normalised() {
        let device = Device::flex();
        let losses = || vec![Tensor::<1>::from_floats([1.0], &device), Tensor::from_floats([3.0], &device)];
        let mean = JointLoss::new(2, None).unwrap();
        assert_eq!(mean.combine(losses()).into_scalar::<f32>(), 2.0);
        let weighted = JointLoss::new(2, Some(&[3.0, 1.0])).unwrap();
        assert_eq!(weighted.weights(), &[0.75, 0.25]);
        assert_eq!(weighted.combine(losses()).into_scalar::<f32>(), 1.5);
    }

    #[test]
    fn bad_weights_are_rejected() {
        assert_eq!(JointLoss::new(3, Some(&[1.0])), Err(HeadError::WeightCount { expected: 3, found: 1 }));
        assert_eq!(
            JointLoss::new(2, Some(&[1.0, -1.0])),
            Err(HeadError::BadWeight { level: 1, weight: -1.0 })
        );
        assert!(matches!(
            JointLoss::new(2, Some(&[f64::NAN, 1.0])),
            Err(HeadError::BadWeight { level: 0, .. })
        ));
        assert_eq!(JointLoss::new(2, Some(&[0.0, 0.0])), Err(HeadError::ZeroWeights));
    }

    /// One backward through the joint loss reaches every level's parameters with the level's
    /// weight.
    #[test]
    fn one_backward_reaches_every_level() {
        let device = Device::flex().autodiff();
        let w = Tensor::<1>::from_floats([2.0, 5.0], &device).require_grad();
        let core = w.clone().narrow(0, 0, 1).sum();
        let full = w.clone().sum();
        let loss = JointLoss::mean(2).combine(vec![core, full]);
        let grads = loss.backward();
        let g = w.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(g, vec![1.0, 0.5]);
    }
}
