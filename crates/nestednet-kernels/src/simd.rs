//! The kernels' loops compiled for AVX2 and FMA where the CPU has them.
//!
//! A release build targets the x86-64 baseline (SSE2: four `f32` lanes), and the kernels'
//! branch-free loops vectorise only to that width; Flex itself picks its SIMD width at run
//! time. [`vectorised!`](vectorised) runs an expression inside a function compiled with AVX2
//! and FMA enabled, after checking at run time that the CPU has them; elsewhere it evaluates
//! the expression as it is. The expression's functions must be `#[inline(always)]`, so that
//! they are compiled inside it. The arithmetic is the same either way (no fused multiply-add
//! is introduced where the code has none: Rust does not contract `a * b + c`), so results do
//! not depend on the path.
#![allow(unsafe_code)]

/// Evaluates `$body`, compiled for AVX2 and FMA if the CPU has them.
///
/// A macro, not a function taking a closure: the closure it builds is called from exactly one
/// place ([`run_avx2`]), which is what makes LLVM inline it there whatever its size, and so
/// compile it with those features. A function calling its closure on both paths (as this
/// once was) left large closures compiled for the baseline: measured, the 2×2 pooling of the
/// inference kernel ran in 4-lane SSE code and scalar tails.
macro_rules! vectorised {
    ($body:expr) => {
        if $crate::simd::has_avx2_fma() { $crate::simd::run_avx2(|| $body) } else { $body }
    };
}
pub(crate) use vectorised;

/// Whether the CPU has AVX2 and FMA (detected once, then cached by the standard library).
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` compiled for AVX2 and FMA. Only for [`vectorised!`](vectorised).
///
/// # Panics
///
/// If the CPU lacks them ([`has_avx2_fma`] is false).
#[inline(always)]
pub(crate) fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    assert!(has_avx2_fma(), "AVX2 and FMA code on a CPU without them");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has both features the function is compiled for (asserted above).
    return unsafe { with_avx2(f) };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no AVX2 outside x86-64")
}

// `#[inline]`: a copy in each codegen unit that calls it, the closure's own, so that the
// closure can be inlined into it (a single copy elsewhere left the closures compiled apart,
// for the baseline).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Output pixels per block of [`conv_blocks`]: two 8-lane vectors.
pub(crate) const CONV_PIXELS: usize = 16;
/// Output channels per block of [`conv_blocks`].
pub(crate) const CONV_GROUP: usize = 4;

/// One group of [`CONV_GROUP`] output channels of a direct convolution (see `crate::direct`):
/// the padded input `planes` (`plane` values each), the offset of each kernel position in a
/// plane (`taps`), the group's weights (`[input channel][tap][CONV_GROUP]`) and its bias.
#[derive(Clone, Copy)]
pub(crate) struct ConvGroup<'a> {
    pub(crate) planes: &'a [f32],
    pub(crate) plane: usize,
    pub(crate) taps: &'a [usize],
    pub(crate) weights: &'a [f32],
    pub(crate) bias: &'a [f32; CONV_GROUP],
}

/// Calls `$avx512(group, out)` where the CPU has AVX-512F, else `$avx2(group, out)` where it
/// has AVX2 and FMA, else `$scalar(group, out)`. The caller has checked the buffers' lengths
/// ([`check_blocks`]): the vector variants' only other requirement is the CPU's features.
macro_rules! blocks_on_this_cpu {
    ($avx512:ident, $avx2:ident, $scalar:ident, $group:expr, $out:expr) => {{
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked here); every load and store lies inside
            // its slice (the caller checked the lengths).
            unsafe { $avx512($group, $out) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: as above, with AVX2 and FMA.
            unsafe { $avx2($group, $out) };
            return;
        }
        $scalar($group, $out);
    }};
}

