//! Training settings as a user writes them: command-line flags, a TOML or JSON config file, or
//! the `settings` a run recorded in its `config.json`. One struct holds them all
//! ([`TrainSettings`], every field optional); [`TrainSettings::resolve`]
//! (`crate::jobs::resolve`) turns them, with the data, into a job of a model family, filling
//! every default, and records the resolved values so that the run can be repeated from its
//! own `config.json`.

use std::path::{Path, PathBuf};

use nestednet_data::{Augmentation, DataSource, DatasetKind};
use nestednet_schedule::LevelSpec;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::jobs::backend::{Backend, DeviceList};
use crate::trainer::config::{LrSchedule, OptimizerConfig, RunConfig};

/// What the levels are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Adaptive deep compression: levels of growing width (channel scheduling) or density
    /// (weight masks), every level predicting every class (default levels `0.25,0.5,1`).
    Compression,
    /// Coarse-to-fine classification: level `k` predicts depth `k` of a class hierarchy, with
    /// its own output layer (default: one level per depth, each twice as wide as the last).
    Hierarchy,
    /// Knowledge distillation: compact levels learned jointly with the full one (default
    /// levels: widths `0.25,1` and, for residual networks, depths `⌈2/5⌉` of the blocks and all
    /// of them; add `--distill A` for in-place distillation, `--teacher RUN` for a teacher).
    Distillation,
}

/// How the levels differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Channel scheduling (and layer scheduling, with depths): each level uses the leading
    /// channels of every layer.
    Channels,
    /// NestedNet's weight connection learning: nested unstructured masks learned from the full
    /// level down to the core.
    Weights,
    /// Random nested masks of the same densities (the paper's ablation).
    Random,
    /// Han et al.'s magnitude pruning, one network per density (each in `OUT/density-D/`).
    Magnitude,
}

/// A layer that can be un-nested: every level gets its own copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum UnnestedLayer {
    /// The first convolution (the image input is never split; this gives every level its own
    /// first layer).
    FirstConv,
    /// The output layer.
    Output,
}

/// Images resized to `HEIGHTxWIDTH` (or `SIDE` for squares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize(pub [usize; 2]);

impl core::str::FromStr for ImageSize {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        let num = |t: &str| {
            t.trim().parse::<usize>().map_err(|_| {
                TrainError::Invalid(format!(
                    "image size `{s}`: give SIDE or HEIGHTxWIDTH in pixels (e.g. 32, 224x224)"
                ))
            })
        };
        match s.split_once(['x', 'X']) {
            Some((h, w)) => Ok(Self([num(h)?, num(w)?])),
            None => {
                let side = num(s)?;
                Ok(Self([side, side]))
            }
        }
    }
}

impl core::fmt::Display for ImageSize {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}x{}", self.0[0], self.0[1])
    }
}

