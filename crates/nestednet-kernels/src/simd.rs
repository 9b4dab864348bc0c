//! The kernels' loops compiled for AVX2 and FMA where the CPU has them.
//!
//! A release build targets the x86-64 baseline (SSE2: four `f32` lanes), and the kernels'
//! branch-free loops vectorise only to that width; Flex itself picks its SIMD width at run
//! time. [`vectorised`] runs a closure inside a function compiled with AVX2 and FMA enabled
//! (the closure, called once there, is inlined into it and compiled for those features), after
//! checking at run time that the CPU has them; elsewhere it just calls the closure. The
//! arithmetic is the same either way (no fused multiply-add is introduced where the code has
//! none: Rust does not contract `a * b + c`), so results do not depend on the path.
#![allow(unsafe_code)]

/// Runs `f`, compiled for AVX2 and FMA if the CPU has them.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has both features the function is compiled for (checked above).
        return unsafe { with_avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_closure_runs_once_and_returns_its_value() {
        let mut calls = 0;
        let value = super::vectorised(|| {
            calls += 1;
            (0..100).map(|v| v as f32 * 0.5).sum::<f32>()
        });
        assert_eq!((calls, value), (1, 2475.0));
    }
}
