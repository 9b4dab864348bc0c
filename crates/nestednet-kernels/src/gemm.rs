//! A bounds-checked view of the `gemm` crate (the matrix product Flex itself uses): the only
//! `unsafe` code of the crate. Every matrix is a slice with its shape and strides, checked to
//! lie inside the slice before the raw-pointer call.
#![allow(unsafe_code)]

/// A read-only `rows × cols` matrix in `data`: element `(i, j)` at
/// `i · row_stride + j · col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// The row-major `rows × cols` matrix at the start of `data`.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// The transpose of the row-major `cols × rows` matrix at the start of `data`.
    pub(crate) fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, 1, rows)
    }

    fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> Self {
        assert!(
            fits(data.len(), rows, cols, row_stride, col_stride),
            "a {rows}x{cols} matrix (strides {row_stride}, {col_stride}) outside {} values",
            data.len()
        );
        Self { data, rows, cols, row_stride, col_stride }
    }
}

/// Whether every element of the matrix lies within `len` values (an empty one always does).
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|r| (cols - 1).checked_mul(col_stride).and_then(|c| r.checked_add(c)));
    matches!(last, Some(last) if last < len)
}

/// `dst = lhs × rhs` (or `dst += lhs × rhs` with `accumulate`), `dst` the row-major
/// `lhs.rows × rhs.cols` matrix at the start of `dst`, on the calling thread.
pub(crate) fn matmul(dst: &mut [f32], lhs: Matrix, rhs: Matrix, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "a {m}x{k} matrix times a {}x{n} one", rhs.rows);
    assert!(fits(dst.len(), m, n, n, 1), "a {m}x{n} product into {} values", dst.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the three matrices were checked to lie inside their slices (`fits`), `dst` is
    // borrowed mutably and so overlaps neither input.
    unsafe { raw_gemm(dst.as_mut_ptr(), n, accumulate, lhs, rhs) }
}

/// `dst = lhs × rhs` (`dst += lhs × rhs` with `read_dst`), `dst` a row-major `lhs.rows ×
/// rhs.cols` matrix of row stride `n`, through gemm, on the calling thread; `k` ≥ 1.
///
/// # Safety
///
/// `dst` must be valid for writes (and reads, with `read_dst`) of that matrix and overlap
/// neither input; the inputs lie inside their slices by construction of [`Matrix`].
unsafe fn raw_gemm(dst: *mut f32, n: usize, read_dst: bool, lhs: Matrix, rhs: Matrix) {
    let stride = |s: usize| isize::try_from(s).expect("a stride within isize");
    // SAFETY: the caller's contract, and `f32` is one of gemm's types.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst,
            1,
            stride(n),
            read_dst,
            lhs.data.as_ptr(),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.data.as_ptr(),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            // dst = alpha · dst + beta · lhs · rhs (alpha is read only with `read_dst`).
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// One block of a [`par_products`] output, written whole by [`Product::write`].
pub(crate) struct Product<'a> {
    dst: &'a mut [std::mem::MaybeUninit<f32>],
    written: bool,
}

impl Product<'_> {
    /// Writes `lhs × rhs` (row-major, exactly the block's length) and returns the block.
    pub(crate) fn write(&mut self, lhs: Matrix, rhs: Matrix) -> &mut [f32] {
        let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
        assert_eq!(rhs.rows, k, "a {m}x{k} matrix times a {}x{n} one", rhs.rows);
        assert_eq!(m * n, self.dst.len(), "a {m}x{n} product into a block of {}", self.dst.len());
        if k == 0 {
            self.dst.fill(std::mem::MaybeUninit::new(0.0));
        } else if m * n > 0 {
            // SAFETY: the block is exactly the `m × n` destination, borrowed mutably (so it
            // overlaps neither input); gemm writes every element of it (`read_dst` false: it
            // reads none), so uninitialised memory is never read.
            unsafe { raw_gemm(self.dst.as_mut_ptr().cast::<f32>(), n, false, lhs, rhs) }
        }
        self.written = true;
        // SAFETY: every element was written just above.
        unsafe { std::slice::from_raw_parts_mut(self.dst.as_mut_ptr().cast::<f32>(), self.dst.len()) }
    }
}

