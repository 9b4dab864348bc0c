//! Weight connection learning and its baselines: how the nested unstructured masks of a run
//! are made (paper, Sec. 4.1 and Table 1).
//!
//! - [`MaskMethod::Learned`] (NestedNet): one mask-learning stage per level, **from the full
//!   level down to the core**. Stage `s` trains level `s` alone with the relaxed mask
//!   `tanh(γ · relu(|w| − τ_s))` (Eq. 3) on the weights level `s + 1` kept, then binarises it
//!   ([`BINARY_MASK_THRESHOLD`](nestednet_prune::BINARY_MASK_THRESHOLD)); the weights it drops
//!   move up to level `s + 1` in the level map, so the masks nest by construction. Stage
//!   `s − 1` then starts from these weights. The shared weights outside level `s`'s mask are
//!   *not* zeroed (higher levels still use them); they simply get no gradient in later stages.
//!   After the last (core) stage, every level is trained jointly with the fixed masks (Eq. 5).
//!   With **density** targets, τ_s is the global magnitude threshold that keeps the requested
//!   fraction, re-derived at the start of every epoch, every `recalibrate_every` steps and
//!   once more just before binarising, so the measured density matches the request; with
//!   **threshold** targets, τ_s is used as given (one global value per level, as in the paper).
//! - [`MaskMethod::Random`] (the paper's ablation): random nested masks of the same densities,
//!   drawn once at initialisation, then joint training.
//! - [`MaskMethod::Magnitude`] (Han et al.): dense training for `stage_epochs`, one-shot
//!   magnitude pruning to each level's density, then fine-tuning with the masks fixed. With a
//!   single level this is exactly Han et al.'s prune-and-retrain, one network per ratio.
//!
//! Densities count every trainable parameter of a level (as compression ratios do): the
//! weights of the layers that stay dense, biases and batch norms are never pruned, and the
//! masked weights make up the rest.

use nestednet_models::NestedNetwork;
use nestednet_prune::{MaskTargets, PruneError, SoftThreshold, threshold_keeping};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::trainer::metrics::Phase;
use crate::trainer::metrics::Progress;
use crate::trainer::phases::{CheckpointState, EpochPhase, PhaseHooks};

/// How a run's masks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMethod {
    /// NestedNet's weight connection learning (relaxed masks, full level to core).
    Learned,
    /// Random nested masks of the same densities (ablation).
    Random,
    /// Magnitude pruning after dense training, then fine-tuning (Han et al.).
    Magnitude,
}

impl core::str::FromStr for MaskMethod {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "learned" | "weights" => Ok(Self::Learned),
            "random" => Ok(Self::Random),
            "magnitude" => Ok(Self::Magnitude),
            other => Err(TrainError::Invalid(format!(
                "unknown mask method `{other}` (use weights, random or magnitude)"
            ))),
        }
    }
}

/// The weight-mask part of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskingConfig {
    /// How the masks are made.
    pub method: MaskMethod,
    /// What each level must reach (densities or thresholds), core first.
    pub targets: MaskTargets,
    /// Slope γ of the relaxed mask.
    pub gamma: f64,
    /// Epochs of each mask-learning stage (`Learned`) or of dense pre-training (`Magnitude`).
    pub stage_epochs: usize,
    /// With density targets, steps between re-derivations of τ during a stage.
    pub recalibrate_every: usize,
    /// The layers that carry masks, by the network's names (see
    /// [`NestedNetwork::weight_layers`]); `None`: every weight layer but the first and the last
    /// (the paper keeps them dense).
    #[serde(default)]
    pub masked_layers: Option<Vec<String>>,
}

impl MaskingConfig {
    /// Masks made by `method` for `targets`, with the paper's γ, one epoch per stage and τ
    /// re-derived every 25 steps.
    pub fn new(method: MaskMethod, targets: MaskTargets) -> Self {
        Self {
            method,
            targets,
            gamma: nestednet_prune::DEFAULT_GAMMA,
            stage_epochs: 1,
            recalibrate_every: 25,
            masked_layers: None,
        }
    }

