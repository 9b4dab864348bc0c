//! The `nestednet` command line as a library: `train`, `eval`, `export`, `inspect`,
//! `select`, `search` and `nestify` for every model family it is given.
//!
//! The `nestednet` binary is [`App::builtin`]: the built-in families (`mnist-cnn`, the residual
//! networks, the ViTs, the text classifiers and the language models). A crate with a family of its own builds its own binary, in which that family's
//! models train, evaluate, export, select, search and inspect exactly as the built-in ones do:
//!
//! ```no_run
//! # use nestednet::models::NestedMnistCnnConfig as MyNetConfig;
//! use nestednet::train::jobs::FamilyRecipes;
//!
//! fn main() -> anyhow::Result<()> {
//!     nestednet_cli::App::builtin().with_family::<MyNetConfig>(FamilyRecipes::NONE).run()
//! }
//! ```
//!
//! Each command is generic code run for the family's own type ([`CliModel`]): `train` and
//! `nestify` find it by the model's name (`--model`), the others by the family the run folder
//! records.
#![warn(missing_docs)]

mod eval;
mod export;
mod inspect;
mod nestify;
mod search;
mod select;
mod train;

use std::any::Any;
use std::marker::PhantomData;
use std::path::Path;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use nestednet::burn::prelude::Device;
use nestednet::data::{DataSource, DatasetKind};
use nestednet::models::{
    InputShape, ModelFamily, NestedLanguageModelConfig, NestedMnistCnnConfig, NestedNetwork,
    NestedNetworkConfig, NestedResNetConfig, NestedTextClassifierConfig, NestedVitConfig,
};
use nestednet::train::jobs::{
    Backend, FamilyEntry, FamilyRecipes, MNIST_CNN_RECIPES, RESNET_RECIPES, Registry, SetOf, SourcedInput,
    TEXT_RECIPES, TrainJob, TrainSettings, VIT_RECIPES,
};
use nestednet::train::trainer::{LabelledSet, RunConfig, RunDir, Teacher};

/// A model family the command line can run: a [`ModelFamily`] whose input a data source can
/// feed ([`SourcedInput`]: images `Tensor<4>`, token ids `Tensor<2, Int>`), with any output
/// (class logits, a language model's per-position logits). Every such family is one.
pub trait CliModel: ModelFamily<Network: NestedNetwork<Input: SourcedInput>> {}

impl<F> CliModel for F where F: ModelFamily<Network: NestedNetwork<Input: SourcedInput>> {}

/// The input of family `F`'s networks.
type InputOfFamily<F> = <<F as NestedNetworkConfig>::Network as NestedNetwork>::Input;

/// The labelled set of family `F`'s input.
type DataOf<F> = SetOf<InputOfFamily<F>>;

/// Nested sparse networks: many networks in one set of weights.
#[derive(Parser, Debug)]
#[command(name = "nestednet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train every level of a nested network jointly, then report each level.
    Train(Box<train::TrainArgs>),
    /// Evaluate the levels of a trained run on a data set.
    Eval(eval::EvalArgs),
    /// Export one level (or the consensus of all) as a compact standalone model, verified.
    Export(export::ExportArgs),
    /// Show a run's configuration, levels, checkpoint and report.
    Inspect(inspect::InspectArgs),
    /// The most accurate level (or searched sub-network) within a latency, MAC, parameter,
    /// size or memory budget, measured on this device.
    Select(select::SelectArgs),
    /// Mix'n'Match: search the sub-networks whose layers take different levels' widths, write
    /// their accuracy–MACs Pareto front and export its points.
    Search(search::SearchArgs),
    /// Turn a pretrained dense network into a nested one (channels ordered by importance),
    /// then fine-tune every level jointly.
    Nestify(Box<nestify::NestifyArgs>),
}

/// What the command line does with one family, for a family whose type it knows only through
/// this trait ([`Registered`] implements it for every [`CliModel`]).
trait CliFamily {
    /// The family's key ([`ModelFamily::FAMILY`]).
    fn key(&self) -> &'static str;

    /// Runs `command` for this family.
    fn run(&self, command: Command, app: &App) -> Result<()>;

