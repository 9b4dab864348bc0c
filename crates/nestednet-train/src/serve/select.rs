//! Serving a budget: the most accurate level (or Mix'n'Match sub-network) whose cost, measured
//! on the running device, fits a latency, MAC, parameter, size or memory budget.
//!
//! Costs that depend on the device (latency, peak memory) are measured, not looked up: each
//! candidate runs as it is served (its weights extracted once) on random inputs of the asked
//! batch size. Measurements are cached in the run folder per device and batch size
//! (`RUN/measurements/*.json`), so a second call answers at once; a damaged cache is measured
//! again, never trusted.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use nestednet_models::{NestedNetwork, NestedNetworkConfig, NetworkInput, NetworkOutput};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::serve::budget::{Budget, BudgetKind};
use crate::serve::latency::latency_samples_ms;
use crate::serve::report::Report;
use crate::trainer::record::{record_bytes, write_atomic};
use crate::trainer::run::RunDir;
use nestednet_alloc::peak_bytes_during;

/// A servable network of a run: a trained level, or a Mix'n'Match sub-network from the run's
/// search (`RUN/search/front.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its name (`L1`, `w0.5-d2`, `mix-2-0-1`).
    pub name: String,
    /// The trained level, if it is one.
    pub level: Option<usize>,
    /// The sub-network's choice of level per mixable layer, if it is a mix.
    pub mix: Option<Vec<usize>>,
    /// Accuracy on the run's evaluation set (its report, or its search).
    pub accuracy: f64,
    /// Bits per byte on it, for a language model; such candidates are ranked by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_byte: Option<f64>,
    /// Multiply-accumulates per sample.
    pub macs: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Bytes exported (burnpack).
    pub bytes: usize,
}

/// What one candidate costs on one device at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The candidate's name.
    pub name: String,
    /// Its MACs when measured (a cache entry of another network is not reused).
    pub macs: usize,
    /// Its parameters when measured.
    pub params: usize,
    /// Median latency, milliseconds.
    pub latency_ms: f64,
    /// 90th percentile of the latency, milliseconds (what `latency-ms` budgets compare).
    pub latency_p90_ms: f64,
    /// Calls timed.
    pub calls: usize,
    /// Peak inference memory in bytes (model + forward pass), when a
    /// [`PeakAllocator`](nestednet_alloc::PeakAllocator) counts allocations.
    pub memory_bytes: Option<usize>,
}

/// The measurements of a run's candidates on one device at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasurementCache {
    /// The device, as [`device_description`] says.
    pub device: String,
    /// The batch size.
    pub batch_size: usize,
    /// One per candidate measured.
    pub entries: Vec<Measurement>,
}

/// A candidate with its measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredCandidate {
    /// The candidate.
    pub candidate: Candidate,
    /// What it costs here.
    pub measurement: Measurement,
}

impl MeasuredCandidate {
    /// The candidate's figure for `kind`, in the budget's unit (`None`: not measured here).
    pub fn figure(&self, kind: BudgetKind) -> Option<f64> {
        let c = &self.candidate;
        match kind {
            BudgetKind::LatencyMs => Some(self.measurement.latency_p90_ms),
            BudgetKind::Macs => Some(c.macs as f64),
            BudgetKind::Params => Some(c.params as f64),
            BudgetKind::Bytes => Some(c.bytes as f64),
            BudgetKind::MemoryMb => self.measurement.memory_bytes.map(|b| b as f64 / (1024.0 * 1024.0)),
        }
    }

    /// Whether every budget holds.
    pub fn fits(&self, budgets: &[Budget]) -> bool {
        budgets.iter().all(|b| self.figure(b.kind).is_some_and(|v| v <= b.limit))
    }
}

/// The device as the cache keys it: the backend, the device, and for CPU backends the
/// processor's model and thread count (a cache copied to another machine is not reused).
pub fn device_description(backend: &str, device: &Device) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{backend} {device:?} on {cpu} ({threads} threads)")
}

