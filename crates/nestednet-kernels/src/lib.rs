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
//! | [`conv2d`] (any kernel, stride, padding; no dilation, one group; for stride-1 layers direct kernels: the convolution of ≤ 16 output channels, or ≤ 32 from ≥ 8 input channels (in training only where it gives the product's values), the weight gradient of ≤ 32, the input gradient of ≤ 32) | `conv2d` | float rounding |
//! | [`batch_norm_max_pool2x2_relu`] (training) | [`batch_norm_train`], then the next row | float rounding |
//! | [`max_pool2x2_relu`] | `relu(max_pool2d(x, [2, 2]))` | bit for bit |
//! | [`norm_max_pool2x2_relu`] (inference) | `relu(max_pool2d(norm.forward(x), [2, 2]))` | bit for bit |
//! | [`conv2d_norm_max_pool2x2_relu`] (inference; the batch norm folded into the convolution) | [`conv2d_layer`], then the row above | float rounding |
//!
//! "Float rounding": the kernels sum in another order than Burn's, so results differ in the
//! last bits (tests bound the difference, on every backend CI runs); the pooling kernels pick
//! the same maxima by the same rule and are tested with exact equality. Matrix products go
//! through the `gemm` crate that Flex itself uses, with its AVX-512 kernels compiled in
//! (`x86-v4`; chosen at run time, where the CPU has them); the direct convolution and the
//! other loops pick AVX-512, AVX2 + FMA or plain code at run time.
//!
//! The environment variable `NESTEDNET_KERNELS=burn` (or [`set_own_kernels`]`(false)`) makes
//! every operation take Burn's path everywhere: for speed comparisons, and as a way out should
//! a kernel ever misbehave on a machine. `NESTEDNET_KERNELS=pool,conv` (any of `pool`, `conv`,
//! `norm`, `direct`) switches on only those [`KernelFamily`]s, to measure what each one buys.
#![warn(missing_docs)]

mod conv;
mod direct;
mod direct_grad;
mod direct_input_grad;
#[cfg(feature = "flex")]
mod flex_tensor;
mod gemm;
mod geometry;
mod norm_pool;
mod norm_train;
mod pool;
mod simd;

pub use conv::{conv2d, conv2d_has_kernel, conv2d_layer};
pub use norm_pool::{conv2d_norm_max_pool2x2_relu, norm_max_pool2x2_relu};
pub use norm_train::{NormPoolOutput, batch_norm_max_pool2x2_relu, batch_norm_train};
pub use pool::max_pool2x2_relu;

use std::sync::atomic::{AtomicU8, Ordering};

/// A family of kernels that can be switched off alone (`NESTEDNET_KERNELS`), to measure what
/// each bought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFamily {
    /// [`max_pool2x2_relu`] and [`norm_max_pool2x2_relu`].
    Pool,
    /// [`conv2d`].
    Conv,
    /// [`batch_norm_max_pool2x2_relu`].
    Norm,
    /// The direct kernels of [`conv2d`] for stride-1 layers: the convolution of layers of at
    /// most 16 output channels, or 32 from at least 8 input channels (in training only where
    /// it gives the matrix product's values), and in training the weight and input gradients
    /// of layers of at most 32 (without them, those take the im2col and matrix-product path
    /// too).
    Direct,
}

impl KernelFamily {
    /// Every family.
    pub const ALL: [KernelFamily; 4] =
        [KernelFamily::Pool, KernelFamily::Conv, KernelFamily::Norm, KernelFamily::Direct];
    /// The bits of every family.
    const EVERY: u8 = 0xf;

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The family's name in `NESTEDNET_KERNELS`.
    pub fn name(self) -> &'static str {
        match self {
            KernelFamily::Pool => "pool",
            KernelFamily::Conv => "conv",
            KernelFamily::Norm => "norm",
            KernelFamily::Direct => "direct",
        }
    }
}

/// Bit 7: decided (`NESTEDNET_KERNELS` read, or set); bits 0-3: the families switched on.
static OWN_KERNELS: AtomicU8 = AtomicU8::new(0);
const DECIDED: u8 = 0x80;