    /// The masks on the layers `names` instead of the default ones.
    pub fn with_masked_layers(mut self, names: Vec<String>) -> Self {
        self.masked_layers = Some(names);
        self
    }

    /// The layers a network of weight layers `layers` (in forward order) keeps dense by
    /// default: the first and the last, as the paper does (none of fewer than three).
    pub fn default_dense_layers(layers: &[String]) -> Vec<String> {
        match (layers.first(), layers.last()) {
            (Some(first), Some(last)) if layers.len() > 2 => vec![first.clone(), last.clone()],
            _ => Vec::new(),
        }
    }

    /// The masks on every one of `layers` but the `dense` ones (`none`: every layer masked);
    /// the name of a dense layer that is not among `layers` is the error.
    pub fn with_dense_layers(
        self,
        layers: &[String],
        dense: &[String],
    ) -> core::result::Result<Self, String> {
        let dense: Vec<&String> = dense.iter().filter(|d| *d != "none").collect();
        if let Some(bad) = dense.iter().find(|d| !layers.contains(d)) {
            return Err(bad.to_string());
        }
        let masked = layers.iter().filter(|l| !dense.contains(l)).cloned().collect();
        Ok(self.with_masked_layers(masked))
    }

    /// The layers of `network` that carry masks, by name, in forward order.
    pub fn layer_names<M: NestedNetwork>(&self, network: &M) -> Vec<String> {
        let all: Vec<String> = network.weight_layers().into_iter().map(|(name, _)| name).collect();
        match &self.masked_layers {
            Some(names) => all.into_iter().filter(|n| names.contains(n)).collect(),
            None if all.len() > 2 => all[1..all.len() - 1].to_vec(),
            None => Vec::new(),
        }
    }

    /// Checks that every named layer exists in `network` and can carry a mask, and that at
    /// least one does.
    pub fn check_layers<M: NestedNetwork>(&self, network: &M) -> Result<()> {
        let layers = network.weight_layers();
        let known = || layers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        if layers.is_empty() {
            return Err(TrainError::Invalid(
                "masks were requested but the model lists no weight layers that could carry one".into(),
            ));
        }
        for name in self.masked_layers.iter().flatten() {
            match layers.iter().find(|(n, _)| n == name) {
                None => {
                    return Err(TrainError::Invalid(format!(
                        "unknown layer `{name}` among the masked layers (the model has {})",
                        known()
                    )));
                }
                Some((_, layer)) if !layer.can_mask() => {
                    return Err(TrainError::Invalid(format!(
                        "layer `{name}` is un-nested (its levels share no weight) and cannot carry a nested mask"
                    )));
                }
                Some(_) => {}
            }
        }
        if self.layer_names(network).is_empty() {
            return Err(TrainError::Invalid(
                "masks were requested but the model masks no layer (name the masked layers)".into(),
            ));
        }
        Ok(())
    }
}

/// Turns the (dense) nested masks on in the layers `masking` names (see
/// [`MaskingConfig::layer_names`]), after checking them. Training does this right after
/// building the network, before its weights are drawn or loaded, so a checkpoint's level
/// maps always find their layers.
pub fn enable_masks<M: NestedNetwork>(network: &mut M, masking: &MaskingConfig) -> Result<()> {
    masking.check_layers(network)?;
    let names = masking.layer_names(network);
    for (name, layer) in network.weight_layers_mut() {
        if names.contains(&name) {
            layer.enable_mask();
        }
    }
    Ok(())
}

impl MaskingConfig {
    /// Checks the settings against a model of `num_levels` levels.
    pub fn validate(&self, num_levels: usize) -> Result<()> {
        self.targets.validate(num_levels)?;
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(TrainError::Invalid(format!(
                "mask slope gamma must be positive, got {}",
                self.gamma
            )));
        }
        if self.method != MaskMethod::Random && self.stage_epochs == 0 {
            return Err(TrainError::Invalid("mask stages need at least 1 epoch (stage_epochs)".into()));
        }
        if self.recalibrate_every == 0 {
            return Err(TrainError::Invalid("recalibrate_every must be at least 1 step".into()));
        }
        if self.method != MaskMethod::Learned && !matches!(self.targets, MaskTargets::Densities(_)) {
            return Err(TrainError::Invalid(
                "random and magnitude masks are given by densities, not thresholds".into(),
            ));
        }
        Ok(())
    }
}

