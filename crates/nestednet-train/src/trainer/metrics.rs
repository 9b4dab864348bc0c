//! Per-level metrics and progress reporting.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// Running sums of one level's loss and accuracy over an epoch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LevelTally {
    /// Sum of batch-mean losses weighted by batch size.
    pub loss_sum: f64,
    /// Correct predictions.
    pub correct: usize,
    /// Samples seen.
    pub total: usize,
}

impl LevelTally {
    /// Adds one batch.
    pub fn add(&mut self, mean_loss: f64, correct: usize, batch: usize) {
        self.loss_sum += mean_loss * batch as f64;
        self.correct += correct;
        self.total += batch;
    }

    /// Mean loss per sample.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.total.max(1) as f64
    }

    /// Accuracy as a fraction.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

/// What one epoch did, per level.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// Epoch index (0-based).
    pub epoch: usize,
    /// Mean training loss per level.
    pub train_loss: Vec<f64>,
    /// Training accuracy per level (on the batches as trained, in training mode).
    pub train_accuracy: Vec<f64>,
    /// Test accuracy per level after the epoch, when a test set was given.
    pub test_accuracy: Option<Vec<f64>>,
    /// Wall-clock seconds of the training pass (data, forward, backward, optimizer), without
    /// evaluation and checkpointing.
    pub train_seconds: f64,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// What the epoch trained.
    #[serde(default = "joint_phase")]
    pub phase: Phase,
    /// The levels whose losses it trained (the others' training figures are empty).
    #[serde(default)]
    pub trained_levels: Vec<usize>,
}

fn joint_phase() -> Phase {
    Phase::Joint
}

/// Receives training progress.
pub trait Progress {
    /// An epoch of `batches` batches starts.
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize);
    /// A batch finished; `levels` holds the epoch's running tallies.
    fn batch_done(&mut self, levels: &[LevelTally]);
    /// The epoch (and its evaluation) finished.
    fn epoch_end(&mut self, metrics: &EpochMetrics);
    /// A message for the user.
    fn message(&mut self, text: &str);
}

/// Reports nothing (tests, library use).
#[derive(Debug, Default)]
pub struct QuietProgress;

impl Progress for QuietProgress {
    fn epoch_start(&mut self, _: usize, _: usize, _: usize) {}
    fn batch_done(&mut self, _: &[LevelTally]) {}
    fn epoch_end(&mut self, _: &EpochMetrics) {}
    fn message(&mut self, _: &str) {}
}

/// A terminal progress bar with per-level loss and accuracy, and one summary line per epoch.
#[derive(Debug, Default)]
pub struct BarProgress {
    bar: Option<ProgressBar>,
}

/// `L0 0.312/91.2% | L1 ...` for a set of tallies.
pub fn format_levels(levels: &[LevelTally]) -> String {
    levels
        .iter()
        .enumerate()
        .filter(|(_, t)| t.total > 0)
        .map(|(k, t)| format!("L{k} loss {:.3} acc {:.1}%", t.loss(), 100.0 * t.accuracy()))
        .collect::<Vec<_>>()
        .join(" | ")
}

impl Progress for BarProgress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {elapsed_precise} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    fn batch_done(&mut self, levels: &[LevelTally]) {
        if let Some(bar) = &self.bar {
            bar.set_message(format_levels(levels));
            bar.inc(1);
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let levels = m
            .train_loss
            .iter()
            .zip(&m.train_accuracy)
            .enumerate()
            .map(|(k, (loss, acc))| {
                let test = m
                    .test_accuracy
                    .as_ref()
                    .map_or(String::new(), |t| format!(", test {:.2}%", 100.0 * t[k]));
                if m.trained_levels.is_empty() || m.trained_levels.contains(&k) {
                    format!("L{k}: loss {loss:.4}, train {:.2}%{test}", 100.0 * acc)
                } else {
                    format!("L{k}: not trained{test}")
                }
            })
            .collect::<Vec<_>>()
            .join(" | ");
        println!("epoch {} ({:.1} s): {levels}", m.epoch + 1, m.train_seconds);
    }

    fn message(&mut self, text: &str) {
        // A hidden bar (output not a terminal: logs, CI) would drop the line.
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(text),
            _ => println!("{text}"),
        }
    }
}

/// What an epoch of a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", content = "level", rename_all = "lowercase")]
pub enum Phase {
    /// Learn level `level`'s mask: that level alone, with the relaxed mask.
    Mask(usize),
    /// Dense training before magnitude pruning.
    Dense,
    /// Every level jointly with fixed masks (Eq. 5).
    Joint,
}

impl Phase {
    /// The levels whose losses this phase trains.
    pub fn levels(&self, num_levels: usize) -> Vec<usize> {
        match *self {
            Self::Mask(level) => vec![level],
            Self::Dense | Self::Joint => (0..num_levels).collect(),
        }
    }
}

impl core::fmt::Display for Phase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Mask(level) => write!(f, "learning level {level}'s mask"),
            Self::Dense => write!(f, "dense pre-training"),
            Self::Joint => write!(f, "joint training"),
        }
    }
}
