//! A direct convolution for layers with few output channels: a nested network's small levels.
//!
//! The im2col + matrix-product path ([`conv`](crate::conv)) copies every input value
//! `kh · kw` times into a column matrix before the product, and for a layer of 8–16 output
//! channels the product is too small to pay for that copy and for the product's own packing:
//! profiling the 3-level `mnist-cnn`'s core at batch 256 put im2col and its copies at about a
//! third of the level's inference time, the matrix micro-kernel at a quarter.
//!
//! Here each image's channels are copied once into a zero-padded buffer whose rows are
//! `w_out + kw − 1` wide. A stride-1 output pixel at flat position `q = oy · width + ox` of that
//! row width then reads the input at `q + ky · width + kx` for kernel position `(ky, kx)`: one
//! constant offset per kernel position, so a run of [`PIXELS`] consecutive outputs reads a
//! run of as many consecutive inputs. The kernel ([`conv_blocks`]) keeps [`GROUP`] output
//! channels × [`PIXELS`] pixels of accumulators in registers (two such blocks at once with
//! AVX-512, one with AVX2) and, for each input channel and kernel position, loads the input
//! run once and adds it, scaled by each of the group's weights, to the accumulators with fused
//! multiply-adds (plain ones without FMA); the bias is added last. The `kw − 1` columns at the
//! end of each row that the padded width adds are computed and dropped.
//!
//! That is the matrix product's own order (over `(ci, ky, kx)`, the bias as a last column), and
//! for `mnist-cnn`'s layers the values are the product's bit for bit (tested); in general they
//! agree to float rounding (`gemm` sums some very small products otherwise). Only inference
//! takes this kernel for every layer it serves ([`conv::forward`](crate::conv)'s `direct`);
//! training only where it gives the product's values ([`gives_the_products_values`]). The
//! weight gradient of training reads the same padded planes ([`pad_image`],
//! [`direct_grad`](crate::direct_grad)).
//!
//! Measured (`cargo bench --bench kernels -- --baseline-families pool,conv,norm`, batch 64,
//! 2 threads), against im2col and the product: 1.4–1.6× for the core's 8 → 16 channels layer,
//! 1.0–1.1× for the 1 → 8 one (the rest of its time is copies and the output's memory).

use crate::geometry::ConvGeometry;

use crate::simd::{CONV_GROUP as GROUP, CONV_PIXELS as PIXELS, ConvGroup, conv_blocks};

/// The largest layer the direct kernel serves whatever its input, in output channels; wider
/// layers' products are large enough for the matrix micro-kernel to win (measured by `cargo
/// bench --bench kernels`).
const MAX_C_OUT: usize = 16;

/// The largest layer the direct kernel serves when it has at least [`MIN_C_IN_WIDE`] input
/// channels and gives the product's values: there each input run it loads feeds enough
/// multiply-adds that it beats im2col and the product (`cargo bench --bench kernels`, 2
/// threads, batch 64: forward 1.34 → 0.93 ms for `mnist-cnn`'s middle level's 16 → 32
/// layer on 14×14), while for one input channel (the 1 → 32 first layer: 0.34 → 0.68 ms) and
/// at 64 output channels (32 → 64: 3.45 → 3.65 ms) the product stays ahead.
const MAX_C_OUT_WIDE: usize = 32;

/// See [`MAX_C_OUT_WIDE`].
const MIN_C_IN_WIDE: usize = 8;

/// Whether the direct kernel serves a convolution of geometry `g` (else im2col and a matrix
/// product): stride 1, nothing empty (an input of no rows or columns, which padding alone can
/// still give outputs, takes the product), and at most [`MAX_C_OUT`] output channels, or at
/// most [`MAX_C_OUT_WIDE`] from at least [`MIN_C_IN_WIDE`] input channels where it gives the
/// product's values.
pub(crate) fn serves(g: &ConvGeometry) -> bool {
    g.stride_one_nonempty()
        && (g.c_out <= MAX_C_OUT
            || (g.c_out <= MAX_C_OUT_WIDE && g.c_in >= MIN_C_IN_WIDE && sums_as_the_product(g)))
}

/// Whether the direct kernel, serving a layer of geometry `g`, gives the matrix product's own
/// values, so that training can take it without moving a trained network (see
/// [`sums_as_the_product`]). Checked bit for bit for `mnist-cnn`'s layers on 28×28 and 8×8
/// images with `gemm`'s AVX-512 kernels (`conv` tests).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn gives_the_products_values(g: &ConvGeometry) -> bool {
    serves(g) && sums_as_the_product(g)
}

