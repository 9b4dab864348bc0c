//! Mix'n'Match: the sub-networks of a channel-scheduled model beyond its trained levels, each
//! mixable layer at any trained width, searched for the accuracy–cost Pareto front.
//!
//! A sub-network's batch norms come from the levels whose widths they normalise, but their
//! inputs now come from other widths, so their statistics are recalibrated on a few training
//! batches ([`calibrated_mix`], as Slimmable Networks and US-Nets do) before it is scored.
//! Small spaces are searched exhaustively; larger ones by a seeded evolutionary search
//! (crossover and mutation of the current front).

use burn::prelude::*;
use nestednet_data::SplitMix64;
use nestednet_models::{NestedNetwork, NestedNetworkConfig};
use nestednet_nn::{recalibrate_batch_norms, recalibrated_batch_norms};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::export::level::{ExportFormat, export_mix};
use crate::serve::budget::{Budget, BudgetKind};
use crate::trainer::data::{BatchOrder, InputOf, LabelledSet};
use crate::trainer::evaluate::evaluate;
use crate::trainer::labels::LevelLabels;
use crate::trainer::metrics::Progress;
use crate::trainer::record::{record_bytes, write_atomic};
use crate::trainer::run::RunDir;

/// How a Mix'n'Match search runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSettings {
    /// Limits every sub-network must meet (`macs`, `params` or `bytes`: device-independent;
    /// latency and memory are for `select`, on the serving device).
    pub constraints: Vec<Budget>,
    /// Training batches each sub-network's batch norms are recalibrated on.
    pub calibration_batches: usize,
    /// Images per calibration batch.
    pub calibration_batch_size: usize,
    /// Search every combination when there are at most this many; evolve otherwise.
    pub exhaustive_limit: usize,
    /// Evolutionary search: sub-networks scored per generation.
    pub population: usize,
    /// Evolutionary search: generations.
    pub generations: usize,
    /// Seed of the calibration batches and of the evolutionary search.
    pub seed: u64,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            constraints: Vec::new(),
            calibration_batches: 16,
            calibration_batch_size: 128,
            exhaustive_limit: 512,
            population: 16,
            generations: 8,
            seed: 42,
        }
    }
}

impl SearchSettings {
    fn check(&self) -> Result<()> {
        if let Some(b) = self.constraints.iter().find(|b| b.kind.is_measured()) {
            return Err(TrainError::Invalid(format!(
                "the search constraint {b} depends on the serving device: search with macs, params or bytes, then pick with `nestednet select --budget {}=…` on the device",
                b.kind.name()
            )));
        }
        if self.calibration_batches == 0 || self.calibration_batch_size == 0 {
            return Err(TrainError::Invalid(
                "recalibration needs at least one batch of at least one image".into(),
            ));
        }
        if self.population == 0 {
            return Err(TrainError::Invalid("the population must hold at least one sub-network".into()));
        }
        Ok(())
    }
}

/// One scored sub-network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixPoint {
    /// `L2` for a trained level, `mix-2-0-1` for a mix.
    pub name: String,
    /// The level whose width each mixable layer takes.
    pub choice: Vec<usize>,
    /// The trained level it is, if every layer takes the same level's width.
    pub trained_level: Option<usize>,
    /// Accuracy on the evaluation set (next-token accuracy for a language model).
    pub accuracy: f64,
    /// Mean loss in bits per target on the evaluation set, for data whose every position has a
    /// target (a byte language model: bits per byte); such points are ranked by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_byte: Option<f64>,
    /// Multiply-accumulates per sample.
    pub macs: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Bytes exported (burnpack).
    pub bytes: usize,
    /// Where the point was exported (and verified), relative to the run folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
}

/// What a search found, written to `RUN/search/front.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    /// The mixable layers, in the order of each choice.
    pub layers: Vec<String>,
    /// What accuracies were measured on (`test set, 2000 images`).
    pub evaluated_on: String,
    /// How the batch norms were recalibrated.
    pub calibration: String,
    /// Calibration batches per mix (a front point is exported again with the same).
    pub calibration_batches: usize,
    /// Images per calibration batch.
    pub calibration_batch_size: usize,
    /// Seed of the calibration batches.
    pub seed: u64,
    /// Whether every combination was scored.
    pub exhaustive: bool,
    /// The constraints every point meets.
    pub constraints: Vec<Budget>,
    /// Every point scored (the trained levels included).
    pub evaluated: Vec<MixPoint>,
    /// The accuracy–MACs Pareto front of `evaluated`, cheapest first.
    pub front: Vec<MixPoint>,
}

