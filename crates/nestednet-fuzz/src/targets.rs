//! The fuzz targets: one per kind of file a user can hand over.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use nestednet::burn::prelude::*;
use nestednet::data::{
    COARSE_CLASSES_FILE, Cifar10, Cifar100, ImageFolder, ImageSet, Mnist, Normalization, TextCorpus,
    TextFolder,
};
use nestednet::heads::Hierarchy;
use nestednet::models::{
    ChannelImportance, LevelRequest, ModelFamily, ModelRequest, NestedMnistCnnConfig, NestedNetwork,
    NestedNetworkConfig,
};
use nestednet::schedule::LevelSpec;
use nestednet::train::export::{ExportFormat, export_level, export_mix, load_level, nestify};
use nestednet::train::serve::{calibrated_mix, calibration_batches};
use nestednet::train::trainer::{QuietProgress, RunConfig, RunDir, TrainData, TrainingConfig, train};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};

use crate::alloc;

/// Every target's name.
pub fn names() -> [&'static str; 7] {
    ["idx", "cifar", "image-folder", "text-folder", "hierarchy", "run-folder", "level-files"]
}

/// One target with its working folder and, for the run and export targets, the valid files
/// its inputs mutate.
pub struct Target {
    name: &'static str,
    dir: tempfile::TempDir,
    /// (relative path, bytes) of a valid run folder or of valid exports.
    seeds: Vec<(String, Vec<u8>)>,
}

/// How a valid file is damaged.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set these bytes (positions taken modulo the length).
    Flip(Vec<(usize, u8)>),
    /// Keep only the first bytes (a fraction of the length, in thousandths).
    Truncate(u16),
    /// Insert bytes at a position (modulo the length).
    Insert(usize, Vec<u8>),
    /// JSON files: replace the n-th number with this one.
    Number(usize, f64),
    /// JSON files: replace the n-th value (any kind) with this text.
    Value(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let number = prop_oneof![
        Just(0.0),
        Just(-1.0),
        Just(1.0),
        Just(1e308),
        Just(f64::from(u32::MAX)),
        Just(9.3e18),
        Just(1e-30),
        (0u32..64).prop_map(f64::from),
    ];
    prop_oneof![
        vec((any::<usize>(), any::<u8>()), 1..8).prop_map(Mutation::Flip),
        (0u16..1000).prop_map(Mutation::Truncate),
        (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (0usize..64, number).prop_map(|(n, x)| Mutation::Number(n, x)),
        (0usize..64, "[\\[\\]{}\",:a-z0-9\\-.]{0,12}").prop_map(|(n, t)| Mutation::Value(n, t)),
    ]
}

/// `bytes` damaged by `m`.
fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let len = out.len().max(1);
    match m {
        Mutation::Flip(edits) => {
            for &(at, b) in edits {
                if !out.is_empty() {
                    out[at % len] = b;
                }
            }
        }
        Mutation::Truncate(k) => out.truncate(out.len() * usize::from(*k) / 1000),
        Mutation::Insert(at, b) => {
            let at = at % (out.len() + 1);
            out.splice(at..at, b.iter().copied());
        }
        Mutation::Number(n, _) | Mutation::Value(n, _)
            if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() =>
        {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).expect("checked");
            let mut seen = 0;
            let replacement = match m {
                Mutation::Number(_, x) => serde_json::Number::from_f64(*x).map(serde_json::Value::Number),
                Mutation::Value(_, text) => {
                    Some(serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.clone())))
                }
                _ => None,
            };
            replace_nth(&mut value, *n, matches!(m, Mutation::Number(..)), &mut seen, &replacement);
            out = serde_json::to_vec(&value).expect("JSON values serialize");
        }
        // Not JSON (a binary file): flip the byte instead.
        Mutation::Number(n, _) | Mutation::Value(n, _) => {
            if !out.is_empty() {
                out[n % len] ^= 0x5a;
            }
        }
    }
    out
}