/// The phase of every epoch of a run: mask stages (full level first) or dense pre-training,
/// then `joint_epochs` of joint training.
pub fn epoch_plan(masking: Option<&MaskingConfig>, num_levels: usize, joint_epochs: usize) -> Vec<Phase> {
    let mut plan = Vec::new();
    match masking {
        Some(m) if m.method == MaskMethod::Learned => {
            for level in (0..num_levels).rev() {
                plan.extend(std::iter::repeat_n(Phase::Mask(level), m.stage_epochs));
            }
        }
        Some(m) if m.method == MaskMethod::Magnitude => {
            plan.extend(std::iter::repeat_n(Phase::Dense, m.stage_epochs));
        }
        _ => {}
    }
    plan.extend(std::iter::repeat_n(Phase::Joint, joint_epochs));
    plan
}

/// The weights of the masked layers, and how many weights a level must keep in them.
struct MaskBudget {
    /// Host magnitudes of each masked layer's weights (flat).
    magnitudes: Vec<Vec<f32>>,
    /// Each masked layer's level map (flat).
    maps: Vec<Vec<i64>>,
}

fn masked_budget<M: NestedNetwork>(model: &M, level: usize) -> MaskBudget {
    let mut magnitudes = Vec::new();
    let mut maps = Vec::new();
    for (name, layer) in model.weight_layers() {
        if !model.level_uses_layer(&name, level) {
            continue;
        }
        if let Some(mask) = layer.mask() {
            magnitudes.push(layer.weight_values().into_iter().map(f32::abs).collect());
            maps.push(mask.level_map_values());
        }
    }
    MaskBudget { magnitudes, maps }
}

/// How many masked weights level `level` must keep to reach `density` of its parameters.
fn weights_to_keep<M: NestedNetwork>(model: &M, level: usize, density: f64) -> Result<usize> {
    let mut kept = 0;
    let mut block = 0;
    for (name, layer) in model.weight_layers() {
        if !model.level_uses_layer(&name, level) {
            continue;
        }
        if let Some(mask) = layer.mask() {
            kept += mask.count(level)?;
            block += layer.block_weights(level);
        }
    }
    // Parameters of the level's channel block, and those that are never pruned.
    let cost = model.level_cost(level).params;
    let total = cost - kept + block;
    let fixed = cost - kept;
    let wanted = density * total as f64;
    if wanted + 0.5 < fixed as f64 {
        return Err(
            PruneError::DensityUnreachable { level, density, minimum: fixed as f64 / total as f64 }.into()
        );
    }
    Ok(((wanted - fixed as f64).round().max(0.0) as usize).min(block))
}

/// Checks, before any training, that every density target can be reached.
pub fn check_reachable<M: NestedNetwork>(model: &M, masking: &MaskingConfig) -> Result<()> {
    if !model.weight_layers().iter().any(|(_, l)| l.mask().is_some()) {
        return Err(TrainError::Invalid("masks were requested but no layer of the model is masked".into()));
    }
    if let MaskTargets::Densities(densities) = &masking.targets {
        for (level, &d) in densities.iter().enumerate() {
            weights_to_keep(model, level, d)?;
        }
    }
    Ok(())
}

/// τ for level `level`: the given threshold, or the global magnitude threshold that keeps the
/// requested density among the weights level `level` currently uses.
pub fn level_threshold<M: NestedNetwork>(model: &M, masking: &MaskingConfig, level: usize) -> Result<f64> {
    match &masking.targets {
        MaskTargets::Thresholds(t) => Ok(t[level]),
        MaskTargets::Densities(d) => {
            let keep = weights_to_keep(model, level, d[level])?;
            let budget = masked_budget(model, level);
            let mut eligible: Vec<f32> = budget
                .magnitudes
                .iter()
                .zip(&budget.maps)
                .flat_map(|(m, map)| m.iter().zip(map).filter(|(_, v)| **v <= level as i64).map(|(m, _)| *m))
                .collect();
            Ok(threshold_keeping(&mut eligible, keep, masking.gamma))
        }
    }
}

