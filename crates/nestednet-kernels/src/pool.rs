//! 2×2 max-pooling followed by ReLU, forward and backward in one kernel each.
//!
//! In a training step Burn runs `relu(max_pool2d(x, [2, 2]))` as two autodiff nodes: Flex's
//! generic pooling kernel (any window, stride, padding and dilation, through a 3-d
//! formulation) writes the maxima and an `i64` index tensor, ReLU writes a second buffer, and
//! the backward pass masks the gradient, then scatters it through the index tensor one value at
//! a time. Profiling a joint `mnist-cnn` step put ~25% of its time there. This kernel reads each
//! 2×2 window once and writes `max(0, max)`; its backward finds each window's maximum again
//! (four comparisons, cheaper than storing and reading back an index per output) and writes
//! the gradient at that position. Nothing but the input is kept for the backward pass.
//!
//! Bit-exactness with Burn's pair of operations: a window's maximum is chosen by Flex's rule
//! (the first of equal values in row-major order; a NaN wins), ReLU keeps a NaN and maps
//! everything else `<= 0` to `0`, and the gradient reaching an input is `0 + g` where Flex's
//! scatter adds `g` to a zero, masked as Flex's `relu_backward` masks it.

use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use rayon::prelude::*;

/// `relu(max_pool2d(x, [2, 2]))`: 2×2 max-pooling with stride 2 (floor mode: an odd last row
/// or column is dropped), then ReLU, for `x` of shape `[batch, channels, height, width]`.
///
/// On a `flex` device with `f32` values it runs one kernel forward and one backward (see the
/// module documentation); elsewhere, and for inputs smaller than one window, it is Burn's two
/// operations. The values and gradients are the same bit for bit.
pub fn max_pool2x2_relu(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    #[cfg(feature = "flex")]
    if h >= 2 && w >= 2 && crate::runs_own_kernel(&x, crate::KernelFamily::Pool) {
        return flex::max_pool2x2_relu(x);
    }
    let _ = (h, w);
    relu(max_pool2d(x, MaxPoolOptions::new([2, 2])))
}

/// Planes are a few hundred values: hand rayon batches of them, not single planes.
fn planes_per_task(plane: usize) -> usize {
    (4096 / plane.max(1)).max(1)
}

/// The maximum of a window's four values (row-major: top-left, top-right, bottom-left,
/// bottom-right) and which of them it is (exactly one `true`), by Flex's rule: the first of
/// equal values, a NaN wins. Without branches: a random window's winner is unpredictable.
#[inline(always)]
pub(crate) fn window_winner([v0, v1, v2, v3]: [f32; 4]) -> (f32, [bool; 4]) {
    let beats = |v: f32, max: f32| v > max || v.is_nan();
    let t1 = beats(v1, v0);
    let m1 = if t1 { v1 } else { v0 };
    let t2 = beats(v2, m1);
    let m2 = if t2 { v2 } else { m1 };
    let t3 = beats(v3, m2);
    let m3 = if t3 { v3 } else { m2 };
    (m3, [!(t1 | t2 | t3), t1 & !(t2 | t3), t2 & !t3, t3])
}

/// Flex's ReLU: a NaN stays, everything not above zero becomes zero.
#[inline(always)]
pub(crate) fn relu_f32(v: f32) -> f32 {
    if v.is_nan() || v > 0.0 { v } else { 0.0 }
}

/// The forward kernel on a row-major `[b, c, h, w]` buffer (`h`, `w` at least 2): the
/// `[b, c, h / 2, w / 2]` buffer of `relu(max)` over each window.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn forward(x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    #[cfg(test)]
    tests::count_call();
    map_pool_relu(x, shape, |_channel| |v| v)
}

