//! Text for nested transformers: byte-level tokens, plain-text class folders
//! ([`TextFolder`], laid out as the sibling `image_folder`'s, whose folder helpers it uses) and
//! corpora for language modelling ([`TextCorpus`]).
//!
//! **Tokens are bytes** ([`TextTokenizer::Bytes`]): ids `0..=255` are a file's bytes as they
//! are, id [`SEPARATOR_TOKEN`] (256) pads a short window and separates documents in a corpus.
//! Bytes, not a trained tokenizer, because:
//! - no token is ever missing from the vocabulary: any file, in any language or encoding, valid
//!   UTF-8 or not, is read as it is, never refused and never altered;
//! - a language model's loss is directly bits per byte, comparable across models and corpora;
//! - nothing has to be trained, stored beside a run or matched between a run and new text
//!   beyond the tokenizer's name, which a run records and checks.
//!
//! The price is sequences about four times longer than a subword tokenizer's, which the
//! attention's cost (quadratic in the context) pays on long contexts: the built-in models use
//! short ones.
//!
//! Every reader bounds what it reads: a file over [`MAX_TEXT_FILE_BYTES`] or a split over
//! [`MAX_TEXT_SPLIT_BYTES`] is an error naming it, read no further than the limit; so are an
//! empty file and a binary one (a NUL byte: an image, an archive) in a text folder.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::image_folder::{class_folders, class_label, sub_folders};
use crate::{DataError, Result};

/// The id that pads a window shorter than the context and separates documents in a corpus.
pub const SEPARATOR_TOKEN: u16 = 256;
/// Largest text file a reader reads (bytes).
pub const MAX_TEXT_FILE_BYTES: u64 = 256 << 20;
/// Largest split (all training or all test files together) a reader reads (bytes).
pub const MAX_TEXT_SPLIT_BYTES: u64 = 1 << 30;
/// Name of the optional file of a text folder that maps each class to its coarse class.
pub const COARSE_CLASSES_FILE: &str = "coarse-classes.tsv";

/// How text becomes token ids. A run records it; text read for a run must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextTokenizer {
    /// One token per byte (`0..=255`) plus [`SEPARATOR_TOKEN`].
    #[default]
    Bytes,
}

impl TextTokenizer {
    /// Number of distinct ids (257 for bytes).
    pub fn vocabulary(self) -> usize {
        match self {
            Self::Bytes => 257,
        }
    }

    /// The tokens of `text`.
    pub fn encode(self, text: &[u8]) -> Vec<u16> {
        match self {
            Self::Bytes => text.iter().map(|&b| u16::from(b)).collect(),
        }
    }

    /// The text of `tokens`, separators as `\n`, then read as UTF-8 where it is (lossily
    /// elsewhere): for showing samples.
    pub fn decode(self, tokens: &[u16]) -> String {
        match self {
            Self::Bytes => {
                let bytes: Vec<u8> = tokens.iter().map(|&t| u8::try_from(t).unwrap_or(b'\n')).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }

    /// Its name in messages and records (`bytes`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
        }
    }
}

/// Labelled windows of text documents, for classifiers: every window of `context` tokens of a
/// document is one example, labelled by its document's class.
///
/// A document is cut into consecutive, non-overlapping windows of `context` tokens. The last
/// one, if shorter, is padded with [`SEPARATOR_TOKEN`] and kept when it holds at least a
/// quarter of the context, or when it is the document's only window; a shorter tail is
/// dropped (it says little and would be mostly padding). No window spans two documents.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSet {
    /// Token ids of every window, `[windows, context]` row by row.
    pub tokens: Vec<u16>,
    /// Tokens per window.
    pub context: usize,
    /// Class of every window (its document's).
    pub labels: Vec<usize>,
    /// Coarse class of every window, when the folder has a [`COARSE_CLASSES_FILE`].
    pub coarse_labels: Option<Vec<usize>>,
    /// Names of the classes, in label order.
    pub class_names: Vec<String>,
    /// Names of the coarse classes, in label order (empty without a hierarchy).
    pub coarse_class_names: Vec<String>,
    /// Document of every window, an index into `documents`.
    pub window_documents: Vec<u32>,
    /// Every document's path, in reading order.
    pub documents: Vec<PathBuf>,
    /// How the tokens were made.
    pub tokenizer: TextTokenizer,
}