/// Whether `gemm` runs the product of a layer of geometry `g` (`c_out × (c_in · kh · kw + 1)` by
/// `(c_in · kh · kw + 1) × pixels`) with its general micro-kernels, each output one chain of
/// multiply-adds in order, as the direct kernel sums: when it sums at most 512 terms (more, it
/// sums in blocks) and is no matrix-vector product (one output channel, one pixel, or at most
/// two terms).
fn sums_as_the_product(g: &ConvGeometry) -> bool {
    g.c_out >= 2 && g.pixels() >= 2 && (3..=511).contains(&g.patch())
}

/// A convolution's weights and geometry laid out for the direct kernel (built once per call,
/// shared by the threads).
pub(crate) struct DirectConv {
    g: ConvGeometry,
    /// Width of a padded row: `w_out + kw − 1`.
    width: usize,
    /// Values per channel of the padded input buffer (with room for the last block's reads).
    plane: usize,
    /// Pixel blocks per output channel: `h_out · width / PIXELS`, rounded up.
    blocks: usize,
    /// Offset of each kernel position `(ky, kx)` in a padded plane: `ky · width + kx`.
    taps: Vec<usize>,
    /// The weights, `[group][c_in][tap][GROUP]`, zero for the channels past `c_out` that
    /// complete the last group.
    weights: Vec<f32>,
    /// The bias of each channel (zero without a bias, and past `c_out`).
    bias: Vec<f32>,
}

/// One thread's buffers for [`DirectConv::padded_output`]: the padded input (its padding stays zero:
/// only the interior is ever written) and the output blocks.
pub(crate) struct Scratch {
    padded: Vec<f32>,
    blocks: Vec<f32>,
}

impl DirectConv {
    /// The layout of a convolution of geometry `g` (one [`serves`]) with `weight`
    /// (`[c_out, c_in, kh, kw]`) and `bias` (`[c_out]`).
    pub(crate) fn new(weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Self {
        #[cfg(test)]
        tests::count_layout();
        assert!(serves(g), "the direct convolution does not serve {g:?}");
        assert_eq!(
            weight.len(),
            g.c_out * g.patch(),
            "conv2d: a weight of {} values for {g:?}",
            weight.len()
        );
        let width = g.w_out + g.kw - 1;
        let blocks = (g.h_out * width).div_ceil(PIXELS);
        let taps: Vec<usize> = (0..g.kh).flat_map(|ky| (0..g.kw).map(move |kx| ky * width + kx)).collect();
        let plane = blocks * PIXELS + taps.last().copied().unwrap_or(0);
        let groups = g.c_out.div_ceil(GROUP);
        let kernel = g.kh * g.kw;
        let mut weights = vec![0.0f32; groups * g.c_in * kernel * GROUP];
        let mut packed = weights.chunks_exact_mut(GROUP);
        for group in 0..groups {
            for ci in 0..g.c_in {
                for tap in 0..kernel {
                    let lanes = packed.next().expect("one lane set per group, channel and tap");
                    for (lane, w) in lanes.iter_mut().enumerate() {
                        let co = group * GROUP + lane;
                        if co < g.c_out {
                            *w = weight[(co * g.c_in + ci) * kernel + tap];
                        }
                    }
                }
            }
        }
        let mut padded_bias = vec![0.0f32; groups * GROUP];
        if let Some(bias) = bias {
            assert_eq!(bias.len(), g.c_out, "conv2d: a bias of {} values for {g:?}", bias.len());
            padded_bias[..g.c_out].copy_from_slice(bias);
        }
        Self { g: *g, width, plane, blocks, taps, weights, bias: padded_bias }
    }

    /// Fresh buffers for one thread.
    pub(crate) fn scratch(&self) -> Scratch {
        Scratch {
            padded: vec![0.0; self.g.c_in * self.plane],
            blocks: vec![0.0; self.bias.len() * self.blocks * PIXELS],
        }
    }

    /// Convolves one image (`[c_in, h, w]`) into `dst` (`[c_out, h_out, w_out]`). (Training
    /// and inference copy [`padded_output`](Self::padded_output) into their own outputs.)
    #[cfg(test)]
    pub(crate) fn image(&self, image: &[f32], scratch: &mut Scratch, dst: &mut [f32]) {
        let g = &self.g;
        assert_eq!(dst.len(), g.c_out * g.pixels(), "an output of {} values for {g:?}", dst.len());
        let (plane, width) = (self.output_plane(), self.width);
        tests::unpad(self.padded_output(image, scratch), plane, [g.h_out, g.w_out], width, dst);
    }

    /// Row stride of [`padded_output`](Self::padded_output)'s planes.
    pub(crate) fn row_stride(&self) -> usize {
        self.width
    }

    /// Values per channel of [`padded_output`](Self::padded_output).
    pub(crate) fn output_plane(&self) -> usize {
        self.blocks * PIXELS
    }

    /// Convolves one image (`[c_in, h, w]`) into the scratch's output blocks and returns
    /// them: channel `c`'s output row `oy` starts at `c · output_plane() + oy · row_stride()`
    /// (the `row_stride() − w_out` values after each row are not outputs; channels past
    /// `c_out` complete the last group).
    pub(crate) fn padded_output<'s>(&self, image: &[f32], scratch: &'s mut Scratch) -> &'s [f32] {
        let g = &self.g;
        assert_eq!(image.len(), g.c_in * g.h * g.w, "an image of {} values for {g:?}", image.len());
        pad_image(image, g, self.width, self.plane, &mut scratch.padded);
        let per_group = g.c_in * self.taps.len() * GROUP;
        let groups = self.weights.chunks_exact(per_group).zip(self.bias.chunks_exact(GROUP));
        for ((weights, bias), out) in groups.zip(scratch.blocks.chunks_exact_mut(GROUP * self.output_plane()))
        {
            let bias = bias.try_into().expect("a group's bias");
            let group =
                ConvGroup { planes: &scratch.padded, plane: self.plane, taps: &self.taps, weights, bias };
            conv_blocks(&group, out);
        }
        &scratch.blocks
    }
}