/// `relu(max)` over each 2×2 window of `map(channel)` applied to every value of a row-major
/// `[b, c, h, w]` buffer (`h`, `w` at least 2; `map` is the identity for plain pooling, the
/// channel's batch norm for the inference kernel), as a `[b, c, h / 2, w / 2]` buffer.
pub(crate) fn map_pool_relu<M: Fn(f32) -> f32>(
    x: &[f32],
    [b, c, h, w]: [usize; 4],
    map: impl Fn(usize) -> M + Sync,
) -> Vec<f32> {
    assert_eq!(x.len(), b * c * h * w, "input of {} values for shape {:?}", x.len(), [b, c, h, w]);
    assert!(h >= 2 && w >= 2, "2x2 pooling of a {h}x{w} plane");
    let (ho, wo) = (h / 2, w / 2);
    let mut out = vec![0.0f32; b * c * ho * wo];
    let planes = out.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).enumerate();
    planes.with_min_len(planes_per_task(h * w)).for_each(|(index, (dst, src))| {
        let map = map(index % c.max(1));
        crate::simd::vectorised!(pool_relu_plane(dst, src, [h, w], &map));
    });
    out
}

/// `relu(max)` over each 2×2 window of `map` applied to the `h × w` plane `src` (`h`, `w` at
/// least 2), written to `dst` (`h/2 × w/2`).
#[inline(always)]
pub(crate) fn pool_relu_plane(dst: &mut [f32], src: &[f32], [h, w]: [usize; 2], map: &impl Fn(f32) -> f32) {
    pool_relu_rows(dst, src, [h, w], w, map);
}

/// `relu(max)` over each 2×2 window of `map` applied to the `h × w` plane whose rows start
/// `stride` values apart in `src` (`h`, `w` at least 2, `stride >= w`), written to `dst`
/// (`h/2 × w/2`). Each output is the larger of its two input rows' pairs, in branch-free
/// loops (they vectorise); without NaN any order of comparisons gives the maximum by Flex's
/// rule up to the sign of a zero, which ReLU erases. A plane holding a NaN is redone by that
/// rule, window by window.
#[inline(always)]
pub(crate) fn pool_relu_rows(
    dst: &mut [f32],
    src: &[f32],
    [h, w]: [usize; 2],
    stride: usize,
    map: &impl Fn(f32) -> f32,
) {
    let (ho, wo) = (h / 2, w / 2);
    assert!(h >= 2 && w >= 2 && stride >= w, "2x2 pooling of a {h}x{w} plane of row stride {stride}");
    assert!(
        src.len() >= (2 * ho - 1) * stride + 2 * wo,
        "a {h}x{w} plane (stride {stride}) in {} values",
        src.len()
    );
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut nan = 0u32;
    for (oy, out) in dst[..ho * wo].chunks_exact_mut(wo).enumerate() {
        let top = &src[2 * oy * stride..][..2 * wo];
        let bottom = &src[(2 * oy + 1) * stride..][..2 * wo];
        for (o, (t, b)) in out.iter_mut().zip(top.chunks_exact(2).zip(bottom.chunks_exact(2))) {
            let [v0, v1, v2, v3] = [map(t[0]), map(t[1]), map(b[0]), map(b[1])];
            nan |= (v0.is_nan() | v1.is_nan() | v2.is_nan() | v3.is_nan()) as u32;
            let max = larger(larger(v0, v1), larger(v2, v3));
            *o = if max > 0.0 { max } else { 0.0 };
        }
    }
    if nan != 0 {
        for (oy, out) in dst[..ho * wo].chunks_exact_mut(wo).enumerate() {
            for (ox, o) in out.iter_mut().enumerate() {
                let at = |y: usize, x: usize| map(src[(2 * oy + y) * stride + 2 * ox + x]);
                *o = relu_f32(window_winner([at(0, 0), at(0, 1), at(1, 0), at(1, 1)]).0);
            }
        }
    }
}

/// The backward kernel: given the forward input `x` (`[b, c, h, w]`) and the gradient of the
/// output (`[b, c, h / 2, w / 2]`), the gradient of the input.
#[cfg(test)]
fn backward(x: &[f32], grad: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let mut dx = x.to_vec();
    backward_in_place(&mut dx, grad, shape);
    dx
}