impl TextSet {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no window.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The tokens of window `index`.
    pub fn window(&self, index: usize) -> &[u16] {
        &self.tokens[index * self.context..(index + 1) * self.context]
    }

    /// The coarse class of every class, when there is a hierarchy.
    pub fn coarse_of_class(&self) -> Option<Vec<usize>> {
        let coarse = self.coarse_labels.as_ref()?;
        let mut map = vec![0; self.num_classes()];
        for (&fine, &c) in self.labels.iter().zip(coarse) {
            map[fine] = c;
        }
        Some(map)
    }

    /// The training windows and a validation set: the windows of a fraction `fraction` of the
    /// documents, spread evenly over them (every class keeps its share, as documents are read
    /// class by class), never a document split between the two.
    pub fn split_validation(self, fraction: f64) -> Result<(Self, Self)> {
        let held = held_out_documents(self.documents.len(), fraction, "documents")?;
        let keep: Vec<bool> = self.window_documents.iter().map(|&d| !held[d as usize]).collect();
        let part = |kept: bool| {
            let rows: Vec<usize> = (0..self.len()).filter(|&i| keep[i] == kept).collect();
            Self {
                tokens: rows.iter().flat_map(|&i| self.window(i).iter().copied()).collect(),
                labels: rows.iter().map(|&i| self.labels[i]).collect(),
                coarse_labels: self.coarse_labels.as_ref().map(|c| rows.iter().map(|&i| c[i]).collect()),
                window_documents: rows.iter().map(|&i| self.window_documents[i]).collect(),
                ..self.clone_meta()
            }
        };
        let (train, validation) = (part(true), part(false));
        if train.is_empty() || validation.is_empty() {
            return Err(DataError::Invalid(format!(
                "a validation split of {fraction} of {} documents leaves an empty part",
                self.documents.len()
            )));
        }
        Ok((train, validation))
    }

    /// Everything but the windows.
    fn clone_meta(&self) -> Self {
        Self {
            tokens: Vec::new(),
            context: self.context,
            labels: Vec::new(),
            coarse_labels: None,
            class_names: self.class_names.clone(),
            coarse_class_names: self.coarse_class_names.clone(),
            window_documents: Vec::new(),
            documents: self.documents.clone(),
            tokenizer: self.tokenizer,
        }
    }

    /// The first `n` windows.
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            tokens: self.tokens[..n * self.context].to_vec(),
            labels: self.labels[..n].to_vec(),
            coarse_labels: self.coarse_labels.as_ref().map(|c| c[..n].to_vec()),
            window_documents: self.window_documents[..n].to_vec(),
            ..self.clone()
        }
    }
}

/// A folder of text documents, one sub-folder per class:
///
/// ```text
/// DIR/train/<class>/<document>
/// DIR/test/<class>/<document>
/// DIR/coarse-classes.tsv        optional: <class> TAB <coarse class>, one line per class
/// ```
///
/// Classes are the training folder's sub-folders in sorted (byte) order, which gives their
/// labels; every test class must be one of them. Every visible file of a class folder is a
/// document, whatever its name; hidden files are skipped. A document's bytes are its tokens
/// ([`TextTokenizer::Bytes`]): text that is not UTF-8 is read as the bytes it is. An empty
/// file, a binary one (holding a NUL byte), a class folder without a document, or a coarse
/// map that misses or repeats a class, is an error naming the file or folder.
pub struct TextFolder;

impl TextFolder {
    /// Loads `dir/train` and `dir/test` as windows of `context` tokens.
    pub fn load(dir: &Path, context: usize) -> Result<(TextSet, TextSet)> {
        check_context(context)?;
        let (train_dir, test_dir, classes) = class_folders(dir, "a text folder")?;
        let coarse = read_coarse_classes(dir, &classes)?;
        let train = read_split(&train_dir, &classes, &classes, context, coarse.as_ref())?;
        let test = read_split(&test_dir, &sub_folders(&test_dir)?, &classes, context, coarse.as_ref())?;
        Ok((train, test))
    }
}

