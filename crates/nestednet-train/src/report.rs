//! Per-level reports: accuracy, active parameters, MACs, exported size and measured latency.

use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use nestednet_data::ImageSet;
use nestednet_models::{NestedClassifier, NestedMnistCnn};
use serde::{Deserialize, Serialize};

use crate::{
    LayerDensity, LevelLabels, Result, RunDir, TrainError, evaluate, export_sizes, layer_densities,
    record_bytes, write_atomic,
};

/// One level's line of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LevelReport {
    /// Level index (0 = core).
    pub level: usize,
    /// Number of classes the level predicts (its granularity of the hierarchy, if any).
    #[serde(default)]
    pub classes: usize,
    /// Test accuracy as a fraction.
    pub accuracy: f64,
    /// Mean test cross-entropy.
    pub loss: f64,
    /// Correct test predictions.
    pub correct: usize,
    /// Test samples.
    pub total: usize,
    /// Trainable parameters the level uses.
    pub params: usize,
    /// `params` relative to the full level.
    pub density: f64,
    /// Multiply-accumulates per sample (convolutions and linear layers).
    pub macs: usize,
    /// Bytes of the level exported as a standalone Burn record (burnpack).
    pub export_bytes: usize,
    /// Median latency of one forward pass at batch 1, milliseconds.
    pub latency_ms_b1: f64,
    /// Median latency of one forward pass at batch 256, milliseconds.
    pub latency_ms_b256: f64,
    /// Output channels of every scheduled layer at this level.
    pub widths: Vec<(String, usize)>,
    /// Weights the level uses in each layer, of those in its channel block (masks applied).
    #[serde(default)]
    pub layers: Vec<LayerDensity>,
    /// Bytes of the level exported as dense safetensors (pruned weights stored as zeros).
    #[serde(default)]
    pub dense_bytes: usize,
    /// Bytes of the level exported as sparse safetensors (masked weights compressed).
    #[serde(default)]
    pub sparse_bytes: usize,
}

/// The report of a run, written as `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Model name.
    pub model: String,
    /// Data set name.
    pub dataset: String,
    /// Backend the latencies were measured on.
    pub backend: String,
    /// Per-level lines, core first.
    pub levels: Vec<LevelReport>,
    /// Mean training seconds per epoch, when the report follows a training run.
    pub train_seconds_per_epoch: Option<f64>,
    /// How the levels were made: `channels`, or the mask method and its targets.
    #[serde(default)]
    pub method: String,
}

