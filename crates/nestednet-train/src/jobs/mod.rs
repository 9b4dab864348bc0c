//! Jobs: settings as flags and files ([`TrainSettings`]), the backend chosen at run time
//! ([`Backend`]), and whole jobs ([`run_job`]): the only layer that names the built-in models.

pub(crate) mod backend;
pub(crate) mod data;
pub use backend::{Backend, DeviceList, DeviceSpec};
pub use data::{SetOf, SourcedInput, SourcedSet};
pub(crate) mod job;
pub(crate) mod launch;
pub use launch::{NestedTraining, Trained};
pub(crate) mod recipes;
pub use recipes::{
    CIFAR_RESNET_RECIPE, FamilyRecipes, MNIST_CNN_FINE_TUNE_RECIPE, MNIST_CNN_RECIPE, MNIST_CNN_RECIPES,
    MNIST_RESNET_RECIPE, RESNET_RECIPES, Recipe, RecipeContext, RecipeLevelWeights, TEXT_RECIPE,
    TEXT_RECIPES, VIT_RECIPE, VIT_RECIPES,
};
pub(crate) mod registry;
pub use registry::{FamilyEntry, Registry};
pub(crate) mod resolve;
pub use job::{
    JobOutcome, LevelAlone, TrainJob, run_job, run_job_with_data, run_magnitude_jobs, train_level_alone,
};
pub use resolve::{DEFAULT_CONTEXT, ResolvedRun};
pub(crate) mod settings;
pub use settings::{ImageSize, Method, Task, TrainSettings, UnnestedLayer};
