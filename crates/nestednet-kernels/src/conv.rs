//! 2-D convolution (any kernel size, stride and padding; no dilation, one group), forward and
//! backward, as one matrix product per image on NCHW buffers.
//!
//! Flex runs a convolution through a 3-d formulation: the input converted to channels-last,
//! im2col tiles of 512 output pixels, a matrix product per tile, and the result scattered
//! back to NCHW. Burn's autodiff then computes the input's gradient as a transposed
//! convolution and the weight's as a convolution whose kernel is as large as the image (the
//! input and the output gradient with their batch and channel axes swapped, each swap a
//! copy). A profile of a joint `mnist-cnn` step put convolutions at ~60% of it, the matrix
//! micro-kernel itself at ~21%.
//!
//! Here, per image `n`, with `K = c_in · kh · kw` and `P = h_out · w_out`:
//!
//! - forward: `columns_n = im2col(x_n)` (`K × P`), `y_n = W · columns_n` (`c_out × P`), written
//!   in place in the NCHW output, then the bias;
//! - input gradient: `dcolumns_n = Wᵀ · dy_n`, added back into `dx_n` (col2im);
//! - weight gradient: `dW = Σ_n dy_n · columns_nᵀ`, the im2col rebuilt per image rather than
//!   kept from the forward pass (it is 9× the input), summed over fixed runs of
//!   [`IMAGES_PER_PARTIAL`] images and then across runs in order, so that the result does not
//!   depend on the number of threads;
//! - bias gradient: `db = Σ_n Σ_p dy_n`.
//!
//! Only the gradients the graph needs are computed (none for an image batch). The values
//! agree with Burn's convolution to float rounding: the products sum in another order.

// Without `flex`, the kernels have no caller but their tests: Burn's operations run instead.
#![cfg_attr(not(feature = "flex"), allow(dead_code))]

use burn::prelude::*;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;

use crate::direct::DirectConv;
use crate::direct_grad::WeightGradient;
use crate::direct_input_grad::InputGradient;
use crate::gemm::{Matrix, matmul, par_products};
pub(crate) use crate::geometry::ConvGeometry;

/// `burn::tensor::module::conv2d(x, weight, bias, options)`: `x` `[batch, c_in, h, w]`,
/// `weight` `[c_out, c_in, kh, kw]`, `bias` `[c_out]`.
///
/// On a `flex` device with `f32` values, dilation 1 and one group, it runs this crate's
/// kernels forward and backward (see the module documentation): the same values as Burn's
/// to float rounding, not bit for bit. Elsewhere it is Burn's `conv2d`.
///
/// # Panics
///
/// As Burn's `conv2d`: if the input's channels are not the weight's, or if the kernel does
/// not fit in the padded input.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if conv2d_has_kernel(&x, &weight, &options) {
        let geometry = ConvGeometry::new(x.dims(), weight.dims(), &options);
        if let Some(bias) = &bias {
            assert_eq!(
                bias.dims(),
                [geometry.c_out],
                "conv2d: a bias of {:?} for {} output channels",
                bias.dims(),
                geometry.c_out
            );
        }
        return flex::conv2d(x, weight, bias, &options);
    }
    burn_conv2d(x, weight, bias, options)
}

/// `layer.forward(x)` for a Burn [`Conv2d`](burn::nn::conv::Conv2d) layer, through
/// [`conv2d`]: the layer's own padding, stride, dilation and groups (a layer with `Same`
/// padding runs its own `forward`).
pub fn conv2d_layer(layer: &burn::nn::conv::Conv2d, x: Tensor<4>) -> Tensor<4> {
    match layer_options(layer) {
        Some(options) => conv2d(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()), options),
        None => layer.forward(x),
    }
}

/// A Burn layer's convolution options, or `None` for `Same` padding (which depends on the
/// input's size: the layer computes it itself).
pub(crate) fn layer_options(layer: &burn::nn::conv::Conv2d) -> Option<ConvOptions<2>> {
    use burn::nn::PaddingConfig2d;
    let padding = match layer.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return None,
    };
    Some(ConvOptions::new_with_padding(layer.stride, padding, layer.dilation, layer.groups))
}

/// Whether [`conv2d`] runs this crate's kernels for these arguments (otherwise Burn's).
pub fn conv2d_has_kernel(x: &Tensor<4>, weight: &Tensor<4>, options: &ConvOptions<2>) -> bool {
    options.dilation == [1, 1]
        && options.groups == 1
        && crate::runs_own_kernel(x, crate::KernelFamily::Conv)
        && weight.dtype() == x.dtype()
        && weight.device() == x.device()
}

/// For a stride-1 convolution whose output rows are as wide as the input's (a "same" width),
/// kernel position `(ky, kx)` reads the input at a constant offset from the output position:
/// `(oy + ky − py) · w + (ox + kx − px) = (oy · w + ox) + offset`. The valid outputs of the
/// kernel position are then one contiguous range of a plane, but for the columns at its left
/// and right edges, which read across a row boundary. Returns that range, the offset, and
/// the valid columns; `None` for other geometries, or when no output is valid.
#[inline(always)]
fn shifted_block(
    g: &ConvGeometry,
    ky: usize,
    kx: usize,
) -> Option<(std::ops::Range<usize>, isize, std::ops::Range<usize>)> {
    if g.stride != [1, 1] || g.w_out != g.w {
        return None;
    }
    let rows = g.valid_rows(ky);
    let (cols, _) = g.valid_columns(kx);
    if rows.is_empty() || cols.is_empty() {
        return None;
    }
    let offset = (ky as isize - g.pad[0] as isize) * g.w as isize + (kx as isize - g.pad[1] as isize);
    Some((rows.start * g.w + cols.start..(rows.end - 1) * g.w + cols.end, offset, cols))
}

