//! Text as labelled data ([`TextData`]): windows of documents labelled by their class (text
//! classifiers) or windows of a corpus whose every position is labelled by the next token
//! (language models), read by the sibling `data`'s [`LabelledSet`] contract.

use std::sync::Arc;

use burn::prelude::*;
use nestednet_data::{SplitMix64, TextSet, TextStream, TextTokenizer};
use nestednet_models::TokenShape;

use crate::error::{Result, TrainError};
use crate::trainer::data::{Batch, BatchOrder, Batches, LabelledSet};

/// Labelled text: token-id windows `[batch, context]` (`Tensor<2, Int>`).
///
/// - [`TextData::classes`]: windows of a [`TextSet`], one target per window, its document's
///   class;
/// - [`TextData::next_tokens`]: the consecutive windows of a [`TextStream`], one target per
///   position, the token that follows it (a causal language model's targets; the mean loss is
///   then nats per token, and per byte for byte tokens).
#[derive(Debug, Clone)]
pub struct TextData {
    samples: TextSamples,
    /// Windows used: every one, or those `take` chose.
    windows: TextWindows,
}

/// Which windows of the samples a [`TextData`] uses.
#[derive(Debug, Clone)]
enum TextWindows {
    /// The first `n` (all of them unless taken).
    First(usize),
    /// These, spread over the samples by [`TextData::take`].
    Chosen(Arc<[usize]>),
}

#[derive(Debug, Clone)]
enum TextSamples {
    Classes(Arc<TextSet>),
    NextTokens { stream: Arc<TextStream>, context: usize },
}

impl TextData {
    /// Every window of `set`, labelled by its class.
    pub fn classes(set: impl Into<Arc<TextSet>>) -> Self {
        let set = set.into();
        Self { windows: TextWindows::First(set.len()), samples: TextSamples::Classes(set) }
    }

    /// The windows of `context` tokens of `stream`, each position labelled by its next token.
    pub fn next_tokens(stream: impl Into<Arc<TextStream>>, context: usize) -> Self {
        let stream = stream.into();
        let windows = TextWindows::First(stream.num_windows(context));
        Self { windows, samples: TextSamples::NextTokens { stream, context } }
    }

    /// Tokens per window.
    pub fn context(&self) -> usize {
        match &self.samples {
            TextSamples::Classes(set) => set.context,
            TextSamples::NextTokens { context, .. } => *context,
        }
    }

    /// How the text became tokens.
    pub fn tokenizer(&self) -> TextTokenizer {
        match &self.samples {
            TextSamples::Classes(set) => set.tokenizer,
            TextSamples::NextTokens { stream, .. } => stream.tokenizer,
        }
    }

    /// The labelled windows, for a classifier's data (`None` for a corpus).
    pub fn text_set(&self) -> Option<&Arc<TextSet>> {
        match &self.samples {
            TextSamples::Classes(set) => Some(set),
            TextSamples::NextTokens { .. } => None,
        }
    }

    /// Whether every position is labelled by its next token (a language model's data).
    pub fn is_next_token(&self) -> bool {
        matches!(self.samples, TextSamples::NextTokens { .. })
    }

    /// The sample window behind window `index` of this data.
    fn sample_window(&self, index: usize) -> usize {
        match &self.windows {
            TextWindows::First(_) => index,
            TextWindows::Chosen(chosen) => chosen[index],
        }
    }

    /// The inputs and targets of window `index`, appended.
    fn push_window(&self, index: usize, ids: &mut Vec<i64>, targets: &mut Vec<i64>) {
        let index = self.sample_window(index);
        match &self.samples {
            TextSamples::Classes(set) => {
                ids.extend(set.window(index).iter().map(|&t| i64::from(t)));
                targets.push(set.labels[index] as i64);
            }
            TextSamples::NextTokens { stream, context } => {
                let window = stream.window(index, *context);
                ids.extend(window[..*context].iter().map(|&t| i64::from(t)));
                targets.extend(window[1..].iter().map(|&t| i64::from(t)));
            }
        }
    }
}