/// `Option<T>` as its textual form (`Display` / `FromStr`) in config files.
mod as_text {
    use core::fmt::Display;
    use core::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Every setting of a training run, as flags, a config file or a run's recorded settings.
///
/// All fields are optional: what is left out takes its default when the settings are
/// [resolved](Self::resolve). Flags override a config file ([`merged_over`](Self::merged_over)).
/// In a config file the keys are these field names (`task = "hierarchy"`, `epochs = 200`,
/// `levels = "0.25,0.5,1"`, `densities = [0.33, 0.5, 1.0]`, `lr_schedule = "cosine"`); an
/// unknown key is an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct TrainSettings {
    /// Task: compression (default), hierarchy or distillation.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Model: mnist-cnn (default), mnist-resnet, resnet-N (resnet-20, resnet-56, ...),
    /// wrn-D-K (wrn-16-2, wrn-32-4, ...), resnet-18, vit-tiny, vit-small (images), text-tiny,
    /// text-small (text classifiers) or lm-tiny, lm-small (byte language models). Its input and
    /// classes come from the data.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Data format: mnist (idx files, any size; default for image models), cifar10, cifar100,
    /// image-folder (`DIR/train/<class>/*.png|jpg`, `DIR/test/<class>/*`), text-folder
    /// (`DIR/train/<class>/*.txt`, `DIR/test/<class>/*.txt`; default for text classifiers) or
    /// text-corpus (`DIR/train/*.txt`, `DIR/test/*.txt`; default for language models).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetKind>,
    /// Folder holding the data set's files.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Image folders: resize every image to SIDE or HEIGHTxWIDTH (default: the first image's
    /// size).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub image_size: Option<ImageSize>,
    /// Text: tokens per sample, the model's context (default 128). Documents of a text folder
    /// are cut into windows of it (the last one padded, dropped when under a quarter full); a
    /// corpus is read in consecutive windows of it.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
    /// Levels as width ratios (`0.25,0.5,1.0`) or, for mnist-cnn, channel counts
    /// (`conv1=8,16,32;conv2=16,32,64;fc1=32,64,128`).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub levels: Option<LevelSpec>,
    /// Width ratios of a lattice of levels (with --depths), e.g. 0.25,1.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<f64>>,
    /// Blocks per stage of a residual lattice's levels, e.g. 2,5 (the last: the network's).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depths: Option<Vec<usize>>,
    /// The lattice's trained levels by name (w0.25-d2,w1-d5); default: every pair.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<String>,
    /// Layers every level gets its own copy of (un-nested, as the paper's residual set-ups):
    /// first-conv, output. Default: none, every layer nested.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unnested: Option<Vec<UnnestedLayer>>,
    /// Class hierarchy file (.json or .csv) for --task hierarchy; default: the data set's
    /// built-in one (MNIST: digits by shape; CIFAR-100: its 20 super-classes).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hierarchy: Option<PathBuf>,
    /// How the levels differ: channels (default), weights (learned nested masks), random
    /// (random nested masks) or magnitude (Han et al., one network per density).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Fraction of parameters each level keeps, core first (e.g. 0.33,0.5,1.0). With
    /// --method channels, the widths are chosen to hold these fractions.
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub densities: Option<Vec<f64>>,
    /// Compression ratio of each level, core first (3,2,1 = densities 1/3, 1/2, 1).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Vec<f64>>,
    /// Global magnitude threshold of each level, core first (method weights; e.g. 0.03,0.015,0).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f64>>,
    /// Layers that keep all their weights under masks (`none` to mask every layer; default:
    /// the first and the last weight layer).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense_layers: Option<Vec<String>>,
    /// Epochs of each mask-learning stage (weights) or of dense pre-training (magnitude);
    /// default 1.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_epochs: Option<usize>,
    /// Slope γ of the relaxed mask tanh(γ·relu(|w|−τ)); default 1e5.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Training recipe every unset optimizer, learning-rate, schedule, batch-size, epoch and
    /// augmentation setting comes from; default: the model's own (`nestednet train --help`
    /// lists them). The run records which one it used.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// Epochs (of joint training, after any mask stages); default: the recipe's.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Batch size; default: the recipe's.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Seed of initialisation, data order and augmentation; default 42.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Optimizer: adam or sgd; default: the recipe's. Another optimizer than the recipe's
    /// takes its own learning rate, momentum and weight decay defaults (Adam: 1e-3, weight
    /// decay 0; SGD: 0.1, momentum 0.9, weight decay 5e-4) unless they are given.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerConfig>,
    /// Learning rate; default: the recipe's.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Learning-rate schedule: `constant`, `step:EVERY:GAMMA` or `cosine[:MIN_LR]`; default:
    /// the recipe's.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub lr_schedule: Option<LrSchedule>,
    /// SGD momentum; default: the recipe's.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// L2 weight decay; default: the recipe's.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// Training-time augmentation: usual (the data set's: none for MNIST and image folders,
    /// crop and flip for CIFAR), none, crop or crop-flip; default: the recipe's.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augmentation>,
    /// Weights of the level losses, core first (default: equal).
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ','))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_weights: Option<Vec<f64>>,
    /// In-place distillation: the lower levels also learn the full level's softened outputs,
    /// with this weight α of the distillation term (loss (1−α)·CE + α·T²·KL).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<f64>,
    /// Distillation temperature T; default 4.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Run folder of an external teacher whose full level every level learns from (with
    /// --distill as its weight α; default 0.5).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher: Option<PathBuf>,
    /// Hold out this fraction of the training set (the last images of idx and CIFAR files;
    /// spread over an image folder's classes or a text's documents) and report on it in
    /// place of the test set: to choose settings without looking at the test set.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_split: Option<f64>,
    /// Mix'n'Match training: also train this many random sub-networks (each layer at a random
    /// level's width) in every step, so that `nestednet search` finds good ones (channel
    /// levels only; default 0).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix_training: Option<usize>,
    /// Start from these weights instead of a seeded draw: a record of the same nested model
    /// (a run's model.bpk, or the nestified.bpk `nestednet nestify` writes), to fine-tune it.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Train on N training samples only: the first N images of idx or CIFAR files, or N spread
    /// evenly over an image folder's classes or a text's documents (stored class by class).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Stop after N optimizer steps, without checkpoint or report (checks that a
    /// configuration builds, loads its data and trains).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Backend: flex, ndarray, wgpu, tch or cuda (must be compiled in; default: $BURN_DEVICE,
    /// else the first compiled).
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub device: Option<Backend>,
    /// Data-parallel training on several devices, e.g. `flex,flex`, `cuda:0,cuda:1` or
    /// `cuda:0=3,cuda:1=1` (`=share`: each device's part of every batch; default equal). The
    /// first device holds the network and evaluates; gradients are gathered and summed there.
    /// Batch norm statistics are per device's shard.
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(default, with = "as_text", skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceList>,
    /// With --devices: sum the gradients with Burn's DDP all-reduce inside the backward pass
    /// (NCCL; `cuda` devices only in Burn 0.22.1) instead of gathering them on the main device.
    #[cfg_attr(feature = "clap", arg(long, num_args = 0..=1, default_missing_value = "true"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ddp: Option<bool>,
}

