//! Budgets: what a served network may cost (`latency-ms=2`, `macs<=1e6`, `memory-mb=64`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetKind {
    /// Latency of one forward pass at the batch size, milliseconds (its 90th percentile over
    /// the measured calls: 9 calls in 10 finish within it).
    LatencyMs,
    /// Multiply-accumulates per sample.
    Macs,
    /// Trainable parameters.
    Params,
    /// Bytes of the exported model (burnpack).
    Bytes,
    /// Peak memory of inference at the batch size, MiB: the model's bytes plus the most bytes
    /// its forward pass holds at once (measured by a [`PeakAllocator`](nestednet_alloc::PeakAllocator)).
    MemoryMb,
}

impl BudgetKind {
    const ALL: [(BudgetKind, &'static str); 5] = [
        (Self::LatencyMs, "latency-ms"),
        (Self::Macs, "macs"),
        (Self::Params, "params"),
        (Self::Bytes, "bytes"),
        (Self::MemoryMb, "memory-mb"),
    ];

    /// The name on the command line (`latency-ms`).
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(k, _)| *k == self).map_or("?", |(_, n)| n)
    }

    /// Whether the figure depends on the device (and is measured there).
    pub fn is_measured(self) -> bool {
        matches!(self, Self::LatencyMs | Self::MemoryMb)
    }
}

/// One limit: `latency-ms=2`, `macs<=1e6`, `memory-mb=64`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// What is limited.
    pub kind: BudgetKind,
    /// The most it may be.
    pub limit: f64,
}

impl FromStr for Budget {
    type Err = TrainError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: String| TrainError::Invalid(format!("budget `{text}`: {why}"));
        let (name, value) = text
            .split_once("<=")
            .or_else(|| text.split_once('='))
            .ok_or_else(|| bad("write it as NAME=LIMIT (or NAME<=LIMIT), e.g. latency-ms=2".into()))?;
        let kind =
            BudgetKind::ALL.iter().find(|(_, n)| *n == name.trim()).map(|(k, _)| *k).ok_or_else(|| {
                bad(format!(
                    "unknown budget `{}` (known: {})",
                    name.trim(),
                    BudgetKind::ALL.map(|(_, n)| n).join(", ")
                ))
            })?;
        let limit: f64 =
            value.trim().parse().map_err(|_| bad(format!("`{}` is not a number", value.trim())))?;
        if !(limit.is_finite() && limit > 0.0) {
            return Err(bad("the limit must be a positive number".into()));
        }
        Ok(Budget { kind, limit })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<={}", self.kind.name(), self.limit)
    }
}
