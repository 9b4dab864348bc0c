//! The shapes of one convolution, shared by the product path ([`conv`](crate::conv)) and the
//! direct kernels it dispatches to.

use burn::tensor::ops::ConvOptions;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub(crate) batch: usize,
    pub(crate) c_in: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c_out: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: [usize; 2],
    /// Zero padding before the first row and column (the padding after them only sets the
    /// output size).
    pub(crate) pad: [usize; 2],
    pub(crate) h_out: usize,
    pub(crate) w_out: usize,
}

impl ConvGeometry {
    /// The geometry of `x` (`[batch, c_in, h, w]`) convolved with `weight`
    /// (`[c_out, c_in, kh, kw]`); panics with Burn's messages' substance on a mismatch.
    pub(crate) fn new(
        [batch, c_in, h, w]: [usize; 4],
        [c_out, w_in, kh, kw]: [usize; 4],
        options: &ConvOptions<2>,
    ) -> Self {
        assert_eq!(c_in, w_in, "conv2d: the input has {c_in} channels, the weight expects {w_in}");
        let [(top, bottom), (left, right)] = options.padding;
        let out = |size: usize, before: usize, after: usize, k: usize, stride: usize, axis: &str| {
            let padded = size + before + after;
            assert!(
                k >= 1 && padded >= k,
                "conv2d: a kernel of {k} does not fit the padded input's {axis} of {padded}"
            );
            (padded - k) / stride + 1
        };
        Self {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride: options.stride,
            pad: [top, left],
            h_out: out(h, top, bottom, kh, options.stride[0], "height"),
            w_out: out(w, left, right, kw, options.stride[1], "width"),
        }
    }

    /// Whether the direct kernels can serve it at all: stride 1 and no empty axis (an input
    /// of no rows or columns, which padding alone can still give outputs, takes the product).
    pub(crate) fn stride_one_nonempty(&self) -> bool {
        self.stride == [1, 1] && [self.h_out, self.w_out, self.c_in, self.h, self.w].iter().all(|&n| n > 0)
    }

    /// Rows of an image's im2col matrix: `c_in · kh · kw`.
    pub(crate) fn patch(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output pixels per plane: `h_out · w_out`.
    pub(crate) fn pixels(&self) -> usize {
        self.h_out * self.w_out
    }

    pub(crate) fn input_image(&self) -> usize {
        self.c_in * self.h * self.w
    }

    pub(crate) fn output_image(&self) -> usize {
        self.c_out * self.pixels()
    }

    /// For kernel column `kx`, the output columns that read inside the input, as a range,
    /// and the input column read by the first of them.
    pub(crate) fn valid_columns(&self, kx: usize) -> (std::ops::Range<usize>, usize) {
        valid_range(self.w_out, self.w, self.stride[1], self.pad[1], kx)
    }

    pub(crate) fn valid_rows(&self, ky: usize) -> std::ops::Range<usize> {
        valid_range(self.h_out, self.h, self.stride[0], self.pad[0], ky).0
    }
}

/// The outputs `o` in `0..outputs` whose input `o · stride + k − pad` lies in `0..size`, and
/// that input for the first of them.
fn valid_range(
    outputs: usize,
    size: usize,
    stride: usize,
    pad: usize,
    k: usize,
) -> (std::ops::Range<usize>, usize) {
    // o · stride + k ≥ pad  ⇔  o ≥ ceil((pad − k) / stride)
    let first = pad.saturating_sub(k).div_ceil(stride);
    // o · stride + k − pad ≤ size − 1  ⇔  o ≤ (size − 1 + pad − k) / stride
    let end = match (size + pad).checked_sub(k + 1) {
        Some(limit) => (limit / stride + 1).min(outputs),
        None => 0,
    };
    let end = end.max(first);
    (first..end, (first * stride + k).saturating_sub(pad))
}
