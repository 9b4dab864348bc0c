//! Metrics of coarse-to-fine levels, from predictions already on the host.

use serde::{Deserialize, Serialize};

use crate::{HeadError, Hierarchy, Result};

/// One coarse-to-fine level's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HierarchyLevelMetrics {
    /// Level index.
    pub level: usize,
    /// The hierarchy depth it predicts.
    pub depth: usize,
    /// Accuracy at its own granularity.
    pub accuracy: f64,
    /// The full level's accuracy at this level's granularity (its fine predictions mapped up).
    pub full_level_accuracy: f64,
    /// How often the full level's prediction, mapped up to this depth, equals this level's
    /// prediction (hierarchical consistency; 1 for the full level itself).
    pub consistency: f64,
    /// Mean hierarchy distance of this level's errors (how many depths up the lowest common
    /// ancestor of the predicted and the true class is); 0 when it makes no error.
    pub mistake_severity: f64,
}

/// Per-level metrics of a coarse-to-fine model: `predictions[k][i]` is level `k`'s class (at
/// depth `level_depths[k]`) for sample `i`, `fine_labels[i]` the data set's label.
pub fn hierarchy_metrics(
    hierarchy: &Hierarchy,
    level_depths: &[usize],
    predictions: &[Vec<usize>],
    fine_labels: &[usize],
) -> Result<Vec<HierarchyLevelMetrics>> {
    let bad = |m: String| Err(HeadError::Hierarchy(m));
    if predictions.len() != level_depths.len() || predictions.is_empty() {
        return bad(format!("{} levels of predictions for {} depths", predictions.len(), level_depths.len()));
    }
    if let Some(k) = predictions.iter().position(|p| p.len() != fine_labels.len()) {
        return bad(format!(
            "level {k} has {} predictions for {} samples",
            predictions[k].len(),
            fine_labels.len()
        ));
    }
    let n = fine_labels.len().max(1) as f64;
    let full = predictions.len() - 1;
    let full_depth = level_depths[full];
    let mut out = Vec::new();
    for (level, (&depth, preds)) in level_depths.iter().zip(predictions).enumerate() {
        let truth = hierarchy.labels_at(fine_labels, depth);
        let lifted: Vec<usize> =
            predictions[full].iter().map(|&p| hierarchy.lift(p, full_depth, depth)).collect();
        let correct = preds.iter().zip(&truth).filter(|(p, t)| p == t).count();
        let errors: Vec<usize> = preds
            .iter()
            .zip(&truth)
            .filter(|(p, t)| p != t)
            .map(|(&p, &t)| hierarchy.distance(depth, p, t))
            .collect();
        out.push(HierarchyLevelMetrics {
            level,
            depth,
            accuracy: correct as f64 / n,
            full_level_accuracy: lifted.iter().zip(&truth).filter(|(p, t)| p == t).count() as f64 / n,
            consistency: lifted.iter().zip(preds).filter(|(a, b)| a == b).count() as f64 / n,
            mistake_severity: if errors.is_empty() {
                0.0
            } else {
                errors.iter().sum::<usize>() as f64 / errors.len() as f64
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_known_predictions() {
        // Shapes: loop {0, 6, 8, 9}, line {1, 4, 7}, curve {2, 3, 5}; classes loop=0, line=1, curve=2.
        let h = Hierarchy::mnist_shapes();
        let labels = vec![0, 1, 2, 6];
        let coarse = vec![0, 1, 1, 0]; // third is wrong (curve predicted as line)
        let fine = vec![6, 1, 3, 0]; // first wrong within its group, third right, fourth wrong within group
        let m = hierarchy_metrics(&h, &[0, 1], &[coarse, fine], &labels).unwrap();
        assert_eq!(m[0].accuracy, 0.75);
        // Fine predictions mapped up: loop, line, curve, loop: all right at the shape level.
        assert_eq!(m[0].full_level_accuracy, 1.0);
        // They agree with the coarse level on 3 of 4.
        assert_eq!(m[0].consistency, 0.75);
        // The coarse error is between two groups: distance 1 at depth 0.
        assert_eq!(m[0].mistake_severity, 1.0);
        assert_eq!(m[1].accuracy, 0.25);
        assert_eq!(m[1].consistency, 1.0);
        // Fine errors 0→6 and 6→0 stay within "loop": distance 1.
        assert_eq!(m[1].mistake_severity, 1.0);
        assert!(hierarchy_metrics(&h, &[0, 1], &[vec![0]], &labels).is_err());
    }
}