/// The families `NESTEDNET_KERNELS` switches on: all when unset or `all`, none for `burn`,
/// else those named in a comma-separated list (`pool,conv`). An unknown name is reported on
/// standard error once and ignored.
fn families_from_env() -> u8 {
    parse_families(std::env::var("NESTEDNET_KERNELS").ok().as_deref())
}

fn parse_families(value: Option<&str>) -> u8 {
    let Some(value) = value else { return KernelFamily::EVERY };
    match value.trim() {
        "" | "all" => KernelFamily::EVERY,
        "burn" => 0,
        list => list.split(',').map(str::trim).fold(0, |bits, name| {
            match KernelFamily::ALL.iter().find(|f| f.name() == name) {
                Some(family) => bits | family.bit(),
                None => {
                    eprintln!(
                        "NESTEDNET_KERNELS: unknown kernel family {name:?} (pool, conv, norm, direct, all, burn)"
                    );
                    bits
                }
            }
        }),
    }
}

fn families() -> u8 {
    let state = OWN_KERNELS.load(Ordering::Relaxed);
    if state & DECIDED != 0 {
        return state;
    }
    // A concurrent `set_own_kernels` wins over the environment.
    let _ =
        OWN_KERNELS.compare_exchange(0, DECIDED | families_from_env(), Ordering::Relaxed, Ordering::Relaxed);
    OWN_KERNELS.load(Ordering::Relaxed)
}

/// Whether the operations run their own kernels where they have one (the default), or Burn's
/// operations everywhere (`NESTEDNET_KERNELS=burn`, or after `set_own_kernels(false)`): true
/// if any family is switched on.
pub fn own_kernels() -> bool {
    families() & KernelFamily::EVERY != 0
}

/// Whether `family`'s kernels are switched on (all are by default; `NESTEDNET_KERNELS=pool,conv`
/// switches on only those).
pub fn kernel_family_on(family: KernelFamily) -> bool {
    families() & family.bit() != 0
}

/// Chooses, for the whole process, between the operations' own kernels (`true`, the default:
/// every family) and Burn's operations (`false`). This is for measuring one against the other.
pub fn set_own_kernels(enabled: bool) {
    OWN_KERNELS.store(DECIDED | if enabled { KernelFamily::EVERY } else { 0 }, Ordering::Relaxed);
}

/// Switches on exactly `families` for the whole process (the others take Burn's path, or for
/// [`KernelFamily::Direct`] the matrix-product convolution): for measuring what each bought.
pub fn set_kernel_families(families: &[KernelFamily]) {
    OWN_KERNELS.store(DECIDED | families.iter().fold(0, |bits, f| bits | f.bit()), Ordering::Relaxed);
}

/// Whether `tensor` lives on the `flex` device (with or without autodiff) and holds `f32`s:
/// there, and only there, `family`'s operations run their own kernels (unless switched off).
#[cfg(feature = "flex")]
fn runs_own_kernel<const D: usize>(tensor: &burn::tensor::Tensor<D>, family: KernelFamily) -> bool {
    tensor.dtype() == burn::tensor::DType::F32
        && tensor.device().inner() == burn::tensor::Device::flex()
        && kernel_family_on(family)
}

/// Without the `flex` backend compiled in, every tensor takes Burn's operations.
#[cfg(not(feature = "flex"))]
fn runs_own_kernel<const D: usize>(_tensor: &burn::tensor::Tensor<D>, _family: KernelFamily) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_families_are_parsed_from_the_environment_value() {
        let bits = |families: &[KernelFamily]| families.iter().fold(0, |b, f| b | f.bit());
        assert_eq!(parse_families(None), KernelFamily::EVERY);
        assert_eq!(parse_families(Some("all")), KernelFamily::EVERY);
        assert_eq!(parse_families(Some("direct")), bits(&[KernelFamily::Direct]));
        assert_eq!(parse_families(Some(" burn ")), 0);
        assert_eq!(parse_families(Some("pool")), bits(&[KernelFamily::Pool]));
        assert_eq!(parse_families(Some("pool, conv")), bits(&[KernelFamily::Pool, KernelFamily::Conv]));
        assert_eq!(parse_families(Some("norm,typo")), bits(&[KernelFamily::Norm]));
    }
}