/// The backward kernel, writing the input's gradient over the input `x` (`[b, c, h, w]`),
/// given the gradient of the output (`[b, c, h / 2, w / 2]`). In place because the input is
/// not needed afterwards and a fresh buffer of its size costs more than the kernel: the
/// kernel's first write to each new page is a page fault (measured: 3.9 of 4.2 ms at
/// `[64, 32, 28, 28]`).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn backward_in_place(x: &mut [f32], grad: &[f32], [b, c, h, w]: [usize; 4]) {
    #[cfg(test)]
    tests::count_call();
    let (ho, wo) = (h / 2, w / 2);
    assert_eq!(x.len(), b * c * h * w, "input of {} values for shape {:?}", x.len(), [b, c, h, w]);
    assert_eq!(grad.len(), b * c * ho * wo, "gradient of {} values for {:?}", grad.len(), [b, c, ho, wo]);
    assert!(h >= 2 && w >= 2, "2x2 pooling of a {h}x{w} plane");
    let planes = x.par_chunks_mut(h * w).zip(grad.par_chunks(ho * wo));
    planes.with_min_len(planes_per_task(h * w)).for_each_init(
        || vec![0.0f32; 2 * w],
        |rows, (plane, g)| crate::simd::vectorised!(backward_plane(plane, g, [h, w], rows)),
    );
}

/// The backward kernel on one plane (see [`backward_in_place`]); `rows` is scratch of at
/// least `2 · w` values.
#[inline(always)]
fn backward_plane(plane: &mut [f32], g: &[f32], [h, w]: [usize; 2], rows: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    let (dtop, dbottom) = rows[..4 * wo].split_at_mut(2 * wo);
    for (oy, g) in g.chunks_exact(wo).enumerate() {
        let (top, bottom) = plane[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
        row_pair_gradients(top, bottom, g, &|v| v, dtop, dbottom);
        top[..2 * wo].copy_from_slice(dtop);
        bottom[..2 * wo].copy_from_slice(dbottom);
        // An odd last column is in no window.
        if w % 2 == 1 {
            (top[w - 1], bottom[w - 1]) = (0.0, 0.0);
        }
    }
    // Nor is an odd last row.
    plane[2 * ho * w..].fill(0.0);
}

/// The gradient reaching each input of a pair of rows through `relu(max_pool2d(map(·), [2,
/// 2]))`: window `i` (inputs `top[2i]`, `top[2i + 1]`, `bottom[2i]`, `bottom[2i + 1]`, output
/// gradient `g[i]`) sends `0 + g[i]` (Flex's scatter adds it to a zero, which turns -0 into
/// +0) to its winner if its maximum passes the ReLU, and zero to its other inputs; written
/// to `dtop` and `dbottom` (`2 · g.len()` values each, interleaved as the inputs).
///
/// Branch-free over the interleaved rows, so that it vectorises: without NaN a window's
/// maximum is the first value that no later one exceeds (`>` keeps the earlier of equal
/// values, as Flex does), its winner the first value equal to it, and the gradient passes
/// where the maximum is positive (a -0 and a +0 both get none). A row pair holding a NaN is
/// redone by Flex's rule window by window (a NaN wins, the last one).
#[inline(always)]
pub(crate) fn row_pair_gradients(
    top: &[f32],
    bottom: &[f32],
    g: &[f32],
    map: &impl Fn(f32) -> f32,
    dtop: &mut [f32],
    dbottom: &mut [f32],
) {
    let n = 2 * g.len();
    let (top, bottom, dtop, dbottom) = (&top[..n], &bottom[..n], &mut dtop[..n], &mut dbottom[..n]);
    let mut nan = false;
    let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2)).zip(g);
    for (((t, b), &g), (dt, db)) in windows.zip(dtop.chunks_exact_mut(2).zip(dbottom.chunks_exact_mut(2))) {
        let (g, [e0, e1, e2, e3]) = window_masks([map(t[0]), map(t[1]), map(b[0]), map(b[1])], g, &mut nan);
        (dt[0], dt[1]) = (f32::from_bits(g & e0), f32::from_bits(g & e1));
        (db[0], db[1]) = (f32::from_bits(g & e2), f32::from_bits(g & e3));
    }
    if nan {
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2)).zip(g);
        for (((t, b), &g), (dt, db)) in windows.zip(dtop.chunks_exact_mut(2).zip(dbottom.chunks_exact_mut(2)))
        {
            let (max, wins) = window_winner([map(t[0]), map(t[1]), map(b[0]), map(b[1])]);
            let g = 0.0 + if max.is_nan() || max > 0.0 { g } else { 0.0 };
            let d = |win: bool| if win { g } else { 0.0 };
            (dt[0], dt[1], db[0], db[1]) = (d(wins[0]), d(wins[1]), d(wins[2]), d(wins[3]));
        }
    }
}