/// The direct convolution's inner loop (see `crate::direct`) for one group of
/// [`CONV_GROUP`] output channels: for every block start `q` (a multiple of [`CONV_PIXELS`]
/// below `out.len() / CONV_GROUP`), channel `c` of the group, and pixel `j` of the block,
///
/// `out[c · len + q + j] = bias[c] + Σ_{i, t} weights[(i · taps.len() + t) · CONV_GROUP + c]
///                          · planes[i · plane + q + taps[t] + j]`
///
/// summed in that order of `(i, t)` (input channel, kernel position), the bias added last. It
/// keeps the `CONV_GROUP × CONV_PIXELS` sums of one or two blocks in registers with fused
/// multiply-adds where the CPU has AVX-512 or AVX2 and FMA, and runs the same loop in scalar
/// code elsewhere (rounded twice per term there: `mul_add` would be a slow library call).
///
/// # Panics
///
/// If the buffers' lengths do not fit: `planes` not a whole number of planes, `weights` not
/// `CONV_GROUP` values per plane and kernel position, `out` not `CONV_GROUP` whole numbers of
/// blocks, or a block reading past its plane.
pub(crate) fn conv_blocks(group: &ConvGroup, out: &mut [f32]) {
    let ConvGroup { planes, plane, taps, weights, .. } = *group;
    check_blocks(planes, plane, taps, weights, out.len());
    blocks_on_this_cpu!(conv_blocks_avx512, conv_blocks_avx2, conv_blocks_scalar, group, out);
}

/// The lengths [`conv_blocks`] and [`input_grad_blocks`] need: `planes` a whole number of
/// planes of `plane` values, `CONV_GROUP` weights per plane and kernel position, an output of
/// `CONV_GROUP` whole numbers of blocks, and no block reading past its plane.
fn check_blocks(planes: &[f32], plane: usize, taps: &[usize], weights: &[f32], out: usize) {
    let len = out / CONV_GROUP;
    assert!(
        plane > 0 && planes.len().is_multiple_of(plane),
        "{} values are not planes of {plane}",
        planes.len()
    );
    let channels = planes.len() / plane;
    assert_eq!(weights.len(), channels * taps.len() * CONV_GROUP, "weights for {channels} channels");
    assert!(len.is_multiple_of(CONV_PIXELS) && len * CONV_GROUP == out, "an output of {out} values");
    let reach = taps.iter().max().map_or(0, |&t| t + len);
    assert!(taps.is_empty() || reach <= plane, "blocks reading to {reach} in planes of {plane}");
}

/// [`conv_blocks`] in scalar code (the lengths checked by it).
fn conv_blocks_scalar(group: &ConvGroup, out: &mut [f32]) {
    let ConvGroup { planes, plane, taps, weights, bias } = *group;
    let len = out.len() / CONV_GROUP;
    for q in (0..len).step_by(CONV_PIXELS) {
        let mut acc = [[0.0f32; CONV_PIXELS]; CONV_GROUP];
        let mut w = weights.chunks_exact(CONV_GROUP);
        for input in planes.chunks_exact(plane) {
            for (&tap, w) in taps.iter().zip(&mut w) {
                let x = &input[q + tap..][..CONV_PIXELS];
                for (acc, &w) in acc.iter_mut().zip(w) {
                    for (a, &x) in acc.iter_mut().zip(x) {
                        *a += w * x;
                    }
                }
            }
        }
        for (c, (acc, &b)) in acc.iter().zip(bias).enumerate() {
            for (o, &a) in out[c * len + q..][..CONV_PIXELS].iter_mut().zip(acc) {
                *o = a + b;
            }
        }
    }
}