    /// The full level of the run in `folder` (of this family) as a distillation teacher for
    /// data of `shape` and `classes`: a `Teacher<I>` for the input `I` whose shape `shape` is
    /// (an error when this family takes another input).
    fn teacher(
        &self,
        folder: &Path,
        shape: &dyn Any,
        classes: usize,
        device: &Device,
    ) -> Result<Box<dyn Any>>;
}

/// The command line's operations for family `F`.
struct Registered<F>(PhantomData<fn() -> F>);

impl<F: CliModel> CliFamily for Registered<F> {
    fn key(&self) -> &'static str {
        F::FAMILY
    }

    fn run(&self, command: Command, app: &App) -> Result<()> {
        match command {
            Command::Train(a) => train::run::<F>(*a, app),
            Command::Eval(a) => eval::run::<F>(a),
            Command::Export(a) => export::run::<F>(a),
            Command::Inspect(a) => inspect::run::<F>(a, app.registry()),
            Command::Select(a) => select::run::<F>(a),
            Command::Search(a) => search::run::<F>(a),
            Command::Nestify(a) => nestify::run::<F>(*a, app),
        }
    }

    fn teacher(
        &self,
        folder: &Path,
        shape: &dyn Any,
        classes: usize,
        device: &Device,
    ) -> Result<Box<dyn Any>> {
        let shape = shape.downcast_ref::<InputShape<F::Network>>().with_context(|| {
            format!(
                "the distillation teacher {} is a {} network, which takes other inputs than this model",
                folder.display(),
                F::FAMILY
            )
        })?;
        Ok(Box::new(Teacher::<InputOfFamily<F>>::from_run::<F>(folder, shape, classes, device)?))
    }
}

/// The command line with its model families (see the crate's documentation).
pub struct App {
    registry: Registry,
    families: Vec<Box<dyn CliFamily>>,
}

impl App {
    /// The `nestednet` binary's families: `mnist-cnn`, the residual networks, the ViTs, the
    /// text classifiers and the language models.
    pub fn builtin() -> Self {
        Self::empty()
            .with_family::<NestedMnistCnnConfig>(MNIST_CNN_RECIPES)
            .with_family::<NestedResNetConfig>(RESNET_RECIPES)
            .with_family::<NestedVitConfig>(VIT_RECIPES)
            .with_family::<NestedTextClassifierConfig>(TEXT_RECIPES)
            .with_family::<NestedLanguageModelConfig>(TEXT_RECIPES)
    }

    /// No family at all.
    pub fn empty() -> Self {
        Self { registry: Registry::empty(), families: Vec::new() }
    }

    /// The same command line with family `F` and its `recipes` too (a family of the same key
    /// is replaced).
    pub fn with_family<F: CliModel>(mut self, recipes: FamilyRecipes) -> Self {
        self.registry = self.registry.with(FamilyEntry::of::<F>(recipes));
        self.families.retain(|f| f.key() != F::FAMILY);
        self.families.push(Box::new(Registered::<F>(PhantomData)));
        self
    }

    /// The families' names and recipes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The process's command line, as the `nestednet` binary runs it: first, before any thread
    /// starts, a closed pipe is made to end the process quietly and this thread one of the CPU
    /// kernels' threads (evaluation and selection run here too, not only training); then the
    /// command the arguments give.
    pub fn run(self) -> Result<()> {
        #[cfg(unix)]
        exit_quietly_on_closed_stdout();
        nestednet::train::trainer::join_cpu_thread_pool();
        self.run_from(std::env::args_os())
    }

