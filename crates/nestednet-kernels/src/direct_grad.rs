//! The weight gradient of a stride-1 convolution with few output channels, without im2col.
//!
//! The product path ([`conv::backward`](crate::conv)) copies each image into a column matrix
//! (`c_in · kh · kw` rows of `h_out · w_out` values) and multiplies the output gradient by its
//! transpose. For a small level's layer (8 → 16 or 16 → 32 channels of `mnist-cnn`) that copy
//! was a third of the weight gradient's time, and the product of a 16-row gradient packs and
//! pads it for a micro-kernel built for 64 rows: profiled, the small levels' convolution
//! backward passes cost half of the full level's for a third of its multiply-adds.
//!
//! Here each image is copied once into the zero-padded planes of the direct convolution
//! ([`pad_image`]), its output gradient once into a pixel-major buffer (the `c_out` channels
//! of a pixel side by side, padded to [`LANES`]), and each column-matrix row `r = (ci, ky,
//! kx)` of the product is read in place: at output pixel `(oy, ox)` it is the padded plane's
//! value at `(oy + ky) · width + ox + kx`. For a block of rows at a time, the kernel keeps one
//! accumulator per row and output channel and walks the pixels in order, adding `dy · x` with
//! a fused multiply-add: each weight's gradient is `Σ_p dy[co, p] · x[r, p]` summed over the
//! pixels in order from zero, then added to the gradient so far, the bias's `Σ_p dy[co, p]` the
//! same way. That is the order of the product it replaces (one block of the whole pixel range,
//! multiply-adds in order, then `dst + acc`), so for `mnist-cnn`'s layers the gradients are the
//! product's bit for bit (tested); in general they agree to float rounding.
//!
//! Measured (`cargo bench --bench kernels -- --filter conv2d --baseline-families
//! pool,conv,norm`, batch 64, 2 threads, forward + backward against the product's weight
//! gradient): 1.544 → 1.286 ms for the core's 8 → 16 layer, 3.339 → 3.029 ms for level 1's
//! 16 → 32. The sums run at the FMA units' rate for 16 → 32 (AVX2 with several rows' sums in
//! registers at once, [`grad_rows`](crate::simd::grad_rows)); a first version left to the
//! compiler kept its sums in memory and was 3.6× slower than the product.

use crate::direct::pad_image;
use crate::geometry::ConvGeometry;
use crate::simd::GradRows;

/// Lanes of an accumulator row: output channels are padded to a multiple of it.
const LANES: usize = 8;
/// The widest layer served, in output channels: the product's micro-kernel fills its rows
/// beyond that.
const MAX_C_OUT: usize = 32;
/// The most output pixels per image served: the product sums longer ranges in blocks of up to
/// 512 (`gemm`'s depth blocking), a different order.
const MAX_PIXELS: usize = 512;

/// Whether [`WeightGradient`] serves a convolution of geometry `g`: stride 1, at most
/// [`MAX_C_OUT`] output channels and [`MAX_PIXELS`] output pixels, nothing empty, and a
/// product that `gemm` would run with its general micro-kernels: not a matrix-vector product
/// (one output channel, one column-matrix row, or up to 2 pixels), and not one of at most
/// 256 results, which `gemm` sums with its "horizontal" kernels (lanes along the pixels,
/// added up at the end: another order). Those few layers (the first layer of a narrow level
/// on 8×8 images, say) keep the product, so that every trained network stays the same.
pub(crate) fn serves(g: &ConvGeometry) -> bool {
    g.stride_one_nonempty()
        && (2..=MAX_C_OUT).contains(&g.c_out)
        && (3..=MAX_PIXELS).contains(&g.pixels())
        && g.patch() >= 2
        && g.c_out * g.patch() > 256
}