/// Turns the relaxed mask of `level` on in every masked layer.
pub fn set_soft_threshold<M: NestedNetwork>(model: &mut M, soft: Option<SoftThreshold>) {
    for (_, layer) in model.weight_layers_mut() {
        if let Some(mask) = layer.mask_mut() {
            mask.soft = soft;
        }
    }
}

/// Binarises level `level`'s relaxed mask: the weights it uses whose magnitude falls below
/// `τ + atanh(0.5)/γ` move up to level `level + 1`. Weights no level uses any more are set to
/// zero. Returns the number of weights dropped.
pub fn binarise_level<M: NestedNetwork>(model: &mut M, soft: SoftThreshold) -> Result<usize> {
    let mut dropped = 0;
    let used: Vec<bool> =
        model.weight_layers().iter().map(|(name, _)| model.level_uses_layer(name, soft.level)).collect();
    for ((_, layer), used) in model.weight_layers_mut().into_iter().zip(used) {
        if !used {
            continue;
        }
        let magnitudes: Vec<f32> = match layer.mask() {
            Some(_) => layer.weight_values().into_iter().map(f32::abs).collect(),
            None => continue,
        };
        let mask = layer.mask_mut().expect("masked layer");
        mask.soft = None;
        dropped += mask.drop_from_level(soft.level, |i| soft.keeps(magnitudes[i]))?;
        layer.zero_pruned();
    }
    Ok(dropped)
}

/// One-shot magnitude pruning of every level to its density (nested, because a larger
/// density means a lower global threshold).
pub fn prune_by_magnitude<M: NestedNetwork>(model: &mut M, masking: &MaskingConfig) -> Result<()> {
    for level in (0..model.num_levels()).rev() {
        let tau = level_threshold(model, masking, level)?;
        binarise_level(model, SoftThreshold { level, tau, gamma: masking.gamma })?;
    }
    Ok(())
}

/// Random nested masks of the requested densities. Each masked layer keeps the same fraction
/// of its block at every level (`seed` + layer index make the draws).
pub fn randomize_masks<M: NestedNetwork>(model: &mut M, masking: &MaskingConfig, seed: u64) -> Result<()> {
    let MaskTargets::Densities(densities) = &masking.targets else {
        return Err(TrainError::Invalid("random masks are given by densities".into()));
    };
    // Per level, the fraction of the masked weights to keep so that the level's parameters
    // reach the requested density.
    let mut fractions = Vec::new();
    for (level, &d) in densities.iter().enumerate() {
        let block: usize = model
            .weight_layers()
            .iter()
            .filter(|(name, l)| l.mask().is_some() && model.level_uses_layer(name, level))
            .map(|(_, l)| l.block_weights(level))
            .sum();
        fractions.push((weights_to_keep(model, level, d)? as f64 / block.max(1) as f64).min(1.0));
    }
    // Rounding can make a fraction shrink by an ulp; keep them non-decreasing.
    for k in 1..fractions.len() {
        fractions[k] = fractions[k].max(fractions[k - 1]);
    }
    if let Some(last) = fractions.last_mut() {
        *last = if *last >= 1.0 - 1e-12 { 1.0 } else { *last };
    }
    for (index, (_, layer)) in model.weight_layers_mut().into_iter().enumerate() {
        if let Some(mask) = layer.mask_mut() {
            mask.randomize(&fractions, seed.wrapping_add(index as u64))?;
            layer.zero_pruned();
        }
    }
    Ok(())
}

/// One masked layer's share of a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDensity {
    /// Layer name.
    pub name: String,
    /// Weights the level uses.
    pub kept: usize,
    /// Weights in the level's channel block.
    pub total: usize,
}