/// [`conv_blocks`] with AVX-512: a block is one 16-lane register, and two blocks run
/// together (eight accumulators, enough to keep both FMA units busy), the last one alone if
/// their number is odd.
///
/// # Safety
///
/// The CPU must have AVX-512F, and the lengths must be those [`conv_blocks`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn conv_blocks_avx512(group: &ConvGroup, out: &mut [f32]) {
    let ConvGroup { planes, plane, taps, weights, bias } = *group;
    use std::arch::x86_64::*;
    const PAIR: usize = 2 * CONV_PIXELS;
    let len = out.len() / CONV_GROUP;
    let channels = planes.len() / plane;
    let (x, w, dst) = (planes.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    let mut q = 0;
    while q < len {
        let blocks = if q + PAIR <= len { 2 } else { 1 };
        // SAFETY: as in `conv_blocks_avx2`; the second block is read and written only when
        // `q + 32 <= len`.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 2 * CONV_GROUP];
            let mut wk = w;
            for i in 0..channels {
                let input = x.add(i * plane + q);
                for &tap in taps {
                    let x0 = _mm512_loadu_ps(input.add(tap));
                    if blocks == 2 {
                        let x1 = _mm512_loadu_ps(input.add(tap + CONV_PIXELS));
                        for c in 0..CONV_GROUP {
                            let wc = _mm512_set1_ps(*wk.add(c));
                            acc[2 * c] = _mm512_fmadd_ps(wc, x0, acc[2 * c]);
                            acc[2 * c + 1] = _mm512_fmadd_ps(wc, x1, acc[2 * c + 1]);
                        }
                    } else {
                        for c in 0..CONV_GROUP {
                            acc[2 * c] = _mm512_fmadd_ps(_mm512_set1_ps(*wk.add(c)), x0, acc[2 * c]);
                        }
                    }
                    wk = wk.add(CONV_GROUP);
                }
            }
            for (c, &b) in bias.iter().enumerate() {
                let b = _mm512_set1_ps(b);
                _mm512_storeu_ps(dst.add(c * len + q), _mm512_add_ps(acc[2 * c], b));
                if blocks == 2 {
                    _mm512_storeu_ps(dst.add(c * len + q + CONV_PIXELS), _mm512_add_ps(acc[2 * c + 1], b));
                }
            }
        }
        q += blocks * CONV_PIXELS;
    }
}

/// [`conv_blocks`] with AVX2 and FMA.
///
/// # Safety
///
/// The CPU must have AVX2 and FMA, and the lengths must be those [`conv_blocks`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_blocks_avx2(group: &ConvGroup, out: &mut [f32]) {
    let ConvGroup { planes, plane, taps, weights, bias } = *group;
    use std::arch::x86_64::*;
    let len = out.len() / CONV_GROUP;
    let channels = planes.len() / plane;
    let (x, w, dst) = (planes.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    for q in (0..len).step_by(CONV_PIXELS) {
        // SAFETY (each block): loads at `i · plane + q + tap + [0, 16)` lie below
        // `channels · plane` because `q + 16 ≤ len` and `tap + len ≤ plane`; weight loads
        // below `channels · taps · 4`; stores at `c · len + q + [0, 16)` below `4 · len`.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 2 * CONV_GROUP];
            let mut wk = w;
            for i in 0..channels {
                let input = x.add(i * plane + q);
                for &tap in taps {
                    let x0 = _mm256_loadu_ps(input.add(tap));
                    let x1 = _mm256_loadu_ps(input.add(tap + 8));
                    for c in 0..CONV_GROUP {
                        let wc = _mm256_broadcast_ss(&*wk.add(c));
                        acc[2 * c] = _mm256_fmadd_ps(wc, x0, acc[2 * c]);
                        acc[2 * c + 1] = _mm256_fmadd_ps(wc, x1, acc[2 * c + 1]);
                    }
                    wk = wk.add(CONV_GROUP);
                }
            }
            for (c, &b) in bias.iter().enumerate() {
                let b = _mm256_set1_ps(b);
                _mm256_storeu_ps(dst.add(c * len + q), _mm256_add_ps(acc[2 * c], b));
                _mm256_storeu_ps(dst.add(c * len + q + 8), _mm256_add_ps(acc[2 * c + 1], b));
            }
        }
    }
}

/// One group of [`CONV_GROUP`] input channels of a direct input gradient (see
/// `crate::direct_input_grad`): the padded output-gradient `planes` (`plane` values each), the
/// offset of each kernel position in a plane (`taps`, in the order of the sums), and the
/// group's weights (`[tap][output channel][CONV_GROUP]`).
#[derive(Clone, Copy)]
pub(crate) struct InputGradGroup<'a> {
    pub(crate) planes: &'a [f32],
    pub(crate) plane: usize,
    pub(crate) taps: &'a [usize],
    pub(crate) weights: &'a [f32],
}

