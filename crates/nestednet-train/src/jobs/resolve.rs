//! Settings resolved into a job: the data loaded, the model of a family built for them, every
//! default filled in (from the family's recipe, looked up in the [`Registry`]) and recorded,
//! so that the run can be repeated from its own `config.json`.

use std::any::Any;
use std::path::Path;

use nestednet_data::{DataSource, DatasetKind};
use nestednet_heads::Hierarchy;
use nestednet_models::{
    InputShape, LevelRequest, ModelFamily, ModelRequest, NestedNetwork, NestedNetworkConfig,
    NestedResNetConfig,
};
use nestednet_prune::MaskTargets;
use nestednet_schedule::{LatticeSpec, LevelSpec};

use crate::error::{Result, TrainError};
use crate::jobs::backend::Backend;
use crate::jobs::data::{SetOf, SourcedInput, SourcedSet};
use crate::jobs::job::TrainJob;
use crate::jobs::recipes::{Recipe, RecipeContext};
use crate::jobs::registry::Registry;
use crate::jobs::settings::{Method, Task, TrainSettings, UnnestedLayer, text};
use crate::trainer::config::{DistillationConfig, OptimizerConfig, RunConfig, TrainingConfig};
use crate::trainer::data::{InputOf, LabelledSet};
use crate::trainer::init::with_init_lock;
use crate::trainer::labels::HierarchyConfig;
use crate::trainer::masks::{MaskMethod, MaskingConfig};
use crate::trainer::run::RunDir;

/// Settings resolved with their data: the job to run and the data it runs on.
pub struct ResolvedRun<C: NestedNetworkConfig>
where
    InputOf<C>: SourcedInput,
{
    /// The job (its `config.settings` holds every resolved setting).
    pub job: TrainJob<C>,
    /// The training set.
    pub train: SetOf<InputOf<C>>,
    /// The test set.
    pub test: SetOf<InputOf<C>>,
}

/// The data of a resolved run, loaded: where they are, the training and the test set.
struct LoadedData<S> {
    source: DataSource,
    train: S,
    test: S,
}

impl TrainSettings {
    /// The model these settings train: the one named, or the task's default for the data
    /// (`mnist-resnet` for distillation on MNIST, `wrn-32-4` for distillation on other data,
    /// `mnist-cnn` otherwise). Which family it belongs to decides the type [`resolve`](Self::resolve)
    /// is run for.
    pub fn model_name(&self) -> String {
        let default =
            match (self.task.unwrap_or(Task::Compression), self.dataset.unwrap_or(DatasetKind::Mnist)) {
                (Task::Distillation, DatasetKind::Mnist) => "mnist-resnet",
                (Task::Distillation, _) => "wrn-32-4",
                _ => "mnist-cnn",
            };
        self.model.clone().unwrap_or_else(|| default.to_string())
    }

    /// The settings of the run in `out`: these; with `resume` and a run in `out`, the run's
    /// recorded settings under these, a setting given here that differs from them being an error
    /// naming it (only the number of epochs, the device and the data folder may change).
    /// Applying it twice changes nothing.
    pub fn for_run(self, out: &Path, resume: bool) -> Result<TrainSettings> {
        let run = RunDir::new(out);
        // A run that stopped before its first checkpoint resumes (from scratch) with its
        // recorded settings too.
        if !(resume && run.exists()) {
            return Ok(self);
        }
        let stored = run.recorded_settings()?.ok_or_else(|| TrainError::Run {
            path: out.to_path_buf(),
            reason: "records no settings (it was made through the library): resume it from the library"
                .into(),
        })?;
        let stored: TrainSettings = serde_json::from_value(stored)
            .map_err(|e| TrainError::Invalid(format!("the run's recorded settings: {e}")))?;
        let differing = self.differences(&stored);
        if !differing.is_empty() {
            return Err(TrainError::Run {
                path: out.to_path_buf(),
                reason: format!(
                    "was trained with other settings; to resume it, leave out or match --{}",
                    differing.join(", --")
                ),
            });
        }
        let mut merged = self.merged_over(stored);
        // Runs made before recipes existed were trained with the plain defaults.
        merged.recipe.get_or_insert_with(|| Recipe::PLAIN.name.to_string());
        Ok(merged)
    }