/// Per-layer weight densities of `level`, over the layers it runs (layers without a mask are
/// dense).
pub fn layer_densities<M: NestedNetwork>(model: &M, level: usize) -> Vec<LayerDensity> {
    model
        .weight_layers()
        .into_iter()
        .filter(|(name, _)| model.level_uses_layer(name, level))
        .map(|(name, layer)| {
            let total = layer.block_weights(level);
            let kept = layer.mask().map_or(total, |m| m.count(level).expect("valid level"));
            LayerDensity { name, kept, total }
        })
        .collect()
}

/// Everything training does with a run's masks, phase by phase: the masks on when a network is
/// built, random masks drawn when it is fresh, the targets checked before training, and the
/// trainer's phase hooks (magnitude pruning when joint training starts; the relaxed mask of a
/// mask stage set, re-derived and binarised). Nothing when the run has no masks.
pub(crate) struct MaskStages<'a> {
    masking: Option<&'a MaskingConfig>,
    /// The relaxed mask of the stage in progress.
    soft: Option<SoftThreshold>,
}

impl<'a> MaskStages<'a> {
    /// The stages of `masking` (`None`: no masks).
    pub(crate) fn new(masking: Option<&'a MaskingConfig>) -> Self {
        Self { masking, soft: None }
    }

    /// A fresh network's masks: random nested masks are drawn once, from `seed`.
    pub(crate) fn on_fresh<M: NestedNetwork>(&self, model: &mut M, seed: u64) -> Result<()> {
        match self.masking {
            Some(m) if m.method == MaskMethod::Random => randomize_masks(model, m, seed),
            _ => Ok(()),
        }
    }

    /// Checks, before training, that the masks' targets can be reached.
    pub(crate) fn check<M: NestedNetwork>(&self, model: &M) -> Result<()> {
        match self.masking {
            Some(m) => check_reachable(model, m),
            None => Ok(()),
        }
    }
}

impl<M: NestedNetwork> PhaseHooks<M> for MaskStages<'_> {
    /// Magnitude pruning when joint training starts after dense training; a mask stage's
    /// relaxed mask, its τ derived at every epoch start.
    fn epoch_start(&mut self, model: &mut M, at: EpochPhase, progress: &mut dyn Progress) -> Result<()> {
        let Some(m) = self.masking else { return Ok(()) };
        if at.phase == Phase::Joint && at.starts_phase && m.method == MaskMethod::Magnitude && at.epoch > 0 {
            prune_by_magnitude(model, m)?;
            progress.message(&format!("pruned by magnitude to {}", m.targets));
        }
        self.soft = match at.phase {
            Phase::Mask(level) => {
                let soft = SoftThreshold { level, tau: level_threshold(model, m, level)?, gamma: m.gamma };
                set_soft_threshold(model, Some(soft));
                Some(soft)
            }
            _ => None,
        };
        Ok(())
    }

    /// With density targets, τ follows the weights as they move.
    fn after_step(&mut self, model: &mut M, global_step: usize) -> Result<()> {
        if let (Some(m), Some(s)) = (self.masking, self.soft.as_mut())
            && matches!(m.targets, MaskTargets::Densities(_))
            && global_step.is_multiple_of(m.recalibrate_every)
        {
            s.tau = level_threshold(model, m, s.level)?;
            set_soft_threshold(model, Some(*s));
        }
        Ok(())
    }

    /// At a mask stage's end, the relaxed mask binarised (τ re-derived first for densities)
    /// and recorded in the checkpoint state.
    fn epoch_end(
        &mut self,
        model: &mut M,
        at: EpochPhase,
        state: &mut CheckpointState,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let (Some(m), Some(mut s), true) = (self.masking, self.soft, at.ends_phase) else { return Ok(()) };
        if matches!(m.targets, MaskTargets::Densities(_)) {
            s.tau = level_threshold(model, m, s.level)?;
        }
        let dropped = binarise_level(model, s)?;
        if s.tau.is_finite() {
            progress.message(&format!(
                "level {}: binarised the mask at tau = {:.6} ({dropped} weights dropped)",
                s.level, s.tau
            ));
            state.thresholds.push((s.level, s.tau));
        } else {
            progress.message(&format!("level {}: every weight kept (density 1)", s.level));
        }
        Ok(())
    }
}