/// The largest `front.json` read (real ones are a few kB to a few MB).
const MAX_RESULTS_BYTES: u64 = 64 << 20;

impl SearchResults {
    /// `RUN/search`.
    pub fn folder(run: &RunDir) -> PathBuf {
        run.path().join("search")
    }

    /// Reads `RUN/search/front.json`, if a search was run.
    pub fn read(run: &RunDir) -> Result<Option<Self>> {
        let path = Self::folder(run).join("front.json");
        if !path.is_file() {
            return Ok(None);
        }
        let len = std::fs::metadata(&path).map_err(TrainError::io(&path))?.len();
        if len > MAX_RESULTS_BYTES {
            return Err(TrainError::Record {
                path,
                message: format!("{len} bytes: a search's results hold at most {MAX_RESULTS_BYTES}"),
            });
        }
        let bytes = std::fs::read(&path).map_err(TrainError::io(&path))?;
        let results: Self = serde_json::from_slice(&bytes)
            .map_err(|source| TrainError::Json { path: path.clone(), source })?;
        let n = results.layers.len();
        if results.front.iter().any(|p| p.choice.len() != n) {
            return Err(TrainError::Record {
                path,
                message: format!("a front point does not choose a level for each of the {n} layers"),
            });
        }
        Ok(Some(results))
    }

    /// Writes `front.json`, `front.md` (the table) and `front.png` (the plot) into `RUN/search`.
    pub fn write(&self, run: &RunDir) -> Result<()> {
        let dir = Self::folder(run);
        std::fs::create_dir_all(&dir).map_err(TrainError::io(&dir))?;
        write_atomic(&dir.join("front.json"), &serde_json::to_vec_pretty(self).expect("results serialize"))?;
        write_atomic(&dir.join("front.md"), self.table().as_bytes())?;
        plot_front(self, &dir.join("front.png"))
    }

    /// The front as a markdown table.
    pub fn table(&self) -> String {
        let bits = self.front.iter().any(|p| p.bits_per_byte.is_some());
        let (what, column, rule) =
            if bits { ("bits per byte", " bits/byte |", "---|") } else { ("accuracy", "", "") };
        let mut out = format!(
            "Pareto front of {what} vs MACs ({} points scored{}; layers {}; measured on {}; {})\n\n| point | levels per layer | accuracy |{column} MACs/sample | params | bytes | kind |\n|---|---|---|{rule}---|---|---|---|\n",
            self.evaluated.len(),
            if self.exhaustive { ", every combination" } else { ", evolutionary search" },
            self.layers.join(", "),
            self.evaluated_on,
            self.calibration,
        );
        for p in &self.front {
            let bits = bits_cell(bits, p.bits_per_byte);
            out += &format!(
                "| {} | {} | {:.4} |{bits} {} | {} | {} | {} |\n",
                p.name,
                p.choice.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
                p.accuracy,
                p.macs,
                p.params,
                p.bytes,
                if p.trained_level.is_some() { "trained level" } else { "mix" }
            );
        }
        out
    }
}

/// The name of a sub-network: `mix-2-0-1`.
pub fn mix_name(choice: &[usize]) -> String {
    format!("mix-{}", choice.iter().map(usize::to_string).collect::<Vec<_>>().join("-"))
}

/// Parses `2,0,1` (or `mix-2-0-1`) as a choice of levels.
pub fn parse_mix(text: &str) -> Result<Vec<usize>> {
    let body =
        text.trim().strip_prefix("mix-").map_or(text.trim().replace('-', ","), |b| b.replace('-', ","));
    body.split(',')
        .map(|p| {
            p.trim().parse::<usize>().map_err(|_| {
                TrainError::Invalid(format!(
                    "`{text}` is not a sub-network: give one level per mixable layer, e.g. 2,0,1"
                ))
            })
        })
        .collect()
}