/// Median wall-clock milliseconds of `forward_level` at `batch` on random inputs, after warm-up.
/// Each measured call ends with a read of the output, so asynchronous backends are timed to
/// completion. Runs at least `min_runs` calls and at least ~`min_ms` milliseconds.
pub fn measure_latency<M: NestedClassifier>(
    model: &M,
    level: usize,
    batch: usize,
    device: &Device,
    min_runs: usize,
    min_ms: f64,
) -> f64 {
    let [c, h, w] = model.input_shape();
    let x = Tensor::<4>::random([batch, c, h, w], Distribution::Normal(0.0, 1.0), device);
    for _ in 0..3 {
        let _ = model.forward_level(x.clone(), level).into_data();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_runs || start.elapsed().as_secs_f64() * 1e3 < min_ms {
        let t = Instant::now();
        let _ = model.forward_level(x.clone(), level).into_data();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if times.len() >= 10_000 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// What a report says about where its figures come from.
#[derive(Debug, Clone, Copy)]
pub struct ReportContext<'a> {
    /// Model name (`mnist-cnn`).
    pub model: &'a str,
    /// Data set name.
    pub dataset: &'a str,
    /// Backend the latencies are measured on.
    pub backend: &'a str,
    /// How the levels were made (see `TrainingConfig::method_name`).
    pub method: &'a str,
    /// Mean training seconds per joint epoch, when the report follows a training run.
    pub train_seconds_per_epoch: Option<f64>,
    /// What each level is scored against.
    pub labels: &'a LevelLabels,
}

/// Builds the report of `model` (evaluation mode, plain device) on `test`.
pub fn build_report(
    model: &NestedMnistCnn,
    context: ReportContext<'_>,
    test: Arc<ImageSet>,
    device: &Device,
) -> Result<Report> {
    let accuracies = evaluate(model, test, 256, device, context.labels)?;
    let full_params = model.level_cost(model.num_levels() - 1).params;
    let mut levels = Vec::new();
    for (level, tally) in accuracies.iter().enumerate() {
        let cost = model.level_cost(level);
        let (_, exported) = model.extract_level(level);
        let (dense_bytes, sparse_bytes) = export_sizes(model, level)?;
        levels.push(LevelReport {
            level,
            classes: model.level_classes(level),
            accuracy: tally.accuracy(),
            loss: tally.loss(),
            correct: tally.correct,
            total: tally.total,
            params: cost.params,
            density: cost.params as f64 / full_params as f64,
            macs: cost.macs,
            export_bytes: record_bytes(&exported)?.len(),
            latency_ms_b1: measure_latency(model, level, 1, device, 30, 200.0),
            latency_ms_b256: measure_latency(model, level, 256, device, 5, 500.0),
            widths: vec![
                ("conv1".into(), model.conv1.level_dims(level).1),
                ("conv2".into(), model.conv2.level_dims(level).1),
                ("fc1".into(), model.fc1.level_dims(level).1),
                ("fc2".into(), model.level_classes(level)),
            ],
            layers: layer_densities(model, level),
            dense_bytes,
            sparse_bytes,
        });
    }
    Ok(Report {
        model: context.model.into(),
        dataset: context.dataset.into(),
        backend: context.backend.into(),
        levels,
        train_seconds_per_epoch: context.train_seconds_per_epoch,
        method: context.method.into(),
    })
}

impl Report {
    /// Writes the report as pretty JSON (atomically).
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        write_atomic(path, &serde_json::to_vec_pretty(self).expect("report serializes"))
    }

    /// Reads a report.
    pub fn read_json(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(TrainError::io(path))?;
        serde_json::from_slice(&bytes).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })
    }

    /// The report as a Markdown table (also readable on a terminal).
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| level | widths (conv1/conv2/fc1) | accuracy | params | density | MACs/sample | export bytes | latency b1 (ms) | latency b256 (ms) |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        let masked = self.levels.iter().any(|l| l.sparse_bytes < l.dense_bytes);
        for l in &self.levels {
            let widths = l.widths.iter().take(3).map(|(_, w)| w.to_string()).collect::<Vec<_>>().join("/");
            out.push_str(&format!(
                "| {} | {} | {:.4} | {} | {:.3} | {} | {} | {:.3} | {:.2} |\n",
                l.level,
                widths,
                l.accuracy,
                l.params,
                l.density,
                l.macs,
                l.export_bytes,
                l.latency_ms_b1,
                l.latency_ms_b256
            ));
        }
        if masked {
            out.push_str(&self.sparsity_table());
        }
        out
    }

    /// Per-level weight density of every layer and the dense vs sparse export sizes.
    pub fn sparsity_table(&self) -> String {
        let names: Vec<&str> = self
            .levels
            .first()
            .map(|l| l.layers.iter().map(|d| d.name.as_str()).collect())
            .unwrap_or_default();
        let mut out = format!(
            "\n| level | {} | total density | compression | dense bytes | sparse bytes | sparse / dense |\n|---|{}---|---|---|---|---|\n",
            names.join(" | "),
            "---|".repeat(names.len())
        );
        let full = self.levels.last().map_or(1, |l| l.params.max(1));
        for l in &self.levels {
            let layers: Vec<String> =
                l.layers.iter().map(|d| format!("{:.3}", d.kept as f64 / d.total.max(1) as f64)).collect();
            out.push_str(&format!(
                "| {} | {} | {:.4} | {:.2}x | {} | {} | {:.3} |\n",
                l.level,
                layers.join(" | "),
                l.density,
                full as f64 / l.params.max(1) as f64,
                l.dense_bytes,
                l.sparse_bytes,
                l.sparse_bytes as f64 / l.dense_bytes.max(1) as f64
            ));
        }
        out
    }

    /// Writes `report.json` and the accuracy-vs-MACs plot into the run folder.
    pub fn write_to_run(&self, run: &RunDir) -> Result<()> {
        self.write_json(&run.report_path())?;
        crate::plot::plot_accuracy_vs_macs(self, &run.plot_path())
    }
}
