//! Model families: a nested network built by name for the data it will train on.
//!
//! A family is a model's configuration type implementing [`ModelFamily`]: the names it
//! answers to and how a [`ModelRequest`] (name, the data's sample shape and classes, levels,
//! per-level classes, un-nested layers) becomes a configuration. The built-in families are
//! `mnist-cnn` ([`NestedMnistCnnConfig`](crate::NestedMnistCnnConfig)) and the residual
//! networks ([`NestedResNetConfig`](crate::NestedResNetConfig)); the jobs layer registers them
//! beside any family a user's crate defines.

use burn::prelude::*;
use nestednet_schedule::{LatticeSpec, LevelSpec};

use crate::ModelError;
use crate::network::{InputShape, NestedNetwork, NestedNetworkConfig, NetworkInput};

/// How the levels of a requested model are laid out.
#[derive(Debug, Clone, PartialEq)]
pub enum LevelRequest {
    /// Channel scheduling: width ratios (`0.25,0.5,1`) or explicit per-layer channel counts.
    Channels(LevelSpec),
    /// Channel and layer scheduling: a lattice of (width, blocks per stage) pairs (residual
    /// networks).
    Lattice(LatticeSpec),
}

impl LevelRequest {
    /// Number of levels requested.
    pub fn num_levels(&self) -> usize {
        match self {
            Self::Channels(spec) => spec.num_levels(),
            Self::Lattice(lattice) => lattice.num_levels(),
        }
    }
}

/// Everything the registry needs to build a model: which one, for what data, with which
/// levels and heads. The data decide the input shape and the classes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest<S = [usize; 3]> {
    /// Registry name (`mnist-cnn`, `mnist-resnet`, `resnet-56`, `wrn-32-4`, `resnet-18`, …).
    pub name: String,
    /// What one sample of the data looks like (images: `[channels, height, width]`), from the
    /// data set.
    pub input_shape: S,
    /// Classes of the data set (what the full level predicts).
    pub num_classes: usize,
    /// Classes each level predicts, core first (coarse-to-fine levels); empty: every level
    /// predicts `num_classes`.
    pub level_classes: Vec<usize>,
    /// The levels.
    pub levels: LevelRequest,
    /// Give every level its own first convolution (the paper's un-nested first layer).
    pub unnested_first_conv: bool,
    /// Give every level its own output layer (the paper's un-nested output layer).
    pub unnested_output: bool,
}

impl<S: Clone> ModelRequest<S> {
    /// The model `name` for samples of `input_shape` and `num_classes` classes, with `levels`,
    /// every level predicting every class, nothing un-nested.
    pub fn new(name: impl Into<String>, input_shape: S, num_classes: usize, levels: LevelRequest) -> Self {
        Self {
            name: name.into(),
            input_shape,
            num_classes,
            level_classes: Vec::new(),
            levels,
            unnested_first_conv: false,
            unnested_output: false,
        }
    }

