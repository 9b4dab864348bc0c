//! The input gradient of a stride-1 convolution without im2col.
//!
//! The product path ([`conv::backward`](crate::conv)) computes, per image, the column matrix
//! `Wᵀ · dy` (`c_in · kh · kw` rows of `h_out · w_out` values: each column the sum, over the
//! output channels, of a weight times the output gradient) and then adds each column back to
//! the input position it was read from (`col2im`). For a small level's layer the column
//! matrix is nine times the input gradient it becomes, written once and read back once, and
//! the product of so few output channels (16 or 32) packs its operands for little work.
//!
//! Here each image's output gradient is copied once into zero-padded planes whose rows are
//! `width = w + kw − 1` wide (top and left padding `k − 1 − pad`), and input pixel `(y, x)`,
//! at flat position `q = y · width + x`, reads the output gradient that kernel position
//! `(ky, kx)` sends it at `q + (kh − 1 − ky) · width + (kw − 1 − kx)`: one constant offset per
//! kernel position, as in the direct convolution ([`crate::direct`]), so a run of pixels
//! reads a run of gradients. The kernel ([`input_grad_blocks`]) sums, per kernel position,
//! the output channels' terms in order from zero with fused multiply-adds (the product's
//! column value), then adds those partial sums in the kernel positions' order from zero (the
//! order in which `col2im` adds the columns). That is the product path's order, so the
//! gradients are its own bit for bit (tested for `mnist-cnn`'s layers); a kernel position
//! that reads outside the output adds `+0` (a sum of finite weights times the zero padding),
//! which changes no value that `col2im` would leave out, since neither path's sum is ever
//! `−0`. Layers with a weight that is not finite (`∞ · 0` would make a NaN) keep the product.

use crate::direct::pad_image;
use crate::geometry::ConvGeometry;
use crate::simd::{CONV_GROUP as GROUP, CONV_PIXELS as PIXELS, InputGradGroup, input_grad_blocks};

/// The most output channels served. `gemm` would sum more than 512 in blocks (another
/// order), but from 64 output channels on its product wins: forward + backward of
/// `mnist-cnn`'s full level's 32 → 64 layer (`cargo bench --bench kernels`, 2 threads, two
/// alternating runs) took 13.0 and 12.6 ms with this kernel, 13.3 and 10.4 ms without, while
/// the small levels' 8 → 16 layer took 1.46 and 1.02 against 1.67 and 1.42 ms, and their
/// 16 → 32 layer 4.40 and 3.24 against 4.86 and 4.36 ms.
const MAX_C_OUT: usize = 32;

/// Whether [`InputGradient`] serves a convolution of geometry `g`: stride 1, nothing empty,
/// padding of less than a kernel on every side (so that the output gradient fits in the
/// padded planes), and a product `gemm` runs with its general micro-kernels (each column
/// value one chain of multiply-adds in order): at least 3 and at most [`MAX_C_OUT`] output
/// channels, and neither a matrix-vector product nor one of at most 256 results.
pub(crate) fn serves(g: &ConvGeometry) -> bool {
    let [top, left] = g.pad;
    g.stride_one_nonempty()
        && top < g.kh
        && left < g.kw
        && g.kh - 1 - top + g.h_out < g.h + g.kh
        && g.kw - 1 - left + g.w_out < g.w + g.kw
        && (3..=MAX_C_OUT).contains(&g.c_out)
        && g.patch() >= 2
        && g.pixels() >= 2
        && g.patch() * g.pixels() > 256
}

/// A convolution's weights and geometry laid out for the input-gradient kernel (built once
/// per call, shared by the threads).
pub(crate) struct InputGradient {
    g: ConvGeometry,
    /// The output gradient's geometry as the input of a convolution (for [`pad_image`]).
    transposed: ConvGeometry,
    /// Width of a padded row: `w + kw − 1`.
    width: usize,
    /// Values per padded plane (with room for the last block's reads).
    plane: usize,
    /// Pixel blocks per input channel: `h · width / PIXELS`, rounded up.
    blocks: usize,
    /// Offset of each kernel position `(ky, kx)`, in that order: `(kh − 1 − ky) · width +
    /// (kw − 1 − kx)`.
    taps: Vec<usize>,
    /// The weights, `[group][tap][c_out][GROUP]`, zero for the input channels past `c_in`
    /// that complete the last group.
    weights: Vec<f32>,
}