/// Replaces the `n`-th number (or any scalar value) of `value`, depth first.
fn replace_nth(
    value: &mut serde_json::Value,
    n: usize,
    numbers_only: bool,
    seen: &mut usize,
    with: &Option<serde_json::Value>,
) -> bool {
    let hit = match value {
        serde_json::Value::Number(_) => true,
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => false,
        _ => !numbers_only,
    };
    if hit {
        if *seen == n {
            if let Some(w) = with {
                *value = w.clone();
            }
            return true;
        }
        *seen += 1;
        return false;
    }
    match value {
        serde_json::Value::Array(items) => {
            items.iter_mut().any(|v| replace_nth(v, n, numbers_only, seen, with))
        }
        serde_json::Value::Object(map) => {
            map.values_mut().any(|v| replace_nth(v, n, numbers_only, seen, with))
        }
        _ => false,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("in memory");
    enc.finish().expect("in memory")
}

/// An idx file: magic, dimensions (small, zero, huge), data of any length, raw or gzip (maybe
/// truncated, maybe inflating far past its header).
#[derive(Debug, Clone)]
struct IdxInput {
    magic: u32,
    dims: Vec<u32>,
    data: Vec<u8>,
    gz: bool,
    bomb_kib: u32,
    truncate: Option<u16>,
}

fn idx_input(ndim: u32) -> impl Strategy<Value = IdxInput> {
    let dim = prop_oneof![0u32..12, Just(u32::MAX), Just(1 << 16), any::<u32>()];
    let magic = prop_oneof![Just(0x800 | ndim), Just(0x800 | ndim), any::<u32>()];
    (
        magic,
        vec(dim, ndim as usize..=ndim as usize),
        vec(any::<u8>(), 0..600),
        any::<bool>(),
        0u32..2048,
        proptest::option::of(0u16..1000),
    )
        .prop_map(|(magic, dims, data, gz, bomb_kib, truncate)| IdxInput {
            magic,
            dims,
            data,
            gz,
            bomb_kib,
            truncate,
        })
}

fn idx_bytes(input: &IdxInput) -> Vec<u8> {
    let mut raw = input.magic.to_be_bytes().to_vec();
    for d in &input.dims {
        raw.extend(d.to_be_bytes());
    }
    raw.extend(&input.data);
    if !input.gz {
        return raw;
    }
    raw.extend(std::iter::repeat_n(0u8, input.bomb_kib as usize * 1024));
    let mut gz = gzip(&raw);
    if let Some(k) = input.truncate {
        gz.truncate(gz.len() * usize::from(k) / 1000);
    }
    gz
}

/// A CIFAR record file: records with any label bytes, trailing junk, raw or gzip.
#[derive(Debug, Clone)]
struct CifarInput {
    records: Vec<(u8, u8)>,
    junk: Vec<u8>,
    gz: bool,
    bomb_kib: u32,
}

/// An image folder: classes (some names odd), files that are random bytes or valid images with
/// damage, and a resize size.
#[derive(Debug, Clone)]
struct FolderInput {
    files: Vec<(bool, u8, u8, Vec<u8>, Mutation)>,
    size: Option<(usize, usize)>,
}

impl Target {
    /// The target `name`, with its valid seed files made.
    pub fn new(name: &str) -> Result<Self> {
        let name = names().into_iter().find(|n| *n == name).expect("a known target");
        let dir = tempfile::tempdir()?;
        let seeds = match name {
            "run-folder" | "level-files" | "image-folder" => seed_files(name, dir.path())?,
            _ => Vec::new(),
        };
        Ok(Self { name, dir, seeds })
    }

    /// Runs the runner's cases on this target.
    pub fn run(&self, runner: &mut TestRunner) -> std::result::Result<(), TestError<String>> {
        match self.name {
            "idx" => self.idx(runner),
            "cifar" => self.cifar(runner),
            "hierarchy" => self.hierarchy(runner),
            "image-folder" => self.image_folder(runner),
            "text-folder" => self.text_folder(runner),
            "run-folder" | "level-files" => self.files(runner),
            other => unreachable!("unknown target {other}"),
        }
    }

    /// idx files (raw and gzip), any dimensions.
    fn idx(&self, runner: &mut TestRunner) -> std::result::Result<(), TestError<String>> {
        let dir = self.dir.path();
        shown(runner.run(&(idx_input(3), idx_input(1)), |(images, labels)| {
            let (i, l) = (idx_bytes(&images), idx_bytes(&labels));
            let (ip, lp) = (dir.join("images"), dir.join("labels"));
            std::fs::write(&ip, &i).unwrap();
            std::fs::write(&lp, &l).unwrap();
            let declared = |x: &IdxInput, file: usize| -> usize {
                let product =
                    x.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d as usize)).unwrap_or(usize::MAX);
                product.min(if x.gz { file.saturating_mul(1032) } else { file })
            };
            let bound = 2 * (declared(&images, i.len()) + declared(&labels, l.len()))
                + 2 * (i.len() + l.len())
                + (4 << 20);
            bounded(bound, || {
                let _ = Mnist::load_split(&ip, &lp);
            })
        }))
    }

    /// CIFAR-10 and CIFAR-100 binary files, raw and gzip (bombs included).
    fn cifar(&self, runner: &mut TestRunner) -> std::result::Result<(), TestError<String>> {
        let dir = self.dir.path();
        let strategy =
            (vec((any::<u8>(), any::<u8>()), 0..6), vec(any::<u8>(), 0..3100), any::<bool>(), 0u32..4096)
                .prop_map(|(records, junk, gz, bomb_kib)| CifarInput { records, junk, gz, bomb_kib });
        shown(runner.run(&strategy, |input| {
            let mut raw = Vec::new();
            for (i, &(a, b)) in input.records.iter().enumerate() {
                raw.extend([a, b]);
                raw.extend(std::iter::repeat_n(i as u8, 3072));
            }
            raw.extend(&input.junk);
            let bytes = if input.gz {
                raw.extend(std::iter::repeat_n(7u8, input.bomb_kib as usize * 1024));
                gzip(&raw)
            } else {
                raw.clone()
            };
            let path = dir.join("batch.bin");
            std::fs::write(&path, &bytes).unwrap();
            let content = raw.len().min(nestednet::data::MAX_RECORDS_PER_FILE * 3074 + 1);
            bounded(3 * content + 2 * bytes.len() + (4 << 20), || {
                let _ = Cifar10::load_files(std::slice::from_ref(&path));
                let _ = Cifar100::load_files(std::slice::from_ref(&path));
            })
        }))
    }

    /// Class hierarchies as CSV and JSON.
    fn hierarchy(&self, runner: &mut TestRunner) -> std::result::Result<(), TestError<String>> {
        let dir = self.dir.path();
        let csv_row = (
            prop_oneof![
                Just("0".to_string()),
                Just("1".to_string()),
                Just("18446744073709551615".to_string()),
                "[0-9]{1,25}",
                "[a-z-]{0,3}"
            ],
            vec("[a-z]{0,3}", 0..4),
        )
            .prop_map(|(label, cells)| format!("{label},{}", cells.join(",")));
        let csv = (prop_oneof![Just("label,coarse,fine".to_string()), "[a-z,]{0,20}"], vec(csv_row, 0..12))
            .prop_map(|(header, rows)| format!("{header}\n{}", rows.join("\n")));
        let json = (vec("[a-z]{0,3}", 0..4), vec(("[a-z]{0,3}", vec("[a-z]{0,3}", 0..4)), 0..10), mutation())
            .prop_map(|(depths, classes, m)| {
                let classes: Vec<_> = classes
                    .into_iter()
                    .map(|(name, path)| serde_json::json!({"name": name, "path": path}))
                    .collect();
                let text =
                    serde_json::to_vec(&serde_json::json!({"depths": depths, "classes": classes})).unwrap();
                String::from_utf8_lossy(&mutate(&text, &m)).into_owned()
            });
        shown(runner.run(&(csv, json), |(csv, json)| {
            let (c, j) = (dir.join("h.csv"), dir.join("h.json"));
            std::fs::write(&c, &csv).unwrap();
            std::fs::write(&j, &json).unwrap();
            bounded(64 * (csv.len() + json.len()) + (4 << 20), || {
                for path in [&c, &j] {
                    if let Ok(h) = Hierarchy::load(path) {
                        let _ = h.check_classes(10);
                        let n = h.num_fine();
                        let _ = h.labels_at(&(0..n).collect::<Vec<_>>(), 0);
                    }
                }
            })
        }))
    }

    /// Image folders of valid, damaged and random PNG and JPEG files.
    fn image_folder(&self, runner: &mut TestRunner) -> std::result::Result<(), TestError<String>> {
        let dir = self.dir.path();
        let file = (any::<bool>(), 0u8..3, 0u8..3, vec(any::<u8>(), 0..300), mutation());
        let strategy = (vec(file, 1..6), proptest::option::of((1usize..40, 1usize..40)))
            .prop_map(|(files, size)| FolderInput { files, size });
        shown(runner.run(&strategy, |input| {
            let root = dir.join("folder");
            let _ = std::fs::remove_dir_all(&root);
            for (i, (train, class, kind, random, m)) in input.files.iter().enumerate() {
                let split = if *train { "train" } else { "test" };
                let folder = root.join(split).join(format!("c{class}"));
                std::fs::create_dir_all(&folder).unwrap();
                let (ext, bytes) = match kind {
                    0 => ("png", random.clone()),
                    1 => ("png", mutate(&self.seeds[0].1, m)),
                    _ => ("jpg", mutate(&self.seeds[1].1, m)),
                };
                std::fs::write(folder.join(format!("{i}.{ext}")), bytes).unwrap();
            }
            // Decoding is bounded by the reader's own limits (16,384 pixels a side,
            // 512 MiB per image); resized sets are small here.
            let size = input.size.map(|(h, w)| [h, w]);
            bounded(600 << 20, || {
                let _ = ImageFolder::load(&root, size);
            })
        }))
    }

    /// A text folder (and the same folder as a corpus): documents that are text, random bytes
    /// (NULs, invalid UTF-8) or damaged text, odd class names, a coarse-class map that is
    /// valid, damaged or random, and any context length.
    fn text_folder(&self, runner: &mut TestRunner) -> std::result::Result<(), TestError<String>> {
        let dir = self.dir.path();
        let text = "The jury said, \"no evidence\".\nCaf\u{e9} \u{2014} na\u{ef}ve.\n".as_bytes().to_vec();
        let file = (any::<bool>(), 0u8..3, any::<bool>(), vec(any::<u8>(), 0..300), mutation());
        let coarse = proptest::option::of((any::<bool>(), mutation()));
        let strategy = (vec(file, 1..8), coarse, 0usize..70);
        shown(runner.run(&strategy, |(files, coarse, context)| {
            let root = dir.join("text");
            let _ = std::fs::remove_dir_all(&root);
            for (i, (train, class, random, bytes, m)) in files.iter().enumerate() {
                let split = if *train { "train" } else { "test" };
                let folder = root.join(split).join(format!("c{class}"));
                std::fs::create_dir_all(&folder).unwrap();
                let bytes = if *random { bytes.clone() } else { mutate(&text, m) };
                std::fs::write(folder.join(format!("{i}.txt")), bytes).unwrap();
            }
            if let Some((valid, m)) = &coarse {
                let map = b"c0\tlow\nc1\tlow\nc2\thigh\n".to_vec();
                std::fs::write(root.join(COARSE_CLASSES_FILE), if *valid { map } else { mutate(&map, m) })
                    .unwrap();
            }
            // Files here are a few hundred bytes; the readers bound a file at 256 MiB.
            bounded(64 << 20, || {
                let _ = TextFolder::load(&root, context);
                let _ = TextCorpus::load(&root);
            })
        }))
    }

    /// Run folders and exported level files, one file of the seed set damaged.
    fn files(&self, runner: &mut TestRunner) -> std::result::Result<(), TestError<String>> {
        let dir = self.dir.path();
        let strategy = (0..self.seeds.len(), mutation());
        shown(runner.run(&strategy, |(which, m)| {
            let root = dir.join("work");
            let _ = std::fs::remove_dir_all(&root);
            let mut total = 0;
            for (i, (rel, bytes)) in self.seeds.iter().enumerate() {
                let path = root.join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let bytes = if i == which { mutate(bytes, &m) } else { bytes.clone() };
                total += bytes.len();
                std::fs::write(&path, bytes).unwrap();
            }
            // A configuration may declare a network up to the readers' limit: the bound
            // is what the (possibly damaged) configuration declares, plus the files.
            let declared = declared_params(&root, self.name) * 4;
            bounded(4 * declared + 8 * total + (64 << 20), || {
                let device = Device::flex();
                if self.name == "run-folder" {
                    let run = RunDir::new(root.join("run"));
                    let _ = run.load_config::<NestedMnistCnnConfig>();
                    let _ = run.load_checkpoint_state();
                    let _ = run.load_model::<NestedMnistCnnConfig>(&device);
                    if let Ok(config) = run.load_config::<NestedMnistCnnConfig>() {
                        let _ = run.load_checkpoint(&config, &device.clone().autodiff());
                    }
                } else {
                    for file in ["level.bpk", "level.safetensors", "level.sparse.safetensors", "mix.bpk"] {
                        let _ = load_level::<NestedMnistCnnConfig>(&root.join(file), &device);
                    }
                    let config = seed_config().expect("the seed configuration builds");
                    let importance = Some(ChannelImportance::BatchNormGamma);
                    let _ = nestify(&config, None, 1, &root.join("full.safetensors"), importance, &device);
                }
            })
        }))
    }
}