/// `RUN/measurements/<device>-b<batch>.json`.
fn cache_path(run: &RunDir, device: &str, batch: usize) -> PathBuf {
    let slug: String = device
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let slug: String = slug.chars().take(100).collect();
    // Two devices whose slugs collide still get their own files.
    let hash = device
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    run.path().join("measurements").join(format!("{slug}-{:08x}-b{batch}.json", hash as u32))
}

/// The largest measurement cache read (real ones are a few kB).
const MAX_CACHE_BYTES: u64 = 4 << 20;

fn read_cache(path: &Path, device: &str, batch: usize) -> Option<MeasurementCache> {
    if std::fs::metadata(path).ok()?.len() > MAX_CACHE_BYTES {
        return None;
    }
    let cache: MeasurementCache = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let sane = cache.entries.iter().all(|e| {
        e.latency_ms.is_finite() && e.latency_p90_ms.is_finite() && e.latency_ms >= 0.0 && e.calls > 0
    });
    (cache.device == device && cache.batch_size == batch && sane).then_some(cache)
}

/// Measures one servable network at `batch` on `device`: latency over at least 30 calls and
/// ~300 ms after warm-up, and peak memory over one more call.
pub fn measure_network<L: NestedNetwork>(
    standalone: &L,
    name: &str,
    batch: usize,
    device: &Device,
) -> Result<Measurement> {
    if batch == 0 {
        return Err(TrainError::Invalid("the batch size must be at least 1".into()));
    }
    let standalone = standalone.valid();
    let shape = standalone.input_shape();
    let forward = |x: L::Input| standalone.forward_level(x, 0);
    let times = latency_samples_ms(forward, &shape, batch, device, 30, 300.0);
    let x = L::Input::zeros(&shape, batch, device);
    let model_bytes = record_bytes(&standalone)?.len();
    let (_, peak) = peak_bytes_during(|| forward(x).into_logits().into_data());
    let cost = standalone.level_cost(0);
    Ok(Measurement {
        name: name.to_string(),
        macs: cost.macs,
        params: cost.params,
        latency_ms: times[times.len() / 2],
        latency_p90_ms: times[(times.len() * 9).div_ceil(10).saturating_sub(1).min(times.len() - 1)],
        calls: times.len(),
        memory_bytes: peak.map(|p| p + model_bytes),
    })
}

/// The candidates of a run: every trained level with its accuracy from `RUN/report.json`, and
/// the Mix'n'Match front of `RUN/search/front.json` when a search was run.
pub fn run_candidates<M: NestedNetwork>(run: &RunDir, network: &M) -> Result<Vec<Candidate>> {
    let report_path = run.report_path();
    if !report_path.is_file() {
        return Err(TrainError::Run {
            path: run.path().to_path_buf(),
            reason: "has no report.json to take the levels' accuracies from; write it with `nestednet eval --run RUN --report`".into(),
        });
    }
    let report = Report::read_json(&report_path)?;
    if report.levels.len() != network.num_levels() {
        return Err(TrainError::Run {
            path: run.path().to_path_buf(),
            reason: format!(
                "its report.json describes {} levels but the model has {}; rewrite it with `nestednet eval --run RUN --report`",
                report.levels.len(),
                network.num_levels()
            ),
        });
    }
    let mut out: Vec<Candidate> = report
        .levels
        .iter()
        .enumerate()
        .map(|(level, r)| Candidate {
            name: network.level_name(level),
            level: Some(level),
            mix: None,
            accuracy: r.accuracy,
            bits_per_byte: r.bits_per_byte,
            macs: r.macs,
            params: r.params,
            bytes: r.export_bytes,
        })
        .collect();
    if let Some(search) = crate::serve::search::SearchResults::read(run)? {
        out.extend(search.front.iter().filter(|p| p.trained_level.is_none()).map(|p| Candidate {
            name: p.name.clone(),
            level: None,
            mix: Some(p.choice.clone()),
            accuracy: p.accuracy,
            bits_per_byte: p.bits_per_byte,
            macs: p.macs,
            params: p.params,
            bytes: p.bytes,
        }));
    }
    Ok(out)
}