/// One thread's buffers for [`InputGradient::padded_gradient`]: the padded output gradient (its
/// padding stays zero: only the interior is ever written) and the kernel's output blocks.
pub(crate) struct Scratch {
    padded: Vec<f32>,
    blocks: Vec<f32>,
}

impl InputGradient {
    /// The layout for geometry `g` (one [`serves`]) and `weight` (`[c_out, c_in, kh, kw]`);
    /// `None` if a weight is not finite.
    pub(crate) fn new(weight: &[f32], g: &ConvGeometry) -> Option<Self> {
        assert!(serves(g), "the direct input gradient does not serve {g:?}");
        assert_eq!(
            weight.len(),
            g.c_out * g.patch(),
            "conv2d: a weight of {} values for {g:?}",
            weight.len()
        );
        if !weight.iter().all(|w| w.is_finite()) {
            return None;
        }
        let width = g.w + g.kw - 1;
        let blocks = (g.h * width).div_ceil(PIXELS);
        let taps: Vec<usize> = (0..g.kh)
            .flat_map(|ky| (0..g.kw).map(move |kx| (g.kh - 1 - ky) * width + (g.kw - 1 - kx)))
            .collect();
        let plane = blocks * PIXELS + taps.iter().max().copied().unwrap_or(0);
        let kernel = g.kh * g.kw;
        let groups = g.c_in.div_ceil(GROUP);
        let mut weights = vec![0.0f32; groups * kernel * g.c_out * GROUP];
        for (i, lanes) in weights.chunks_exact_mut(GROUP).enumerate() {
            let (group, tap, co) = (i / (kernel * g.c_out), i / g.c_out % kernel, i % g.c_out);
            for (lane, w) in lanes.iter_mut().enumerate() {
                let ci = group * GROUP + lane;
                if ci < g.c_in {
                    *w = weight[(co * g.c_in + ci) * kernel + tap];
                }
            }
        }
        let transposed = ConvGeometry {
            batch: g.batch,
            c_in: g.c_out,
            h: g.h_out,
            w: g.w_out,
            c_out: g.c_in,
            kh: g.kh,
            kw: g.kw,
            stride: [1, 1],
            pad: [g.kh - 1 - g.pad[0], g.kw - 1 - g.pad[1]],
            h_out: g.h,
            w_out: g.w,
        };
        Some(Self { g: *g, transposed, width, plane, blocks, taps, weights })
    }

    /// Fresh buffers for one thread.
    pub(crate) fn scratch(&self) -> Scratch {
        Scratch {
            padded: vec![0.0; self.g.c_out * self.plane],
            blocks: vec![0.0; self.g.c_in.div_ceil(GROUP) * GROUP * self.blocks * PIXELS],
        }
    }