/// Copies each channel of `image` (`[c_in, h, w]`) into `padded` (planes of `plane` values,
/// rows `width = w_out + kw − 1` wide), so that output pixel `(oy, ox)` of a stride-1
/// convolution reads kernel position `(ky, kx)` at `(oy + ky) · width + ox + kx` of a plane.
/// Only the interior is written: the padding keeps the zeros the buffer was made with.
pub(crate) fn pad_image(image: &[f32], g: &ConvGeometry, width: usize, plane: usize, padded: &mut [f32]) {
    assert_eq!(image.len(), g.c_in * g.h * g.w, "an image of {} values for {g:?}", image.len());
    // The input's rows inside the padding: row `iy` of the input is row `iy + pad_top` of
    // the padded plane (rows or columns falling outside it are never read by an output).
    let (top, left) = (g.pad[0], g.pad[1]);
    let rows = g.h.min((g.h_out + g.kh - 1).saturating_sub(top));
    let cols = g.w.min(width.saturating_sub(left));
    for (src, plane) in image.chunks_exact(g.h * g.w).zip(padded.chunks_exact_mut(plane)) {
        for (iy, row) in src.chunks_exact(g.w).take(rows).enumerate() {
            plane[(iy + top) * width + left..][..cols].copy_from_slice(&row[..cols]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Layouts built on this thread: the direct kernel taken (built on the caller's thread,
        /// before the images go to the workers).
        static LAYOUTS: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn count_layout() {
        LAYOUTS.with(|n| n.set(n.get() + 1));
    }

    #[cfg_attr(not(feature = "flex"), allow(dead_code))]
    pub(crate) fn layouts_built() -> usize {
        LAYOUTS.with(Cell::get)
    }

    /// Copies planes of `rows × cols` values out of padded planes (`plane` values apart, rows
    /// `stride` apart) into the dense `dst`: what `Product::copy_rows` does for the kernels.
    pub(crate) fn unpad(
        padded: &[f32],
        plane: usize,
        [rows, cols]: [usize; 2],
        stride: usize,
        dst: &mut [f32],
    ) {
        for (dst, src) in dst.chunks_exact_mut(rows * cols).zip(padded.chunks_exact(plane)) {
            for (dst, src) in dst.chunks_exact_mut(cols).zip(src.chunks_exact(stride)) {
                dst.copy_from_slice(&src[..cols]);
            }
        }
    }
    use burn::tensor::ops::ConvOptions;

    /// The convolution by its definition, in f64.
    fn naive(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
        let mut out = vec![0.0f32; g.batch * g.c_out * g.pixels()];
        for n in 0..g.batch {
            for co in 0..g.c_out {
                for oy in 0..g.h_out {
                    for ox in 0..g.w_out {
                        let mut sum = bias.map_or(0.0, |b| f64::from(b[co]));
                        for ci in 0..g.c_in {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let Some([iy, ix]) = tap_input(g, [oy, ox], [ky, kx]) else {
                                        continue;
                                    };
                                    let v = x[((n * g.c_in + ci) * g.h + iy) * g.w + ix];
                                    let w = weight[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx];
                                    sum += f64::from(v) * f64::from(w);
                                }
                            }
                        }
                        out[((n * g.c_out + co) * g.h_out + oy) * g.w_out + ox] = sum as f32;
                    }
                }
            }
        }
        out
    }

    /// `n` reproducible values in [-1, 1).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// The input row and column that output `(oy, ox)` of a stride-1 layer reads at kernel
    /// position `(ky, kx)`; `None` in the padding.
    pub(crate) fn tap_input(
        g: &ConvGeometry,
        [oy, ox]: [usize; 2],
        [ky, kx]: [usize; 2],
    ) -> Option<[usize; 2]> {
        let (y, x) = ((oy + ky).checked_sub(g.pad[0])?, (ox + kx).checked_sub(g.pad[1])?);
        (y < g.h && x < g.w).then_some([y, x])
    }

    #[test]
    fn images_match_the_definition_for_many_geometries() {
        // [batch, c_in, h, w], [c_out, kh, kw], padding [(top, bottom), (left, right)], bias
        let cases = [
            ([2, 1, 28, 28], [8, 3, 3], [(1, 1), (1, 1)], true),
            ([3, 8, 14, 14], [16, 3, 3], [(1, 1), (1, 1)], true),
            ([1, 3, 7, 5], [5, 3, 3], [(1, 1), (1, 1)], false),
            ([2, 2, 6, 9], [3, 2, 4], [(0, 2), (3, 0)], true),
            ([1, 4, 5, 5], [16, 5, 5], [(0, 0), (0, 0)], true),
            ([1, 2, 1, 1], [7, 1, 1], [(0, 0), (0, 0)], true),
            ([2, 1, 4, 4], [2, 3, 3], [(2, 2), (2, 2)], false),
        ];
        for (input, [c_out, kh, kw], padding, with_bias) in cases {
            let options = ConvOptions::new_with_padding([1, 1], padding, [1, 1], 1);
            let g = ConvGeometry::new(input, [c_out, input[1], kh, kw], &options);
            assert!(serves(&g));
            let x = values(input.iter().product(), 1);
            let weight = values(c_out * g.patch(), 2);
            let bias = with_bias.then(|| values(c_out, 3));
            let direct = DirectConv::new(&weight, bias.as_deref(), &g);
            let mut scratch = direct.scratch();
            let mut got = vec![f32::NAN; g.batch * c_out * g.pixels()];
            let image_len = g.c_in * g.h * g.w;
            for (image, dst) in x.chunks_exact(image_len).zip(got.chunks_exact_mut(c_out * g.pixels())) {
                direct.image(image, &mut scratch, dst);
            }
            let expected = naive(&x, &weight, bias.as_deref(), &g);
            for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{g:?}: value {i}: {a} against {b}");
            }
        }
    }

    #[test]
    fn strided_wide_or_empty_layers_are_not_served() {
        let geometry = |c_out, stride| {
            ConvGeometry::new([1, 4, 8, 8], [c_out, 4, 3, 3], &ConvOptions::new(stride, [1, 1], [1, 1], 1))
        };
        assert!(serves(&geometry(16, [1, 1])));
        assert!(!serves(&geometry(17, [1, 1])));
        assert!(!serves(&geometry(8, [2, 2])));
        // Up to 32 output channels from at least 8 input channels, where the sums are the
        // product's (at most 512 terms).
        let wide = |c_in, c_out| {
            ConvGeometry::new(
                [1, c_in, 8, 8],
                [c_out, c_in, 3, 3],
                &ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            )
        };
        assert!(serves(&wide(8, 32)) && serves(&wide(16, 32)) && serves(&wide(56, 24)));
        assert!(!serves(&wide(7, 32)) && !serves(&wide(16, 33)) && !serves(&wide(57, 32)));
        // An empty input that padding alone gives outputs.
        let empty =
            ConvGeometry::new([1, 4, 0, 0], [8, 4, 1, 1], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
        assert_eq!([empty.h_out, empty.w_out], [2, 2]);
        assert!(!serves(&empty));
    }
}
