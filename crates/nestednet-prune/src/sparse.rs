//! Compressed sparse storage of a pruned weight tensor, with indices as small as its shape
//! allows.
//!
//! A tensor of shape `[d0, …, dr]` is viewed as a matrix by splitting its axes at some point
//! (`rows = d0·…·di`, `cols = d(i+1)·…·dr`) and stored either row-compressed (CSR: a pointer
//! per row, a column index per non-zero) or column-compressed (CSC, the transpose). Index
//! arrays use `u8`, `u16` or `u32`, whichever holds their largest value; of all splits and both
//! orientations, the one with the fewest bytes is kept. A `[128, 3136]` linear weight at 1/3
//! density, for instance, is stored column-compressed with `u8` row indices: 5 bytes per kept
//! weight instead of 4 per weight densely.

use serde::{Deserialize, Serialize};

use crate::{PruneError, Result};

/// An array of non-negative indices in the smallest unsigned type that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexArray {
    /// Values below 256.
    U8(Vec<u8>),
    /// Values below 65,536.
    U16(Vec<u16>),
    /// Larger values.
    U32(Vec<u32>),
}

impl IndexArray {
    /// Bytes per index needed for values up to `max`.
    pub fn width_for(max: usize) -> usize {
        if max <= u8::MAX as usize {
            1
        } else if max <= u16::MAX as usize {
            2
        } else {
            4
        }
    }

    /// Packs `values` (all ≤ `max`) into the smallest type holding `max`.
    pub fn pack(values: &[usize], max: usize) -> Self {
        match Self::width_for(max) {
            1 => Self::U8(values.iter().map(|&v| v as u8).collect()),
            2 => Self::U16(values.iter().map(|&v| v as u16).collect()),
            _ => Self::U32(values.iter().map(|&v| v as u32).collect()),
        }
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
        }
    }

    /// Whether there are no indices.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index `i`.
    pub fn get(&self, i: usize) -> usize {
        match self {
            Self::U8(v) => v[i] as usize,
            Self::U16(v) => v[i] as usize,
            Self::U32(v) => v[i] as usize,
        }
    }

    /// Bytes per index.
    pub fn width(&self) -> usize {
        match self {
            Self::U8(_) => 1,
            Self::U16(_) => 2,
            Self::U32(_) => 4,
        }
    }

    /// Little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Self::U8(v) => v.clone(),
            Self::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Reads little-endian indices of `width` bytes each.
    pub fn from_le_bytes(bytes: &[u8], width: usize) -> Option<Self> {
        if width == 0 || !bytes.len().is_multiple_of(width) {
            return None;
        }
        Some(match width {
            1 => Self::U8(bytes.to_vec()),
            2 => Self::U16(bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()),
            4 => Self::U32(
                bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            ),
            _ => return None,
        })
    }
}

/// Which dimension of the matrix view is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparseOrientation {
    /// One pointer per row, a column index per non-zero.
    Csr,
    /// One pointer per column, a row index per non-zero.
    Csc,
}

/// The shape and layout of a stored sparse tensor (what a reader needs beside the arrays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseLayout {
    /// Shape of the dense tensor.
    pub shape: Vec<usize>,
    /// Axes `..split` form the rows of the matrix view, `split..` its columns.
    pub split: usize,
    /// CSR or CSC.
    pub orientation: SparseOrientation,
}

impl SparseLayout {
    fn rows_cols(&self) -> (usize, usize) {
        (self.shape[..self.split].iter().product(), self.shape[self.split..].iter().product())
    }

    /// `(outer, inner)`: number of compressed pointers minus one, and the range of the indices.
    fn outer_inner(&self) -> (usize, usize) {
        let (rows, cols) = self.rows_cols();
        match self.orientation {
            SparseOrientation::Csr => (rows, cols),
            SparseOrientation::Csc => (cols, rows),
        }
    }
}

/// A weight tensor in compressed sparse form (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct SparseTensor {
    /// Shape, split and orientation.
    pub layout: SparseLayout,
    /// `outer + 1` offsets into `indices` / `values`.
    pub pointers: IndexArray,
    /// The inner index of every kept value.
    pub indices: IndexArray,
    /// The kept values, in compressed order.
    pub values: Vec<f32>,
}

