//! Per-level reports: accuracy, active parameters, MACs, exported size and measured latency.

use burn::nn::Linear;
use burn::prelude::*;
use nestednet_models::{NestedNetwork, NestedNetworkConfig};
use serde::{Deserialize, Serialize};

use nestednet_heads::{HierarchyLevelMetrics, hierarchy_metrics};

use crate::error::{Result, TrainError};
use crate::export::level::export_sizes;
use crate::serve::anytime::{EarlyExit, LevelOutputs, level_outputs, takes_level_outputs};
use crate::serve::latency::median_latency_ms;
use crate::trainer::data::{InputOf, LabelledSet};
use crate::trainer::evaluate::evaluate;
use crate::trainer::labels::{HierarchyConfig, LevelLabels};
use crate::trainer::masks::{LayerDensity, layer_densities};
use crate::trainer::record::{record_bytes, write_atomic};

/// One level's line of the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LevelReport {
    /// Level index (0 = core).
    pub level: usize,
    /// Level name: `w0.25-d2` for a lattice level, `L0`, `L1`, … otherwise.
    #[serde(default)]
    pub name: String,
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
    /// A language model's test loss in bits per byte (`loss / ln 2`: its tokens are bytes,
    /// each document's one separator counted as a byte too); `None` for a classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_byte: Option<f64>,
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
    /// Coarse-to-fine metrics per level (accuracy at its own granularity, the full level's
    /// accuracy at that granularity, consistency, mistake severity), with a hierarchy.
    #[serde(default)]
    pub hierarchy: Option<Vec<HierarchyLevelMetrics>>,
    /// Accuracy of the consensus of all levels, by method (`average` = NestedNet-A, `learned` =
    /// NestedNet-L).
    #[serde(default)]
    pub consensus: Vec<(String, f64)>,
    /// Early exit (core first, up a level while unsure) at a sweep of thresholds, when every
    /// level predicts the same classes.
    #[serde(default)]
    pub early_exit: Vec<EarlyExit>,
}

/// The thresholds of the early-exit sweep in reports.
pub const EARLY_EXIT_SWEEP: [f64; 8] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999];

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
    /// The hierarchy of coarse-to-fine levels, if any.
    pub hierarchy: Option<&'a HierarchyConfig>,
    /// The learned consensus layer (NestedNet-L), if one was trained.
    pub consensus_layer: Option<&'a Linear>,
}

/// Builds the report of `model` (evaluation mode, plain device; built from `config`) on
/// `test`.
pub fn build_report<C, S>(
    model: &C::Network,
    config: &C,
    context: ReportContext<'_>,
    test: &S,
    device: &Device,
) -> Result<Report>
where
    C: NestedNetworkConfig,
    S: LabelledSet<Input = InputOf<C>>,
{
    let accuracies = evaluate(model, test, 256, device, context.labels)?;
    // Consensus, early exit and hierarchy metrics are per sample: none for a language model.
    let LevelsTogether { hierarchy, consensus, early_exit } = match takes_level_outputs(test) {
        true => {
            let outputs = level_outputs(model, test, 256, device)?;
            anytime_figures(model, &outputs, context.hierarchy, context.consensus_layer)?
        }
        false => LevelsTogether { hierarchy: None, consensus: Vec::new(), early_exit: Vec::new() },
    };
    let full_params = model.level_cost(model.num_levels() - 1).params;
    // Per-position targets are a language model's next bytes.
    let language_model = test.targets_per_sample() > 1;
    let mut levels = Vec::new();
    for (level, tally) in accuracies.iter().enumerate() {
        let cost = model.level_cost(level);
        // Latency is measured as a level is served: on its weights extracted once.
        let standalone = model.extract_level(level);
        let export_bytes = record_bytes(&standalone)?.len();
        let input = model.input_shape();
        let (dense_bytes, sparse_bytes) = export_sizes(model, config, level)?;
        levels.push(LevelReport {
            level,
            name: model.level_name(level),
            classes: model.level_classes(level),
            accuracy: tally.accuracy(),
            loss: tally.loss(),
            correct: tally.correct,
            total: tally.total,
            params: cost.params,
            density: cost.params as f64 / full_params as f64,
            macs: cost.macs,
            export_bytes,
            latency_ms_b1: median_latency_ms(
                |x| standalone.forward_level(x, 0),
                &input,
                1,
                device,
                30,
                200.0,
            ),
            latency_ms_b256: median_latency_ms(
                |x| standalone.forward_level(x, 0),
                &input,
                256,
                device,
                5,
                500.0,
            ),
            widths: model.level_widths(level),
            layers: layer_densities(model, level),
            dense_bytes,
            sparse_bytes,
            bits_per_byte: language_model.then(|| tally.loss() / core::f64::consts::LN_2),
        });
    }
    Ok(Report {
        model: context.model.into(),
        dataset: context.dataset.into(),
        backend: context.backend.into(),
        levels,
        train_seconds_per_epoch: context.train_seconds_per_epoch,
        method: context.method.into(),
        hierarchy,
        consensus,
        early_exit,
    })
}

/// What the levels give together.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelsTogether {
    /// Coarse-to-fine metrics, with a hierarchy.
    pub hierarchy: Option<Vec<HierarchyLevelMetrics>>,
    /// Consensus accuracy by method.
    pub consensus: Vec<(String, f64)>,
    /// The early-exit sweep, when every level predicts the same classes.
    pub early_exit: Vec<EarlyExit>,
}