    /// The run in `out` these settings describe (see [`for_run`](Self::for_run)), a model of
    /// family `C`, with its data loaded: every default filled in from `registry`'s recipes and
    /// recorded in the job's `config.settings`.
    pub fn resolve<C>(self, out: &Path, resume: bool, registry: &Registry) -> Result<ResolvedRun<C>>
    where
        C: ModelFamily,
        InputOf<C>: SourcedInput,
    {
        let mut s = self.for_run(out, resume)?;
        let name = s.model_name();
        if !C::claims(&name) {
            return Err(TrainError::Invalid(format!(
                "the model `{name}` is not of the family `{}` (its names: {})",
                C::FAMILY,
                C::names().join(", ")
            )));
        }
        s.model = Some(name);
        let task = *s.task.get_or_insert(Task::Compression);
        let device = s.resolve_device()?;
        let data = s.load_data::<SetOf<InputOf<C>>>()?;
        let hierarchy = s.resolve_hierarchy(task, &data)?;
        let (method, targets) = s.mask_targets()?;
        let levels = LevelsContext { task, method, targets: &targets, hierarchy: hierarchy.as_ref(), device };
        let request = s.model_request::<C>(&data, &levels)?;
        let model = C::from_request(&request).ok_or_else(|| request.unknown(C::names()))??;
        let masking = s.resolve_masking(method, targets.clone(), &model, device)?;
        let recipe = s.resolve_recipe(registry, masking.as_ref())?;
        let training = s
            .training_config(recipe, request.levels.num_levels())?
            .with_dataset(data.source.kind)
            .with_masking(masking)
            .with_hierarchy(hierarchy.map(HierarchyConfig::one_level_per_depth));
        training.validate()?;
        let devices = s.devices.clone();
        let config = RunConfig::new(model, training)
            .with_family(Some(C::FAMILY.to_string()))
            .with_settings(Some(s.to_record()))
            .with_data(Some(data.source.clone()));
        let job = TrainJob::new(config, data.source, RunDir::new(out), device)
            .with_devices(devices)
            .resuming(resume);
        Ok(ResolvedRun { job, train: data.train, test: data.test })
    }

    /// The backend (and data-parallel devices) the run trains on, checked against each other.
    fn resolve_device(&mut self) -> Result<Backend> {
        let invalid = |m: String| Err(TrainError::Invalid(m));
        match self.devices.as_mut() {
            Some(list) => list.ddp = self.ddp.unwrap_or(false),
            None if self.ddp == Some(true) => {
                return invalid(
                    "--ddp sums the gradients of several devices: give them with --devices".into(),
                );
            }
            None => {}
        }
        let device = match (&self.devices, self.device) {
            (Some(list), Some(device)) if list.main_backend() != device => {
                return invalid(format!(
                    "--device {device} and --devices {list} disagree: the first of --devices is the main device (leave --device out)"
                ));
            }
            (Some(list), _) => {
                list.devices()?;
                list.main_backend()
            }
            (None, device) => device.map_or_else(Backend::from_env_or_default, Ok)?,
        };
        self.device = Some(device);
        Ok(device)
    }

    /// The training and test sets, as the input `S` reads them (checked to agree).
    fn load_data<S: SourcedSet>(&mut self) -> Result<LoadedData<S>> {
        let model = self.model_name();
        let kind = *self.dataset.get_or_insert_with(|| S::default_kind(&model));
        let Some(dir) = self.data_dir.clone() else {
            return Err(TrainError::Invalid(
                "give the data folder (--data-dir DIR, or data_dir in a config file)".into(),
            ));
        };
        if kind.is_text() {
            self.context.get_or_insert(DEFAULT_CONTEXT);
        } else if self.context.is_some() {
            return Err(TrainError::Invalid(format!(
                "--context is the tokens per sample of text data, but {kind} data are images"
            )));
        }
        let source = DataSource {
            kind,
            dir,
            image_size: self.image_size.map(|s| s.0),
            validation_split: self.validation_split,
            context: self.context,
        };
        let (train, test) = S::load(&source)?;
        Ok(LoadedData { source, train, test })
    }

    /// The class hierarchy of `--task hierarchy` (a file, or the data set's own), checked
    /// against the data.
    fn resolve_hierarchy<S: SourcedSet>(
        &self,
        task: Task,
        data: &LoadedData<S>,
    ) -> Result<Option<Hierarchy>> {
        let hierarchy = match (task, &self.hierarchy) {
            (Task::Hierarchy, Some(path)) => Hierarchy::load(path)?,
            (Task::Hierarchy, None) => data.train.builtin_hierarchy(data.source.kind)?,
            (_, Some(_)) => return Err(TrainError::Invalid("--hierarchy needs --task hierarchy".into())),
            (_, None) => return Ok(None),
        };
        hierarchy.check_classes(data.train.num_classes())?;
        check_class_names(&hierarchy, &data.train.class_names())?;
        Ok(Some(hierarchy))
    }