/// The direct input gradient's inner loop for one group of [`CONV_GROUP`] input channels: for
/// every block start `q` (a multiple of [`CONV_PIXELS`] below `out.len() / CONV_GROUP`),
/// channel `c` of the group and pixel `j` of the block,
///
/// `out[c · len + q + j] = Σ_t (Σ_i weights[(t · channels + i) · CONV_GROUP + c]
///                               · planes[i · plane + q + taps[t] + j])`
///
/// where each kernel position's inner sum runs over the output channels `i` in order from
/// zero with fused multiply-adds (a column of the product `Wᵀ · dy`), and the outer sum adds
/// those, from zero, in the order of `taps` (as `col2im` adds the columns). With AVX-512 it
/// keeps two blocks' sums and partial sums in registers; with AVX2 and FMA half a block at a
/// time; in scalar code elsewhere (rounded twice per term there).
///
/// # Panics
///
/// If the buffers' lengths do not fit, as for [`conv_blocks`].
pub(crate) fn input_grad_blocks(group: &InputGradGroup, out: &mut [f32]) {
    let InputGradGroup { planes, plane, taps, weights } = *group;
    check_blocks(planes, plane, taps, weights, out.len());
    blocks_on_this_cpu!(
        input_grad_blocks_avx512,
        input_grad_blocks_avx2,
        input_grad_blocks_scalar,
        group,
        out
    );
}

/// [`input_grad_blocks`] in scalar code (the lengths checked by it).
fn input_grad_blocks_scalar(group: &InputGradGroup, out: &mut [f32]) {
    let InputGradGroup { planes, plane, taps, weights } = *group;
    let len = out.len() / CONV_GROUP;
    let channels = planes.len() / plane;
    for q in (0..len).step_by(CONV_PIXELS) {
        let mut acc = [[0.0f32; CONV_PIXELS]; CONV_GROUP];
        for (t, &tap) in taps.iter().enumerate() {
            let mut part = [[0.0f32; CONV_PIXELS]; CONV_GROUP];
            for i in 0..channels {
                let x = &planes[i * plane + q + tap..][..CONV_PIXELS];
                let w = &weights[(t * channels + i) * CONV_GROUP..][..CONV_GROUP];
                for (part, &w) in part.iter_mut().zip(w) {
                    for (p, &x) in part.iter_mut().zip(x) {
                        *p += w * x;
                    }
                }
            }
            for (acc, part) in acc.iter_mut().zip(&part) {
                for (a, &p) in acc.iter_mut().zip(part) {
                    *a += p;
                }
            }
        }
        for (c, acc) in acc.iter().enumerate() {
            out[c * len + q..][..CONV_PIXELS].copy_from_slice(acc);
        }
    }
}

/// [`input_grad_blocks`] with AVX-512: two 16-lane blocks at a time (the last alone if their
/// number is odd), each with [`CONV_GROUP`] sums and as many partial sums in registers.
///
/// # Safety
///
/// The CPU must have AVX-512F, and the lengths must be those [`input_grad_blocks`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_grad_blocks_avx512(group: &InputGradGroup, out: &mut [f32]) {
    let InputGradGroup { planes, plane, taps, weights } = *group;
    use std::arch::x86_64::*;
    const PAIR: usize = 2 * CONV_PIXELS;
    let len = out.len() / CONV_GROUP;
    let channels = planes.len() / plane;
    let (x, w, dst) = (planes.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    let mut q = 0;
    while q < len {
        let blocks = if q + PAIR <= len { 2 } else { 1 };
        // SAFETY: loads at `i · plane + q + tap + [0, 16)` (and `+ 16` for a second block,
        // read only when `q + 32 <= len`) lie below `channels · plane` because `tap + len <=
        // plane`; weight loads below `taps · channels · 4`; stores below `4 · len`.
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 2 * CONV_GROUP];
            let mut wk = w;
            for &tap in taps {
                let mut part = [_mm512_setzero_ps(); 2 * CONV_GROUP];
                for i in 0..channels {
                    let input = x.add(i * plane + q + tap);
                    let x0 = _mm512_loadu_ps(input);
                    if blocks == 2 {
                        let x1 = _mm512_loadu_ps(input.add(CONV_PIXELS));
                        for c in 0..CONV_GROUP {
                            let wc = _mm512_set1_ps(*wk.add(c));
                            part[2 * c] = _mm512_fmadd_ps(wc, x0, part[2 * c]);
                            part[2 * c + 1] = _mm512_fmadd_ps(wc, x1, part[2 * c + 1]);
                        }
                    } else {
                        for c in 0..CONV_GROUP {
                            part[2 * c] = _mm512_fmadd_ps(_mm512_set1_ps(*wk.add(c)), x0, part[2 * c]);
                        }
                    }
                    wk = wk.add(CONV_GROUP);
                }
                for (a, p) in acc.iter_mut().zip(&part) {
                    *a = _mm512_add_ps(*a, *p);
                }
            }
            for c in 0..CONV_GROUP {
                _mm512_storeu_ps(dst.add(c * len + q), acc[2 * c]);
                if blocks == 2 {
                    _mm512_storeu_ps(dst.add(c * len + q + CONV_PIXELS), acc[2 * c + 1]);
                }
            }
        }
        q += blocks * CONV_PIXELS;
    }
}