impl LabelledSet for TextData {
    type Input = Tensor<2, Int>;

    fn len(&self) -> usize {
        match &self.windows {
            TextWindows::First(n) => *n,
            TextWindows::Chosen(chosen) => chosen.len(),
        }
    }

    fn input_shape(&self) -> TokenShape {
        TokenShape { length: self.context(), vocabulary: self.tokenizer().vocabulary() }
    }

    fn num_classes(&self) -> usize {
        match &self.samples {
            TextSamples::Classes(set) => set.num_classes(),
            TextSamples::NextTokens { stream, .. } => stream.tokenizer.vocabulary(),
        }
    }

    fn targets_per_sample(&self) -> usize {
        match &self.samples {
            TextSamples::Classes(_) => 1,
            TextSamples::NextTokens { context, .. } => *context,
        }
    }

    /// Batches built on the calling thread: a window is a copy of `context` ids, far cheaper
    /// than the forward pass that reads it.
    fn batches(&self, order: BatchOrder, device: &Device) -> Result<Batches<Tensor<2, Int>>> {
        if order.batch_size == 0 {
            return Err(TrainError::Invalid("a batch size of 0".into()));
        }
        let n = self.len();
        let indices: Vec<usize> = match order.shuffle {
            true => SplitMix64::for_stream(&[order.seed, order.epoch, 0x7e47]).permutation(n),
            false => (0..n).collect(),
        };
        let (data, device, context) = (self.clone(), device.clone(), self.context());
        let chunks: Vec<Vec<usize>> = indices.chunks(order.batch_size).map(<[usize]>::to_vec).collect();
        Ok(Box::new(chunks.into_iter().map(move |chunk| {
            let mut ids = Vec::with_capacity(chunk.len() * context);
            let mut targets = Vec::with_capacity(chunk.len() * data.targets_per_sample());
            for &i in &chunk {
                data.push_window(i, &mut ids, &mut targets);
            }
            let rows = targets.len();
            Ok(Batch {
                input: Tensor::from_data(TensorData::new(ids, [chunk.len(), context]), &device),
                targets: Tensor::from_data(TensorData::new(targets, [rows]), &device),
            })
        })))
    }

    /// `n` windows spread evenly over the data (window `⌊i·len/n⌋` for `i < n`), not the first
    /// `n`: documents are stored genre by genre (class folders in order, a corpus document after
    /// document), so the first windows would hold the first classes or documents only.
    fn take(&self, n: usize) -> Self {
        let len = self.len();
        if n >= len {
            return self.clone();
        }
        let chosen: Arc<[usize]> = (0..n).map(|i| self.sample_window(i * len / n)).collect();
        Self { windows: TextWindows::Chosen(chosen), samples: self.samples.clone() }
    }

    fn relabel(&self, map: &[usize], classes: usize) -> Result<Self> {
        let TextSamples::Classes(set) = &self.samples else {
            return Err(TrainError::Invalid(
                "a language model's targets are tokens: they cannot be relabelled to a hierarchy".into(),
            ));
        };
        if map.len() != set.num_classes() || map.iter().any(|&c| c >= classes) {
            return Err(TrainError::Invalid(format!(
                "a relabelling of {} entries into {classes} classes for {} classes",
                map.len(),
                set.num_classes()
            )));
        }
        let coarse = set.coarse_of_class().is_some_and(|of| of == map);
        let class_names = match coarse {
            true => set.coarse_class_names.clone(),
            false => (0..classes).map(|c| format!("class-{c}")).collect(),
        };
        let relabelled = TextSet {
            labels: set.labels.iter().map(|&l| map[l]).collect(),
            coarse_labels: None,
            class_names,
            coarse_class_names: Vec::new(),
            ..(**set).clone()
        };
        Ok(Self { windows: self.windows.clone(), samples: TextSamples::Classes(Arc::new(relabelled)) })
    }