    /// How the levels differ, and the mask targets of weight masks (or channel budgets).
    fn mask_targets(&mut self) -> Result<(Method, Option<MaskTargets>)> {
        let invalid = |m: String| Err(TrainError::Invalid(m));
        let method = *self.method.get_or_insert(Method::Channels);
        let targets = match (&self.densities, &self.compression, &self.thresholds) {
            (Some(d), None, None) => Some(MaskTargets::Densities(d.clone())),
            (None, Some(c), None) => Some(MaskTargets::from_compression(c)?),
            (None, None, Some(t)) => Some(MaskTargets::Thresholds(t.clone())),
            (None, None, None) => None,
            _ => return invalid("give one of --densities, --compression and --thresholds".into()),
        };
        match (method, &targets) {
            (Method::Channels, Some(MaskTargets::Thresholds(_))) => invalid(
                "--thresholds needs a mask method (--method weights); channel levels take --levels or --densities"
                    .into(),
            ),
            (Method::Channels, Some(_)) if self.levels.is_some() || self.widths.is_some() => invalid(
                "--method channels takes either --levels/--widths or --densities/--compression, not both".into(),
            ),
            (Method::Weights | Method::Random | Method::Magnitude, None) => {
                invalid(format!("--method {} needs --densities, --compression or --thresholds", text(&method)))
            }
            _ => Ok((method, targets)),
        }
    }

    /// What the model is asked to be: its name, the data's images and classes, its levels and
    /// per-level classes, its un-nested layers.
    fn model_request<C>(
        &mut self,
        data: &LoadedData<SetOf<InputOf<C>>>,
        at: &LevelsContext<'_>,
    ) -> Result<ModelRequest<InputShape<C::Network>>>
    where
        C: ModelFamily,
        InputOf<C>: SourcedInput,
    {
        let unnested = self.unnested.get_or_insert_with(Vec::new).clone();
        let train = &data.train;
        let mut request = ModelRequest {
            name: self.model_name(),
            input_shape: train.input_shape(),
            num_classes: train.num_classes(),
            level_classes: Vec::new(),
            levels: LevelRequest::Channels(LevelSpec::default_ratios()),
            unnested_first_conv: unnested.contains(&UnnestedLayer::FirstConv),
            unnested_output: unnested.contains(&UnnestedLayer::Output),
        };
        request.levels = self.levels_for::<C>(at, &request)?;
        if let Some(h) = at.hierarchy {
            if request.levels.num_levels() != h.num_depths() {
                return Err(TrainError::Invalid(format!(
                    "--task hierarchy trains one level per depth: the hierarchy has {} depths but the levels are {}",
                    h.num_depths(),
                    request.levels.num_levels()
                )));
            }
            request.level_classes = (0..h.num_depths()).map(|d| h.num_classes(d)).collect();
        }
        Ok(request)
    }

    /// The settings' level layout, recording what was chosen.
    fn levels_for<C: ModelFamily>(
        &mut self,
        at: &LevelsContext<'_>,
        request: &ModelRequest<InputShape<C::Network>>,
    ) -> Result<LevelRequest> {
        let invalid = |m: &str| Err(TrainError::Invalid(m.into()));
        if self.levels.is_some() && (self.widths.is_some() || self.depths.is_some() || self.pairs.is_some()) {
            return invalid("give the levels either as --levels or as --widths/--depths/--pairs, not both");
        }
        if self.pairs.is_some() && self.depths.is_none() {
            return invalid("--pairs names levels of a lattice: give --widths and --depths too");
        }
        if let Some(spec) = &self.levels {
            return Ok(LevelRequest::Channels(spec.clone()));
        }
        if let Some(depths) = &self.depths {
            let widths = self.widths.get_or_insert_with(|| vec![1.0]).clone();
            let lattice = LatticeSpec::grid(widths, depths.clone());
            return Ok(LevelRequest::Lattice(match &self.pairs {
                Some(pairs) => lattice.with_pairs_str(pairs)?,
                None => lattice,
            }));
        }
        if let Some(widths) = &self.widths {
            return Ok(LevelRequest::Channels(LevelSpec::Ratios(widths.clone())));
        }
        // Defaults, recorded as what they resolved to.
        let levels = default_levels::<C>(at, request)?;
        match &levels {
            LevelRequest::Channels(spec) => self.levels = Some(spec.clone()),
            LevelRequest::Lattice(l) => {
                self.widths = Some(l.widths.clone());
                self.depths = Some(l.depths.clone());
            }
        }
        Ok(levels)
    }