/// What the levels give together: hierarchy metrics, consensus accuracy and the early-exit sweep
/// (each where it applies to the model's levels).
pub fn anytime_figures<M: NestedNetwork>(
    model: &M,
    outputs: &LevelOutputs,
    hierarchy: Option<&HierarchyConfig>,
    consensus_layer: Option<&Linear>,
) -> Result<LevelsTogether> {
    let n = outputs.len().max(1) as f64;
    let levels = model.num_levels();
    let metrics = match hierarchy {
        Some(h) => {
            let preds: Vec<Vec<usize>> =
                (0..levels).map(|k| outputs.predictions(k).into_iter().map(|(c, _)| c).collect()).collect();
            Some(hierarchy_metrics(&h.hierarchy, &h.level_depths, &preds, &outputs.fine_labels)?)
        }
        None => None,
    };
    let same_classes = (0..levels).all(|k| model.level_classes(k) == model.level_classes(0));
    let mut consensus = Vec::new();
    if levels > 1 && (hierarchy.is_some() || same_classes) {
        let preds = outputs.consensus_average(hierarchy)?;
        let correct = preds.iter().zip(&outputs.fine_labels).filter(|(p, l)| p == l).count();
        consensus.push(("average".to_string(), correct as f64 / n));
    }
    if let Some(layer) = consensus_layer {
        consensus.push(("learned".to_string(), outputs.accuracy_of(&outputs.consensus_learned(layer)?)));
    }
    let mut early_exit = Vec::new();
    if levels > 1 && same_classes {
        let macs: Vec<usize> = (0..levels).map(|k| model.level_cost(k).macs).collect();
        for t in EARLY_EXIT_SWEEP {
            early_exit.push(outputs.early_exit(t, &macs)?);
        }
    }
    Ok(LevelsTogether { hierarchy: metrics, consensus, early_exit })
}

impl LevelsTogether {
    /// Markdown tables of what there is; `full_macs` is the full level's MACs per sample.
    pub fn table(&self, full_macs: usize) -> String {
        let mut out = String::new();
        if let Some(h) = &self.hierarchy {
            out.push_str(
                "\n| level | depth | accuracy (own granularity) | full level at this granularity | consistency with the full level | mistake severity |\n|---|---|---|---|---|---|\n",
            );
            for m in h {
                out.push_str(&format!(
                    "| {} | {} | {:.4} | {:.4} | {:.4} | {:.3} |\n",
                    m.level, m.depth, m.accuracy, m.full_level_accuracy, m.consistency, m.mistake_severity
                ));
            }
        }
        for (method, accuracy) in &self.consensus {
            out.push_str(&format!("\nconsensus of all levels ({method}): accuracy {accuracy:.4}\n"));
        }
        if !self.early_exit.is_empty() {
            out.push_str(
                "\n| early-exit threshold | accuracy | mean MACs/sample | of the full level's | answered by each level |\n|---|---|---|---|---|\n",
            );
            for e in &self.early_exit {
                let exits: Vec<String> = e.exit_fractions.iter().map(|f| format!("{f:.2}")).collect();
                out.push_str(&format!(
                    "| {} | {:.4} | {:.0} | {:.3} | {} |\n",
                    e.threshold,
                    e.accuracy,
                    e.mean_macs,
                    e.mean_macs / full_macs.max(1) as f64,
                    exits.join(" / ")
                ));
            }
        }
        out
    }
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
        let names = self
            .levels
            .first()
            .map(|l| l.widths.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join("/"))
            .unwrap_or_default();
        let names = if names.is_empty() { String::new() } else { format!(" ({names})") };
        let bpb = self.levels.iter().any(|l| l.bits_per_byte.is_some());
        let (bpb_head, bpb_rule) = if bpb { (" bits/byte |", "---|") } else { ("", "") };
        let mut out = format!(
            "| level | widths{names} | accuracy |{bpb_head} params | density | MACs/sample | export bytes | latency b1 (ms) | latency b256 (ms) |\n\
             |---|---|---|{bpb_rule}---|---|---|---|---|---|\n",
        );
        let masked = self.levels.iter().any(|l| l.sparse_bytes < l.dense_bytes);
        for l in &self.levels {
            let widths = match l.widths.is_empty() {
                true => "-".to_string(),
                false => l.widths.iter().map(|(_, w)| w.to_string()).collect::<Vec<_>>().join("/"),
            };
            let bits = match (bpb, l.bits_per_byte) {
                (false, _) => String::new(),
                (true, Some(b)) => format!(" {b:.4} |"),
                (true, None) => " - |".to_string(),
            };
            out.push_str(&format!(
                "| {} | {} | {:.4} |{bits} {} | {:.3} | {} | {} | {:.3} | {:.2} |\n",
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
        out.push_str(&self.levels_together_table());
        out
    }

    /// Hierarchy metrics, consensus and early exit, as far as the report has them.
    pub fn levels_together_table(&self) -> String {
        let together = LevelsTogether {
            hierarchy: self.hierarchy.clone(),
            consensus: self.consensus.clone(),
            early_exit: self.early_exit.clone(),
        };
        together.table(self.levels.last().map_or(1, |l| l.macs))
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
}