/// Applies `$f` to every field name of [`TrainSettings`].
macro_rules! each_setting {
    ($f:ident) => {
        $f!(
            task,
            model,
            dataset,
            data_dir,
            image_size,
            context,
            levels,
            widths,
            depths,
            pairs,
            unnested,
            hierarchy,
            method,
            densities,
            compression,
            thresholds,
            dense_layers,
            stage_epochs,
            gamma,
            recipe,
            epochs,
            batch_size,
            seed,
            optimizer,
            lr,
            lr_schedule,
            momentum,
            weight_decay,
            augment,
            loss_weights,
            distill,
            temperature,
            teacher,
            validation_split,
            init_from,
            mix_training,
            train_limit,
            max_steps,
            device,
            devices,
            ddp
        )
    };
}

impl TrainSettings {
    /// Reads settings from a file: TOML (`.toml`), or JSON, either plain settings or a run's
    /// `config.json` (whose recorded `settings` are used). Unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
        let bad = |message: String| TrainError::Invalid(format!("config file {}: {message}", path.display()));
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            return toml::from_str(&text).map_err(|e| bad(e.to_string()));
        }
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|source| TrainError::Json { path: path.to_path_buf(), source })?;
        match value.get("format_version") {
            // A run's config.json.
            Some(_) => match value.get("settings") {
                Some(settings) => serde_json::from_value(settings.clone()).map_err(|e| bad(e.to_string())),
                None => Err(bad(
                    "this run's config.json records no settings (it was made through the library): it cannot be repeated with --config".into(),
                )),
            },
            None => serde_json::from_value(value).map_err(|e| bad(e.to_string())),
        }
    }

    /// The settings `config` recorded (`None`: a run made through the library, which records
    /// none); a damaged record is an error naming the setting.
    pub fn recorded_in<C>(config: &RunConfig<C>) -> Result<Option<Self>> {
        config
            .settings
            .as_ref()
            .map(|value| {
                serde_json::from_value(value.clone())
                    .map_err(|e| TrainError::Invalid(format!("the run's recorded settings: {e}")))
            })
            .transpose()
    }

    /// These settings as a run records them (`RunConfig::settings`). Through their text, so
    /// that a value keeps the digits it is written with (`serde_json::to_value` would widen an
    /// `f32` weight decay of 5e-4 to 0.0005000000237487257).
    pub fn to_record(&self) -> serde_json::Value {
        let text = serde_json::to_string(self).expect("settings serialize");
        serde_json::from_str(&text).expect("settings parse back")
    }

    /// Where the data of the run `config` came from: as it recorded them, or, for runs that
    /// recorded only their settings, as those say.
    pub fn data_of<C>(config: &RunConfig<C>) -> Result<Option<DataSource>> {
        if let Some(data) = &config.data {
            return Ok(Some(data.clone()));
        }
        Ok(Self::recorded_in(config)?.and_then(|s| {
            Some(DataSource {
                kind: s.dataset.unwrap_or(config.training.dataset),
                dir: s.data_dir.clone()?,
                image_size: s.image_size.map(|size| size.0),
                validation_split: s.validation_split,
                context: s.context,
            })
        }))
    }

    /// These settings, with every setting they leave out taken from `base` (flags over a
    /// config file).
    pub fn merged_over(self, base: TrainSettings) -> TrainSettings {
        macro_rules! merge {
            ($($field:ident),*) => {
                TrainSettings { $($field: self.$field.or(base.$field)),* }
            };
        }
        each_setting!(merge)
    }

    /// The recipe's parts these settings give themselves (flag names), e.g. `["lr", "epochs"]`.
    pub fn recipe_overrides(&self) -> Vec<&'static str> {
        [
            ("optimizer", self.optimizer.is_some()),
            ("lr", self.lr.is_some()),
            ("momentum", self.momentum.is_some()),
            ("weight-decay", self.weight_decay.is_some()),
            ("lr-schedule", self.lr_schedule.is_some()),
            ("batch-size", self.batch_size.is_some()),
            ("epochs", self.epochs.is_some()),
            ("augment", self.augment.is_some()),
            ("loss-weights", self.loss_weights.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// The settings given here that differ from `stored` (a run's recorded settings), by name,
    /// except those a resumed run may change: `epochs` (to train longer), `device`, `devices`,
    /// `ddp` and `data_dir`.
    pub fn differences(&self, stored: &TrainSettings) -> Vec<String> {
        let mut out = Vec::new();
        macro_rules! compare {
            ($($field:ident),*) => {
                $(if !["epochs", "device", "devices", "ddp", "data_dir"].contains(&stringify!($field))
                    && self.$field.is_some() && self.$field != stored.$field
                {
                    out.push(stringify!($field).replace('_', "-"));
                })*
            };
        }
        each_setting!(compare);
        out
    }
}

/// The kebab-case name of a settings enum.
pub(crate) fn text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("run.toml");
        std::fs::write(
            &toml,
            "task = \"hierarchy\"\nmodel = \"mnist-resnet\"\nepochs = 3\nlevels = \"0.5,1\"\nlr_schedule = \"cosine\"\ndensities = [0.5, 1.0]\n",
        )
        .unwrap();
        let file = TrainSettings::from_file(&toml).unwrap();
        assert_eq!(file.task, Some(Task::Hierarchy));
        assert_eq!(file.levels, Some("0.5,1".parse().unwrap()));
        assert_eq!(file.lr_schedule, Some(LrSchedule::Cosine { min_lr: 0.0 }));
        let flags = TrainSettings { epochs: Some(5), ..Default::default() };
        let merged = flags.merged_over(file.clone());
        assert_eq!((merged.epochs, merged.model.as_deref()), (Some(5), Some("mnist-resnet")));
        // JSON round trip of the same settings.
        let json = dir.path().join("run.json");
        std::fs::write(&json, serde_json::to_string(&merged).unwrap()).unwrap();
        assert_eq!(TrainSettings::from_file(&json).unwrap(), merged);
        // A typo is an error naming the key.
        std::fs::write(&toml, "epoch = 3\n").unwrap();
        let e = TrainSettings::from_file(&toml).unwrap_err().to_string();
        assert!(e.contains("epoch") && e.contains("run.toml"), "{e}");
        // Resume: what differs is named, epochs may change.
        let stored = TrainSettings { lr: Some(0.1), epochs: Some(2), ..Default::default() };
        let asked = TrainSettings { lr: Some(0.01), epochs: Some(4), ..Default::default() };
        assert_eq!(asked.differences(&stored), vec!["lr".to_string()]);
        assert_eq!("32".parse::<ImageSize>().unwrap(), ImageSize([32, 32]));
        assert_eq!("24x32".parse::<ImageSize>().unwrap(), ImageSize([24, 32]));
        assert!("big".parse::<ImageSize>().is_err());
    }
}