    /// Channel scheduling by parameter budget: width ratios (one per level, core first) whose
    /// levels hold, as nearly as whole channels allow, the fractions `densities` of the full
    /// level's parameters (`0.5, 1.0` = "2 levels at 2× and 1× compression"), for the model
    /// this request names. Densities must lie in (0, 1], grow strictly and end at 1. Only
    /// shapes are used: nothing is drawn on `device`.
    pub fn ratios_for_densities<F>(&self, densities: &[f64], device: &Device) -> crate::Result<LevelSpec>
    where
        F: ModelFamily,
        F::Network: NestedNetwork<Input: NetworkInput<Shape = S>>,
    {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if densities.is_empty() {
            return bad("give at least one density".into());
        }
        for (level, &d) in densities.iter().enumerate() {
            if !(d > 0.0 && d <= 1.0) {
                return bad(format!("density of level {level} is {d}: it must be in (0, 1]"));
            }
            if level > 0 && d <= densities[level - 1] {
                return bad(format!(
                    "density of level {level} ({d}) is not larger than level {}'s ({}): channel levels must grow",
                    level - 1,
                    densities[level - 1]
                ));
            }
        }
        if densities[densities.len() - 1] != 1.0 {
            return bad("the full (last) level has density 1".into());
        }
        // Plain levels: per-level heads or stems would change what a level holds.
        let with_levels = |ratios: Vec<f64>| ModelRequest {
            levels: LevelRequest::Channels(LevelSpec::Ratios(ratios)),
            level_classes: Vec::new(),
            unnested_first_conv: false,
            unnested_output: false,
            ..self.clone()
        };
        // The core's parameters of a 2-level network at ratio r, over the full network's
        // (None if r leaves a layer empty).
        let fraction = |r: f64| {
            let config = F::from_request(&with_levels(vec![r, 1.0]))?.ok()?;
            let network = config.init_network(device).ok()?;
            Some(network.level_cost(0).params as f64 / network.level_cost(1).params as f64)
        };
        let mut ratios = Vec::new();
        for &d in &densities[..densities.len() - 1] {
            // The level's parameters grow with r: bisect for the smallest r reaching d.
            let (mut lo, mut hi) = (0.0f64, 1.0f64);
            for _ in 0..50 {
                let mid = 0.5 * (lo + hi);
                match fraction(mid) {
                    Some(f) if f >= d => hi = mid,
                    _ => lo = mid,
                }
            }
            // Whole channels: take whichever neighbour of the crossing is closer to d.
            let below = fraction(lo).map_or(f64::INFINITY, |f| (f - d).abs());
            let above = fraction(hi).map_or(f64::INFINITY, |f| (f - d).abs());
            ratios.push(if below < above { lo } else { hi });
        }
        ratios.push(1.0);
        let spec = LevelSpec::Ratios(ratios);
        let request = with_levels(match &spec {
            LevelSpec::Ratios(r) => r.clone(),
            LevelSpec::Channels(_) => unreachable!("ratios"),
        });
        F::from_request(&request).ok_or_else(|| self.unknown(F::names()))??;
        Ok(spec)
    }

    /// The error for a model name no family of `names` answers to.
    pub fn unknown(&self, names: &[&str]) -> ModelError {
        ModelError::UnknownModel { name: self.name.clone(), known: names.join(", ") }
    }
}

impl ModelRequest<[usize; 3]> {
    /// The input-size error for `model` with `reason`.
    pub fn input_error(&self, model: &str, reason: impl Into<String>) -> ModelError {
        let [channels, height, width] = self.input_shape;
        ModelError::InputSize { model: model.into(), channels, height, width, reason: reason.into() }
    }
}

/// Checks coarse-to-fine class counts against `levels` levels whose full level predicts
/// `num_classes` (nothing to check when `level_classes` is empty).
pub(crate) fn check_level_classes(
    level_classes: &[usize],
    levels: usize,
    num_classes: usize,
) -> crate::Result<()> {
    if level_classes.is_empty() {
        return Ok(());
    }
    let bad = |m: String| Err(ModelError::Invalid(m));
    if level_classes.len() != levels {
        return bad(format!("level_classes gives {} class counts for {levels} levels", level_classes.len()));
    }
    if level_classes[levels - 1] != num_classes {
        return bad(format!(
            "the full level predicts {} classes but num_classes is {num_classes}",
            level_classes[levels - 1]
        ));
    }
    Ok(())
}

/// A family of nested networks built by name from a [`ModelRequest`] (`mnist-cnn`,
/// `resnet-N`, a user's own): what the jobs layer's registry, the settings and the command line
/// need of a model. Implemented by the model's configuration, in the model's own file.
pub trait ModelFamily: NestedNetworkConfig + Sized {
    /// The family's key in run folders (`config.json` records it) and in a registry: unique
    /// among the families one binary registers, and stable (a renamed key leaves its runs
    /// unreadable).
    const FAMILY: &'static str;