    /// The masks of a mask method: on every weight layer of the model but the dense ones
    /// (by default its first and last).
    fn resolve_masking<C: NestedNetworkConfig>(
        &mut self,
        method: Method,
        targets: Option<MaskTargets>,
        model: &C,
        device: Backend,
    ) -> Result<Option<MaskingConfig>> {
        let (method, targets) = match (method, targets) {
            (Method::Channels, _) | (_, None) => {
                if self.dense_layers.is_some() || self.stage_epochs.is_some() || self.gamma.is_some() {
                    return Err(TrainError::Invalid("--dense-layers, --stage-epochs and --gamma belong to weight masks (--method weights, random or magnitude)".into()));
                }
                return Ok(None);
            }
            (Method::Weights, Some(t)) => (MaskMethod::Learned, t),
            (Method::Random, Some(t)) => (MaskMethod::Random, t),
            (Method::Magnitude, Some(t)) => (MaskMethod::Magnitude, t),
        };
        let plain = device.device()?;
        let layers: Vec<String> = with_init_lock(|| {
            model.init_network(&plain).map(|n| n.weight_layers().into_iter().map(|(n, _)| n).collect())
        })?;
        let dense = self.dense_layers.get_or_insert(MaskingConfig::default_dense_layers(&layers)).clone();
        let masking =
            MaskingConfig::new(method, targets).with_dense_layers(&layers, &dense).map_err(|bad| {
                TrainError::Invalid(format!(
                    "unknown layer `{bad}` in --dense-layers ({} has {})",
                    self.model_name(),
                    layers.join(", ")
                ))
            })?;
        Ok(Some(MaskingConfig {
            gamma: *self.gamma.get_or_insert(nestednet_prune::DEFAULT_GAMMA),
            stage_epochs: *self.stage_epochs.get_or_insert(1),
            ..masking
        }))
    }

    /// The recipe that fills what the settings leave out: the one named, or the model's.
    fn resolve_recipe(
        &mut self,
        registry: &Registry,
        masking: Option<&MaskingConfig>,
    ) -> Result<&'static Recipe> {
        let context = RecipeContext {
            weight_masks: masking.is_some_and(|m| m.method != MaskMethod::Magnitude),
            fine_tune: self.init_from.is_some(),
        };
        let recipe = match &self.recipe {
            Some(name) => registry.recipe(name)?,
            None => registry.default_recipe(&self.model_name(), context),
        };
        self.recipe = Some(recipe.name.to_string());
        Ok(recipe)
    }

    /// The optimizer and learning rate: the recipe's, unless another optimizer is asked for,
    /// which brings its own usual ones (a learning rate tuned for SGD would make Adam
    /// diverge); given momentum and weight decay override them.
    fn resolve_optimizer(&mut self, recipe: &Recipe) -> (OptimizerConfig, f64) {
        let chosen = self.optimizer.get_or_insert_with(|| recipe.optimizer.clone()).clone();
        let (base, lr) = match chosen.name() == recipe.optimizer.name() {
            true => (recipe.optimizer.clone(), recipe.learning_rate),
            false => {
                let lr = chosen.usual_learning_rate();
                (chosen, lr)
            }
        };
        let mut optimizer =
            base.clone().with_weight_decay(*self.weight_decay.get_or_insert(base.weight_decay()));
        if let Some(momentum) = base.momentum() {
            optimizer = optimizer.with_momentum(*self.momentum.get_or_insert(momentum));
        }
        (optimizer, *self.lr.get_or_insert(lr))
    }

    /// Distillation: in place (`--distill`), or from a teacher run.
    fn resolve_distillation(&mut self) -> Result<Option<DistillationConfig>> {
        if self.temperature.is_some() && self.distill.is_none() && self.teacher.is_none() {
            return Err(TrainError::Invalid("--temperature needs --distill or --teacher".into()));
        }
        Ok(match (self.distill, &self.teacher) {
            (None, None) => None,
            (alpha, teacher) => {
                let teacher = teacher.as_ref().map(|t| t.display().to_string());
                Some(
                    DistillationConfig::new()
                        .with_alpha(*self.distill.get_or_insert(alpha.unwrap_or(0.5)))
                        .with_temperature(*self.temperature.get_or_insert(4.0))
                        .with_teacher_run(teacher),
                )
            }
        })
    }

    /// The training configuration, every setting the user left out taken from `recipe`; the
    /// masks, hierarchy and data kind are the caller's.
    fn training_config(&mut self, recipe: &Recipe, levels: usize) -> Result<TrainingConfig> {
        let (optimizer, lr) = self.resolve_optimizer(recipe);
        if self.loss_weights.is_none() {
            self.loss_weights = recipe.level_weights.weights(levels);
        }
        let distillation = self.resolve_distillation()?;
        Ok(TrainingConfig::new()
            .with_optimizer(optimizer)
            .with_learning_rate(lr)
            .with_lr_schedule(self.lr_schedule.get_or_insert(recipe.lr_schedule.clone()).clone())
            .with_epochs(*self.epochs.get_or_insert(recipe.epochs))
            .with_batch_size(*self.batch_size.get_or_insert(recipe.batch_size))
            .with_augmentation(Some(*self.augment.get_or_insert(recipe.augmentation)))
            .with_seed(*self.seed.get_or_insert(42))
            .with_level_loss_weights(self.loss_weights.clone())
            .with_train_limit(self.train_limit)
            .with_initial_weights(self.init_from.as_ref().map(|p| p.display().to_string()))
            .with_mix_samples(self.mix_training.filter(|&n| n > 0))
            .with_max_steps(self.max_steps)
            .with_distillation(distillation))
    }
}