    /// One image's input gradient from its output gradient `dy` (`[c_out, h_out, w_out]`),
    /// in the scratch's blocks: channel `ci`'s row `y` starts at `ci · plane() + y ·
    /// row_stride()` (the `row_stride() − w` values after each row are not the gradient's).
    pub(crate) fn padded_gradient<'s>(&self, dy: &[f32], scratch: &'s mut Scratch) -> &'s [f32] {
        let g = &self.g;
        pad_image(dy, &self.transposed, self.width, self.plane, &mut scratch.padded);
        let per_group = self.taps.len() * g.c_out * GROUP;
        let groups = self.weights.chunks_exact(per_group);
        for (weights, out) in groups.zip(scratch.blocks.chunks_exact_mut(GROUP * self.output_plane())) {
            let group =
                InputGradGroup { planes: &scratch.padded, plane: self.plane, taps: &self.taps, weights };
            input_grad_blocks(&group, out);
        }
        &scratch.blocks
    }

    /// Values per channel of [`padded_gradient`](Self::padded_gradient).
    pub(crate) fn output_plane(&self) -> usize {
        self.blocks * PIXELS
    }

    /// Row stride of [`padded_gradient`](Self::padded_gradient)'s planes.
    pub(crate) fn row_stride(&self) -> usize {
        self.width
    }

    /// Writes one image's input gradient (`[c_in, h, w]`) to `dx`, from its output gradient
    /// `dy` (`[c_out, h_out, w_out]`).
    #[cfg(test)]
    pub(crate) fn image(&self, dy: &[f32], scratch: &mut Scratch, dx: &mut [f32]) {
        let g = &self.g;
        assert_eq!(dx.len(), g.c_in * g.h * g.w, "an input gradient of {} values for {g:?}", dx.len());
        let (plane, width) = (self.output_plane(), self.width);
        crate::direct::tests::unpad(self.padded_gradient(dy, scratch), plane, [g.h, g.w], width, dx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::tests::{tap_input, values};
    use burn::tensor::ops::ConvOptions;

    /// The input gradient by its definition, in f64.
    fn naive(dy: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut dx = vec![0.0f64; g.c_in * g.h * g.w];
        for co in 0..g.c_out {
            for ci in 0..g.c_in {
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let w = f64::from(weight[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx]);
                        for oy in 0..g.h_out {
                            for ox in 0..g.w_out {
                                let Some([y, x]) = tap_input(g, [oy, ox], [ky, kx]) else {
                                    continue;
                                };
                                dx[(ci * g.h + y) * g.w + x] +=
                                    w * f64::from(dy[(co * g.h_out + oy) * g.w_out + ox]);
                            }
                        }
                    }
                }
            }
        }
        dx.into_iter().map(|v| v as f32).collect()
    }

    #[test]
    fn images_match_the_definition_for_many_geometries() {
        // [c_in, h, w], [c_out, kh, kw], padding [(top, bottom), (left, right)]
        let cases = [
            ([8, 14, 14], [16, 3, 3], [(1, 1), (1, 1)]),
            ([5, 7, 9], [6, 3, 3], [(1, 1), (1, 1)]),
            ([3, 6, 5], [4, 3, 3], [(0, 0), (0, 0)]),
            ([2, 6, 9], [3, 2, 4], [(0, 1), (3, 0)]),
            ([4, 9, 9], [5, 5, 5], [(2, 2), (2, 2)]),
            ([6, 9, 9], [3, 1, 1], [(0, 0), (0, 0)]),
        ];
        for ([c_in, h, w], [c_out, kh, kw], padding) in cases {
            let options = ConvOptions::new_with_padding([1, 1], padding, [1, 1], 1);
            let g = ConvGeometry::new([1, c_in, h, w], [c_out, c_in, kh, kw], &options);
            assert!(serves(&g), "{g:?}");
            let weight = values(c_out * g.patch(), 2);
            let dy = values(c_out * g.pixels(), 3);
            let layout = InputGradient::new(&weight, &g).expect("finite weights");
            let mut scratch = layout.scratch();
            let mut dx = vec![f32::NAN; c_in * h * w];
            // Twice, so that a second image finds the scratch's padding as the first left it.
            for _ in 0..2 {
                layout.image(&dy, &mut scratch, &mut dx);
                for (i, (got, want)) in dx.iter().zip(naive(&dy, &weight, &g)).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{g:?} [{i}]: {got} against {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn non_finite_weights_and_unsuited_layers_take_the_product() {
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let g = ConvGeometry::new([1, 4, 6, 6], [8, 4, 3, 3], &options);
        let mut weight = values(8 * g.patch(), 1);
        assert!(InputGradient::new(&weight, &g).is_some());
        weight[5] = f32::INFINITY;
        assert!(InputGradient::new(&weight, &g).is_none());
        weight[5] = f32::NAN;
        assert!(InputGradient::new(&weight, &g).is_none());
        let strided =
            ConvGeometry::new([1, 4, 6, 6], [8, 4, 3, 3], &ConvOptions::new([2, 2], [1, 1], [1, 1], 1));
        assert!(!serves(&strided));
        // Two output channels: `gemm` would take a matrix-vector path.
        assert!(!serves(&ConvGeometry::new([1, 4, 6, 6], [2, 4, 3, 3], &options)));
        // Padding of a whole kernel: the output gradient would not fit the planes.
        let padded =
            ConvGeometry::new([1, 4, 6, 6], [8, 4, 3, 3], &ConvOptions::new([1, 1], [3, 3], [1, 1], 1));
        assert!(!serves(&padded));
    }
}