/// The coarse classes of a text folder: each class's coarse label and the coarse names.
#[derive(Debug, Clone)]
struct CoarseClasses {
    of_class: Vec<usize>,
    names: Vec<String>,
}

/// Reads `dir/coarse-classes.tsv` if there is one: every class exactly once.
fn read_coarse_classes(dir: &Path, classes: &[String]) -> Result<Option<CoarseClasses>> {
    let path = dir.join(COARSE_CLASSES_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_bounded(&path, 1 << 20)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| DataError::Invalid(format!("{}: not UTF-8 text", path.display())))?;
    let bad =
        |line: usize, reason: String| DataError::Invalid(format!("{}:{line}: {reason}", path.display()));
    let mut coarse_of: Vec<Option<String>> = vec![None; classes.len()];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((fine, coarse)) = line.split_once('\t') else {
            return Err(bad(i + 1, format!("`{line}`: expected `<class> TAB <coarse class>`")));
        };
        let (fine, coarse) = (fine.trim(), coarse.trim());
        let Some(index) = classes.iter().position(|c| c == fine) else {
            return Err(bad(
                i + 1,
                format!("class `{fine}` is not a training class ({})", classes.join(", ")),
            ));
        };
        if coarse.is_empty() {
            return Err(bad(i + 1, format!("class `{fine}` has an empty coarse class")));
        }
        if coarse_of[index].replace(coarse.to_string()).is_some() {
            return Err(bad(i + 1, format!("class `{fine}` is listed twice")));
        }
    }
    let missing: Vec<&str> =
        classes.iter().zip(&coarse_of).filter(|(_, c)| c.is_none()).map(|(n, _)| n.as_str()).collect();
    if !missing.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: no coarse class for {}",
            path.display(),
            missing.join(", ")
        )));
    }
    let coarse_of: Vec<String> = coarse_of.into_iter().flatten().collect();
    let mut names = coarse_of.clone();
    names.sort();
    names.dedup();
    if names.len() < 2 || names.len() >= classes.len() {
        return Err(DataError::Invalid(format!(
            "{}: {} coarse classes for {} classes: a hierarchy needs at least 2 and fewer than the classes",
            path.display(),
            names.len(),
            classes.len()
        )));
    }
    let of_class = coarse_of.iter().map(|c| names.iter().position(|n| n == c).unwrap_or(0)).collect();
    Ok(Some(CoarseClasses { of_class, names }))
}

/// Every document of the class folders `present` of `dir` (each among `classes`), windowed.
fn read_split(
    dir: &Path,
    present: &[String],
    classes: &[String],
    context: usize,
    coarse: Option<&CoarseClasses>,
) -> Result<TextSet> {
    let tokenizer = TextTokenizer::Bytes;
    let mut set = TextSet {
        tokens: Vec::new(),
        context,
        labels: Vec::new(),
        coarse_labels: coarse.map(|_| Vec::new()),
        class_names: classes.to_vec(),
        coarse_class_names: coarse.map(|c| c.names.clone()).unwrap_or_default(),
        window_documents: Vec::new(),
        documents: Vec::new(),
        tokenizer,
    };
    let mut budget = MAX_TEXT_SPLIT_BYTES;
    for name in present {
        let label = class_label(dir, name, classes)?;
        let folder = dir.join(name);
        let files = visible_files(&folder, false)?;
        if files.is_empty() {
            return Err(DataError::Invalid(format!(
                "{}: no document in this class folder",
                folder.display()
            )));
        }
        for path in files {
            let text = read_document(&path, &mut budget)?;
            let document = set.documents.len() as u32;
            for window in windows(&tokenizer.encode(&text), context) {
                set.tokens.extend_from_slice(&window);
                set.labels.push(label);
                set.window_documents.push(document);
                if let (Some(labels), Some(c)) = (set.coarse_labels.as_mut(), coarse) {
                    labels.push(c.of_class[label]);
                }
            }
            set.documents.push(path);
        }
    }
    Ok(set)
}