/// Tokens per sample of text data when the settings give none.
pub const DEFAULT_CONTEXT: usize = 128;

/// What the default levels depend on.
struct LevelsContext<'a> {
    task: Task,
    method: Method,
    targets: &'a Option<MaskTargets>,
    hierarchy: Option<&'a Hierarchy>,
    device: Backend,
}

/// The levels when the settings give none: one full-width level per mask target; widths for
/// channel budgets; one level per depth of a hierarchy, each twice as wide as the last; for
/// distillation, widths 1/4 and 1 and (residual networks) depths of 2/5 of the blocks and all
/// of them; otherwise widths 1/4, 1/2 and 1.
fn default_levels<C: ModelFamily>(
    at: &LevelsContext<'_>,
    request: &ModelRequest<InputShape<C::Network>>,
) -> Result<LevelRequest> {
    Ok(match (at.targets, at.method) {
        (Some(t), Method::Weights | Method::Random | Method::Magnitude) => {
            LevelRequest::Channels(LevelSpec::Ratios(vec![1.0; t.num_levels()]))
        }
        (Some(MaskTargets::Densities(d)), Method::Channels) => {
            LevelRequest::Channels(request.ratios_for_densities::<C>(d, &at.device.device()?)?)
        }
        _ => match (at.task, at.hierarchy) {
            (Task::Hierarchy, Some(h)) => {
                let depths = h.num_depths();
                LevelRequest::Channels(LevelSpec::Ratios(
                    (0..depths).map(|k| 0.5f64.powi((depths - 1 - k) as i32)).collect(),
                ))
            }
            (Task::Distillation, _) => match residual_blocks::<C>(request) {
                Some(b) => {
                    let short = (2 * b).div_ceil(5).max(1);
                    let depths = if short < b { vec![short, b] } else { vec![b] };
                    LevelRequest::Lattice(LatticeSpec::grid(vec![0.25, 1.0], depths))
                }
                None => LevelRequest::Channels(LevelSpec::Ratios(vec![0.25, 1.0])),
            },
            _ => LevelRequest::Channels(LevelSpec::default_ratios()),
        },
    })
}

/// Blocks per stage of the residual network `request` names (`None` for other models).
fn residual_blocks<C: ModelFamily>(request: &ModelRequest<InputShape<C::Network>>) -> Option<usize> {
    let one_level = ModelRequest {
        levels: LevelRequest::Channels(LevelSpec::Ratios(vec![1.0])),
        level_classes: Vec::new(),
        ..request.clone()
    };
    let config = C::from_request(&one_level)?.ok()?;
    (&config as &dyn Any).downcast_ref::<NestedResNetConfig>().map(|r| r.blocks_per_stage)
}

/// For data whose classes have names (image folders), the hierarchy's fine classes must be
/// them, in label order.
fn check_class_names(hierarchy: &Hierarchy, class_names: &[String]) -> Result<()> {
    let Some(fine) = hierarchy.depths.last() else { return Ok(()) };
    if class_names.is_empty() || class_names.iter().all(|n| n.parse::<usize>().is_ok()) {
        return Ok(());
    }
    match class_names.iter().zip(&fine.classes).enumerate().find(|(_, (a, b))| a != b) {
        Some((label, (data, file))) => Err(TrainError::Invalid(format!(
            "the hierarchy's class {label} is `{file}` but the data's class {label} (sorted folder names) is `{data}`"
        ))),
        None => Ok(()),
    }
}