/// `batches` seeded batches of `batch_size` training samples (shuffled, no augmentation) on
/// `device`: the inputs every sub-network's batch norms are recalibrated on.
pub fn calibration_batches<S: LabelledSet>(
    train: &S,
    batches: usize,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<S::Input>> {
    let order = BatchOrder { batch_size, seed, epoch: 0, shuffle: true, augment: false };
    train.batches(order, device)?.take(batches).map(|b| b.map(|b| b.input)).collect()
}

/// The sub-network `choice` of `network` ([`NestedNetwork::mixed`]) with the batch-norm
/// statistics it sees on `calibration` (see [`calibration_batches`]), in evaluation mode.
pub fn calibrated_mix<N: NestedNetwork>(
    network: &N,
    choice: &[usize],
    calibration: &[N::Input],
) -> Result<N> {
    if calibration.is_empty() {
        return Err(TrainError::Invalid("recalibration needs at least one batch".into()));
    }
    recalibrated(network.mixed(choice)?, calibration)
}

/// `mixed` (a network [`NestedNetwork::mixed`] built) with the batch-norm statistics it sees
/// on `calibration` (one batch only when it has no batch norm: a transformer's layer norms keep
/// no statistics).
fn recalibrated<N: NestedNetwork>(mixed: N, calibration: &[N::Input]) -> Result<N> {
    recalibrate_batch_norms(|| {
        for input in calibration {
            let _ = mixed.forward_level(input.clone(), 0);
            if recalibrated_batch_norms() == 0 {
                break;
            }
        }
    });
    // A fresh copy whose running statistics are read back in full (Burn's running state may
    // lag one update behind otherwise).
    let layers = mixed.mixable_layers().len();
    Ok(mixed.mixed(&vec![0; layers])?.valid())
}

/// Whether a copy of `network`'s core (its mix of `layers` layers all at level 0) updates a
/// batch norm on the first of `calibration`.
fn has_batch_norms<N: NestedNetwork>(network: &N, layers: usize, calibration: &[N::Input]) -> Result<bool> {
    let copy = network.mixed(&vec![0; layers])?;
    Ok(calibration.first().is_some_and(|input| {
        recalibrate_batch_norms(|| {
            let _ = copy.forward_level(input.clone(), 0);
            recalibrated_batch_norms() > 0
        })
    }))
}

/// A table's bits-per-byte cell (` 3.514 |`, ` - |` when not measured), or nothing when the
/// table has no such column.
pub(crate) fn bits_cell(column: bool, bits_per_byte: Option<f64>) -> String {
    match (column, bits_per_byte) {
        (true, Some(b)) => format!(" {b:.3} |"),
        (true, None) => " - |".into(),
        (false, _) => String::new(),
    }
}

/// What a point is ranked by, higher better: its accuracy, or minus its bits per byte where
/// those were measured (a language model's points, whose accuracy is a coarse next-token
/// figure).
pub fn quality(accuracy: f64, bits_per_byte: Option<f64>) -> f64 {
    bits_per_byte.map_or(accuracy, |bits| -bits)
}

impl MixPoint {
    /// What the point is ranked by ([`quality`]).
    pub fn quality(&self) -> f64 {
        quality(self.accuracy, self.bits_per_byte)
    }
}

/// The quality–MACs Pareto front of `points` ([`quality`]: accuracy, or bits per byte), cheapest
/// first: each point better than every point of fewer or equal MACs.
pub fn pareto_front(points: &[MixPoint]) -> Vec<MixPoint> {
    let mut sorted: Vec<&MixPoint> = points.iter().collect();
    sorted.sort_by(|a, b| a.macs.cmp(&b.macs).then(b.quality().total_cmp(&a.quality())));
    let mut front: Vec<MixPoint> = Vec::new();
    for p in sorted {
        if front.last().is_none_or(|last| p.quality() > last.quality()) {
            front.push(p.clone());
        }
    }
    front
}

/// Searches the Mix'n'Match sub-networks of `network` (evaluation mode, plain `device`): each
/// scored on `eval` after recalibration on `train`, within `settings.constraints`. The trained
/// levels are scored as they are (their own statistics).
pub fn search_mixes<N, S>(
    network: &N,
    train: &S,
    eval: &S,
    settings: &SearchSettings,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<SearchResults>
where
    N: NestedNetwork,
    S: LabelledSet<Input = N::Input>,
{
    settings.check()?;
    let layers = network.mixable_layers();
    if layers.is_empty() {
        return Err(TrainError::Model(nestednet_models::ModelError::Unsupported(
            "Mix'n'Match sub-networks in this configuration (only channel levels of unmasked, shared layers mix)".into(),
        )));
    }
    let levels = network.num_levels();
    let classes = network.level_classes(levels - 1);
    if (0..levels).any(|k| network.level_classes(k) != classes) {
        return Err(TrainError::Invalid("every level must predict the same classes to mix them".into()));
    }
    let calibration = calibration_batches(
        train,
        settings.calibration_batches,
        settings.calibration_batch_size,
        settings.seed,
        device,
    )?;
    let batch_norms = has_batch_norms(network, layers.len(), &calibration)?;
    let trained = evaluate(network, eval, 256, device, &LevelLabels::fine(levels))?;
    let mut search = MixSearch {
        network,
        eval,
        settings,
        device,
        calibration,
        trained,
        layers: layers.len(),
        seen: HashSet::new(),
        evaluated: Vec::new(),
    };
    let total = (levels as u128).checked_pow(layers.len() as u32).unwrap_or(u128::MAX);
    let exhaustive = total <= settings.exhaustive_limit as u128;
    if exhaustive {
        search.every_choice(total as usize, progress)?;
    } else {
        search.evolve(progress)?;
    }
    let evaluated = search.evaluated;
    if evaluated.is_empty() {
        return Err(TrainError::Budget(format!(
            "no sub-network meets {}",
            settings.constraints.iter().map(Budget::to_string).collect::<Vec<_>>().join(" and ")
        )));
    }
    let front = pareto_front(&evaluated);
    Ok(SearchResults {
        layers: layers.into_iter().map(|l| l.name).collect(),
        evaluated_on: format!("{} {}", eval.len(), eval.sample_name()),
        calibration: match batch_norms {
            true => format!(
                "batch norms of each mix recalibrated on {} batches of {} training {} (seed {})",
                settings.calibration_batches,
                settings.calibration_batch_size,
                train.sample_name(),
                settings.seed
            ),
            false => "no batch norm to recalibrate".into(),
        },
        calibration_batches: settings.calibration_batches,
        calibration_batch_size: settings.calibration_batch_size,
        seed: settings.seed,
        exhaustive,
        constraints: settings.constraints.clone(),
        evaluated,
        front,
    })
}

/// A search in progress: what scores a sub-network, and the points scored so far.
struct MixSearch<'a, N: NestedNetwork, S> {
    network: &'a N,
    eval: &'a S,
    settings: &'a SearchSettings,
    device: &'a Device,
    calibration: Vec<N::Input>,
    /// The trained levels' tallies on the evaluation set.
    trained: Vec<crate::trainer::metrics::LevelTally>,
    /// Mixable layers.
    layers: usize,
    seen: HashSet<Vec<usize>>,
    evaluated: Vec<MixPoint>,
}

impl<N: NestedNetwork, S: LabelledSet<Input = N::Input>> MixSearch<'_, N, S> {
    /// Whether a sub-network of these costs meets every constraint.
    fn fits(&self, macs: usize, params: usize, bytes: usize) -> bool {
        self.settings.constraints.iter().all(|b| {
            let v = match b.kind {
                BudgetKind::Macs => macs,
                BudgetKind::Params => params,
                _ => bytes,
            };
            v as f64 <= b.limit
        })
    }

    /// The point of `choice` (a trained level as it is; a mix recalibrated and evaluated), or
    /// `None` when it does not fit.
    fn score(&self, choice: &[usize], progress: &mut dyn Progress) -> Result<Option<MixPoint>> {
        let network = self.network;
        if let Some(&k) = choice.first().filter(|&&k| choice.iter().all(|&c| c == k)) {
            let cost = network.level_cost(k);
            let bytes = record_bytes(&network.extract_level(k))?.len();
            return Ok(self.fits(cost.macs, cost.params, bytes).then(|| MixPoint {
                name: network.level_name(k),
                choice: choice.to_vec(),
                trained_level: Some(k),
                accuracy: self.trained[k].accuracy(),
                bits_per_byte: self.bits_per_byte(&self.trained[k]),
                macs: cost.macs,
                params: cost.params,
                bytes,
                export: None,
            }));
        }
        let unscored = network.mixed(choice)?;
        let cost = unscored.level_cost(0);
        let bytes = record_bytes(&unscored.extract_level(0))?.len();
        if !self.fits(cost.macs, cost.params, bytes) {
            return Ok(None);
        }
        let mixed = recalibrated(unscored, &self.calibration)?;
        let tally = evaluate(&mixed, self.eval, 256, self.device, &LevelLabels::fine(1))?;
        let bits_per_byte = self.bits_per_byte(&tally[0]);
        let bits = bits_per_byte.map_or(String::new(), |b| format!(", {b:.3} bits/byte"));
        progress.message(&format!(
            "{}: accuracy {:.4}{bits}, {} MACs",
            mix_name(choice),
            tally[0].accuracy(),
            cost.macs
        ));
        Ok(Some(MixPoint {
            name: mix_name(choice),
            choice: choice.to_vec(),
            trained_level: None,
            accuracy: tally[0].accuracy(),
            bits_per_byte,
            macs: cost.macs,
            params: cost.params,
            bytes,
            export: None,
        }))
    }

    /// The bits per target of `tally`, when every position of the evaluation data has a target.
    fn bits_per_byte(&self, tally: &crate::trainer::metrics::LevelTally) -> Option<f64> {
        (self.eval.targets_per_sample() > 1).then(|| tally.loss() / core::f64::consts::LN_2)
    }

    /// Scores `choice` unless it was scored before.
    fn visit(&mut self, choice: Vec<usize>, progress: &mut dyn Progress) -> Result<()> {
        if self.seen.insert(choice.clone())
            && let Some(point) = self.score(&choice, progress)?
        {
            self.evaluated.push(point);
        }
        Ok(())
    }

    /// Every one of the `total` choices.
    fn every_choice(&mut self, total: usize, progress: &mut dyn Progress) -> Result<()> {
        let levels = self.network.num_levels();
        for index in 0..total {
            let mut rest = index;
            let choice: Vec<usize> = (0..self.layers)
                .map(|_| {
                    let k = rest % levels;
                    rest /= levels;
                    k
                })
                .collect();
            self.visit(choice, progress)?;
        }
        Ok(())
    }

    /// The seeded evolution: the trained levels and a random population, then generations of
    /// children of the current front (crossover, and about one layer in each child mutated).
    fn evolve(&mut self, progress: &mut dyn Progress) -> Result<()> {
        let (levels, layers, settings) = (self.network.num_levels(), self.layers, self.settings);
        let mut rng = SplitMix64::for_stream(&[settings.seed, 0x4d69_784e]);
        for k in 0..levels {
            self.visit(vec![k; layers], progress)?;
        }
        for _ in 0..settings.population {
            let choice = (0..layers).map(|_| rng.below(levels)).collect();
            self.visit(choice, progress)?;
        }
        for _ in 0..settings.generations {
            let parents = pareto_front(&self.evaluated);
            if parents.is_empty() {
                break;
            }
            for _ in 0..settings.population {
                let a = &parents[rng.below(parents.len())].choice;
                let b = &parents[rng.below(parents.len())].choice;
                let child: Vec<usize> = a
                    .iter()
                    .zip(b)
                    .map(|(&x, &y)| {
                        let gene = if rng.below(2) == 0 { x } else { y };
                        if rng.below(layers) == 0 { rng.below(levels) } else { gene }
                    })
                    .collect();
                self.visit(child, progress)?;
            }
        }
        Ok(())
    }
}