/// The parameters the (possibly damaged) configuration in `root` declares, counted without
/// allocating (0 when it does not parse).
fn declared_params(root: &Path, target: &str) -> usize {
    let config: Option<NestedMnistCnnConfig> = if target == "run-folder" {
        RunDir::new(root.join("run")).load_config::<NestedMnistCnnConfig>().ok().map(|c| c.model)
    } else {
        std::fs::read(root.join("level.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| serde_json::from_value(v["model"].clone()).ok())
    };
    config
        .and_then(|c| c.init_network(&Device::flex()).ok())
        .map_or(0, |n| n.level_cost(n.num_levels() - 1).params)
}

/// Runs `read` and fails the case if it allocated more than `bound` bytes above what was held
/// before.
fn bounded(bound: usize, read: impl FnOnce()) -> std::result::Result<(), TestCaseError> {
    let Some(excess) = alloc::excess_during(read) else {
        return Err(TestCaseError::fail("the allocator does not count: memory is not measured"));
    };
    if excess > bound {
        return Err(TestCaseError::fail(format!("allocated {excess} bytes, over its bound of {bound}")));
    }
    Ok(())
}

/// A runner's error with its input shown (shortened).
fn shown<T: std::fmt::Debug>(
    r: std::result::Result<(), TestError<T>>,
) -> std::result::Result<(), TestError<String>> {
    r.map_err(|e| match e {
        TestError::Fail(reason, input) => {
            let mut text = format!("{input:?}");
            text.truncate(4000);
            TestError::Fail(reason, text)
        }
        TestError::Abort(reason) => TestError::Abort(reason),
    })
}

/// The model of the seed files: a 2-level `mnist-cnn` on 8x8 images.
fn seed_config() -> Result<NestedMnistCnnConfig> {
    let request = ModelRequest::new(
        "mnist-cnn",
        [1, 8, 8],
        10,
        LevelRequest::Channels(LevelSpec::Ratios(vec![0.5, 1.0])),
    );
    Ok(NestedMnistCnnConfig::from_request(&request).expect("an mnist-cnn")?)
}

/// The valid files a target's inputs damage: a tiny PNG and JPEG (image folders), a trained
/// run folder (run folders), or one level exported in every format (level files).
fn seed_files(target: &str, dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    if target == "image-folder" {
        return Ok(vec![("seed.png".into(), tiny_image("png")?), ("seed.jpg".into(), tiny_image("jpg")?)]);
    }
    let device = Device::flex();
    let config = seed_config()?;
    let set = Arc::new(ImageSet {
        pixels: (0..32 * 64).map(|i| (i * 37 % 256) as u8).collect(),
        labels: (0..32).map(|i| i % 10).collect(),
        coarse_labels: None,
        channels: 1,
        height: 8,
        width: 8,
        num_classes: 10,
        num_coarse_classes: 0,
        normalization: Normalization { mean: vec![0.5], std: vec![0.25] },
        class_names: Vec::new(),
    });
    let run = RunDir::new(dir.join("seed-run"));
    let run_config = RunConfig::new(config.clone(), TrainingConfig::new().with_epochs(1).with_batch_size(16));
    let model =
        train(&run_config, TrainData::new(set.clone(), None), &device, &run, false, &mut QuietProgress)?
            .model;
    let mut files = Vec::new();
    if target == "run-folder" {
        for rel in [
            "config.json",
            "checkpoint.json",
            "model.bpk",
            "checkpoints/epoch-0001/model.bpk",
            "checkpoints/epoch-0001/optimizer.bpk",
        ] {
            files.push((format!("run/{rel}"), std::fs::read(run.path().join(rel))?));
        }
    } else {
        for (file, format) in [
            ("level.bpk", ExportFormat::Burnpack),
            ("level.safetensors", ExportFormat::Safetensors),
            ("level.sparse.safetensors", ExportFormat::SparseSafetensors),
        ] {
            export_level(&model, &config, 0, &dir.join(file), format)?;
            files.push((file.to_string(), std::fs::read(dir.join(file))?));
        }
        files.push(("level.json".into(), std::fs::read(dir.join("level.json"))?));
        // A Mix'n'Match sub-network (its manifest names the mix), and the full level as the
        // dense input of nestify.
        let calibration =
            calibration_batches(&nestednet::train::trainer::ImageData::from(set), 1, 16, 1, &device)?;
        let choice = [1, 0, 1];
        let mixed = calibrated_mix(&model, &choice, &calibration)?;
        export_mix(&mixed, &config, &choice, "mix-1-0-1", &dir.join("mix.bpk"), ExportFormat::Burnpack)?;
        export_level(&model, &config, 1, &dir.join("full.safetensors"), ExportFormat::Safetensors)?;
        for file in ["mix.bpk", "mix.json", "full.safetensors"] {
            files.push((file.to_string(), std::fs::read(dir.join(file))?));
        }
    }
    Ok(files)
}

/// A valid 6x5 image in `format`.
fn tiny_image(format: &str) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let path: PathBuf = dir.path().join(format!("x.{format}"));
    let pixels: Vec<u8> = (0..6 * 5 * 3).map(|i| (i * 29 % 256) as u8).collect();
    image::RgbImage::from_raw(6, 5, pixels).expect("6x5x3 bytes").save(&path)?;
    Ok(std::fs::read(path)?)
}

/// Inputs the fuzzer found failing, kept as tests (`cargo test -p nestednet-fuzz`).
#[cfg(test)]
mod regressions {
    use super::*;

    /// One byte of `optimizer.bpk` set to 0 made Burn's optimizer loader panic ("Optimizer
    /// record tensors should carry a parameter id").
    #[test]
    fn a_damaged_optimizer_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let seeds = seed_files("run-folder", dir.path()).unwrap();
        let root = dir.path().join("work");
        for (i, (rel, bytes)) in seeds.iter().enumerate() {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            // The first tensor's `param_id` key damaged (what the fuzzer's one flipped byte
            // did): that tensor carries no parameter id.
            let bytes = if i == 4 {
                let at = bytes.windows(8).position(|w| w == b"param_id").expect("a param_id key");
                mutate(bytes, &Mutation::Flip(vec![(at, b'q')]))
            } else {
                bytes.clone()
            };
            std::fs::write(path, bytes).unwrap();
        }
        let run = RunDir::new(root.join("run"));
        let config = run.load_config::<NestedMnistCnnConfig>().unwrap();
        let err =
            run.load_checkpoint(&config, &Device::flex().autodiff()).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("optimizer.bpk"), "{err}");
    }

    /// A 1,000-byte CIFAR file of junk made the reader reserve 16 MiB up front.
    #[test]
    fn a_small_cifar_file_reserves_little() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.bin");
        std::fs::write(&path, vec![0x94u8; 1000]).unwrap();
        bounded(3 * 1000 + 2 * 1000 + (4 << 20), || {
            assert!(Cifar10::load_files(std::slice::from_ref(&path)).is_err());
        })
        .unwrap();
    }
}