/// The windows of one document (see [`TextSet`]): full ones, then the padded tail if kept.
fn windows(tokens: &[u16], context: usize) -> Vec<Vec<u16>> {
    let mut out: Vec<Vec<u16>> = tokens.chunks(context).map(<[u16]>::to_vec).collect();
    if let Some(last) = out.last_mut().filter(|l| l.len() < context) {
        last.resize(context, SEPARATOR_TOKEN);
    }
    let tail = tokens.len() % context;
    if out.len() > 1 && tail > 0 && tail * 4 < context {
        out.pop();
    }
    out
}

/// The training and test streams of a text corpus, for language models.
///
/// ```text
/// DIR/train     a file, or a folder: every visible file below it, in sorted path order
/// DIR/test      the same
/// ```
///
/// A text folder for classifiers is also a corpus (its class folders are read in order). The
/// documents of a split are joined into one stream of tokens with [`SEPARATOR_TOKEN`] between
/// them; a model reads it as consecutive windows ([`TextStream::window`]). Empty and binary
/// files are errors, as in [`TextFolder`].
pub struct TextCorpus;

/// One split of a corpus: every document's tokens, one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TextStream {
    /// Tokens of every document, each followed by [`SEPARATOR_TOKEN`].
    pub tokens: Vec<u16>,
    /// Every document's path, in reading order.
    pub documents: Vec<PathBuf>,
    /// How the tokens were made.
    pub tokenizer: TextTokenizer,
}

impl TextStream {
    /// Number of windows of `context` inputs (each with its `context` next tokens as targets):
    /// consecutive, overlapping by one token, the last incomplete one dropped.
    pub fn num_windows(&self, context: usize) -> usize {
        self.tokens.len().saturating_sub(1).checked_div(context).unwrap_or(0)
    }

    /// Window `index` of `context` inputs: `context + 1` tokens, the inputs and, shifted by
    /// one, the targets.
    pub fn window(&self, index: usize, context: usize) -> &[u16] {
        &self.tokens[index * context..(index + 1) * context + 1]
    }

    /// The training stream and a validation stream: a fraction `fraction` of the documents,
    /// spread evenly over the corpus (see [`TextSet::split_validation`]).
    pub fn split_validation(self, fraction: f64) -> Result<(Self, Self)> {
        let held = held_out_documents(self.documents.len(), fraction, "documents")?;
        let (mut train, mut validation) = (self.clone_empty(), self.clone_empty());
        // Every document ends with a separator (and holds none: its tokens are bytes).
        for (index, document) in self.tokens.split_inclusive(|&t| t == SEPARATOR_TOKEN).enumerate() {
            let part = if held.get(index).copied().unwrap_or(false) { &mut validation } else { &mut train };
            part.tokens.extend_from_slice(document);
            if let Some(path) = self.documents.get(index) {
                part.documents.push(path.clone());
            }
        }
        Ok((train, validation))
    }

    fn clone_empty(&self) -> Self {
        Self { tokens: Vec::new(), documents: Vec::new(), tokenizer: self.tokenizer }
    }

    /// The first `n` windows of `context` only.
    pub fn take_windows(&self, n: usize, context: usize) -> Self {
        let end = (n.min(self.num_windows(context)) * context + 1).min(self.tokens.len());
        Self { tokens: self.tokens[..end].to_vec(), ..self.clone() }
    }
}

impl TextCorpus {
    /// Loads `dir/train` and `dir/test`.
    pub fn load(dir: &Path) -> Result<(TextStream, TextStream)> {
        let train = Self::load_split(&dir.join("train"))?;
        let test = Self::load_split(&dir.join("test"))?;
        Ok((train, test))
    }

    /// Loads one split: a file, or every visible file below a folder.
    pub fn load_split(path: &Path) -> Result<TextStream> {
        let files = if path.is_file() {
            vec![path.to_path_buf()]
        } else if path.is_dir() {
            visible_files(path, true)?
        } else {
            return Err(DataError::Missing { tried: vec![path.to_path_buf()] });
        };
        if files.is_empty() {
            return Err(DataError::Invalid(format!("{}: no text file in this folder", path.display())));
        }
        let tokenizer = TextTokenizer::Bytes;
        let mut budget = MAX_TEXT_SPLIT_BYTES;
        let mut tokens = Vec::new();
        for file in &files {
            tokens.extend(tokenizer.encode(&read_document(file, &mut budget)?));
            tokens.push(SEPARATOR_TOKEN);
        }
        Ok(TextStream { tokens, documents: files, tokenizer })
    }
}