/// [`input_grad_blocks`] with AVX2 and FMA, eight pixels at a time.
///
/// # Safety
///
/// The CPU must have AVX2 and FMA, and the lengths must be those [`input_grad_blocks`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_grad_blocks_avx2(group: &InputGradGroup, out: &mut [f32]) {
    let InputGradGroup { planes, plane, taps, weights } = *group;
    use std::arch::x86_64::*;
    let len = out.len() / CONV_GROUP;
    let channels = planes.len() / plane;
    let (x, w, dst) = (planes.as_ptr(), weights.as_ptr(), out.as_mut_ptr());
    for q in (0..len).step_by(8) {
        // SAFETY: as in `input_grad_blocks_avx512`, with `q + 8 <= len` (`len` is a multiple
        // of 16).
        unsafe {
            let mut acc = [_mm256_setzero_ps(); CONV_GROUP];
            let mut wk = w;
            for &tap in taps {
                let mut part = [_mm256_setzero_ps(); CONV_GROUP];
                for i in 0..channels {
                    let x0 = _mm256_loadu_ps(x.add(i * plane + q + tap));
                    for (c, part) in part.iter_mut().enumerate() {
                        *part = _mm256_fmadd_ps(_mm256_broadcast_ss(&*wk.add(c)), x0, *part);
                    }
                    wk = wk.add(CONV_GROUP);
                }
                for (a, p) in acc.iter_mut().zip(&part) {
                    *a = _mm256_add_ps(*a, *p);
                }
            }
            for (c, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(dst.add(c * len + q), *acc);
            }
        }
    }
}

/// Rows of a convolution's column matrix read in place, for the direct weight gradient (see
/// `crate::direct_grad`): row `r` at output pixel `(oy, ox)` is
/// `planes[offsets[r] + oy · width + ox]`, and `dy` holds the output gradient pixel-major
/// (`lanes` values per pixel, `lanes` a multiple of 8 up to 32).
#[derive(Clone, Copy)]
pub(crate) struct GradRows<'a> {
    pub(crate) planes: &'a [f32],
    pub(crate) offsets: &'a [usize],
    pub(crate) dy: &'a [f32],
    pub(crate) lanes: usize,
    pub(crate) h_out: usize,
    pub(crate) w_out: usize,
    pub(crate) width: usize,
}