/// Exports every mix on the front of `results` as a verified burnpack into `RUN/search`
/// (recalibrated again on `calibration`, the batches the search used), recording each path.
pub fn export_front<C: NestedNetworkConfig>(
    run: &RunDir,
    network: &C::Network,
    config: &C,
    results: &mut SearchResults,
    calibration: &[InputOf<C>],
) -> Result<Vec<crate::export::level::ExportInfo>> {
    let dir = SearchResults::folder(run);
    let mut infos = Vec::new();
    for point in results.front.iter_mut().filter(|p| p.trained_level.is_none()) {
        let mixed = calibrated_mix(network, &point.choice, calibration)?;
        let file = format!("{}.bpk", point.name);
        let info =
            export_mix(&mixed, config, &point.choice, &point.name, &dir.join(&file), ExportFormat::Burnpack)?;
        point.export = Some(format!("search/{file}"));
        infos.push(info);
    }
    Ok(infos)
}

/// Draws every scored point (grey), the front (blue line) and the trained levels (red).
fn plot_front(results: &SearchResults, path: &Path) -> Result<()> {
    crate::serve::plot::register_font();
    let err = |e: String| TrainError::Plot { path: path.to_path_buf(), message: e };
    let max_macs = results.evaluated.iter().map(|p| p.macs).max().unwrap_or(1) as f64 / 1e6;
    let bits = results.evaluated.iter().all(|p| p.bits_per_byte.is_some());
    let y = |p: &MixPoint| if bits { p.bits_per_byte.unwrap_or(0.0) } else { p.accuracy * 100.0 };
    let (low, high) =
        results.evaluated.iter().map(y).fold((f64::INFINITY, 0.0_f64), |(l, h), v| (l.min(v), h.max(v)));
    let (what, range) = match bits {
        true => ("bits per byte", (low * 0.95)..(high * 1.05).max(low + 0.1)),
        false => ("accuracy (%)", (low - 1.0).floor().max(0.0)..100.0),
    };
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let caption = format!("Mix'n'Match: {what} vs MACs (front in blue, trained levels in red)");
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_macs * 1.1, range)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("MACs per sample (millions)")
        .y_desc(what)
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let xy = |p: &MixPoint| (p.macs as f64 / 1e6, y(p));
    chart
        .draw_series(
            results.evaluated.iter().map(|p| Circle::new(xy(p), 3, RGBColor(150, 150, 150).filled())),
        )
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(results.front.iter().map(xy), BLUE.stroke_width(2)))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(results.front.iter().map(|p| Circle::new(xy(p), 5, BLUE.filled())))
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(results.evaluated.iter().filter(|p| p.trained_level.is_some()).map(|p| {
            EmptyElement::at(xy(p))
                + Circle::new((0, 0), 6, RED.filled())
                + Text::new(p.name.clone(), (8, -14), ("sans-serif", 15))
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, macs: usize, accuracy: f64) -> MixPoint {
        MixPoint {
            name: name.into(),
            choice: vec![0],
            trained_level: None,
            accuracy,
            bits_per_byte: None,
            macs,
            params: 0,
            bytes: 0,
            export: None,
        }
    }

    #[test]
    fn the_front_keeps_points_no_cheaper_point_beats() {
        let points = [
            point("a", 10, 0.9),
            point("b", 20, 0.85),
            point("c", 20, 0.95),
            point("d", 30, 0.95),
            point("e", 5, 0.5),
        ];
        let names: Vec<String> = pareto_front(&points).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["e", "a", "c"]);
        // A language model's points are ranked by bits per byte, lower better, whatever their
        // next-token accuracy.
        let bits = |name: &str, macs: usize, accuracy: f64, b: f64| MixPoint {
            bits_per_byte: Some(b),
            ..point(name, macs, accuracy)
        };
        let points = [bits("a", 10, 0.3, 4.0), bits("b", 20, 0.2, 3.5), bits("c", 30, 0.4, 3.6)];
        let names: Vec<String> = pareto_front(&points).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(parse_mix("2,0,1").unwrap(), [2, 0, 1]);
        assert_eq!(parse_mix("mix-2-0-1").unwrap(), [2, 0, 1]);
        assert_eq!(mix_name(&[2, 0, 1]), "mix-2-0-1");
        assert!(parse_mix("2,x").is_err());
    }
}