/// Which of `n` documents a validation split of `fraction` holds out: document `i` when
/// `⌊(i + 1)·f⌋ > ⌊i·f⌋`, an even spread; an error unless both parts are non-empty.
fn held_out_documents(n: usize, fraction: f64, what: &str) -> Result<Vec<bool>> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DataError::Invalid(format!(
            "validation split {fraction}: give a fraction of the training set between 0 and 1 (e.g. 0.125)"
        )));
    }
    let held: Vec<bool> =
        (0..n).map(|i| ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor()).collect();
    let count = held.iter().filter(|&&h| h).count();
    if count == 0 || count == n {
        return Err(DataError::Invalid(format!(
            "a validation split of {fraction} of {n} training {what} leaves an empty part"
        )));
    }
    Ok(held)
}

/// `context` must give windows: at least 2 tokens, at most 1 Mi.
pub(crate) fn check_context(context: usize) -> Result<()> {
    if !(2..=1 << 20).contains(&context) {
        return Err(DataError::Invalid(format!("a context of {context} tokens: give between 2 and 1048576")));
    }
    Ok(())
}

/// One document's bytes, checked: not empty, not binary, within the file's and the split's
/// remaining budget (which it uses up).
fn read_document(path: &Path, budget: &mut u64) -> Result<Vec<u8>> {
    let limit = MAX_TEXT_FILE_BYTES.min(*budget);
    let bytes = read_bounded(path, limit).map_err(|e| match e {
        DataError::BadSize { path, .. } if limit < MAX_TEXT_FILE_BYTES => DataError::BadSize {
            path,
            reason: format!("the split's files hold more than {MAX_TEXT_SPLIT_BYTES} bytes together"),
        },
        other => other,
    })?;
    *budget -= bytes.len() as u64;
    let bad = |reason: String| DataError::BadSize { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(bad("an empty file: a text document needs at least one byte".into()));
    }
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(bad(format!(
            "not a text file: it holds a NUL byte (at offset {at}), as images and archives do; \
             text folders hold text documents only"
        )));
    }
    Ok(bytes)
}