/// Measures every candidate of `network` (a run's model, built from its configuration) at
/// `batch` on `device`, reusing `RUN/measurements` unless `remeasure`, and writes what it
/// measured back there.
pub fn measure_candidates<C: NestedNetworkConfig>(
    run: &RunDir,
    network: &C::Network,
    candidates: &[Candidate],
    backend: &str,
    batch: usize,
    device: &Device,
    remeasure: bool,
) -> Result<Vec<MeasuredCandidate>> {
    let description = device_description(backend, device);
    let path = cache_path(run, &description, batch);
    let mut cache = (!remeasure)
        .then(|| read_cache(&path, &description, batch))
        .flatten()
        .unwrap_or(MeasurementCache { device: description, batch_size: batch, entries: Vec::new() });
    let mut measured = Vec::new();
    let mut changed = false;
    for candidate in candidates {
        let cached = cache
            .entries
            .iter()
            .find(|e| e.name == candidate.name && e.macs == candidate.macs && e.params == candidate.params)
            .cloned();
        let measurement = match cached {
            Some(m) => m,
            None => {
                let m = match (&candidate.mix, candidate.level) {
                    // The latency and memory of a mix do not depend on its batch-norm statistics.
                    (Some(choice), _) => measure_network(
                        &network.mixed(choice)?.extract_level(0),
                        &candidate.name,
                        batch,
                        device,
                    )?,
                    (None, Some(level)) => {
                        measure_network(&network.extract_level(level), &candidate.name, batch, device)?
                    }
                    (None, None) => {
                        return Err(TrainError::Invalid(format!(
                            "candidate {} is neither a level nor a mix",
                            candidate.name
                        )));
                    }
                };
                cache.entries.retain(|e| e.name != candidate.name);
                cache.entries.push(m.clone());
                changed = true;
                m
            }
        };
        measured.push(MeasuredCandidate { candidate: candidate.clone(), measurement });
    }
    if changed {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
        }
        write_atomic(&path, &serde_json::to_vec_pretty(&cache).expect("measurements serialize"))?;
    }
    Ok(measured)
}

/// What [`select_in_run`] found: every candidate with its figures, and the choice (or why
/// none fits).
#[derive(Debug)]
pub struct Selection {
    /// Every candidate of the run, measured on the device.
    pub candidates: Vec<MeasuredCandidate>,
    /// The most accurate candidate within every budget, or the error naming the cheapest.
    pub chosen: Result<MeasuredCandidate>,
}

/// The whole of `nestednet select` as one call: the candidates of the run in `run` (its levels,
/// and its search front's mixes), measured at `batch` on `device` (through the run's cache
/// unless `remeasure`), and the most accurate within `budgets`.
#[allow(clippy::too_many_arguments)]
pub fn select_in_run<C: NestedNetworkConfig>(
    run: &RunDir,
    network: &C::Network,
    budgets: &[Budget],
    backend: &str,
    batch: usize,
    device: &Device,
    remeasure: bool,
) -> Result<Selection> {
    let candidates = run_candidates(run, network)?;
    let measured = measure_candidates::<C>(run, network, &candidates, backend, batch, device, remeasure)?;
    let chosen = select_within(&measured, budgets).cloned();
    Ok(Selection { candidates: measured, chosen })
}