/// An image's im2col matrix: row `(ci, ky, kx)`, column `(oy, ox)` holds
/// `x[ci, oy · sy + ky − py, ox · sx + kx − px]`, zero outside the input.
#[inline(always)]
fn im2col(image: &[f32], g: &ConvGeometry, columns: &mut [f32]) {
    let (plane, pixels) = (g.h * g.w, g.pixels());
    for (row, dst) in columns[..g.patch() * pixels].chunks_exact_mut(pixels).enumerate() {
        let (ci, ky, kx) = (row / (g.kh * g.kw), row / g.kw % g.kh, row % g.kw);
        let src = &image[ci * plane..][..plane];
        if let Some((block, offset, cols)) = shifted_block(g, ky, kx) {
            // One copy of the whole block, then zeros where it read across a row boundary
            // and outside it: rows of a few values each made this a loop of tiny copies.
            let from = block.start.wrapping_add_signed(offset);
            dst[..block.start].fill(0.0);
            dst[block.clone()].copy_from_slice(&src[from..from + block.len()]);
            dst[block.end..].fill(0.0);
            for row in dst[block.start - cols.start..].chunks_mut(g.w).take(g.valid_rows(ky).len()) {
                row[..cols.start].fill(0.0);
                row[cols.end..].fill(0.0);
            }
            continue;
        }
        let valid_rows = g.valid_rows(ky);
        let (cols, first_x) = g.valid_columns(kx);
        for (oy, dst) in dst.chunks_exact_mut(g.w_out).enumerate() {
            if !valid_rows.contains(&oy) || cols.is_empty() {
                dst.fill(0.0);
                continue;
            }
            let src = &src[(oy * g.stride[0] + ky - g.pad[0]) * g.w..][..g.w];
            dst[..cols.start].fill(0.0);
            dst[cols.end..].fill(0.0);
            let inside = &mut dst[cols.clone()];
            if g.stride[1] == 1 {
                inside.copy_from_slice(&src[first_x..first_x + inside.len()]);
            } else {
                for (i, v) in inside.iter_mut().enumerate() {
                    *v = src[first_x + i * g.stride[1]];
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column value to the input position it was read from.
/// `columns` is scratch: the values that read outside the input are zeroed in it.
#[inline(always)]
fn col2im_add(columns: &mut [f32], g: &ConvGeometry, image: &mut [f32]) {
    let (plane, pixels) = (g.h * g.w, g.pixels());
    for (row, src) in columns[..g.patch() * pixels].chunks_exact_mut(pixels).enumerate() {
        let (ci, ky, kx) = (row / (g.kh * g.kw), row / g.kw % g.kh, row % g.kw);
        let dst = &mut image[ci * plane..][..plane];
        if let Some((block, offset, cols)) = shifted_block(g, ky, kx) {
            // As in `im2col`: one pass over the block, once the values it holds for the
            // columns across a row boundary are zeroed.
            for row in src[block.start - cols.start..].chunks_mut(g.w).take(g.valid_rows(ky).len()) {
                row[..cols.start].fill(0.0);
                row[cols.end..].fill(0.0);
            }
            let to = block.start.wrapping_add_signed(offset);
            for (d, s) in dst[to..to + block.len()].iter_mut().zip(&src[block]) {
                *d += s;
            }
            continue;
        }
        let (cols, first_x) = g.valid_columns(kx);
        if cols.is_empty() {
            continue;
        }
        for oy in g.valid_rows(ky) {
            let dst = &mut dst[(oy * g.stride[0] + ky - g.pad[0]) * g.w..][..g.w];
            let src = &src[oy * g.w_out..][cols.clone()];
            if g.stride[1] == 1 {
                for (d, s) in dst[first_x..first_x + src.len()].iter_mut().zip(src) {
                    *d += s;
                }
            } else {
                for (i, s) in src.iter().enumerate() {
                    dst[first_x + i * g.stride[1]] += s;
                }
            }
        }
    }
}

/// The forward kernel on row-major buffers: `x` `[batch, c_in, h, w]`, `weight`
/// `[c_out, c_in, kh, kw]`, `bias` `[c_out]`; the output `[batch, c_out, h_out, w_out]`.
///
/// `direct`: whether the direct kernel may serve it ([`crate::direct`]). Inference lets it
/// whenever it serves the layer; training only where it gives the product's own values
/// ([`crate::direct::gives_the_products_values`]), so that the trained networks, and the
/// accuracies the README publishes, stay those of the product (values that differ by float
/// rounding, a training run amplifies into another trajectory).
pub(crate) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    direct: bool,
) -> Vec<f32> {
    #[cfg(test)]
    crate::pool::tests::count_call();
    check_lengths(g, x, weight, None);
    if let Some(direct) = direct.then(|| direct_kernel(weight, bias, g)).flatten() {
        return par_products(
            g.batch,
            g.output_image(),
            || direct.scratch(),
            |scratch, n, product| {
                let planes = direct.padded_output(&x[n * g.input_image()..][..g.input_image()], scratch);
                product.copy_rows(planes, direct.output_plane(), [g.h_out, g.w_out], direct.row_stride());
            },
        );
    }
    let pixels = g.pixels();
    let (weight, patch) = product_weight(weight, bias, g);
    par_products(
        g.batch,
        g.output_image(),
        || vec![0.0f32; patch * pixels],
        |columns, n, product| {
            image_columns(&x[n * g.input_image()..][..g.input_image()], g, patch, columns);
            product.write(Matrix::rows(&weight, g.c_out, patch), Matrix::rows(columns, patch, pixels));
        },
    )
}

/// The weight of the forward product and its columns: with a bias, it rides in the product
/// as one more column of the weight against a row of ones under the image's columns (no pass
/// over the output to add it).
fn product_weight<'a>(
    weight: &'a [f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> (std::borrow::Cow<'a, [f32]>, usize) {
    match bias {
        Some(bias) => (std::borrow::Cow::Owned(with_bias_column(weight, bias, g)), g.patch() + 1),
        None => (std::borrow::Cow::Borrowed(weight), g.patch()),
    }
}

/// An image's columns for the forward product: its im2col, then ones in the bias row if the
/// product has one (`patch` rows in all).
#[inline(always)]
fn image_columns(image: &[f32], g: &ConvGeometry, patch: usize, columns: &mut [f32]) {
    crate::simd::vectorised!(im2col(image, g, columns));
    if patch > g.patch() {
        columns[g.patch() * g.pixels()..patch * g.pixels()].fill(1.0);
    }
}

/// The forward kernel followed, image by image, by `relu(max over each 2×2 window)` (as
/// [`max_pool2x2_relu`](crate::max_pool2x2_relu)): each image's product is pooled while it
/// is in cache, and only the pooled `[batch, c_out, h_out / 2, w_out / 2]` output is written.
/// The same values as the two kernels one after the other. `h_out`, `w_out` at least 2.
pub(crate) fn forward_pooled(x: &[f32], weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
    #[cfg(test)]
    crate::pool::tests::count_call();
    check_lengths(g, x, weight, None);
    assert!(g.h_out >= 2 && g.w_out >= 2, "2x2 pooling of a {}x{} output", g.h_out, g.w_out);
    let pixels = g.pixels();
    let direct = direct_kernel(weight, bias, g);
    // The product's weight only where the product runs.
    let (weight, patch) = match direct {
        Some(_) => (std::borrow::Cow::Borrowed(&[][..]), 0),
        None => product_weight(weight, bias, g),
    };
    let pooled = (g.h_out / 2) * (g.w_out / 2);
    let mut out = vec![0.0f32; g.batch * g.c_out * pooled];
    let images = out.par_chunks_mut((g.c_out * pooled).max(1)).enumerate();
    images.for_each_init(
        || match &direct {
            Some(direct) => (Vec::new(), Some(direct.scratch()), Vec::new()),
            None => (vec![0.0f32; patch * pixels], None, vec![0.0f32; g.output_image()]),
        },
        |(columns, scratch, y), (n, dst)| {
            let image = &x[n * g.input_image()..][..g.input_image()];
            // The output planes, and the stride of their rows.
            let (planes, plane, stride) = match (&direct, scratch) {
                (Some(direct), Some(scratch)) => {
                    (direct.padded_output(image, scratch), direct.output_plane(), direct.row_stride())
                }
                _ => {
                    image_columns(image, g, patch, columns);
                    let (weight, columns) =
                        (Matrix::rows(&weight, g.c_out, patch), Matrix::rows(columns, patch, pixels));
                    matmul(y, weight, columns, false);
                    (&y[..], pixels, g.w_out)
                }
            };
            for (dst, src) in dst.chunks_exact_mut(pooled).zip(planes.chunks_exact(plane)) {
                crate::simd::vectorised!(crate::pool::pool_relu_rows(
                    dst,
                    src,
                    [g.h_out, g.w_out],
                    stride,
                    &|v| v
                ));
            }
        },
    );
    out
}

/// The direct kernel's layout of the convolution, if it serves it (see [`crate::direct`]) and
/// its family is switched on.
fn direct_kernel(weight: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Option<DirectConv> {
    (crate::direct::serves(g) && crate::kernel_family_on(crate::KernelFamily::Direct))
        .then(|| DirectConv::new(weight, bias, g))
}

/// The weight as `[c_out, patch + 1]`, each row followed by its channel's bias.
fn with_bias_column(weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Vec<f32> {
    assert_eq!(bias.len(), g.c_out, "conv2d: a bias of {} values for {g:?}", bias.len());
    weight
        .chunks_exact(g.patch())
        .zip(bias)
        .flat_map(|(row, b)| row.iter().chain(std::iter::once(b)))
        .copied()
        .collect()
}

/// Images whose weight gradients are summed into one partial sum, before the partial sums
/// are added in order: fixed, so that the gradient is the same whatever the thread count.
const IMAGES_PER_PARTIAL: usize = 8;

/// Which gradients the backward kernel computes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    pub(crate) input: bool,
    pub(crate) weight: bool,
    pub(crate) bias: bool,
}

/// The gradients of the input, the weight and the bias (those `wanted`), given the forward
/// inputs and the output's gradient `grad` (`[batch, c_out, h_out, w_out]`).
pub(crate) type Gradients = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// The backward kernel on row-major buffers (see [`forward`] for the shapes).
pub(crate) fn backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    g: &ConvGeometry,
    wanted: Wanted,
) -> Gradients {
    #[cfg(test)]
    crate::pool::tests::count_call();
    check_lengths(g, x, weight, Some(grad));
    let (patch, pixels) = (g.patch(), g.pixels());
    // Narrow stride-1 layers without the column matrix (the product's values).
    let direct = (wanted.input
        && crate::direct_input_grad::serves(g)
        && crate::kernel_family_on(crate::KernelFamily::Direct))
    .then(|| InputGradient::new(weight, g))
    .flatten();
    let input = match direct {
        Some(direct) => Some(par_products(
            g.batch,
            g.input_image(),
            || direct.scratch(),
            |scratch, n, product| {
                let planes =
                    direct.padded_gradient(&grad[n * g.output_image()..][..g.output_image()], scratch);
                product.copy_rows(planes, direct.output_plane(), [g.h, g.w], direct.row_stride());
            },
        )),
        None => wanted.input.then(|| {
            let mut dx = vec![0.0f32; g.batch * g.input_image()];
            if !dx.is_empty() && pixels > 0 {
                let images = dx.par_chunks_mut(g.input_image()).zip(grad.par_chunks(g.output_image()));
                images.for_each_init(
                    || vec![0.0f32; patch * pixels],
                    |columns, (dx, dy)| {
                        let weight_t = Matrix::transposed(weight, patch, g.c_out);
                        matmul(columns, weight_t, Matrix::rows(dy, g.c_out, pixels), false);
                        crate::simd::vectorised!(col2im_add(columns, g, dx));
                    },
                );
            }
            dx
        }),
    };
    let (dw, db) = if wanted.weight {
        // With the bias wanted too, the image's columns get a row of ones (as in the forward
        // pass): the product's last column is then the bias gradient.
        let rows = if wanted.bias { patch + 1 } else { patch };
        let runs = g.batch.div_ceil(IMAGES_PER_PARTIAL);
        // Narrow stride-1 layers read the image in place instead of through im2col.
        let direct = (crate::direct_grad::serves(g) && crate::kernel_family_on(crate::KernelFamily::Direct))
            .then(|| WeightGradient::new(g));
        let partials: Vec<Vec<f32>> = (0..runs)
            .into_par_iter()
            .map(|run| {
                let images = run * IMAGES_PER_PARTIAL..((run + 1) * IMAGES_PER_PARTIAL).min(g.batch);
                let mut dw = vec![0.0f32; g.c_out * rows];
                let image = |n: usize| &x[n * g.input_image()..][..g.input_image()];
                let output_grad = |n: usize| &grad[n * g.output_image()..][..g.output_image()];
                if let Some(direct) = &direct {
                    let mut scratch = direct.scratch();
                    for (i, n) in images.enumerate() {
                        direct.image(image(n), output_grad(n), &mut scratch, &mut dw, i == 0);
                    }
                    return dw;
                }
                let mut columns = vec![1.0f32; rows * pixels];
                for (i, n) in images.enumerate() {
                    crate::simd::vectorised!(im2col(image(n), g, &mut columns));
                    let columns_t = Matrix::transposed(&columns, pixels, rows);
                    matmul(&mut dw, Matrix::rows(output_grad(n), g.c_out, pixels), columns_t, i > 0);
                }
                dw
            })
            .collect();
        let mut total = partials.into_iter();
        let first = total.next().unwrap_or_else(|| vec![0.0f32; g.c_out * rows]);
        let dwb = total.fold(first, |mut dw, w| {
            dw.iter_mut().zip(&w).for_each(|(a, b)| *a += b);
            dw
        });
        let dw = dwb.chunks_exact(rows).flat_map(|row| &row[..patch]).copied().collect();
        let db = wanted.bias.then(|| dwb.chunks_exact(rows).map(|row| row[patch]).collect());
        (Some(dw), db)
    } else if wanted.bias {
        let db = (0..g.c_out)
            .map(|c| (0..g.batch).map(|n| sum(&grad[n * g.output_image() + c * pixels..][..pixels])).sum())
            .collect();
        (None, Some(db))
    } else {
        (None, None)
    };
    (input, dw, db)
}

/// A sum in eight lanes (vectorised), added across lanes at the end.
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

fn check_lengths(g: &ConvGeometry, x: &[f32], weight: &[f32], grad: Option<&[f32]>) {
    assert_eq!(x.len(), g.batch * g.input_image(), "conv2d: an input of {} values for {g:?}", x.len());
    assert_eq!(weight.len(), g.c_out * g.patch(), "conv2d: a weight of {} values for {g:?}", weight.len());
    if let Some(grad) = grad {
        assert_eq!(
            grad.len(),
            g.batch * g.output_image(),
            "conv2d: a gradient of {} values for {g:?}",
            grad.len()
        );
    }
}

/// The backend extension: the kernel on `Flex`, its backward pass on `Autodiff<Flex>`.
#[cfg(feature = "flex")]
mod flex {
    use super::{ConvGeometry, Wanted};
    use crate::flex_tensor::{contiguous, dims4, f32s};
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
    use burn::prelude::*;
    use burn::tensor::ops::ConvOptions;

    // Two operations rather than one with an `Option` bias: the extension macro does not route
    // an optional tensor argument to the backend's own tensor type.
    #[backend_extension(Autodiff, Flex)]
    pub(super) trait ConvKernels: Backend {
        /// `conv2d(x, weight, Some(bias), options)` with dilation 1 and one group.
        fn conv2d_columns(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self>;

        /// `conv2d(x, weight, None, options)` with dilation 1 and one group.
        fn conv2d_columns_no_bias(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self>;
    }

    pub(super) fn conv2d(
        x: Tensor<4>,
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
        options: &ConvOptions<2>,
    ) -> Tensor<4> {
        let (x, weight, options) = (x.into_dispatch(), weight.into_dispatch(), options.clone());
        Tensor::from_dispatch(match bias {
            Some(bias) => <Dispatch as ConvKernels>::conv2d_columns(x, weight, bias.into_dispatch(), options),
            None => <Dispatch as ConvKernels>::conv2d_columns_no_bias(x, weight, options),
        })
    }

    /// The forward kernel on flex tensors.
    fn forward(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: &ConvOptions<2>,
        direct: bool,
    ) -> FlexTensor {
        let (x, weight) = (contiguous(x), contiguous(weight));
        let bias = bias.map(contiguous);
        let g = ConvGeometry::new(dims4(&x), dims4(&weight), options);
        let out = super::forward(f32s(&x), f32s(&weight), bias.as_ref().map(f32s), &g, direct);
        FlexTensor::from_data(TensorData::new(out, [g.batch, g.c_out, g.h_out, g.w_out]))
    }

    impl ConvKernels for Flex {
        fn conv2d_columns(
            x: FlexTensor,
            weight: FlexTensor,
            bias: FlexTensor,
            options: ConvOptions<2>,
        ) -> FlexTensor {
            forward(x, weight, Some(bias), &options, true)
        }

        fn conv2d_columns_no_bias(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
            forward(x, weight, None, &options, true)
        }
    }

    /// What the backward pass keeps: the input and the weight (shared, not copied).
    #[derive(Clone, Debug)]
    struct Saved {
        x: FlexTensor,
        weight: FlexTensor,
    }

    /// The autodiff node of a convolution with a bias (parents: input, weight, bias).
    #[derive(Debug)]
    struct Conv2dWithBias(ConvOptions<2>);

    /// The autodiff node of a convolution without a bias (parents: input, weight).
    #[derive(Debug)]
    struct Conv2dNoBias(ConvOptions<2>);

    /// Computes the gradients of the tracked parents (`[input, weight, bias]`) from the
    /// output's gradient and registers them.
    fn register_gradients(
        options: &ConvOptions<2>,
        saved: Saved,
        grad: FlexTensor,
        [input, weight, bias]: [Option<NodeId>; 3],
        grads: &mut Gradients,
    ) {
        let grad = contiguous(grad);
        let (x, w) = (saved.x, saved.weight);
        let g = ConvGeometry::new(dims4(&x), dims4(&w), options);
        let wanted = Wanted { input: input.is_some(), weight: weight.is_some(), bias: bias.is_some() };
        let (dx, dw, db) = super::backward(f32s(&x), f32s(&w), f32s(&grad), &g, wanted);
        let tensor =
            |values: Vec<f32>, shape: Vec<usize>| FlexTensor::from_data(TensorData::new(values, shape));
        if let (Some(id), Some(dx)) = (input, dx) {
            grads.register::<Flex>(id, tensor(dx, vec![g.batch, g.c_in, g.h, g.w]));
        }
        if let (Some(id), Some(dw)) = (weight, dw) {
            grads.register::<Flex>(id, tensor(dw, vec![g.c_out, g.c_in, g.kh, g.kw]));
        }
        if let (Some(id), Some(db)) = (bias, db) {
            grads.register::<Flex>(id, tensor(db, vec![g.c_out]));
        }
    }

    impl Backward<Flex, 3> for Conv2dWithBias {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let grad = grads.consume::<Flex>(&ops.node);
            let parents = ops.parents.map(|parent| parent.map(|node| node.id));
            register_gradients(&self.0, ops.state, grad, parents, grads);
        }
    }

    impl Backward<Flex, 2> for Conv2dNoBias {
        type State = Saved;

        fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let grad = grads.consume::<Flex>(&ops.node);
            let [input, weight] = ops.parents.map(|parent| parent.map(|node| node.id));
            register_gradients(&self.0, ops.state, grad, [input, weight, None], grads);
        }
    }

    /// The forward kernel, returning with the output what the backward pass keeps (the
    /// contiguous input and weight, so that it copies nothing).
    fn forward_saved(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        options: &ConvOptions<2>,
    ) -> (Saved, FlexTensor) {
        let (x, weight) = (contiguous(x), contiguous(weight));
        let g = ConvGeometry::new(dims4(&x), dims4(&weight), options);
        let direct = crate::direct::gives_the_products_values(&g);
        let output = forward(x.clone(), weight.clone(), bias, options, direct);
        (Saved { x, weight }, output)
    }

    impl<C: CheckpointStrategy> ConvKernels for Autodiff<Flex, C> {
        fn conv2d_columns(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            let nodes = [x.node(), weight.node(), bias.node()];
            let (x, weight, bias) = (x.into_primitive(), weight.into_primitive(), bias.into_primitive());
            match Conv2dWithBias(options.clone()).prepare::<C>(nodes).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (saved, output) = forward_saved(x, weight, Some(bias), &options);
                    prep.finish(saved, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(x, weight, Some(bias), &options, true)),
            }
        }

        fn conv2d_columns_no_bias(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            options: ConvOptions<2>,
        ) -> FloatTensor<Self> {
            let nodes = [x.node(), weight.node()];
            let (x, weight) = (x.into_primitive(), weight.into_primitive());
            match Conv2dNoBias(options.clone()).prepare::<C>(nodes).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (saved, output) = forward_saved(x, weight, None, &options);
                    prep.finish(saved, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(x, weight, None, &options, true)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// Deterministic values in `[-scale, scale)`: the tests draw nothing from the device's
    /// generator, which tests running at the same time share.
    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let bits = i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) ^ (i >> 7);
                ((bits.wrapping_mul(2_246_822_519) >> 8) as f32 / 8_388_608.0 - 1.0) * scale
            })
            .collect()
    }

    fn tensor<const D: usize>(shape: [usize; D], seed: u32, scale: f32, device: &Device) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(values(n, seed, scale), shape), device)
    }

    /// `(input shape, [c_out, kh, kw], stride, padding as (begin, end) per axis)`.
    type Case = ([usize; 4], [usize; 3], [usize; 2], [(usize, usize); 2]);

    const CASES: [Case; 12] = [
        // mnist-cnn's two layers (core widths), and a batch that is no multiple of 8.
        ([64, 1, 28, 28], [8, 3, 3], [1, 1], [(1, 1), (1, 1)]),
        ([13, 8, 14, 14], [16, 3, 3], [1, 1], [(1, 1), (1, 1)]),
        // Residual stages: stride 2 with odd and even sizes, and 1x1 projections.
        ([3, 4, 9, 9], [6, 3, 3], [2, 2], [(1, 1), (1, 1)]),
        ([2, 4, 8, 8], [6, 1, 1], [2, 2], [(0, 0), (0, 0)]),
        // No padding, a rectangular kernel, asymmetric and large padding, a kernel as large
        // as the input, and an input smaller than the padding.
        ([2, 3, 7, 6], [5, 3, 3], [1, 1], [(0, 0), (0, 0)]),
        ([2, 3, 7, 6], [4, 5, 3], [1, 2], [(2, 1), (0, 3)]),
        ([1, 2, 5, 5], [3, 3, 3], [1, 1], [(4, 4), (3, 3)]),
        ([2, 2, 4, 5], [3, 4, 5], [1, 1], [(0, 0), (0, 0)]),
        ([1, 1, 1, 1], [2, 3, 3], [1, 1], [(1, 1), (1, 1)]),
        // Stride 1 with output rows as wide as the input's (the one-block path of im2col):
        // fewer output rows than input rows, a 5x5 kernel, a 1x1 kernel.
        ([2, 3, 6, 7], [4, 3, 3], [1, 1], [(0, 0), (1, 1)]),
        ([2, 2, 7, 6], [3, 5, 5], [1, 1], [(2, 2), (2, 2)]),
        ([3, 5, 4, 6], [2, 1, 1], [1, 1], [(0, 0), (0, 0)]),
    ];

    fn options((_, _, stride, padding): &Case) -> ConvOptions<2> {
        ConvOptions::new_with_padding(*stride, *padding, [1, 1], 1)
    }

    /// The outputs and the gradients of input, weight and bias, from `op`, for a random loss
    /// `sum(y · r)`.
    fn run(
        op: fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>, ConvOptions<2>) -> Tensor<4>,
        case: &Case,
        bias: bool,
        input_tracked: bool,
        device: &Device,
    ) -> Vec<TensorData> {
        let ([b, c_in, h, w], [c_out, kh, kw], _, _) = *case;
        let x = tensor([b, c_in, h, w], 1, 1.0, device);
        let weight = tensor([c_out, c_in, kh, kw], 2, 0.5, device).require_grad();
        let b_tensor = tensor([c_out], 3, 0.5, device).require_grad();
        let x = if input_tracked { x.require_grad() } else { x };
        let y = op(x.clone(), weight.clone(), bias.then(|| b_tensor.clone()), options(case));
        let r = tensor(y.dims(), 4, 1.0, device);
        let grads = (y.clone() * r).sum().backward();
        let mut out = vec![y.into_data(), weight.grad(&grads).expect("a weight gradient").into_data()];
        if input_tracked {
            out.push(x.grad(&grads).expect("an input gradient").into_data());
        } else {
            assert!(x.grad(&grads).is_none());
        }
        if bias {
            out.push(b_tensor.grad(&grads).expect("a bias gradient").into_data());
        } else {
            assert!(b_tensor.grad(&grads).is_none());
        }
        out
    }

    #[test]
    fn values_and_gradients_agree_with_burns_convolution() {
        let device = Device::flex().autodiff();
        for case in &CASES {
            for (bias, input_tracked) in [(true, true), (false, true), (true, false)] {
                let calls = crate::pool::tests::kernel_calls();
                let ours = run(conv2d, case, bias, input_tracked, &device);
                #[cfg(feature = "flex")]
                assert_eq!(
                    crate::pool::tests::kernel_calls(),
                    calls + 2,
                    "forward and backward kernels for {case:?}"
                );
                let _ = calls;
                let burns = run(burn_conv2d, case, bias, input_tracked, &device);
                for (ours, burns) in ours.iter().zip(&burns) {
                    ours.assert_approx_eq::<f32>(burns, Tolerance::rel_abs(1e-4, 1e-4));
                }
            }
        }
    }

    #[test]
    fn without_autodiff_the_values_agree_with_burns() {
        let device = Device::flex();
        for case in &CASES {
            let ([b, c_in, h, w], [c_out, kh, kw], _, _) = *case;
            let x = tensor([b, c_in, h, w], 5, 1.0, &device);
            let weight = tensor([c_out, c_in, kh, kw], 6, 0.5, &device);
            let bias = tensor([c_out], 7, 0.5, &device);
            let ours = conv2d(x.clone(), weight.clone(), Some(bias.clone()), options(case));
            let burns = burn_conv2d(x, weight, Some(bias), options(case));
            ours.into_data().assert_approx_eq::<f32>(&burns.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        }
    }

    /// Whether `gemm` runs its AVX-512 kernels here: the bit-for-bit facts below were checked
    /// with those, and hold for them only.
    fn gemm_runs_avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// For `mnist-cnn`'s narrow layers the direct kernel's values are the matrix product's,
    /// bit for bit (with and without a bias): both sum the products over `(ci, ky, kx)` in
    /// order with fused multiply-adds, and add the bias last. A fact of the `gemm` version in
    /// use with its AVX-512 kernels, where it was checked, not a promise (`gemm` sums some very
    /// small products otherwise): it is why the direct kernel left every evaluated accuracy
    /// where it was. Elsewhere the two agree to float rounding (the other tests).
    #[test]
    fn for_mnist_cnn_layers_the_direct_kernel_gives_the_products_values() {
        if !gemm_runs_avx512() {
            return;
        }
        // The core's two layers, the middle level's second (32 outputs from 16 inputs),
        // Mix'n'Match layers (a wide input and few outputs; the core's first layer's output
        // into the middle level's second), and on 8x8 images (`digits8x8`) the two small
        // levels' first layers and their second ones.
        let same = [(1, 1), (1, 1)];
        let wide: [Case; 3] = [
            ([13, 16, 14, 14], [32, 3, 3], [1, 1], same),
            ([4, 32, 14, 14], [16, 3, 3], [1, 1], same),
            ([4, 8, 14, 14], [32, 3, 3], [1, 1], same),
        ];
        let small: [Case; 4] = [
            ([8, 1, 8, 8], [8, 3, 3], [1, 1], same),
            ([8, 1, 8, 8], [16, 3, 3], [1, 1], same),
            ([8, 8, 4, 4], [16, 3, 3], [1, 1], same),
            ([8, 16, 4, 4], [32, 3, 3], [1, 1], same),
        ];
        for case in CASES[..2].iter().chain(&wide).chain(&small) {
            let ([b, c_in, h, w], [c_out, kh, kw], _, _) = *case;
            let g = ConvGeometry::new([b, c_in, h, w], [c_out, c_in, kh, kw], &options(case));
            assert!(crate::direct::serves(&g));
            let (x, weight) = (values(b * c_in * h * w, 10, 1.0), values(c_out * g.patch(), 11, 0.5));
            for bias in [None, Some(values(c_out, 12, 0.5))] {
                let bias = bias.as_deref();
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                let (direct, product) =
                    (forward(&x, &weight, bias, &g, true), forward(&x, &weight, bias, &g, false));
                assert_eq!(bits(direct), bits(product), "{case:?}, bias {}", bias.is_some());
            }
        }
    }

    /// For `mnist-cnn`'s narrow layers the direct weight gradient (`direct_grad`) is the
    /// product's, bit for bit, with and without a bias: both sum each weight's products over
    /// the pixels in order from zero with fused multiply-adds, then add the image's sum to the
    /// run's. Like the forward kernel's, a fact of the `gemm` version in use with its AVX-512
    /// kernels, checked here (it is why training moved no accuracy); elsewhere the two agree to
    /// float rounding (`values_and_gradients_agree_with_burns_convolution`).
    #[test]
    fn for_mnist_cnn_layers_the_direct_weight_gradient_is_the_products() {
        if !gemm_runs_avx512() {
            return;
        }
        // The two small levels' second layers, Mix'n'Match blocks (wide input, few outputs),
        // and on 8x8 images (`digits8x8`) the full level's first layer and the small levels'
        // second ones (the small levels' first layers are not served: see `direct_grad`).
        let layers = [
            (8, 16, 14),
            (16, 32, 14),
            (32, 16, 14),
            (64, 32, 14),
            (32, 8, 14),
            (1, 32, 8),
            (8, 16, 4),
            (16, 32, 4),
        ];
        for (c_in, c_out, size) in layers {
            let g = ConvGeometry::new(
                [IMAGES_PER_PARTIAL, c_in, size, size],
                [c_out, c_in, 3, 3],
                &ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            );
            assert!(crate::direct_grad::serves(&g));
            let x = values(g.batch * g.input_image(), 21, 1.0);
            let dy = values(g.batch * g.output_image(), 22, 0.5);
            for rows in [g.patch(), g.patch() + 1] {
                let (mut product, mut direct) = (vec![0.0f32; g.c_out * rows], vec![0.0f32; g.c_out * rows]);
                let mut columns = vec![1.0f32; rows * g.pixels()];
                let gradient = WeightGradient::new(&g);
                let mut scratch = gradient.scratch();
                for n in 0..g.batch {
                    let (image, dy) = (
                        &x[n * g.input_image()..][..g.input_image()],
                        &dy[n * g.output_image()..][..g.output_image()],
                    );
                    im2col(image, &g, &mut columns);
                    let columns_t = Matrix::transposed(&columns, g.pixels(), rows);
                    matmul(&mut product, Matrix::rows(dy, g.c_out, g.pixels()), columns_t, n > 0);
                    gradient.image(image, dy, &mut scratch, &mut direct, n == 0);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&direct), bits(&product), "{c_in} -> {c_out} at {size}x{size}, {rows} rows");
            }
        }
    }

    /// For `mnist-cnn`'s layers the direct input gradient (`direct_input_grad`) is the
    /// product's (`Wᵀ · dy`, then `col2im`), bit for bit: both sum each column value over the
    /// output channels in order from zero with fused multiply-adds, then add the columns in
    /// the kernel positions' order. A fact of the `gemm` version in use with its AVX-512
    /// kernels, checked here, as for the other direct kernels.
    #[test]
    fn for_mnist_cnn_layers_the_direct_input_gradient_is_the_products() {
        if !gemm_runs_avx512() {
            return;
        }
        // The small levels' second layers on 28x28 and on 8x8 images (`digits8x8`), and
        // Mix'n'Match blocks (a wide input, few outputs).
        let layers = [(8, 16, 14), (16, 32, 14), (32, 16, 14), (64, 32, 14), (8, 16, 4), (16, 32, 4)];
        for (c_in, c_out, size) in layers {
            let g = ConvGeometry::new(
                [3, c_in, size, size],
                [c_out, c_in, 3, 3],
                &ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            );
            assert!(crate::direct_input_grad::serves(&g));
            let weight = values(g.c_out * g.patch(), 31, 0.5);
            let dy = values(g.batch * g.output_image(), 32, 1.0);
            let direct_layout = InputGradient::new(&weight, &g).expect("finite weights");
            let mut scratch = direct_layout.scratch();
            let mut columns = vec![0.0f32; g.patch() * g.pixels()];
            for dy in dy.chunks_exact(g.output_image()) {
                let mut product = vec![0.0f32; g.input_image()];
                matmul(
                    &mut columns,
                    Matrix::transposed(&weight, g.patch(), g.c_out),
                    Matrix::rows(dy, g.c_out, g.pixels()),
                    false,
                );
                col2im_add(&mut columns, &g, &mut product);
                let mut direct = vec![f32::NAN; g.input_image()];
                direct_layout.image(dy, &mut scratch, &mut direct);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&direct), bits(&product), "{c_in} -> {c_out} at {size}x{size}");
            }
        }
    }

    /// Inference takes the direct kernel for every narrow stride-1 layer; training (a tracked
    /// weight) only where it gives the product's values: not for a layer whose product sums
    /// more than 512 terms per output (`gemm` sums those in blocks). Counted where the direct
    /// kernel's layout is built.
    #[cfg(feature = "flex")]
    #[test]
    fn training_takes_the_direct_kernel_only_where_it_gives_the_products_values() {
        let long: Case = ([2, 64, 6, 6], [8, 3, 3], [1, 1], [(1, 1), (1, 1)]);
        for (case, in_training) in [(&CASES[1], true), (&long, false)] {
            let ([b, c_in, h, w], [c_out, kh, kw], _, _) = *case;
            for (device, tracked) in [(Device::flex().autodiff(), true), (Device::flex(), false)] {
                let x = tensor([b, c_in, h, w], 8, 1.0, &device);
                let weight = tensor([c_out, c_in, kh, kw], 9, 0.5, &device);
                let weight = if tracked { weight.require_grad() } else { weight };
                let before = crate::direct::tests::layouts_built();
                let _ = conv2d(x, weight, None, options(case)).into_data();
                let direct = crate::direct::tests::layouts_built() > before;
                let expected = !tracked || in_training;
                assert_eq!(direct, expected, "{case:?}, tracked {tracked}: direct kernel {direct}");
            }
        }
    }

    #[test]
    fn a_burn_layer_gives_its_own_forward() {
        use burn::nn::PaddingConfig2d;
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex();
        let x = tensor([3, 4, 9, 8], 8, 1.0, &device);
        for padding in [PaddingConfig2d::Valid, PaddingConfig2d::Explicit(2, 0, 1, 3)] {
            let layer = Conv2dConfig::new([4, 5], [3, 3]).with_padding(padding).init(&device);
            let calls = crate::pool::tests::kernel_calls();
            let ours = conv2d_layer(&layer, x.clone());
            #[cfg(feature = "flex")]
            assert_eq!(crate::pool::tests::kernel_calls(), calls + 1);
            let _ = calls;
            ours.into_data().assert_approx_eq::<f32>(
                &layer.forward(x.clone()).into_data(),
                Tolerance::rel_abs(1e-5, 1e-5),
            );
        }
    }

    #[test]
    fn gradients_do_not_depend_on_the_thread_count() {
        let g = ConvGeometry::new([19, 3, 9, 7], [5, 3, 3, 3], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
        let (x, w, dy) = (values(19 * 3 * 63, 1, 1.0), values(5 * 27, 2, 1.0), values(19 * 5 * 63, 3, 1.0));
        let wanted = Wanted { input: true, weight: true, bias: true };
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
            pool.install(|| (forward(&x, &w, None, &g, false), backward(&x, &w, &dy, &g, wanted)))
        };
        let one = on(1);
        for threads in [2, 3, 5] {
            assert_eq!(on(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn a_hand_computed_example() {
        // One 3x3 image, one 2x2 filter, padding 1, stride 2: outputs at the corners.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let w = [1.0, 10.0, 100.0, 1000.0];
        let g = ConvGeometry::new([1, 1, 3, 3], [1, 1, 2, 2], &ConvOptions::new([2, 2], [1, 1], [1, 1], 1));
        assert_eq!((g.h_out, g.w_out), (2, 2));
        // Top-left window covers (pad, pad, pad, x[0]); top-right (pad, pad, x[1], x[2]); ...
        let y = forward(&x, &w, Some(&[0.5]), &g, false);
        assert_eq!(y, vec![1000.5, 3000.5 + 200.0, 7000.5 + 40.0, 9000.5 + 800.0 + 60.0 + 5.0]);
        let wanted = Wanted { input: true, weight: true, bias: true };
        let (dx, dw, db) = backward(&x, &w, &[1.0, 0.0, 0.0, 2.0], &g, wanted);
        // Only x[0] (under w[3] of the first window) and the last window's four inputs are read
        // by the outputs with a gradient.
        assert_eq!(dx.unwrap(), vec![1000.0, 0.0, 0.0, 0.0, 2.0, 20.0, 0.0, 200.0, 2000.0]);
        assert_eq!(dw.unwrap(), vec![2.0 * 5.0, 2.0 * 6.0, 2.0 * 8.0, 1.0 + 2.0 * 9.0]);
        assert_eq!(db.unwrap(), vec![3.0]);
    }

    #[test]
    #[should_panic(expected = "the input has 3 channels, the weight expects 2")]
    fn channels_that_do_not_match_are_refused() {
        ConvGeometry::new([1, 3, 5, 5], [4, 2, 3, 3], &ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_kernel_larger_than_the_padded_input_is_refused() {
        ConvGeometry::new([1, 1, 2, 2], [1, 1, 5, 5], &ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    }
}