/// The bytes of `path`, or an error naming it when it holds more than `limit` (read no
/// further than that).
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(DataError::BadSize {
            path: path.to_path_buf(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}

/// The visible files of `dir` (and, when `recursive`, of its visible sub-folders), sorted by
/// path.
fn visible_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for path in visible_entries(&folder)? {
            if path.is_file() {
                files.push(path);
            } else if recursive && path.is_dir() {
                folders.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Entries of `dir` whose names do not start with a dot.
fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Two classes, `a` (two documents) and `b`, in train and test.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("train/a/1.txt"), b"abcdefghij");
        write(&dir.path().join("train/a/2.txt"), b"xy");
        write(&dir.path().join("train/b/1.txt"), b"caf\xc3\xa9 \xff");
        write(&dir.path().join("test/b/9.txt"), b"0123");
        write(&dir.path().join("train/b/.hidden"), b"\0\0");
        dir
    }

    #[test]
    fn windows_cut_pad_and_drop_short_tails() {
        let pad = SEPARATOR_TOKEN;
        let nine = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(
            windows(&nine, 8),
            vec![vec![1, 2, 3, 4, 5, 6, 7, 8]],
            "a tail under a quarter is dropped"
        );
        assert_eq!(windows(&nine, 4)[2], vec![9, pad, pad, pad], "a quarter is kept");
        assert_eq!(windows(&[1, 2, 3, 4, 5], 2), vec![vec![1, 2], vec![3, 4], vec![5, pad]]);
        assert_eq!(windows(&[1], 8), vec![vec![1, pad, pad, pad, pad, pad, pad, pad]]);
        assert_eq!(windows(&[1, 2, 3, 4, 5, 6], 4), vec![vec![1, 2, 3, 4], vec![5, 6, pad, pad]]);
    }

    #[test]
    fn a_text_folder_reads_bytes_with_labels_and_documents() {
        let dir = folder();
        let (train, test) = TextFolder::load(dir.path(), 4).unwrap();
        assert_eq!(train.class_names, ["a", "b"]);
        // a/1: 10 bytes -> 2 full windows + a 2-byte tail (kept: half the context); a/2: one
        // padded window; b/1: "café \xff" is 7 bytes -> 1 full + a 3-byte tail.
        assert_eq!(train.labels, [0, 0, 0, 0, 1, 1]);
        assert_eq!(train.window_documents, [0, 0, 0, 1, 2, 2]);
        assert_eq!(train.window(3), [u16::from(b'x'), u16::from(b'y'), 256, 256]);
        assert_eq!(
            train.window(5),
            [0xa9, u16::from(b' '), 0xff, 256],
            "bytes as they are, not UTF-8 checked"
        );
        assert_eq!(test.labels, [1]);
        assert_eq!(test.class_names, train.class_names);
        assert!(train.coarse_labels.is_none());
        assert_eq!(train.take(2).len(), 2);
    }

    #[test]
    fn coarse_classes_come_from_the_tsv() {
        let dir = folder();
        write(&dir.path().join("train/c/1.txt"), b"hello");
        write(&dir.path().join(COARSE_CLASSES_FILE), b"# group\na\tvowel\nb\tconsonant\nc\tconsonant\n");
        let (train, test) = TextFolder::load(dir.path(), 4).unwrap();
        assert_eq!(train.coarse_class_names, ["consonant", "vowel"]);
        assert_eq!(train.coarse_of_class(), Some(vec![1, 0, 0]));
        assert_eq!(test.coarse_labels, Some(vec![0]));
        write(&dir.path().join(COARSE_CLASSES_FILE), b"a\tvowel\nb\tconsonant\n");
        let err = TextFolder::load(dir.path(), 4).unwrap_err().to_string();
        assert!(err.contains("no coarse class for c"), "{err}");
        write(&dir.path().join(COARSE_CLASSES_FILE), b"a\tvowel\nz\tx\n");
        let err = TextFolder::load(dir.path(), 4).unwrap_err().to_string();
        assert!(err.contains(":2: class `z` is not a training class"), "{err}");
        write(&dir.path().join(COARSE_CLASSES_FILE), b"a vowel\n");
        assert!(TextFolder::load(dir.path(), 4).unwrap_err().to_string().contains("expected `<class> TAB"));
    }

    #[test]
    fn bad_text_folders_name_the_problem() {
        let dir = folder();
        write(&dir.path().join("train/a/empty.txt"), b"");
        let err = TextFolder::load(dir.path(), 4).unwrap_err().to_string();
        assert!(err.contains("empty.txt") && err.contains("an empty file"), "{err}");
        std::fs::remove_file(dir.path().join("train/a/empty.txt")).unwrap();
        write(&dir.path().join("train/a/picture.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        let err = TextFolder::load(dir.path(), 4).unwrap_err().to_string();
        assert!(err.contains("picture.png") && err.contains("NUL byte"), "{err}");
        std::fs::remove_file(dir.path().join("train/a/picture.png")).unwrap();
        write(&dir.path().join("test/z/1.txt"), b"zzz");
        let err = TextFolder::load(dir.path(), 4).unwrap_err().to_string();
        assert!(err.contains("class `z` has no training folder"), "{err}");
        std::fs::remove_dir_all(dir.path().join("test/z")).unwrap();
        std::fs::create_dir_all(dir.path().join("train/d")).unwrap();
        let err = TextFolder::load(dir.path(), 4).unwrap_err().to_string();
        assert!(err.contains("no document in this class folder"), "{err}");
        let err = TextFolder::load(dir.path(), 1).unwrap_err().to_string();
        assert!(err.contains("a context of 1 tokens"), "{err}");
        assert!(matches!(TextFolder::load(&dir.path().join("nowhere"), 4), Err(DataError::Missing { .. })));
    }

    #[test]
    fn a_corpus_is_one_stream_of_separated_documents() {
        let dir = folder();
        let (train, test) = TextCorpus::load(dir.path()).unwrap();
        assert_eq!(train.documents.len(), 3);
        assert_eq!(train.tokens.len(), 10 + 1 + 2 + 1 + 7 + 1);
        assert_eq!(train.tokens[10], SEPARATOR_TOKEN);
        assert_eq!(train.num_windows(4), 5);
        assert_eq!(train.window(1, 4), &train.tokens[4..9]);
        assert_eq!(test.tokens, [48, 49, 50, 51, 256]);
        assert_eq!(train.take_windows(2, 4).num_windows(4), 2);
        let single = TextCorpus::load_split(&dir.path().join("test/b/9.txt")).unwrap();
        assert_eq!(single.tokens, test.tokens);
    }

    #[test]
    fn oversized_files_are_refused_without_reading_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        write(&path, &vec![b'a'; 1000]);
        let err = read_bounded(&path, 999).unwrap_err().to_string();
        assert!(err.contains("big.txt") && err.contains("larger than 999 bytes"), "{err}");
        assert_eq!(read_bounded(&path, 1000).unwrap().len(), 1000);
        let mut budget = 500;
        let err = read_document(&path, &mut budget).unwrap_err().to_string();
        assert!(err.contains("the split's files hold more than"), "{err}");
    }

    /// The vendored Brown corpus (data/brown) reads as its README says.
    #[test]
    fn the_vendored_brown_corpus_reads_as_documented() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/brown");
        let (train, test) = TextFolder::load(&dir, 256).unwrap();
        assert_eq!(train.num_classes(), 15);
        assert_eq!((train.documents.len(), test.documents.len()), (407, 93));
        assert_eq!(train.coarse_class_names, ["imaginative", "informative"]);
        let coarse = train.coarse_of_class().unwrap();
        assert_eq!(coarse, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
        // Split by document: no document is in both sets.
        let names =
            |s: &TextSet| s.documents.iter().map(|p| p.file_name().unwrap().to_owned()).collect::<Vec<_>>();
        assert!(names(&test).iter().all(|n| !names(&train).contains(n)));
        assert!(train.len() > 18_000 && test.len() > 4_000, "{} / {}", train.len(), test.len());
        let (train, test) = TextCorpus::load(&dir).unwrap();
        assert_eq!(train.tokens.len(), 4_853_294 + 407);
        assert_eq!(test.tokens.len(), 1_112_614 + 93);
    }

    #[test]
    fn validation_splits_hold_out_whole_documents_spread_evenly() {
        let dir = folder();
        write(&dir.path().join("train/b/2.txt"), b"klmnop");
        let (train, _) = TextFolder::load(dir.path(), 4).unwrap();
        // 4 documents, a half held out: the 2nd and the 4th (one of each class).
        let (kept, held) = train.clone().split_validation(0.5).unwrap();
        assert_eq!(kept.window_documents, [0, 0, 0, 2, 2]);
        assert_eq!(held.window_documents, [1, 3, 3]);
        assert_eq!((kept.labels.clone(), held.labels.clone()), (vec![0, 0, 0, 1, 1], vec![0, 1, 1]));
        assert_eq!(held.window(0), train.window(3));
        let err = train.clone().split_validation(0.1).unwrap_err().to_string();
        assert!(err.contains("of 4 training documents leaves an empty part"), "{err}");
        assert!(train.split_validation(1.0).is_err());
        let (stream, _) = TextCorpus::load(dir.path()).unwrap();
        let (kept, held) = stream.clone().split_validation(0.5).unwrap();
        assert_eq!(kept.tokens.len() + held.tokens.len(), stream.tokens.len());
        assert_eq!(held.documents, [stream.documents[1].clone(), stream.documents[3].clone()]);
        assert_eq!(held.tokens[..3], [u16::from(b'x'), u16::from(b'y'), SEPARATOR_TOKEN]);
    }

    #[test]
    fn the_tokenizer_round_trips_text() {
        let tokens = TextTokenizer::Bytes.encode("héllo".as_bytes());
        assert_eq!(tokens.len(), 6);
        assert_eq!(TextTokenizer::Bytes.decode(&tokens), "héllo");
        assert_eq!(TextTokenizer::Bytes.vocabulary(), 257);
    }
}