/// For every row `r` and lane `c`: `sums[r · lanes + c] = Σ_{oy, ox} dy[(oy · w_out + ox) ·
/// lanes + c] · row_r(oy, ox)`, summed over the pixels in order from zero with fused
/// multiply-adds where the CPU has AVX2 and FMA (several rows' sums kept in registers at once),
/// in scalar code with the same order elsewhere (rounded twice per term there).
///
/// # Panics
///
/// If the lengths do not fit: `dy` not `h_out · w_out · lanes` values, `lanes` not a multiple
/// of 8 up to 32, `sums` not `lanes` values per row, or a row reading past `planes`.
pub(crate) fn grad_rows(rows: &GradRows, sums: &mut [f32]) {
    let GradRows { planes, offsets, dy, lanes, h_out, w_out, width } = *rows;
    assert!(lanes > 0 && lanes <= 32 && lanes.is_multiple_of(8), "{lanes} lanes");
    assert_eq!(dy.len(), h_out * w_out * lanes, "an output gradient of {} values", dy.len());
    assert_eq!(sums.len(), offsets.len() * lanes, "sums of {} values", sums.len());
    assert!(w_out <= width, "rows of {w_out} pixels {width} apart");
    if h_out == 0 || w_out == 0 {
        sums.fill(0.0);
        return;
    }
    let span = (h_out - 1) * width + w_out;
    assert!(offsets.iter().all(|&o| o + span <= planes.len()), "a row past {} values", planes.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked); every read lies inside `planes` or `dy`
        // and every write inside `sums` (the lengths are checked above).
        unsafe {
            match lanes {
                8 => grad_rows_avx2::<1, 8>(rows, sums),
                16 => grad_rows_avx2::<2, 6>(rows, sums),
                24 => grad_rows_avx2::<3, 3>(rows, sums),
                _ => grad_rows_avx2::<4, 2>(rows, sums),
            }
        }
        return;
    }
    for (sums, &offset) in sums.chunks_exact_mut(lanes).zip(offsets) {
        sums.fill(0.0);
        for oy in 0..h_out {
            for ox in 0..w_out {
                let x = planes[offset + oy * width + ox];
                let d = &dy[(oy * w_out + ox) * lanes..][..lanes];
                for (s, &d) in sums.iter_mut().zip(d) {
                    *s += d * x;
                }
            }
        }
    }
}

/// [`grad_rows`] with AVX2 and FMA: `V` vectors of 8 lanes per row, `R` rows at a time (the
/// last block repeats the last row and drops the copies).
///
/// # Safety
///
/// The CPU must have AVX2 and FMA, `lanes` must be `8 · V`, and the lengths those
/// [`grad_rows`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn grad_rows_avx2<const V: usize, const R: usize>(rows: &GradRows, sums: &mut [f32]) {
    use std::arch::x86_64::*;
    let GradRows { planes, offsets, dy, lanes, h_out, w_out, width } = *rows;
    debug_assert_eq!(lanes, 8 * V);
    let (x, d, out) = (planes.as_ptr(), dy.as_ptr(), sums.as_mut_ptr());
    let n = offsets.len();
    let mut first = 0;
    while first < n {
        let mut starts = [0usize; R];
        for (r, start) in starts.iter_mut().enumerate() {
            *start = offsets[(first + r).min(n - 1)];
        }
        // SAFETY: reads at `start + oy · width + ox` lie below `planes.len()` (every row's
        // span checked), reads at `(oy · w_out + ox) · lanes + [0, lanes)` below `dy.len()`,
        // writes at `row · lanes + [0, lanes)` for real rows below `sums.len()`.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for oy in 0..h_out {
                for ox in 0..w_out {
                    let pixel = d.add((oy * w_out + ox) * lanes);
                    let mut dv = [_mm256_setzero_ps(); V];
                    for (v, lane) in dv.iter_mut().enumerate() {
                        *lane = _mm256_loadu_ps(pixel.add(8 * v));
                    }
                    let q = oy * width + ox;
                    for r in 0..R {
                        let xv = _mm256_broadcast_ss(&*x.add(starts[r] + q));
                        for v in 0..V {
                            acc[r][v] = _mm256_fmadd_ps(dv[v], xv, acc[r][v]);
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(n - first) {
                for (v, &a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(out.add((first + r) * lanes + 8 * v), a);
                }
            }
        }
        first += R;
    }
}

/// The sums of `values` and of their squares in eight lanes: lane `i` adds the values at
/// positions `i`, `i + 8`, … of the leading multiple of 8 (the rest is left to the caller),
/// in order, so the result is the same with or without AVX2.
pub(crate) fn lane_sums(values: &[f32]) -> ([f32; 8], [f32; 8]) {
    let whole = values.len() / 8 * 8;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { lane_sums_avx2(&values[..whole]) };
    }
    let (mut sums, mut squares) = ([0.0f32; 8], [0.0f32; 8]);
    for chunk in values[..whole].chunks_exact(8) {
        for i in 0..8 {
            sums[i] += chunk[i];
            squares[i] += chunk[i] * chunk[i];
        }
    }
    (sums, squares)
}

