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
        self.check_width(&x, level);
        let norm = self.level_norm(level);
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
        self.check_width(&x, level);
        Self::normalise_batch(&self.norms[level], x, false)
    }

    fn forward_train<const D: usize>(norm: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
        Self::normalise_batch(norm, x, true)
    }

    /// Level `level`'s batch norm, then 2×2 max-pooling and ReLU: `relu(max_pool2d(self.forward(x,
    /// level), [2, 2]))`. In training (batch statistics) on `flex` the three are one kernel
    /// and one autodiff node ([`nestednet_kernels::batch_norm_max_pool2x2_relu`]); elsewhere
    /// they are the batch norm then [`nestednet_kernels::max_pool2x2_relu`].
    pub fn forward_max_pool2x2_relu(&self, x: Tensor<4>, level: usize) -> Tensor<4> {
        let norm = &self.norms[level];
        if (x.is_autodiff() && norm.training.is_enabled()) || crate::probe::recalibrating() {
            self.check_width(&x, level);
            Self::normalise_batch_pool_relu(self.level_norm(level), x, true)
        } else {
            nestednet_kernels::max_pool2x2_relu(self.forward(x, level))
        }
    }

    /// [`forward_batch_stats`](Self::forward_batch_stats), then 2×2 max-pooling and ReLU, fused
    /// as in [`forward_max_pool2x2_relu`](Self::forward_max_pool2x2_relu).
    pub fn forward_batch_stats_max_pool2x2_relu(&self, x: Tensor<4>, level: usize) -> Tensor<4> {
        self.check_width(&x, level);
        Self::normalise_batch_pool_relu(&self.norms[level], x, false)
    }

    fn check_width<const D: usize>(&self, x: &Tensor<D>, level: usize) {
        let width = self.width(level);
        let got = x.dims()[1];
        assert_eq!(got, width, "LevelBatchNorm level {level}: expected {width} channels, got {got}");
    }

    /// Normalises `x` with its batch statistics ([`nestednet_kernels::batch_norm_train`]: one
    /// pass for the statistics and one fused affine transform, differentiated by autodiff;
    /// compared with Burn's `batch_norm_train` this cuts the passes over the activation
    /// roughly in half on `flex`), updating the running statistics if asked.
    fn normalise_batch<const D: usize>(norm: &BatchNorm, x: Tensor<D>, update_running: bool) -> Tensor<D> {
        let dims = x.dims();
        let n = dims[0] * dims[2..].iter().product::<usize>();
        let (y, mean, var) =
            nestednet_kernels::batch_norm_train(x, norm.gamma.val(), norm.beta.val(), norm.epsilon);
        if update_running {
            Self::update_running(norm, mean, var, n);
        }
        y
    }

    fn normalise_batch_pool_relu(norm: &BatchNorm, x: Tensor<4>, update_running: bool) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let out = nestednet_kernels::batch_norm_max_pool2x2_relu(
            x,
            norm.gamma.val(),
            norm.beta.val(),
            norm.epsilon,
        );
        if update_running {
            Self::update_running(norm, out.mean, out.variance, b * h * w);
        }
        out.output
    }

    /// Moves the running statistics towards a batch's mean and biased variance over `n`
    /// values (the running variance takes the unbiased variance, as PyTorch's does).
    fn update_running(norm: &BatchNorm, mean: Tensor<1>, var: Tensor<1>, n: usize) {
        let n = n as f64;
        let m = crate::probe::calibration_momentum(norm.gamma.id).unwrap_or(norm.momentum);
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let device = mean.device();
        let batch_var = var.mul_scalar(unbiased);
        let running_mean = norm.running_mean.value_sync().to_device(&device);
        let running_var = norm.running_var.value_sync().to_device(&device);
        norm.running_mean.update(running_mean.mul_scalar(1.0 - m).add(mean.mul_scalar(m)).detach());
        norm.running_var.update(running_var.mul_scalar(1.0 - m).add(batch_var.mul_scalar(m)).detach());
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
