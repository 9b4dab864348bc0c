//! Data a job loads by name ([`DataSource`]): for every kind of network input, the labelled
//! set it reads ([`SourcedInput`]) and what the jobs need of it beyond training — its class
//! names and the class hierarchy it comes with ([`SourcedSet`]). Images read as the trainer's
//! `ImageData`, text as its `TextData` (sibling modules of `crate::trainer`).

use burn::prelude::{Int, Tensor};
use nestednet_data::{DataSource, DatasetKind};
use nestednet_heads::Hierarchy;
use nestednet_models::NetworkInput;

use crate::error::{Result, TrainError};
use crate::trainer::data::{ImageData, LabelledSet};
use crate::trainer::text_data::TextData;

/// A labelled set a [`DataSource`] names.
pub trait SourcedSet: LabelledSet {
    /// The training and evaluation sets of `source` (the test set, or the validation split).
    fn load(source: &DataSource) -> Result<(Self, Self)>;

    /// Names of the classes, in label order (empty when the data name none).
    fn class_names(&self) -> Vec<String>;

    /// The class hierarchy the data come with (MNIST digits by shape, CIFAR-100's
    /// super-classes, a text folder's coarse classes), for `--task hierarchy` without a file.
    fn builtin_hierarchy(&self, kind: DatasetKind) -> Result<Hierarchy>;

    /// The data kind the model `model` reads when the settings name none (images: MNIST;
    /// text: a corpus for the language models, `lm-…`, a text folder for the others).
    fn default_kind(model: &str) -> DatasetKind;
}

/// A network input whose labelled data a job can load: images (`Tensor<4>`) and token ids
/// (`Tensor<2, Int>`).
pub trait SourcedInput: NetworkInput {
    /// The labelled set it is read from.
    type Set: SourcedSet<Input = Self>;
}

impl SourcedInput for Tensor<4> {
    type Set = ImageData;
}

impl SourcedInput for Tensor<2, Int> {
    type Set = TextData;
}

impl SourcedSet for ImageData {
    fn load(source: &DataSource) -> Result<(Self, Self)> {
        if source.kind.is_text() {
            return Err(TrainError::Invalid(format!(
                "{} data are text, but this model takes images: give image data (--dataset mnist, cifar10, cifar100 or image-folder) or a text model",
                source.kind
            )));
        }
        let (train, test) = source.load()?;
        let shape = |s: &nestednet_data::ImageSet| [s.channels, s.height, s.width];
        if test.num_classes != train.num_classes || shape(&test) != shape(&train) {
            let [c, h, w] = shape(&train);
            return Err(TrainError::Invalid(format!(
                "the test set ({}x{}x{}, {} classes) does not match the training set ({c}x{h}x{w}, {} classes)",
                test.channels, test.height, test.width, test.num_classes, train.num_classes
            )));
        }
        Ok((ImageData::from(train), ImageData::from(test)))
    }

    fn class_names(&self) -> Vec<String> {
        self.set().class_names.clone()
    }

    fn builtin_hierarchy(&self, kind: DatasetKind) -> Result<Hierarchy> {
        let train = self.set();
        match kind {
            DatasetKind::Mnist if train.num_classes == 10 => Ok(Hierarchy::mnist_shapes()),
            DatasetKind::Cifar100 => {
                let coarse = train
                    .coarse_labels
                    .as_deref()
                    .ok_or_else(|| TrainError::Invalid("CIFAR-100 data without coarse labels".into()))?;
                Ok(Hierarchy::cifar100_from_labels(coarse, &train.labels)?)
            }
            other => Err(no_hierarchy(other)),
        }
    }

    fn default_kind(_model: &str) -> DatasetKind {
        DatasetKind::Mnist
    }
}

impl SourcedSet for TextData {
    fn load(source: &DataSource) -> Result<(Self, Self)> {
        match source.kind {
            DatasetKind::TextFolder => {
                let (train, test) = source.load_text_folder()?;
                Ok((TextData::classes(train), TextData::classes(test)))
            }
            DatasetKind::TextCorpus => {
                let (train, test) = source.load_corpus()?;
                let context = source.context.expect("load_corpus checks the context");
                Ok((TextData::next_tokens(train, context), TextData::next_tokens(test, context)))
            }
            other => Err(TrainError::Invalid(format!(
                "{other} data are images, but this model takes text: give --dataset text-folder (classifiers) or text-corpus (language models)"
            ))),
        }
    }

    fn class_names(&self) -> Vec<String> {
        self.text_set().map(|s| s.class_names.clone()).unwrap_or_default()
    }

    /// A text folder's `coarse-classes.tsv`: coarse class → class, named.
    fn builtin_hierarchy(&self, kind: DatasetKind) -> Result<Hierarchy> {
        let set = self.text_set().filter(|s| s.coarse_labels.is_some()).ok_or_else(|| {
            TrainError::Invalid(format!(
                "these {kind} data have no coarse classes: give --hierarchy FILE, or a text folder with {}",
                nestednet_data::COARSE_CLASSES_FILE
            ))
        })?;
        let of_class = set.coarse_of_class().expect("coarse labels");
        let paths: Vec<Vec<String>> = set
            .class_names
            .iter()
            .zip(&of_class)
            .map(|(name, &c)| vec![set.coarse_class_names[c].clone(), name.clone()])
            .collect();
        Ok(Hierarchy::from_paths(&["coarse".to_string(), "fine".to_string()], &paths)?)
    }

    fn default_kind(model: &str) -> DatasetKind {
        if model.starts_with("lm-") { DatasetKind::TextCorpus } else { DatasetKind::TextFolder }
    }
}

fn no_hierarchy(kind: DatasetKind) -> TrainError {
    TrainError::Invalid(format!(
        "{kind} data have no built-in hierarchy: give --hierarchy FILE (.json or .csv)"
    ))
}

/// The labelled set of input `I`.
pub type SetOf<I> = <I as SourcedInput>::Set;
