use burn::module::{Module, Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;

use crate::compact_copy;
use crate::widths::assert_level;

/// Configuration of a [`LevelBatchNorm`].
#[derive(Config, Debug)]
pub struct LevelBatchNormConfig {
    /// Channels each level normalises, core first.
    pub widths: Vec<usize>,
    /// Added to the variance for numerical stability.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the newest batch in the running statistics.
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// Switchable batch normalisation: one private batch norm (affine transform and running
/// statistics) per level.
///
/// Levels cannot share statistics: level `k`'s channel `c` sees a different input than level
/// `k+1`'s channel `c` (the sum runs over fewer input channels), so shared running statistics
/// would be wrong for every level but one. The per-level affine parameters are tiny (2 × width
/// floats) next to the shared convolution and linear weights.
#[derive(Module, Debug)]
pub struct LevelBatchNorm {
    /// One batch norm per level; `norms[k]` has `widths[k]` channels.
    pub norms: Vec<BatchNorm>,
}

impl LevelBatchNormConfig {
    /// Initializes one fresh batch norm per level (never clones: Burn's running state is
    /// shared between clones).
    pub fn init(&self, device: &Device) -> LevelBatchNorm {
        assert!(!self.widths.is_empty(), "LevelBatchNorm: at least one level is required");
        LevelBatchNorm {
            norms: self
                .widths
                .iter()
                .map(|&w| {
                    BatchNormConfig::new(w)
                        .with_epsilon(self.epsilon)
                        .with_momentum(self.momentum)
                        .init(device)
                })
                .collect(),
        }
    }
}

impl LevelBatchNorm {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.norms.len()
    }

    /// Channels normalised at `level`.
    pub fn width(&self, level: usize) -> usize {
        assert_level("LevelBatchNorm", level, self.num_levels());
        let [w] = self.norms[level].gamma.lazy_shape().dims();
        w
    }

    /// Normalises `x` (`[batch, width_level, ...]`) with level `level`'s batch norm: batch
    /// statistics (and a running-statistics update) when training on an autodiff device or
    /// inside [`recalibrate_batch_norms`](crate::recalibrate_batch_norms), the running
    /// statistics otherwise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, level: usize) -> Tensor<D> {
        let width = self.width(level);
        let got = x.dims()[1];
        assert_eq!(got, width, "LevelBatchNorm level {level}: expected {width} channels, got {got}");
        let norm = &self.norms[level];
        if crate::probe::recording() {
            crate::probe::record(norm.gamma.id, self.level_num_params(level), 0);
        }
        // While recalibrating, batch statistics on any device (no gradient is needed).
        if (x.is_autodiff() && norm.training.is_enabled()) || crate::probe::recalibrating() {
            Self::forward_train(norm, x)
        } else {
            norm.forward(x)
        }
    }

    /// Normalises `x` with its own batch statistics and level `level`'s affine parameters,
    /// leaving the running statistics as they are: the training forward pass of a Mix'n'Match
    /// sub-network, whose statistics belong to no level (they are recalibrated when it is
    /// served).
    pub fn forward_batch_stats<const D: usize>(&self, x: Tensor<D>, level: usize) -> Tensor<D> {
        let width = self.width(level);
        let got = x.dims()[1];
        assert_eq!(got, width, "LevelBatchNorm level {level}: expected {width} channels, got {got}");
        Self::normalise_batch(&self.norms[level], x, false)
    }

    fn forward_train<const D: usize>(norm: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
        Self::normalise_batch(norm, x, true)
    }

    /// Batch statistics in one pass over the input (sum and sum of squares per channel) and one
    /// fused affine transform, differentiated by autodiff. Compared with Burn's
    /// `batch_norm_train` this cuts the passes over the activation roughly in half on `flex`
    /// (its backward is the dominant cost of the layer). The running variance is updated with
    /// the unbiased batch variance, as PyTorch does.
    fn normalise_batch<const D: usize>(norm: &BatchNorm, x: Tensor<D>, update_running: bool) -> Tensor<D> {
        let dims = x.dims();
        let (batch, channels) = (dims[0], dims[1]);
        let spatial = dims[2..].iter().product::<usize>();
        let n = (batch * spatial) as f64;
        let x3 = x.reshape([batch, channels, spatial]);
        let sum = x3.clone().sum_dim(2).sum_dim(0);
        let sum_sq = (x3.clone() * x3.clone()).sum_dim(2).sum_dim(0);
        let mean = sum.div_scalar(n);
        // E[x²] - E[x]²; clamped because rounding can push it a hair below zero.
        let var = (sum_sq.div_scalar(n) - mean.clone() * mean.clone()).clamp_min(0.0);
        let scale =
            var.clone().add_scalar(norm.epsilon).sqrt().recip() * norm.gamma.val().reshape([1, channels, 1]);
        let shift = norm.beta.val().reshape([1, channels, 1]) - mean.clone() * scale.clone();
        let y = (x3 * scale + shift).reshape(dims);
        if !update_running {
            return y;
        }
        let m = crate::probe::calibration_momentum(norm.gamma.id).unwrap_or(norm.momentum);
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let device = y.device();
        let batch_mean = mean.detach().reshape([channels]);
        let batch_var = var.detach().reshape([channels]).mul_scalar(unbiased);
        let running_mean = norm.running_mean.value_sync().to_device(&device);
        let running_var = norm.running_var.value_sync().to_device(&device);
        norm.running_mean.update(running_mean.mul_scalar(1.0 - m).add(batch_mean.mul_scalar(m)).detach());
        norm.running_var.update(running_var.mul_scalar(1.0 - m).add(batch_var.mul_scalar(m)).detach());
        y
    }

    /// Level `level`'s batch norm, for callers that apply it themselves (a fused inference
    /// kernel). Counts as the level using it when costs are recorded.
    pub fn level_norm(&self, level: usize) -> &BatchNorm {
        assert_level("LevelBatchNorm", level, self.num_levels());
        let norm = &self.norms[level];
        if crate::probe::recording() {
            crate::probe::record(norm.gamma.id, self.level_num_params(level), 0);
        }
        norm
    }

    /// Trainable parameters of level `level` (γ and β).
    pub fn level_num_params(&self, level: usize) -> usize {
        2 * self.width(level)
    }

    /// A standalone Burn [`BatchNorm`] with compact copies of level `level`'s parameters and
    /// running statistics.
    pub fn extract_level(&self, level: usize) -> BatchNorm {
        let source = &self.norms[level];
        let width = self.width(level);
        let device = source.gamma.val().device().inner();
        let mut norm = BatchNormConfig::new(width)
            .with_epsilon(source.epsilon)
            .with_momentum(source.momentum)
            .init(&device);
        norm.gamma = Param::from_tensor(compact_copy(source.gamma.val()));
        norm.beta = Param::from_tensor(compact_copy(source.beta.val()));
        norm.running_mean = RunningState::new(compact_copy(source.running_mean.value_sync()));
        norm.running_var = RunningState::new(compact_copy(source.running_var.value_sync()));
        norm
    }

    /// Sets every level's batch norm from `dense`, the full width's (its leading channels for a
    /// smaller level): affine parameters and running statistics. Parameter ids are kept.
    pub fn load_dense(&mut self, dense: &BatchNorm) {
        let [full] = dense.gamma.dims();
        for (level, norm) in self.norms.iter_mut().enumerate() {
            let [w] = norm.gamma.dims();
            assert!(w <= full, "LevelBatchNorm level {level}: {w} channels, the dense batch norm has {full}");
            let lead = |t: Tensor<1>| compact_copy(t.narrow(0, 0, w));
            let (gamma, beta) = (lead(dense.gamma.val()), lead(dense.beta.val()));
            norm.gamma = norm.gamma.clone().map(|_| gamma);
            norm.beta = norm.beta.clone().map(|_| beta);
            norm.running_mean = RunningState::new(lead(dense.running_mean.value_sync()));
            norm.running_var = RunningState::new(lead(dense.running_var.value_sync()));
            norm.epsilon = dense.epsilon;
        }
    }

    /// Level `level` alone, as a one-level `LevelBatchNorm`.
    pub fn single_level(&self, level: usize) -> LevelBatchNorm {
        LevelBatchNorm { norms: vec![self.extract_level(level)] }
    }
}