    fn sample_name(&self) -> &'static str {
        "windows of text"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestednet_data::SEPARATOR_TOKEN;

    fn stream(tokens: Vec<u16>) -> TextStream {
        TextStream { tokens, documents: Vec::new(), tokenizer: TextTokenizer::Bytes }
    }

    #[test]
    fn a_corpus_gives_next_token_targets_for_every_position() {
        let device = Device::flex();
        let data = TextData::next_tokens(stream((0..10).collect()), 3);
        assert_eq!((data.len(), data.targets_per_sample(), data.num_classes()), (3, 3, 257));
        assert_eq!(data.input_shape(), TokenShape { length: 3, vocabulary: 257 });
        let batches: Vec<_> =
            data.batches(BatchOrder::in_order(2), &device).unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2);
        let ids: Vec<i64> = batches[0].input.to_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        let targets: Vec<i64> = batches[0].targets.to_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
        assert_eq!(targets, [1, 2, 3, 4, 5, 6]);
        assert_eq!(batches[1].input.dims(), [1, 3]);
        // A shuffled pass is a permutation of the windows, the same for the same epoch.
        let pass = |epoch| -> Vec<i64> {
            data.batches(BatchOrder::training(3, 7, epoch), &device)
                .unwrap()
                .flat_map(|b| b.unwrap().input.to_data().convert::<i64>().try_to_vec::<i64>().unwrap())
                .collect()
        };
        let mut sorted = pass(1);
        assert_eq!(pass(1), sorted);
        sorted.sort();
        assert_eq!(sorted, (0..9).collect::<Vec<_>>());
        assert_eq!(data.take(1).len(), 1);
        // A taken set spreads its windows over the data: 3 of 10 windows are windows 0, 3, 6.
        let long = TextData::next_tokens(stream((0..31).collect()), 3);
        let firsts = |data: &TextData| -> Vec<i64> {
            data.batches(BatchOrder::in_order(1), &device)
                .unwrap()
                .map(|b| b.unwrap().input.to_data().convert::<i64>().try_to_vec::<i64>().unwrap()[0])
                .collect()
        };
        assert_eq!(firsts(&long.take(3)), [0, 9, 18]);
        assert_eq!(firsts(&long.take(3).take(2)), [0, 9], "a taken set's own windows");
        assert_eq!(data.take(5).len(), 3);
        assert!(data.relabel(&[0], 1).is_err());
    }

    #[test]
    fn windows_of_documents_are_labelled_by_class_and_relabel_to_the_coarse_classes() {
        let set = TextSet {
            tokens: vec![1, 2, 3, SEPARATOR_TOKEN],
            context: 2,
            labels: vec![0, 2],
            coarse_labels: Some(vec![1, 0]),
            class_names: vec!["a".into(), "b".into(), "c".into()],
            coarse_class_names: vec!["x".into(), "y".into()],
            window_documents: vec![0, 1],
            documents: Vec::new(),
            tokenizer: TextTokenizer::Bytes,
        };
        let data = TextData::classes(set);
        assert_eq!((data.len(), data.num_classes(), data.targets_per_sample()), (2, 3, 1));
        let batch = data.batches(BatchOrder::in_order(8), &Device::flex()).unwrap().next().unwrap().unwrap();
        assert_eq!(batch.input.to_data().convert::<i64>().try_to_vec::<i64>().unwrap(), [1, 2, 3, 256]);
        assert_eq!(batch.targets.to_data().convert::<i64>().try_to_vec::<i64>().unwrap(), [0, 2]);
        let coarse = data.relabel(&[1, 0, 0], 2).unwrap();
        assert_eq!(coarse.text_set().unwrap().class_names, ["x", "y"]);
        assert_eq!(coarse.text_set().unwrap().labels, [1, 0]);
        assert!(data.relabel(&[0, 1], 2).is_err());
    }
}
