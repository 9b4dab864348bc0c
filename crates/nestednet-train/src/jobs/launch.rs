//! The library's training entry point for a network of one's own: configuration, data and a
//! run folder in, a trained object out, to report and export from.
//!
//! ```ignore
//! let trained = NestedTraining::new(my_config, TrainingConfig::new().with_epochs(3))
//!     .images(train, test)
//!     .into_dir("runs/mine")
//!     .launch()?;
//! println!("{}", trained.report.table());
//! trained.export(0, "runs/mine/core.safetensors".as_ref(), ExportFormat::Safetensors)?;
//! ```

use std::path::{Path, PathBuf};

use nestednet_data::{DataSource, ImageSet};
use nestednet_models::{NestedNetwork, NestedNetworkConfig};

use crate::error::{Result, TrainError};
use crate::export::level::{ExportFormat, ExportInfo, export_level};
use crate::jobs::backend::{Backend, DeviceList};
use crate::jobs::job::{TrainJob, run_job_with_data};
use crate::serve::report::Report;
use crate::trainer::config::{RunConfig, TrainingConfig};
use crate::trainer::data::{ImageData, InputOf, LabelledSet};
use crate::trainer::fit::Teacher;
use crate::trainer::metrics::{BarProgress, EpochMetrics, Progress, QuietProgress};
use crate::trainer::run::RunDir;

/// A training run of a `C` network on data `S`, being put together (see the module's
/// documentation). Nothing runs until [`launch`](Self::launch).
pub struct NestedTraining<C: NestedNetworkConfig, S: LabelledSet = ImageData> {
    config: RunConfig<C>,
    data: Option<(S, S)>,
    source: Option<DataSource>,
    dir: Option<PathBuf>,
    backend: Option<Backend>,
    devices: Option<DeviceList>,
    teacher: Option<Teacher<InputOf<C>>>,
    resume: bool,
    quiet: bool,
}

impl<C: NestedNetworkConfig> NestedTraining<C, ImageData> {
    /// Training `model` as `training` says (no data, folder or backend yet).
    pub fn new(model: C, training: TrainingConfig) -> Self {
        Self {
            config: RunConfig::new(model, training),
            data: None,
            source: None,
            dir: None,
            backend: None,
            devices: None,
            teacher: None,
            resume: false,
            quiet: false,
        }
    }

    /// Trains on the images `train`, scored on `test`.
    pub fn images(self, train: ImageSet, test: ImageSet) -> Self {
        self.data(ImageData::from(train), ImageData::from(test))
    }
}

impl<C: NestedNetworkConfig, S: LabelledSet> NestedTraining<C, S> {
    /// Trains on `train`, scored on `test`: any labelled data the network takes.
    pub fn data<T: LabelledSet>(self, train: T, test: T) -> NestedTraining<C, T> {
        NestedTraining {
            config: self.config,
            data: Some((train, test)),
            source: self.source,
            dir: self.dir,
            backend: self.backend,
            devices: self.devices,
            teacher: self.teacher,
            resume: self.resume,
            quiet: self.quiet,
        }
    }

    /// Records where the data came from in the run folder, so that `eval` and `export` find
    /// them again.
    pub fn source(mut self, source: DataSource) -> Self {
        self.source = Some(source);
        self
    }

    /// The run folder (created; checkpoints, `report.json` and the plot go there).
    pub fn into_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The backend (default: `$BURN_DEVICE`, else the first compiled one).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Trains data-parallel on `devices` (`"flex,flex".parse()?`, `"cuda:0,cuda:1"`), the
    /// first the main one, instead of the backend's one device.
    pub fn devices(mut self, devices: DeviceList) -> Self {
        self.devices = Some(devices);
        self
    }

    /// The teacher that distillation learns from (a trained network of any type over the same
    /// input), in place of the configuration's `teacher_run`.
    pub fn teacher(mut self, teacher: Teacher<InputOf<C>>) -> Self {
        self.teacher = Some(teacher);
        self
    }

    /// Continue the run in the folder after its last completed epoch, if `resume`.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// No progress bar or messages.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Trains every level jointly, then measures every level and writes the report: the trained
    /// network with its history and report. Fails when the data or the folder are missing, or
    /// the run fails (the folder then resumes where it stopped).
    pub fn launch(self) -> Result<Trained<C>>
    where
        S: LabelledSet<Input = InputOf<C>>,
    {
        crate::trainer::devices::join_cpu_thread_pool_from_main();
        let (train, test) =
            self.data.ok_or_else(|| TrainError::Invalid("give the data to train on".into()))?;
        let dir = self.dir.ok_or_else(|| TrainError::Invalid("give the run folder (into_dir)".into()))?;
        let backend = self.backend.map_or_else(Backend::from_env_or_default, Ok)?;
        let run = RunDir::new(&dir);
        let config = self.config.with_data(self.source);
        let job = TrainJob::on_given_data(config.clone(), run.clone(), backend)
            .with_devices(self.devices)
            .with_teacher(self.teacher)
            .resuming(self.resume);
        let mut progress: Box<dyn Progress> =
            if self.quiet { Box::new(QuietProgress) } else { Box::new(BarProgress::default()) };
        let outcome = run_job_with_data(&job, train, test, progress.as_mut())?;
        let report = outcome.report.ok_or_else(|| {
            TrainError::Invalid("the run stopped at max_steps, before its report: nothing to return".into())
        })?;
        Ok(Trained { config, model: outcome.training.model, history: outcome.training.history, report, run })
    }
}

/// A trained nested network: what [`NestedTraining::launch`] returns.
#[derive(Debug)]
pub struct Trained<C: NestedNetworkConfig> {
    /// The run's configuration.
    pub config: RunConfig<C>,
    /// The network, in evaluation mode.
    pub model: C::Network,
    /// Every completed epoch's metrics.
    pub history: Vec<EpochMetrics>,
    /// The per-level report (written to the run folder too).
    pub report: Report,
    /// The run folder.
    pub run: RunDir,
}

impl<C: NestedNetworkConfig> Trained<C> {
    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.model.num_levels()
    }

    /// Exports level `level` to `path` in `format`, read back and verified against the
    /// nested level (see [`export_level`]).
    pub fn export(&self, level: usize, path: &Path, format: ExportFormat) -> Result<ExportInfo> {
        export_level(&self.model, &self.config.model, level, path, format)
    }
}