/// For each window of a pair of rows, what [`row_pair_gradients`] sends to its winner
/// (`gw[i]`: `0 + g[i]` if the maximum passes the ReLU, else zero), the winner's input value
/// (`xw[i]`, before `map`) and its place in the window (`iw[i]`: 0 top-left, 1 top-right, 2
/// bottom-left, 3 bottom-right): the batch-norm backward pass's sums need no more, since the
/// window's other inputs get zero, and [`row_pair_scatter`] rebuilds `row_pair_gradients`'
/// output from `gw` and `iw`.
#[inline(always)]
pub(crate) fn row_pair_winners(
    top: &[f32],
    bottom: &[f32],
    g: &[f32],
    map: &impl Fn(f32) -> f32,
    gw: &mut [f32],
    xw: &mut [f32],
    iw: &mut [u8],
) {
    let n = g.len();
    let (top, bottom, gw, xw, iw) =
        (&top[..2 * n], &bottom[..2 * n], &mut gw[..n], &mut xw[..n], &mut iw[..n]);
    let mut nan = false;
    let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2)).zip(g);
    for ((((t, b), &g), (gw, xw)), iw) in windows.zip(gw.iter_mut().zip(xw.iter_mut())).zip(iw.iter_mut()) {
        let (g, [e0, e1, e2, e3]) = window_masks([map(t[0]), map(t[1]), map(b[0]), map(b[1])], g, &mut nan);
        *gw = f32::from_bits(g);
        let bits =
            (t[0].to_bits() & e0) | (t[1].to_bits() & e1) | (b[0].to_bits() & e2) | (b[1].to_bits() & e3);
        *xw = f32::from_bits(bits);
        // Exactly one mask is set.
        *iw = ((e1 & 1) | (e2 & 2) | (e3 & 3)) as u8;
    }
    if nan {
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2)).zip(g);
        for ((((t, b), &g), (gw, xw)), iw) in windows.zip(gw.iter_mut().zip(xw.iter_mut())).zip(iw.iter_mut())
        {
            let (max, wins) = window_winner([map(t[0]), map(t[1]), map(b[0]), map(b[1])]);
            *gw = 0.0 + if max.is_nan() || max > 0.0 { g } else { 0.0 };
            let winner = wins.iter().position(|&w| w).expect("a window has a winner");
            *xw = [t[0], t[1], b[0], b[1]][winner];
            *iw = winner as u8;
        }
    }
}

/// [`row_pair_gradients`]' output from a row pair's winners ([`row_pair_winners`]' `gw` and
/// `iw`): `gw[i]` at window `i`'s winner, `+0` at its other three inputs.
#[inline(always)]
pub(crate) fn row_pair_scatter(gw: &[f32], iw: &[u8], dtop: &mut [f32], dbottom: &mut [f32]) {
    let n = gw.len();
    let (iw, dtop, dbottom) = (&iw[..n], &mut dtop[..2 * n], &mut dbottom[..2 * n]);
    let windows = gw.iter().zip(iw).zip(dtop.chunks_exact_mut(2).zip(dbottom.chunks_exact_mut(2)));
    for ((&g, &i), (dt, db)) in windows {
        let at = |place: u8| f32::from_bits(g.to_bits() & 0u32.wrapping_sub(u32::from(i == place)));
        (dt[0], dt[1], db[0], db[1]) = (at(0), at(1), at(2), at(3));
    }
}

/// A window's gradient bits (`0 + g` if its maximum passes the ReLU, else zero) and the masks
/// of its winner (all ones at the winner, zero elsewhere), by the rule [`row_pair_gradients`]
/// documents for windows without NaN; sets `nan` if a value is NaN (the masks then mean
/// nothing, and the caller redoes the row by Flex's rule).
#[inline(always)]
fn window_masks([v0, v1, v2, v3]: [f32; 4], g: f32, nan: &mut bool) -> (u32, [u32; 4]) {
    let mask = |set: bool| 0u32.wrapping_sub(set as u32);
    let larger = |max: f32, v: f32| if v > max { v } else { max };
    *nan |= v0.is_nan() | v1.is_nan() | v2.is_nan() | v3.is_nan();
    let max = larger(larger(larger(v0, v1), v2), v3);
    let e0 = mask(v0 == max);
    let e1 = mask(v1 == max) & !e0;
    let e2 = mask(v2 == max) & !(e0 | e1);
    ((0.0 + g).to_bits() & mask(max > 0.0), [e0, e1, e2, !(e0 | e1 | e2)])
}