/// The most accurate candidate within every budget (ties: the fewest MACs), or an error naming
/// the cheapest candidate and what it costs when none fits.
pub fn select_within<'a>(
    candidates: &'a [MeasuredCandidate],
    budgets: &[Budget],
) -> Result<&'a MeasuredCandidate> {
    if budgets.is_empty() {
        return Err(TrainError::Invalid("give at least one budget (e.g. latency-ms=2, macs=1e6)".into()));
    }
    if budgets.iter().any(|b| b.kind == BudgetKind::MemoryMb)
        && candidates.iter().any(|c| c.measurement.memory_bytes.is_none())
    {
        return Err(TrainError::Invalid(
            "memory-mb budgets need the peak memory, which this program does not measure: its allocator is not a nestednet PeakAllocator".into(),
        ));
    }
    let best = candidates.iter().filter(|c| c.fits(budgets)).max_by(|a, b| {
        let quality = |c: &Candidate| crate::serve::search::quality(c.accuracy, c.bits_per_byte);
        quality(&a.candidate).total_cmp(&quality(&b.candidate)).then(b.candidate.macs.cmp(&a.candidate.macs))
    });
    best.ok_or_else(|| {
        let first = budgets[0].kind;
        let cheapest = candidates.iter().min_by(|a, b| {
            a.figure(first).unwrap_or(f64::INFINITY).total_cmp(&b.figure(first).unwrap_or(f64::INFINITY))
        });
        let what = cheapest.map_or("there are no candidates".to_string(), |c| {
            format!(
                "the cheapest, {}, has {}",
                c.candidate.name,
                budgets
                    .iter()
                    .map(|b| format!("{} {}", b.kind.name(), format_figure(c.figure(b.kind))))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        TrainError::Budget(format!(
            "no level fits {}: {what}",
            budgets.iter().map(Budget::to_string).collect::<Vec<_>>().join(" and ")
        ))
    })
}

fn format_figure(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
        None => "not measured".into(),
    }
}

/// A table of the measured candidates (markdown), the chosen one marked.
pub fn candidates_table(candidates: &[MeasuredCandidate], chosen: Option<&str>) -> String {
    let bits = candidates.iter().any(|c| c.candidate.bits_per_byte.is_some());
    let (column, rule) = if bits { (" bits/byte |", "---|") } else { ("", "") };
    let mut out = format!(
        "| candidate | accuracy |{column} MACs/sample | params | bytes | latency ms (median / p90) | peak memory MiB |\n|---|---|{rule}---|---|---|---|---|\n",
    );
    for c in candidates {
        let mark = if Some(c.candidate.name.as_str()) == chosen { " **←**" } else { "" };
        let bits = crate::serve::search::bits_cell(bits, c.candidate.bits_per_byte);
        out += &format!(
            "| {}{mark} | {:.4} |{bits} {} | {} | {} | {:.3} / {:.3} | {} |\n",
            c.candidate.name,
            c.candidate.accuracy,
            c.candidate.macs,
            c.candidate.params,
            c.candidate.bytes,
            c.measurement.latency_ms,
            c.measurement.latency_p90_ms,
            c.measurement
                .memory_bytes
                .map_or("not measured".into(), |b| format!("{:.2}", b as f64 / 1048576.0)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(name: &str, macs: usize, accuracy: f64, bits_per_byte: Option<f64>) -> MeasuredCandidate {
        MeasuredCandidate {
            candidate: Candidate {
                name: name.into(),
                level: Some(0),
                mix: None,
                accuracy,
                bits_per_byte,
                macs,
                params: 1,
                bytes: 1,
            },
            measurement: Measurement {
                name: name.into(),
                macs,
                params: 1,
                latency_ms: 1.0,
                latency_p90_ms: 1.0,
                calls: 30,
                memory_bytes: None,
            },
        }
    }

    #[test]
    fn a_language_models_candidates_are_ranked_by_bits_per_byte() {
        let budget: Vec<Budget> = vec!["macs=100".parse().unwrap()];
        // The more accurate next-byte guesser has the worse bits per byte: the bits decide.
        let lm = [measured("L0", 10, 0.30, Some(3.9)), measured("L1", 20, 0.25, Some(3.6))];
        assert_eq!(select_within(&lm, &budget).unwrap().candidate.name, "L1");
        let classifier = [measured("L0", 10, 0.30, None), measured("L1", 20, 0.25, None)];
        assert_eq!(select_within(&classifier, &budget).unwrap().candidate.name, "L0");
        assert!(candidates_table(&lm, Some("L1")).contains("| 3.600 |"));
    }
}
