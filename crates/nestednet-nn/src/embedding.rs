//! Nested embedding: level `k` uses the leading `e_k` features of every row of one table.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Initializer};
use burn::prelude::*;
use burn::tensor::module::embedding;

use crate::compact_copy;
use crate::widths::{assert_level, check_level_widths};

/// Configuration of a [`NestedEmbedding`].
#[derive(Config, Debug)]
pub struct NestedEmbeddingConfig {
    /// Rows of the table: the vocabulary (token embedding) or the longest sequence (learned
    /// positions).
    pub n_embedding: usize,
    /// Features of the full level.
    pub d_model: usize,
    /// Features each level uses, core first (`[d_model; n]` when the width is not nested).
    pub widths: Vec<usize>,
    /// Initializer of the table (Burn's default, a standard normal).
    #[config(default = "Initializer::Normal{mean: 0.0, std: 1.0}")]
    pub initializer: Initializer,
}

impl NestedEmbeddingConfig {
    /// Initializes the table on `device`. Panics if the widths are not nested.
    pub fn init(&self, device: &Device) -> NestedEmbedding {
        check_level_widths("NestedEmbedding", &self.widths, self.d_model);
        assert!(self.n_embedding > 0, "NestedEmbedding: the table needs at least one row");
        NestedEmbedding {
            weight: self.initializer.init([self.n_embedding, self.d_model], device),
            widths: self.widths.clone(),
        }
    }
}

/// An embedding table whose levels use its leading columns: level `k` looks ids up in
/// `weight[.., ..e_k]`.
#[derive(Module, Debug)]
pub struct NestedEmbedding {
    /// Shared table, `[n_embedding, d_model]`.
    pub weight: Param<Tensor<2>>,
    /// Features of each level.
    pub widths: Vec<usize>,
}

impl NestedEmbedding {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.widths.len()
    }

    /// Features level `level` uses.
    pub fn level_width(&self, level: usize) -> usize {
        assert_level("NestedEmbedding", level, self.num_levels());
        self.widths[level]
    }

    /// Rows of the table (ids `0..rows`).
    pub fn rows(&self) -> usize {
        self.weight.dims()[0]
    }

    fn block(&self, width: usize) -> Tensor<2> {
        let weight = self.weight.val();
        if width == weight.dims()[1] { weight } else { weight.slice(s![.., 0..width]) }
    }

    /// Level `level`'s vectors of `ids` `[batch, length]`: `[batch, length, level width]`.
    /// Ids must be below [`rows`](Self::rows): readers map unknown tokens before this.
    pub fn forward(&self, ids: Tensor<2, Int>, level: usize) -> Tensor<3> {
        let width = self.level_width(level);
        if crate::probe::recording() {
            // A lookup multiplies nothing; the table is what the level holds.
            crate::probe::record(self.weight.id, self.rows() * width, 0);
        }
        embedding(self.block(width), ids)
    }

    /// Level `level` as a one-level table with compact copies of its columns.
    pub fn single_level(&self, level: usize) -> Self {
        self.single_block(self.level_width(level))
    }

    /// The leading `width` columns (any count up to the full table's) as a one-level table.
    pub fn single_block(&self, width: usize) -> Self {
        Self { weight: Param::from_tensor(compact_copy(self.block(width))), widths: vec![width] }
    }

    /// Burn's `Embedding` of level `level`, with a compact copy of its columns.
    pub fn extract_level(&self, level: usize) -> Embedding {
        Embedding { weight: Param::from_tensor(compact_copy(self.block(self.level_width(level)))) }
    }

    /// Parameters level `level` uses.
    pub fn level_num_params(&self, level: usize) -> usize {
        self.rows() * self.level_width(level)
    }
}