/// The backend extension: the kernel on `Flex`, its backward pass on `Autodiff<Flex>`.
#[cfg(feature = "flex")]
mod flex {
    use crate::flex_tensor::{contiguous, dims4, f32s};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
    use burn::prelude::*;

    #[backend_extension(Autodiff, Flex)]
    pub(super) trait PoolKernels: Backend {
        /// `relu(max_pool2d(x, [2, 2]))`.
        fn max_pool2x2_relu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    pub(super) fn max_pool2x2_relu(x: Tensor<4>) -> Tensor<4> {
        Tensor::from_dispatch(<Dispatch as PoolKernels>::max_pool2x2_relu(x.into_dispatch()))
    }

    /// A flex tensor's dimensions and its values in row-major order (copied only if its
    /// layout is not already that).
    fn values(tensor: FlexTensor) -> ([usize; 4], FlexTensor) {
        (dims4(&tensor), contiguous(tensor))
    }

    impl PoolKernels for Flex {
        fn max_pool2x2_relu(x: FlexTensor) -> FlexTensor {
            let ([b, c, h, w], x) = values(x);
            let out = super::forward(f32s(&x), [b, c, h, w]);
            FlexTensor::from_data(TensorData::new(out, [b, c, h / 2, w / 2]))
        }
    }

    /// The autodiff node: keeps the input (shared, not copied) for the backward kernel.
    #[derive(Debug)]
    struct MaxPool2x2Relu;

    impl Backward<Flex, 1> for MaxPool2x2Relu {
        type State = FlexTensor;

        fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [parent] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            if let Some(parent) = parent {
                let (_, grad) = values(grad);
                let (shape, mut x) = values(ops.state);
                let n: usize = shape.iter().product();
                // The input's buffer becomes the gradient's where this node holds the only
                // reference to it (the usual case); a copy of it otherwise.
                let dx = match x.try_storage_mut::<f32>() {
                    Some(buffer) if buffer.len() == n => {
                        super::backward_in_place(buffer, f32s(&grad), shape);
                        x
                    }
                    _ => {
                        let mut dx = f32s(&x).to_vec();
                        super::backward_in_place(&mut dx, f32s(&grad), shape);
                        FlexTensor::from_data(TensorData::new(dx, shape))
                    }
                };
                grads.register::<Flex>(parent.id, dx);
            }
        }
    }

    impl<C: CheckpointStrategy> PoolKernels for Autodiff<Flex, C> {
        fn max_pool2x2_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
            match MaxPool2x2Relu.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let input = x.into_primitive();
                    let output = Flex::max_pool2x2_relu(input.clone());
                    prep.finish(input, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(Flex::max_pool2x2_relu(x.into_primitive())),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {

    /// The gradients rebuilt from a row pair's winners are `row_pair_gradients`' own, bit for
    /// bit: ties, ±0, NaN (Flex's rule), ±∞, a ReLU that stops the gradient, a scaling map.
    #[test]
    fn scattered_winners_are_the_row_pair_gradients() {
        let specials = [0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5, 1.5, -2.0];
        for seed in 0..40u32 {
            let n = 1 + (seed as usize % 11);
            let value = |i: usize, k: u32| {
                let r = (i as u32).wrapping_mul(2654435761).wrapping_add(k.wrapping_mul(40503)) ^ seed;
                if r.is_multiple_of(5) {
                    specials[(r as usize / 5) % specials.len()]
                } else {
                    (r % 17) as f32 / 4.0 - 2.0
                }
            };
            let top: Vec<f32> = (0..2 * n).map(|i| value(i, 1)).collect();
            let bottom: Vec<f32> = (0..2 * n).map(|i| value(i, 2)).collect();
            let g: Vec<f32> = (0..n).map(|i| value(i, 3)).collect();
            let map = |v: f32| v * -0.75 + 0.25;
            let (mut dtop, mut dbottom) = (vec![0.0f32; 2 * n], vec![0.0f32; 2 * n]);
            super::row_pair_gradients(&top, &bottom, &g, &map, &mut dtop, &mut dbottom);
            let (mut gw, mut xw, mut iw) = (vec![0.0f32; n], vec![0.0f32; n], vec![0u8; n]);
            super::row_pair_winners(&top, &bottom, &g, &map, &mut gw, &mut xw, &mut iw);
            let (mut stop, mut sbottom) = (vec![7.0f32; 2 * n], vec![7.0f32; 2 * n]);
            super::row_pair_scatter(&gw, &iw, &mut stop, &mut sbottom);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&stop), bits(&dtop), "seed {seed}: top");
            assert_eq!(bits(&sbottom), bits(&dbottom), "seed {seed}: bottom");
        }
    }
    use super::*;