impl SparseTensor {
    /// Compresses a dense row-major tensor, keeping its non-zero values, in the layout with the
    /// fewest bytes.
    pub fn from_dense(values: &[f32], shape: &[usize]) -> Self {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "values do not fill the shape");
        let nnz = values.iter().filter(|v| **v != 0.0).count();
        let mut best: Option<(usize, SparseLayout)> = None;
        for split in 0..=shape.len() {
            for orientation in [SparseOrientation::Csr, SparseOrientation::Csc] {
                let layout = SparseLayout { shape: shape.to_vec(), split, orientation };
                let (outer, inner) = layout.outer_inner();
                let bytes = nnz * (4 + IndexArray::width_for(inner.saturating_sub(1)))
                    + (outer + 1) * IndexArray::width_for(nnz);
                if best.as_ref().is_none_or(|(b, _)| bytes < *b) {
                    best = Some((bytes, layout));
                }
            }
        }
        let layout = best.expect("at least one layout").1;
        let (rows, cols) = layout.rows_cols();
        let (outer, inner) = layout.outer_inner();
        let at = |o: usize, i: usize| match layout.orientation {
            SparseOrientation::Csr => values[o * cols + i],
            SparseOrientation::Csc => values[i * cols + o],
        };
        let _ = rows;
        let mut pointers = Vec::with_capacity(outer + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut kept = Vec::with_capacity(nnz);
        pointers.push(0);
        for o in 0..outer {
            for i in 0..inner {
                let v = at(o, i);
                if v != 0.0 {
                    indices.push(i);
                    kept.push(v);
                }
            }
            pointers.push(kept.len());
        }
        Self {
            pointers: IndexArray::pack(&pointers, nnz),
            indices: IndexArray::pack(&indices, inner.saturating_sub(1)),
            values: kept,
            layout,
        }
    }

    /// Checks the arrays against the layout (for data read from a file).
    pub fn validate(&self, name: &str) -> Result<()> {
        let bad = |reason: String| Err(PruneError::CorruptSparse { name: name.into(), reason });
        if self.layout.split > self.layout.shape.len() {
            return bad(format!("split {} exceeds rank {}", self.layout.split, self.layout.shape.len()));
        }
        let (outer, inner) = self.layout.outer_inner();
        if self.pointers.len() != outer + 1 {
            return bad(format!("{} pointers for {outer} compressed lines", self.pointers.len()));
        }
        if self.indices.len() != self.values.len() {
            return bad(format!("{} indices for {} values", self.indices.len(), self.values.len()));
        }
        if self.pointers.get(0) != 0 || self.pointers.get(outer) != self.values.len() {
            return bad("pointers do not span the values".into());
        }
        for o in 0..outer {
            let (a, b) = (self.pointers.get(o), self.pointers.get(o + 1));
            if a > b {
                return bad(format!("pointers decrease at line {o}"));
            }
            for k in a..b {
                let i = self.indices.get(k);
                if i >= inner || (k > a && self.indices.get(k - 1) >= i) {
                    return bad(format!("index {i} out of range or out of order in line {o}"));
                }
            }
        }
        Ok(())
    }

    /// The dense row-major values.
    pub fn to_dense(&self) -> Vec<f32> {
        let (_, cols) = self.layout.rows_cols();
        let (outer, _) = self.layout.outer_inner();
        let mut dense = vec![0.0; self.layout.shape.iter().product()];
        for o in 0..outer {
            for k in self.pointers.get(o)..self.pointers.get(o + 1) {
                let i = self.indices.get(k);
                let at = match self.layout.orientation {
                    SparseOrientation::Csr => o * cols + i,
                    SparseOrientation::Csc => i * cols + o,
                };
                dense[at] = self.values[k];
            }
        }
        dense
    }

    /// Number of stored (non-zero) values.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Bytes of the three arrays.
    pub fn bytes(&self) -> usize {
        self.values.len() * 4
            + self.indices.len() * self.indices.width()
            + self.pointers.len() * self.pointers.width()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_sparse(n: usize, keep_every: usize) -> Vec<f32> {
        (0..n)
            .map(|i| if (i * 7 + 3) % keep_every == 0 { (i as f32 * 0.37).sin() + 2.0 } else { 0.0 })
            .collect()
    }

    #[test]
    fn round_trips_and_picks_small_indices() {
        let shape = [128, 3136];
        let dense = pseudo_sparse(128 * 3136, 3);
        let sparse = SparseTensor::from_dense(&dense, &shape);
        sparse.validate("fc1.weight").unwrap();
        assert_eq!(sparse.to_dense(), dense);
        // 128 rows: column-compressed, one-byte row indices.
        assert_eq!(sparse.layout.orientation, SparseOrientation::Csc);
        assert_eq!(sparse.indices.width(), 1);
        let ratio = sparse.bytes() as f64 / (dense.len() * 4) as f64;
        assert!(ratio < 0.45, "{ratio}");
        for shape in [vec![4, 3, 3, 3], vec![7], vec![5, 1], vec![]] {
            let n = shape.iter().product();
            let dense = pseudo_sparse(n, 2);
            let sparse = SparseTensor::from_dense(&dense, &shape);
            sparse.validate("t").unwrap();
            assert_eq!(sparse.to_dense(), dense, "{shape:?}");
        }
    }

    #[test]
    fn corrupt_arrays_are_named() {
        let mut sparse = SparseTensor::from_dense(&[0.0, 1.0, 2.0, 0.0], &[2, 2]);
        sparse.values.pop();
        let err = sparse.validate("conv1.weight").unwrap_err();
        assert!(err.to_string().contains("conv1.weight"), "{err}");
        let bytes = IndexArray::U16(vec![1, 300]).to_le_bytes();
        assert_eq!(IndexArray::from_le_bytes(&bytes, 2), Some(IndexArray::U16(vec![1, 300])));
        assert_eq!(IndexArray::from_le_bytes(&bytes, 3), None);
    }
}