/// [`lane_sums`] with AVX2, on a multiple of 8 values. Multiplies and adds separately (no
/// fused multiply-add), as the scalar loop does.
///
/// # Safety
///
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lane_sums_avx2(values: &[f32]) -> ([f32; 8], [f32; 8]) {
    use std::arch::x86_64::*;
    let (mut sums, mut squares) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for chunk in values.chunks_exact(8) {
        // SAFETY: a chunk is 8 values.
        let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        sums = _mm256_add_ps(sums, v);
        squares = _mm256_add_ps(squares, _mm256_mul_ps(v, v));
    }
    let (mut s, mut q) = ([0.0f32; 8], [0.0f32; 8]);
    // SAFETY: each array is 8 values.
    unsafe {
        _mm256_storeu_ps(s.as_mut_ptr(), sums);
        _mm256_storeu_ps(q.as_mut_ptr(), squares);
    }
    (s, q)
}

#[cfg(test)]
mod tests {
    /// Every implementation of the direct convolution's loop that this CPU runs agrees with
    /// the scalar one (to the rounding of fused multiply-adds), for odd and even block counts.
    #[test]
    fn every_conv_blocks_path_agrees_with_the_scalar_loop() {
        use super::{CONV_GROUP, CONV_PIXELS, conv_blocks_scalar};
        for blocks in [1, 2, 3, 6] {
            let len = blocks * CONV_PIXELS;
            let taps = [0, 1, 2, 18, 19, 20];
            let (plane, channels) = (len + 20, 3);
            let planes: Vec<f32> =
                (0..channels * plane).map(|i| ((i * 7919 % 201) as f32 - 100.0) / 50.0).collect();
            let weights: Vec<f32> =
                (0..channels * taps.len() * CONV_GROUP).map(|i| ((i * 31 % 17) as f32 - 8.0) / 9.0).collect();
            let bias = [0.5, -0.25, 0.0, 1.0];
            let mut expected = vec![0.0; CONV_GROUP * len];
            let group =
                super::ConvGroup { planes: &planes, plane, taps: &taps, weights: &weights, bias: &bias };
            conv_blocks_scalar(&group, &mut expected);
            let check = |got: &[f32], path: &str| {
                for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{path}, {blocks} blocks, value {i}: {a} against {b}"
                    );
                }
            };
            #[cfg(target_arch = "x86_64")]
            {
                if super::has_avx2_fma() {
                    let mut got = vec![f32::NAN; expected.len()];
                    // SAFETY: the CPU has AVX2 and FMA; the lengths are those `conv_blocks` checks.
                    unsafe { super::conv_blocks_avx2(&group, &mut got) };
                    check(&got, "AVX2");
                }
                if std::is_x86_feature_detected!("avx512f") {
                    let mut got = vec![f32::NAN; expected.len()];
                    // SAFETY: the CPU has AVX-512F; the lengths are those `conv_blocks` checks.
                    unsafe { super::conv_blocks_avx512(&group, &mut got) };
                    check(&got, "AVX-512");
                }
            }
            let mut got = vec![f32::NAN; expected.len()];
            super::conv_blocks(&group, &mut got);
            check(&got, "dispatched");
        }
    }

    #[test]
    fn lane_sums_add_each_lane_in_order() {
        let values: Vec<f32> = (0..35).map(|v| v as f32 * 0.37 - 4.0).collect();
        let (sums, squares) = super::lane_sums(&values);
        for lane in 0..8 {
            let (mut s, mut q) = (0.0f32, 0.0f32);
            for v in values[..32].iter().skip(lane).step_by(8) {
                s += v;
                q += v * v;
            }
            assert_eq!((sums[lane].to_bits(), squares[lane].to_bits()), (s.to_bits(), q.to_bits()));
        }
    }

    #[test]
    fn the_expression_runs_once_and_gives_its_value() {
        let mut calls = 0;
        let value = super::vectorised!({
            calls += 1;
            (0..100).map(|v| v as f32 * 0.5).sum::<f32>()
        });
        assert_eq!((calls, value), (1, 2475.0));
    }
}