/// A convolution's geometry laid out for the weight-gradient kernel (built once per call).
pub(crate) struct WeightGradient {
    g: ConvGeometry,
    /// Width of a padded row: `w_out + kw − 1`.
    width: usize,
    /// Values per padded plane (with room for the reads of the last row's padding columns).
    plane: usize,
    /// Output channels padded to whole [`LANES`].
    lanes: usize,
    /// Where column-matrix row `r = (ci · kh + ky) · kw + kx` starts in the padded planes:
    /// `ci · plane + ky · width + kx`.
    offsets: Vec<usize>,
}

/// One thread's buffers: the padded image (its padding stays zero) and the pixel-major output
/// gradient.
pub(crate) struct Scratch {
    padded: Vec<f32>,
    dy: Vec<f32>,
    /// Each column-matrix row's sums, `lanes` values per row.
    sums: Vec<f32>,
}

impl WeightGradient {
    /// The layout for geometry `g` (one [`serves`]).
    pub(crate) fn new(g: &ConvGeometry) -> Self {
        assert!(serves(g), "the direct weight gradient does not serve {g:?}");
        let width = g.w_out + g.kw - 1;
        let plane = (g.h_out + g.kh - 1) * width;
        let offsets = (0..g.c_in)
            .flat_map(|ci| {
                (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| ci * plane + ky * width + kx))
            })
            .collect();
        Self { g: *g, width, plane, lanes: g.c_out.div_ceil(LANES) * LANES, offsets }
    }

    /// Fresh buffers for one thread.
    pub(crate) fn scratch(&self) -> Scratch {
        Scratch {
            padded: vec![0.0; self.g.c_in * self.plane],
            dy: vec![0.0; self.g.pixels() * self.lanes],
            sums: vec![0.0; self.offsets.len() * self.lanes],
        }
    }

    /// Adds one image's gradient to `dw`, the `[c_out, rows]` matrix of the product path (row
    /// `co`: the weight gradients of channel `co` in `[c_in, kh, kw]` order, then, if `rows`
    /// is one more, the bias gradient), or writes it there if `first`. `image` is the input
    /// (`[c_in, h, w]`), `dy` the output's gradient (`[c_out, h_out, w_out]`).
    pub(crate) fn image(
        &self,
        image: &[f32],
        dy: &[f32],
        scratch: &mut Scratch,
        dw: &mut [f32],
        first: bool,
    ) {
        let g = &self.g;
        let patch = g.patch();
        let rows = dw.len() / g.c_out.max(1);
        assert!(rows == patch || rows == patch + 1, "a gradient of {} values for {g:?}", dw.len());
        assert_eq!(dy.len(), g.c_out * g.pixels(), "an output gradient of {} values for {g:?}", dy.len());
        pad_image(image, g, self.width, self.plane, &mut scratch.padded);
        for (co, plane) in dy.chunks_exact(g.pixels()).enumerate() {
            for (p, &v) in plane.iter().enumerate() {
                scratch.dy[p * self.lanes + co] = v;
            }
        }
        let mut store = |r: usize, sums: &[f32]| {
            for (co, &sum) in sums[..g.c_out].iter().enumerate() {
                let dst = &mut dw[co * rows + r];
                *dst = if first { sum } else { *dst + sum };
            }
        };
        let grad_rows = GradRows {
            planes: &scratch.padded,
            offsets: &self.offsets,
            dy: &scratch.dy,
            lanes: self.lanes,
            h_out: g.h_out,
            w_out: g.w_out,
            width: self.width,
        };
        crate::simd::grad_rows(&grad_rows, &mut scratch.sums);
        for (r, sums) in scratch.sums.chunks_exact(self.lanes).enumerate() {
            store(r, sums);
        }
        if rows == patch + 1 {
            // The bias's column of ones: `0 + Σ dy` in pixel order (a multiply-add by one is
            // the plain sum's rounding), in the rows' sums' first lanes, stored already.
            let sums = &mut scratch.sums[..self.lanes];
            sums.fill(0.0);
            for pixel in scratch.dy.chunks_exact(self.lanes) {
                for (s, &d) in sums.iter_mut().zip(pixel) {
                    *s += d;
                }
            }
            store(patch, sums);
        }
    }
}