    /// The names it answers to, for help texts and errors (`resnet-N`, `wrn-D-K`, …).
    fn names() -> &'static [&'static str];

    /// Whether the model `name` is one of this family's.
    fn claims(name: &str) -> bool;

    /// The configuration `request` asks for, or `None` when `request.name` is not one of this
    /// family's names ([`claims`](Self::claims)). Data the model cannot take are an error
    /// naming why.
    fn from_request(request: &ModelRequest<InputShape<Self::Network>>) -> Option<crate::Result<Self>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NestedMnistCnnConfig, NestedResNetConfig, measure_level};

    fn request(name: &str, shape: [usize; 3], levels: LevelRequest) -> ModelRequest {
        ModelRequest::new(name, shape, 10, levels)
    }

    fn ratios(r: &[f64]) -> LevelRequest {
        LevelRequest::Channels(LevelSpec::Ratios(r.to_vec()))
    }

    /// The network `F` builds for `r`, on `device`.
    fn build<F: ModelFamily>(r: &ModelRequest, device: &Device) -> crate::Result<F::Network>
    where
        F::Network: NestedNetwork<Input: NetworkInput<Shape = [usize; 3]>>,
    {
        F::from_request(r).expect("the family's name")?.init_network(device)
    }

    /// Measured costs and classes against the network's own counts.
    fn check_costs<M: NestedNetwork>(model: &M, what: &str) {
        for level in 0..model.num_levels() {
            let (measured, classes) = measure_level(model, level);
            assert_eq!(measured, model.level_cost(level), "{what} level {level}");
            assert_eq!(classes, model.level_classes(level), "{what} level {level}");
        }
    }

    /// The costs the layers record during a forward pass (what a user's network gets for
    /// free) equal the built-in models' own counts, which other tests check against hand
    /// counts, in every head and stem form.
    #[test]
    fn measured_costs_equal_the_models_own_counts() {
        let device = Device::flex();
        let lattice = LevelRequest::Lattice("0.5,1;1,2".parse().unwrap());
        let mut requests = vec![
            request("mnist-cnn", [1, 28, 28], ratios(&[0.25, 0.5, 1.0])),
            request("mnist-resnet", [1, 28, 28], lattice.clone()),
            request("wrn-16-2", [3, 32, 32], ratios(&[0.5, 1.0])),
            request("resnet-18", [3, 64, 64], ratios(&[0.25, 1.0])),
        ];
        for mut r in requests.clone() {
            r.unnested_first_conv = true;
            r.unnested_output = true;
            requests.push(r);
        }
        let mut coarse = request("mnist-resnet", [1, 28, 28], lattice);
        coarse.level_classes = vec![2, 3, 5, 10];
        requests.push(coarse);
        for r in requests {
            let what = format!("{} (unnested {})", r.name, r.unnested_output);
            match NestedMnistCnnConfig::claims(&r.name) {
                true => check_costs(&build::<NestedMnistCnnConfig>(&r, &device).unwrap(), &what),
                false => check_costs(&build::<NestedResNetConfig>(&r, &device).unwrap(), &what),
            }
        }
    }

    /// Channel widths for parameter budgets, for a family `F` whose model `name` is.
    fn budgets<F: ModelFamily>(name: &str, device: &Device)
    where
        F::Network: NestedNetwork<Input: NetworkInput<Shape = [usize; 3]>>,
    {
        let r = request(name, [1, 28, 28], ratios(&[1.0]));
        let spec = r.ratios_for_densities::<F>(&[0.25, 0.5, 1.0], device).unwrap();
        let model =
            build::<F>(&ModelRequest { levels: LevelRequest::Channels(spec), ..r.clone() }, device).unwrap();
        let full = model.level_cost(2).params as f64;
        for (level, d) in [(0, 0.25), (1, 0.5)] {
            let got = model.level_cost(level).params as f64 / full;
            assert!((got - d).abs() < 0.02, "{name} level {level}: {got}");
        }
        for bad in [&[0.5, 0.5, 1.0][..], &[0.0, 1.0], &[0.5, 0.9], &[]] {
            assert!(r.ratios_for_densities::<F>(bad, device).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn channel_levels_from_parameter_budgets() {
        let device = Device::flex();
        budgets::<NestedMnistCnnConfig>("mnist-cnn", &device);
        budgets::<NestedResNetConfig>("mnist-resnet", &device);
    }

    #[test]
    fn the_data_decides_the_input_and_bad_requests_are_named() {
        let device = Device::flex();
        // 8x8 digits: mnist-cnn and the CIFAR-style residual networks take them.
        let cnn =
            build::<NestedMnistCnnConfig>(&request("mnist-cnn", [1, 8, 8], ratios(&[0.5, 1.0])), &device);
        assert_eq!(cnn.unwrap().forward_level(Tensor::zeros([2, 1, 8, 8], &device), 0).dims(), [2, 10]);
        for name in ["mnist-resnet", "resnet-20", "wrn-16-2"] {
            let model =
                build::<NestedResNetConfig>(&request(name, [1, 8, 8], ratios(&[0.5, 1.0])), &device).unwrap();
            assert_eq!(model.input_shape(), [1, 8, 8]);
            let out = model.forward_level(Tensor::zeros([2, 1, 8, 8], &device), 0);
            assert_eq!(out.dims(), [2, 10], "{name}");
        }
        let resnet = |r: ModelRequest| build::<NestedResNetConfig>(&r, &device).unwrap_err().to_string();
        let cnn = |r: ModelRequest| build::<NestedMnistCnnConfig>(&r, &device).unwrap_err().to_string();
        let e = resnet(request("resnet-18", [1, 8, 8], ratios(&[1.0])));
        assert!(e.contains("resnet-18 cannot take images of 1x8x8") && e.contains("32x32"), "{e}");
        let e = cnn(request("mnist-cnn", [1, 3, 3], ratios(&[1.0])));
        assert!(e.contains("at least 4x4"), "{e}");
        let e = resnet(request("wrn-16-2", [3, 32, 16], ratios(&[1.0])));
        assert!(e.contains("square"), "{e}");
        let e = cnn(request("mnist-cnn", [1, 28, 28], LevelRequest::Lattice("1;1".parse().unwrap())));
        assert!(e.contains("no residual blocks"), "{e}");
        assert!(
            NestedMnistCnnConfig::from_request(&request("vgg-16", [3, 32, 32], ratios(&[1.0]))).is_none()
        );
        assert!(NestedResNetConfig::from_request(&request("vgg-16", [3, 32, 32], ratios(&[1.0]))).is_none());
    }

    #[test]
    fn residual_levels_export_under_torchvision_names_and_find_their_blocks() {
        let device = Device::flex();
        let model =
            build::<NestedResNetConfig>(&request("resnet-18", [3, 64, 64], ratios(&[0.5, 1.0])), &device)
                .unwrap();
        let level = model.extract_level(0);
        let name = |path: &str| level.export_name(path);
        assert_eq!(name("stem.shared.weight"), "conv1.weight");
        assert_eq!(name("stem_norm.norms.0.weight"), "bn1.weight");
        assert_eq!(name("blocks.2.conv1.weight"), "layer2.0.conv1.weight");
        assert_eq!(name("blocks.3.bn2.norms.0.running_var"), "layer2.1.bn2.running_var");
        assert_eq!(name("blocks.2.shortcut_conv.weight"), "layer2.0.downsample.0.weight");
        assert_eq!(name("blocks.2.shortcut_norm.norms.0.bias"), "layer2.0.downsample.1.bias");
        assert_eq!(name("fc.shared.weight"), "fc.weight");
        let lattice =
            request("mnist-resnet", [1, 28, 28], LevelRequest::Lattice("0.5,1;1,2".parse().unwrap()));
        let model = build::<NestedResNetConfig>(&lattice, &device).unwrap();
        assert!(model.level_uses_layer("stage2.block1.conv1", 0));
        assert!(!model.level_uses_layer("stage2.block2.conv1", 0));
        assert!(model.level_uses_layer("stage2.block2.conv1", 1));
        assert_eq!(model.find_level("w0.5-d2").unwrap(), 1);
        assert_eq!(model.find_level("1,1").unwrap(), 2);
        assert_eq!(model.find_level("3").unwrap(), 3);
        let e = model.find_level("w2-d1").unwrap_err().to_string();
        assert!(e.contains("no level `w2-d1`") && e.contains("w0.5-d1"), "{e}");
    }
}