    /// Runs the command `args` give (the program's name first, as `std::env::args`).
    pub fn run_from<I, T>(&self, args: I) -> Result<()>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let help = train::recipes_help(&self.registry);
        let matches = Cli::command().mut_subcommand("train", |c| c.after_help(help)).get_matches_from(args);
        let command = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()).command;
        // The backend first (a bad choice is named before any file is read), then the family.
        let family = match &command {
            Command::Train(a) => self.family_of_model(&train::settings(a)?.model_name())?,
            Command::Nestify(a) => self.family_of_model(&nestify::settings(a)?.model_name())?,
            Command::Eval(a) => self.family_of_run_on(&a.run, a.device)?,
            Command::Export(a) => self.family_of_run_on(&a.run, a.device)?,
            Command::Inspect(a) => self.family_of_run(&a.run)?,
            Command::Select(a) => self.family_of_run_on(&a.run, a.device)?,
            Command::Search(a) => self.family_of_run_on(&a.run, a.device)?,
        };
        family.run(command, self)
    }

    fn family(&self, key: &str) -> Result<&dyn CliFamily> {
        // The registry's error names the registered families.
        self.registry.family(key)?;
        Ok(self.families.iter().find(|f| f.key() == key).expect("registered with its entry").as_ref())
    }

    /// The family the model `name` belongs to.
    fn family_of_model(&self, name: &str) -> Result<&dyn CliFamily> {
        self.family(self.registry.family_of(name)?.key)
    }

    /// The family the run in `folder` records, once the backend `device` asks for (or the
    /// default one) is known to exist.
    fn family_of_run_on(&self, folder: &Path, device: Option<Backend>) -> Result<&dyn CliFamily> {
        backend(device)?;
        self.family_of_run(folder)
    }

    /// The family the run in `folder` records.
    fn family_of_run(&self, folder: &Path) -> Result<&dyn CliFamily> {
        let key = RunDir::new(folder).recorded_family()?.with_context(|| {
            format!(
                "{} records no model family (a run made through the library, of the caller's own network): open it from the library",
                folder.display()
            )
        })?;
        self.family(&key)
    }

    /// `job` with the external teacher its configuration names (`teacher_run`), of whatever
    /// family that run records, checked to take `data`'s images and classes.
    fn with_teacher<C: CliModel>(&self, job: TrainJob<C>, data: &DataOf<C>) -> Result<TrainJob<C>> {
        let folder = job.config.training.distillation.as_ref().and_then(|d| d.teacher_run.clone());
        let Some(folder) = folder.filter(|_| job.teacher.is_none()) else { return Ok(job) };
        let folder = Path::new(&folder);
        let teacher = self.family_of_run(folder).map_err(|e| {
            anyhow::anyhow!("the distillation teacher {} could not be loaded: {e}", folder.display())
        })?;
        let device = job.backend.device()?;
        let teacher = teacher.teacher(folder, &data.input_shape(), data.num_classes(), &device)?;
        let teacher = teacher.downcast::<Teacher<InputOfFamily<C>>>().map_err(|_| {
            anyhow::anyhow!(
                "the distillation teacher {} takes other inputs than this model",
                folder.display()
            )
        })?;
        Ok(job.with_teacher(Some(*teacher)))
    }
}

/// The backend asked for, or `$BURN_DEVICE`, or the first compiled one.
fn backend(choice: Option<Backend>) -> Result<Backend> {
    Ok(match choice {
        Some(b) => b,
        None => Backend::from_env_or_default()?,
    })
}

/// The data a run was trained on, with a different folder, format or image size where given.
/// With `own_split`, a run trained with a validation split is evaluated on it (as its report
/// was); otherwise on the test set.
fn run_data<C>(
    config: &RunConfig<C>,
    dataset: Option<DatasetKind>,
    data_dir: Option<std::path::PathBuf>,
    image_size: Option<[usize; 2]>,
    own_split: bool,
) -> Result<DataSource> {
    let recorded = TrainSettings::data_of(config)?;
    Ok(DataSource {
        kind: dataset.or(recorded.as_ref().map(|d| d.kind)).unwrap_or(config.training.dataset),
        dir: data_dir
            .or(recorded.as_ref().map(|d| d.dir.clone()))
            .ok_or_else(|| anyhow::anyhow!("give the data folder (--data-dir): the run records none"))?,
        image_size: image_size.or(recorded.as_ref().and_then(|d| d.image_size)),
        context: recorded.as_ref().and_then(|d| d.context),
        validation_split: if own_split { recorded.and_then(|d| d.validation_split) } else { None },
    })
}

/// Makes a closed standard output end the process quietly, as it ends any Unix filter:
/// `nestednet inspect --run r | head` exits when `head` has what it wants, where Rust's
/// runtime, which ignores SIGPIPE, would have every later `println!` (the CLI's, and the
/// training loop's epoch lines) fail with `EPIPE` and panic. A training run killed this way
/// resumes like any killed run (`--resume`; checkpoints are written atomically).
#[cfg(unix)]
#[allow(unsafe_code)]
fn exit_quietly_on_closed_stdout() {
    // SAFETY: sets the disposition of one signal to its default, before any other thread
    // exists; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