impl Product<'_> {
    /// Writes the block (planes of `rows × cols` values) from `planes`, whose planes are
    /// `plane` values apart and whose rows `stride` apart (the direct convolution's padded
    /// output, for a block that is not a matrix product): every value once, without first
    /// zeroing the block.
    ///
    /// # Panics
    ///
    /// If the block is not a whole number of planes, or `planes` too short for them.
    pub(crate) fn copy_rows(
        &mut self,
        planes: &[f32],
        plane: usize,
        [rows, cols]: [usize; 2],
        stride: usize,
    ) {
        let len = rows * cols;
        assert!(cols <= stride && len > 0 && self.dst.len().is_multiple_of(len), "planes of {rows}x{cols}");
        for (c, dst) in self.dst.chunks_exact_mut(len).enumerate() {
            for (y, dst) in dst.chunks_exact_mut(cols).enumerate() {
                let src = &planes[c * plane + y * stride..][..cols];
                for (d, &s) in dst.iter_mut().zip(src) {
                    d.write(s);
                }
            }
        }
        self.written = true;
    }
}

/// A buffer of `blocks` blocks of `block_len` values, each written by `fill(state, index,
/// product)` through [`Product::write`] (in parallel, `state` from `init` per task): the
/// output of one matrix product per image without first zeroing it (a pass over the whole
/// output, and its page faults). Panics if a block is left unwritten.
pub(crate) fn par_products<S>(
    blocks: usize,
    block_len: usize,
    init: impl Fn() -> S + Sync + Send,
    fill: impl Fn(&mut S, usize, &mut Product) + Sync + Send,
) -> Vec<f32> {
    use rayon::prelude::*;
    let len = blocks.checked_mul(block_len).expect("an output size within usize");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len > 0 {
        let spare = &mut out.spare_capacity_mut()[..len];
        spare.par_chunks_mut(block_len).enumerate().for_each_init(init, |state, (index, dst)| {
            let mut product = Product { dst, written: false };
            fill(state, index, &mut product);
            assert!(product.written, "block {index} of a product was not written");
        });
    }
    // SAFETY: every block was written (asserted above, or a panic left `out` empty).
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn products_of_plain_and_transposed_matrices_match_the_naive_product() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|v| (v % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| (v % 3) as f32 * 0.5).collect();
        let expected = naive(&a, &b, m, k, n);
        let mut c = vec![7.0; m * n];
        matmul(&mut c, Matrix::rows(&a, m, k), Matrix::rows(&b, k, n), false);
        assert_eq!(c, expected);
        matmul(&mut c, Matrix::rows(&a, m, k), Matrix::rows(&b, k, n), true);
        assert_eq!(c, expected.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
        // The same product from the transposes' buffers.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(&mut c, Matrix::transposed(&at, m, k), Matrix::transposed(&bt, k, n), false);
        assert_eq!(c, expected);
    }

    #[test]
    fn products_fill_every_block() {
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let out = par_products(
            4,
            4,
            || (),
            |_, index, product| {
                let b: Vec<f32> = (0..6).map(|v| (v + index) as f32).collect();
                product.write(Matrix::rows(&a, 2, 3), Matrix::rows(&b, 3, 2));
            },
        );
        for (index, block) in out.chunks(4).enumerate() {
            let b: Vec<f32> = (0..6).map(|v| (v + index) as f32).collect();
            assert_eq!(block, naive(&a, &b, 2, 3, 2));
        }
    }

    #[test]
    #[should_panic(expected = "was not written")]
    fn a_block_left_unwritten_is_refused() {
        par_products(
            2,
            3,
            || (),
            |_, index, product| {
                if index == 0 {
                    product.write(Matrix::rows(&[1.0; 3], 1, 1), Matrix::rows(&[2.0; 3], 1, 3));
                }
            },
        );
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_matrix_larger_than_its_slice_is_refused() {
        Matrix::rows(&[0.0; 11], 3, 4);
    }

    #[test]
    #[should_panic(expected = "product into")]
    fn a_destination_too_small_is_refused() {
        let a = [1.0; 6];
        matmul(&mut [0.0; 3], Matrix::rows(&a, 2, 3), Matrix::rows(&a, 3, 2), false);
    }
}
