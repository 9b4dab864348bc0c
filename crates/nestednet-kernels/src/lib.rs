//! CPU training kernels with hand-written backward passes.
//!
//! Burn runs a training step as many small operations, each with its own autodiff node and a
//! fresh output buffer, and some of its generic CPU kernels are slow for the small tensors of
//! nested networks' compact levels. The operations here replace a run of Burn operations with
//! one kernel and one autodiff node, registered through Burn's backend extension
//! (`#[backend_extension]`) with a hand-written `Autodiff` implementation, the way Burn's
//! `custom-cubecl-kernel` example does it for a GPU kernel.
//!
//! Each operation is a plain function on [`Tensor`](burn::tensor::Tensor)s: on a `flex`
//! device (with or without autodiff, `f32`) it runs its own kernels, forward and backward; on
//! every other backend (`ndarray`, `wgpu`, `tch`, `cuda`), and without the `flex` feature, it
//! *is* the Burn operations it replaces.
//!
//! | operation | replaces | on `flex`, against Burn's |
//! |---|---|---|
//! | [`conv2d`] (any kernel, stride, padding; no dilation, one group) | `conv2d` | float rounding |
//! | [`batch_norm_max_pool2x2_relu`] (training) | [`batch_norm_train`], then the next row | float rounding |
//! | [`max_pool2x2_relu`] | `relu(max_pool2d(x, [2, 2]))` | bit for bit |
//! | [`norm_max_pool2x2_relu`] (inference) | `relu(max_pool2d(norm.forward(x), [2, 2]))` | bit for bit |
//!
//! "Float rounding": the kernels sum in another order than Burn's, so results differ in the
//! last bits (tests bound the difference, on every backend CI runs); the pooling kernels pick
//! the same maxima by the same rule and are tested with exact equality. Matrix products go
//! through the `gemm` crate that Flex itself uses, with its AVX-512 kernels compiled in
//! (`x86-v4`; chosen at run time, where the CPU has them).
//!
//! The environment variable `NESTEDNET_KERNELS=burn` (or [`set_own_kernels`]`(false)`) makes
//! every operation take Burn's path everywhere: for speed comparisons, and as a way out should
//! a kernel ever misbehave on a machine.
#![warn(missing_docs)]

mod conv;
mod gemm;
mod norm_pool;
mod norm_train;
mod pool;
mod simd;

pub use conv::{conv2d, conv2d_has_kernel, conv2d_layer};
pub use norm_pool::norm_max_pool2x2_relu;
pub use norm_train::{NormPoolOutput, batch_norm_max_pool2x2_relu, batch_norm_train};
pub use pool::max_pool2x2_relu;

use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not decided yet (read `NESTEDNET_KERNELS` on first use), 1: own kernels, 2: Burn's ops.
static OWN_KERNELS: AtomicU8 = AtomicU8::new(0);

/// Whether the operations run their own kernels where they have one (the default), or Burn's
/// operations everywhere (`NESTEDNET_KERNELS=burn`, or after `set_own_kernels(false)`).
pub fn own_kernels() -> bool {
    match OWN_KERNELS.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let own = std::env::var("NESTEDNET_KERNELS").map_or(true, |value| value.trim() != "burn");
            // A concurrent `set_own_kernels` wins over the environment.
            let _ = OWN_KERNELS.compare_exchange(
                0,
                if own { 1 } else { 2 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            OWN_KERNELS.load(Ordering::Relaxed) == 1
        }
    }
}

/// Chooses, for the whole process, between the operations' own kernels (`true`, the default)
/// and Burn's operations (`false`). Both give the same values; this is for measuring one
/// against the other.
pub fn set_own_kernels(enabled: bool) {
    OWN_KERNELS.store(if enabled { 1 } else { 2 }, Ordering::Relaxed);
}

/// Whether `tensor` lives on the `flex` device (with or without autodiff) and holds `f32`s:
/// there, and only there, the operations run their own kernels (unless switched off).
#[cfg(feature = "flex")]
fn runs_own_kernel<const D: usize>(tensor: &burn::tensor::Tensor<D>) -> bool {
    tensor.dtype() == burn::tensor::DType::F32
        && tensor.device().inner() == burn::tensor::Device::flex()
        && own_kernels()
}

/// Without the `flex` backend compiled in, every tensor takes Burn's operations.
#[cfg(not(feature = "flex"))]
fn runs_own_kernel<const D: usize>(_tensor: &burn::tensor::Tensor<D>) -> bool {
    false
}
