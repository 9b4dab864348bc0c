//! Per-level evaluation on any labelled data.

use burn::prelude::*;
use nestednet_heads::{correct_count, cross_entropy};
use nestednet_models::{NestedNetwork, NetworkOutput};

use crate::error::Result;
use crate::trainer::data::BatchOrder;
use crate::trainer::data::LabelledSet;
use crate::trainer::labels::LevelLabels;
use crate::trainer::metrics::LevelTally;

/// Accuracy (and mean loss) of every level of `model` on `set`, in batches of `batch_size`,
/// each level against its own labels. `model` should be in evaluation mode (`valid()`) and
/// `device` a plain device.
pub fn evaluate<M, S>(
    model: &M,
    set: &S,
    batch_size: usize,
    device: &Device,
    labels: &LevelLabels,
) -> Result<Vec<LevelTally>>
where
    M: NestedNetwork,
    S: LabelledSet<Input = M::Input>,
{
    // Sums stay on the device; they are read once, after the last batch.
    let mut sums: Vec<Option<(Tensor<1>, Tensor<1, Int>)>> = vec![None; model.num_levels()];
    let mut total = 0;
    for batch in set.batches(BatchOrder::in_order(batch_size), device)? {
        let batch = batch?;
        let rows = batch.targets.dims()[0];
        total += rows;
        for (level, sum) in sums.iter_mut().enumerate() {
            let logits = model.forward_level(batch.input.clone(), level).into_logits();
            let y = labels.labels(&batch.targets, level);
            let loss = cross_entropy(logits.clone(), y.clone()).mul_scalar(rows as f64);
            let correct = correct_count(logits, y);
            *sum = Some(match sum.take() {
                Some((l, c)) => (l + loss, c + correct),
                None => (loss, correct),
            });
        }
    }
    Ok(sums
        .into_iter()
        .map(|sum| match sum {
            Some((loss, correct)) => LevelTally {
                loss_sum: loss.into_scalar::<f64>(),
                correct: correct.into_scalar::<i64>() as usize,
                total,
            },
            None => LevelTally::default(),
        })
        .collect())
}