    /// The strided pooling of a plane inside a wider buffer gives the values of Flex's rule
    /// window by window, bit for bit, NaN included, with and without a map.
    #[test]
    fn pooling_rows_of_a_wider_buffer_matches_the_rule() {
        for (h, w, stride) in [(4, 6, 6), (5, 7, 9), (2, 2, 3), (14, 28, 30), (28, 28, 28)] {
            for with_nan in [false, true] {
                let mut src: Vec<f32> =
                    (0..h * stride).map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0).collect();
                if with_nan {
                    src[stride + 1] = f32::NAN;
                }
                let map = |v: f32| -0.5 * v + 0.25;
                let mut expected = vec![0.0; (h / 2) * (w / 2)];
                for (i, e) in expected.iter_mut().enumerate() {
                    let (oy, ox) = (i / (w / 2), i % (w / 2));
                    let at = |y: usize, x: usize| map(src[(2 * oy + y) * stride + 2 * ox + x]);
                    *e = relu_f32(window_winner([at(0, 0), at(0, 1), at(1, 0), at(1, 1)]).0);
                }
                let mut got = vec![7.0; expected.len()];
                pool_relu_rows(&mut got, &src, [h, w], stride, &map);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&expected), "{h}x{w}, stride {stride}, NaN {with_nan}");
            }
        }
    }
    use burn::tensor::Distribution;
    use std::cell::Cell;

    thread_local! {
        /// How many times this thread entered a kernel: the proof that a test ran the kernels,
        /// not Burn's fallback (the backward pass runs on the thread that calls `backward`).
        static KERNEL_CALLS: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn count_call() {
        KERNEL_CALLS.with(|calls| calls.set(calls.get() + 1));
    }

    pub(crate) fn kernel_calls() -> usize {
        KERNEL_CALLS.with(Cell::get)
    }

    /// Burn's two operations, the reference.
    fn reference(x: Tensor<4>) -> Tensor<4> {
        relu(max_pool2d(x, MaxPoolOptions::new([2, 2])))
    }

    /// Random values rounded to halves, so that windows hold ties (and ±0) often.
    fn with_ties(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.5), device)
            .mul_scalar(2.0)
            .round()
            .div_scalar(2.0)
    }

    const SHAPES: [[usize; 4]; 5] =
        [[2, 3, 6, 8], [1, 1, 2, 2], [3, 2, 7, 5], [64, 8, 28, 28], [4, 16, 14, 14]];

    #[test]
    fn values_and_gradients_equal_burns_bit_for_bit() {
        let device = Device::flex().autodiff();
        device.seed(3);
        for shape in SHAPES {
            let input = with_ties(shape, &device);
            let [b, c, h, w] = shape;
            let weights = Tensor::<4>::random([b, c, h / 2, w / 2], Distribution::Normal(0.0, 1.0), &device);
            let run = |op: fn(Tensor<4>) -> Tensor<4>| {
                let x = input.clone().detach().require_grad();
                let y = op(x.clone());
                let grads = (y.clone() * weights.clone()).sum().backward();
                (y.into_data(), x.grad(&grads).expect("a gradient for the input").into_data())
            };
            let calls = kernel_calls();
            let (y, dx) = run(max_pool2x2_relu);
            // Without `flex`, Burn's operations run: no kernel is counted.
            #[cfg(feature = "flex")]
            assert_eq!(kernel_calls(), calls + 2, "one forward and one backward kernel for {shape:?}");
            let (y_ref, dx_ref) = run(reference);
            #[cfg(feature = "flex")]
            assert_eq!(kernel_calls(), calls + 2, "the reference ran a kernel");
            let _ = calls;
            y.assert_eq(&y_ref, true);
            dx.assert_eq(&dx_ref, true);
        }
    }

    #[test]
    fn without_autodiff_and_untracked_the_values_are_burns() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            device.seed(4);
            for shape in SHAPES {
                let x = with_ties(shape, &device);
                let calls = kernel_calls();
                let y = max_pool2x2_relu(x.clone());
                #[cfg(feature = "flex")]
                assert_eq!(kernel_calls(), calls + 1);
                let _ = calls;
                assert_eq!(y.device(), device);
                y.into_data().assert_eq(&reference(x).into_data(), true);
            }
        }
    }

    #[test]
    fn a_strided_input_is_read_in_its_logical_order() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let x = with_ties([3, 4, 6, 10], &device).swap_dims(2, 3).require_grad();
        let y = max_pool2x2_relu(x.clone());
        let grads = y.clone().sum().backward();
        let x_ref = x.clone().detach().require_grad();
        let y_ref = reference(x_ref.clone());
        let grads_ref = y_ref.clone().sum().backward();
        y.into_data().assert_eq(&y_ref.into_data(), true);
        x.grad(&grads).unwrap().into_data().assert_eq(&x_ref.grad(&grads_ref).unwrap().into_data(), true);
    }

    #[test]
    fn nan_propagates_like_burns() {
        let device = Device::flex();
        let mut values = vec![1.0f32; 16];
        values[5] = f32::NAN; // the top-left window
        values[15] = -3.0;
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 4, 4]), &device);
        let y = max_pool2x2_relu(x.clone()).into_data().try_to_vec::<f32>().unwrap();
        let y_ref = reference(x).into_data().try_to_vec::<f32>().unwrap();
        assert!(y[0].is_nan() && y_ref[0].is_nan());
        assert_eq!(&y[1..], &y_ref[1..]);
    }

    #[test]
    fn gradients_through_nan_and_infinite_windows_equal_burns() {
        let device = Device::flex().autodiff();
        #[rustfmt::skip]
        let values = vec![
            f32::NAN, 1.0,            f32::INFINITY, f32::NEG_INFINITY,  2.0, f32::NAN,
            3.0, f32::NAN,            1.0, 5.0,                          f32::NAN, -1.0,
            f32::NEG_INFINITY, -2.0,  f32::INFINITY, f32::INFINITY,      -0.0, 0.0,
            f32::NEG_INFINITY, -3.0,  0.0, -1.0,                         0.0, -0.0,
        ];
        let input = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 4, 6]), &device);
        let weights = Tensor::<4>::from_data(
            TensorData::new((1..=6).map(|v| v as f32).collect(), [1, 1, 2, 3]),
            &device,
        );
        let run = |op: fn(Tensor<4>) -> Tensor<4>| {
            let x = input.clone().require_grad();
            let grads = (op(x.clone()) * weights.clone()).sum().backward();
            x.grad(&grads).unwrap().into_data()
        };
        let calls = kernel_calls();
        let dx = run(max_pool2x2_relu);
        #[cfg(feature = "flex")]
        assert_eq!(kernel_calls(), calls + 2);
        let _ = calls;
        dx.assert_eq(&run(reference), true);
    }

    #[test]
    fn the_kernels_on_a_hand_computed_example() {
        // One 4x4 plane: windows with a tie, a negative maximum, -0 against +0.
        #[rustfmt::skip]
        let x = [
            1.0, 3.0,   -2.0, -1.0,
            3.0, 0.5,   -5.0, -1.0,
            -0.0, 0.0,   7.0, 2.0,
            0.0, -1.0,   2.0, 7.0,
        ];
        assert_eq!(forward(&x, [1, 1, 4, 4]), vec![3.0, 0.0, 0.0, 7.0]);
        let dx = backward(&x, &[10.0, 20.0, 30.0, 40.0], [1, 1, 4, 4]);
        #[rustfmt::skip]
        let expected = [
            0.0, 10.0,  0.0, 0.0,
            0.0, 0.0,   0.0, 0.0,
            0.0, 0.0,   40.0, 0.0,
            0.0, 0.0,   0.0, 0.0,
        ];
        assert_eq!(dx, expected);
    }
}
