//! `nestednet`: train, evaluate, export and inspect nested networks.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use nestednet::burn::prelude::*;
use nestednet::burn::tensor::Distribution;
use nestednet::data::DatasetKind;
use nestednet::heads::Hierarchy;
use nestednet::models::{
    MNIST_CNN_LAYERS, ModelConfig, NestedClassifier, NestedMnistCnnConfig, NestedModel, NestedResNetConfig,
};
use nestednet::prune::MaskTargets;
use nestednet::schedule::{LatticeSpec, LevelSpec};
use nestednet::train::{
    Backend, BarProgress, ConsensusMethod, DistillationConfig, ExportFormat, HierarchyConfig, LevelReport,
    LrSchedule, MaskMethod, MaskingConfig, OptimizerConfig, Report, ReportContext, RunDir, TrainJob,
    TrainingConfig, anytime_figures, build_report, evaluate, export_consensus, export_level,
    export_resnet_level, export_sizes, layer_densities, level_outputs, load_burnpack_level,
    load_consensus_export, load_resnet_level, load_safetensors_level, plot_early_exit, run_job,
    run_magnitude_jobs,
};

// Burn allocates a fresh buffer for most op outputs; mimalloc keeps them in user space instead
// of mapping and zeroing new pages for each (a quarter of a training step with glibc's malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nested sparse networks: many networks in one set of weights.
#[derive(Parser, Debug)]
#[command(name = "nestednet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train every level of a nested mnist-cnn jointly, then report each level.
    Train(Box<TrainArgs>),
    /// Evaluate the levels of a trained run on a data set.
    Eval(EvalArgs),
    /// Export one level as a compact standalone model (and verify it).
    Export(ExportArgs),
    /// Show a run's configuration, levels, checkpoint and report.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Task: compression (adaptive deep compression: channel-scheduled or masked levels),
    /// hierarchy (coarse-to-fine: level k predicts depth k of a class hierarchy) or
    /// distillation (a residual network's lattice of width × depth levels, trained jointly).
    #[arg(long, default_value = "compression")]
    task: String,
    /// Model: mnist-cnn (compression, hierarchy), or for --task distillation a residual
    /// network: mnist-resnet, resnet-N (6n+2: resnet-20, resnet-32, ...), wrn-D-K (wrn-32-4,
    /// wrn-16-2, ...) or resnet-18.
    #[arg(long)]
    model: Option<String>,
    /// Width ratios of the lattice's levels (--task distillation), e.g. 0.25,1.0.
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<f64>>,
    /// Blocks per stage of the lattice's levels (--task distillation), e.g. 2,5; the last is
    /// the network's depth (default: the network's depth only).
    #[arg(long, value_delimiter = ',')]
    depths: Option<Vec<usize>>,
    /// The lattice's trained levels by name (e.g. w0.25-d2,w1-d5); default: every pair.
    #[arg(long)]
    pairs: Option<String>,
    /// Class hierarchy file (.json or .csv) for --task hierarchy; default: the data set's
    /// built-in one (MNIST: digits by shape; CIFAR-100: its 20 super-classes).
    #[arg(long)]
    hierarchy: Option<PathBuf>,
    /// How the levels are made: channels (channel scheduling), weights (NestedNet's learned
    /// nested masks), random (random nested masks) or magnitude (Han et al.: one network per
    /// density, pruned by magnitude and fine-tuned, each in OUT/density-D/).
    #[arg(long, default_value = "channels")]
    method: String,
    /// Fraction of parameters each level keeps, core first (e.g. 0.33,0.5,1.0). With
    /// --method channels, the widths are chosen to hold these fractions.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["compression", "thresholds"])]
    densities: Option<Vec<f64>>,
    /// Compression ratio of each level, core first (e.g. 3,2,1 = densities 1/3, 1/2, 1).
    #[arg(long, value_delimiter = ',', conflicts_with = "thresholds")]
    compression: Option<Vec<f64>>,
    /// Global magnitude threshold of each level, core first (method weights only; e.g.
    /// 0.03,0.015,0).
    #[arg(long, value_delimiter = ',')]
    thresholds: Option<Vec<f64>>,
    /// Layers that keep all their weights (comma-separated; `none` to mask every layer).
    #[arg(long, default_value = "conv1,fc2")]
    dense_layers: String,
    /// Epochs of each mask-learning stage (weights) or of dense pre-training (magnitude).
    #[arg(long, default_value_t = 1)]
    stage_epochs: usize,
    /// Slope γ of the relaxed mask tanh(γ·relu(|w|−τ)).
    #[arg(long, default_value_t = 1e5)]
    gamma: f64,
    /// Data set: mnist, cifar10 or cifar100.
    #[arg(long, default_value = "mnist")]
    dataset: DatasetKind,
    /// Folder holding the data set's files.
    #[arg(long)]
    data_dir: PathBuf,
    /// Run folder to create (or to continue with --resume).
    #[arg(long)]
    out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Levels: width ratios (`0.25,0.5,1.0`) or channel counts (`conv1=8,16,32;conv2=16,32,64;fc1=32,64,128`).
    /// Default: 0.25,0.5,1.0 for channels; full width at every level for masks.
    #[arg(long)]
    levels: Option<LevelSpec>,
    /// Backend: flex, ndarray, wgpu, tch or cuda (must be compiled in; default: $BURN_DEVICE, else
    /// the first compiled).
    #[arg(long)]
    device: Option<Backend>,
    /// Seed of initialisation, data order and augmentation.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Optimizer: adam or sgd.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate schedule: constant, step:EVERY:GAMMA or cosine[:MIN_LR].
    #[arg(long, default_value = "constant")]
    lr_schedule: LrSchedule,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// L2 weight decay (default: 0 for Adam, 5e-4 for SGD).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Weights of the level losses, core first (default: equal).
    #[arg(long, value_delimiter = ',')]
    loss_weights: Option<Vec<f64>>,
    /// In-place distillation: the lower levels also learn the full level's softened outputs,
    /// with this weight α of the distillation term (loss (1−α)·CE + α·T²·KL).
    #[arg(long)]
    distill: Option<f64>,
    /// Distillation temperature T.
    #[arg(long, default_value_t = 4.0, requires = "distill")]
    temperature: f64,
    /// Run folder of an external teacher whose full level every level learns from (with
    /// --distill as its weight α; default α 0.5).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Continue the run in --out after its last completed epoch.
    #[arg(long)]
    resume: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Data set: mnist, cifar10 or cifar100.
    #[arg(long, default_value = "mnist")]
    dataset: DatasetKind,
    /// Folder holding the data set's files.
    #[arg(long)]
    data_dir: PathBuf,
    /// Evaluate only this level (default: all): its number, or a lattice level's name or pair.
    #[arg(long)]
    level: Option<String>,
    /// Backend (must be compiled in; default: $BURN_DEVICE, else the first compiled).
    #[arg(long)]
    device: Option<Backend>,
    /// Also measure sizes and latencies and rewrite report.json and the plot.
    #[arg(long)]
    report: bool,
    /// Anytime inference: run the core level first and go up a level only while the level's
    /// top probability is below this threshold; prints accuracy and mean MACs per sample at
    /// this threshold and a sweep, and plots the sweep to RUN/early_exit.png.
    #[arg(long)]
    early_exit: Option<f64>,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Level to export: its number (0 = core), or for a lattice its name (`w0.25-d2`) or pair
    /// (`0.25,2`).
    #[arg(long, required_unless_present = "consensus", conflicts_with = "consensus")]
    level: Option<String>,
    /// Export the consensus of all levels instead (average or learned): every level plus
    /// consensus.json (and consensus.safetensors) into the folder --out.
    #[arg(long)]
    consensus: Option<ConsensusMethod>,
    /// Output file (`.bpk` for burnpack, `.safetensors` for safetensors, `.sparse.safetensors`
    /// for safetensors with the masked weights in compressed sparse form); a folder with
    /// --consensus.
    #[arg(long)]
    out: PathBuf,
    /// Format: burnpack, safetensors or sparse (default: from the file name).
    #[arg(long)]
    format: Option<ExportFormat>,
    /// Backend (must be compiled in; default: $BURN_DEVICE, else the first compiled).
    #[arg(long)]
    device: Option<Backend>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
}

fn backend(choice: Option<Backend>) -> Result<Backend> {
    Ok(match choice {
        Some(b) => b,
        None => Backend::from_env_or_default()?,
    })
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let optimizer = match a.optimizer.as_str() {
        "adam" => OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: a.weight_decay.unwrap_or(0.0),
        },
        "sgd" => OptimizerConfig::Sgd {
            momentum: a.momentum,
            nesterov: false,
            weight_decay: a.weight_decay.unwrap_or(5e-4),
        },
        other => bail!("unknown optimizer `{other}` (use adam or sgd)"),
    };
    let hierarchy = match a.task.as_str() {
        "compression" => {
            if a.hierarchy.is_some() {
                bail!("--hierarchy needs --task hierarchy");
            }
            None
        }
        "hierarchy" => Some(match &a.hierarchy {
            Some(path) => Hierarchy::load(path)?,
            None => match a.dataset {
                DatasetKind::Mnist => Hierarchy::mnist_shapes(),
                DatasetKind::Cifar100 => {
                    let (train, _) = a.dataset.load(&a.data_dir)?;
                    let coarse =
                        train.coarse_labels.as_deref().context("CIFAR-100 data without coarse labels")?;
                    Hierarchy::cifar100_from_labels(coarse, &train.labels)?
                }
                DatasetKind::Cifar10 => bail!("CIFAR-10 has no built-in hierarchy: give --hierarchy FILE"),
            },
        }),
        "distillation" => {
            if a.hierarchy.is_some() {
                bail!("--hierarchy needs --task hierarchy");
            }
            None
        }
        other => bail!("unknown task `{other}` (use compression, hierarchy or distillation)"),
    };
    let residual = a.task == "distillation";
    if !residual && (a.widths.is_some() || a.depths.is_some() || a.pairs.is_some()) {
        bail!(
            "--widths, --depths and --pairs describe a lattice of levels: use them with --task distillation"
        );
    }
    match (&a.model, residual) {
        (Some(m), false) if m != "mnist-cnn" => {
            bail!("--task {} trains mnist-cnn; residual networks train with --task distillation", a.task)
        }
        (Some(m), true) if m == "mnist-cnn" => {
            bail!(
                "--task distillation trains a residual network (mnist-resnet, resnet-N, wrn-D-K, resnet-18)"
            )
        }
        _ => {}
    }
    if residual
        && (a.levels.is_some() || a.densities.is_some() || a.compression.is_some() || a.thresholds.is_some())
    {
        bail!("--task distillation takes its levels from --widths/--depths/--pairs (no --levels or masks)");
    }
    let method = match a.method.as_str() {
        "channels" => None,
        other => Some(other.parse::<MaskMethod>()?),
    };
    let targets = match (&a.densities, &a.compression, &a.thresholds) {
        (Some(d), _, _) => Some(MaskTargets::Densities(d.clone())),
        (_, Some(c), _) => Some(MaskTargets::from_compression(c)?),
        (_, _, Some(t)) => Some(MaskTargets::Thresholds(t.clone())),
        _ => None,
    };
    let mut channel_densities = None;
    let masking = match (method, targets) {
        (None, None) => None,
        (None, Some(MaskTargets::Densities(d))) => {
            // Channel scheduling by parameter budget.
            if a.levels.is_some() {
                bail!("--method channels takes either --levels or --densities/--compression, not both");
            }
            channel_densities = Some(d);
            None
        }
        (None, Some(MaskTargets::Thresholds(_))) => {
            bail!(
                "--thresholds needs a mask method (--method weights); channel levels take --levels or --densities"
            )
        }
        (Some(_), None) => bail!("--method {} needs --densities, --compression or --thresholds", a.method),
        (Some(m), Some(targets)) => Some(MaskingConfig {
            gamma: a.gamma,
            stage_epochs: a.stage_epochs,
            ..MaskingConfig::new(m, targets)
        }),
    };
    let levels = match (&a.levels, &masking, &channel_densities) {
        (Some(levels), _, _) => levels.clone(),
        // One level per depth, each twice as wide as the one below.
        (None, None, None) if hierarchy.is_some() => {
            let depths = hierarchy.as_ref().map_or(1, Hierarchy::num_depths);
            LevelSpec::Ratios((0..depths).map(|k| 0.5f64.powi((depths - 1 - k) as i32)).collect())
        }
        (None, Some(m), _) => LevelSpec::Ratios(vec![1.0; m.targets.num_levels()]),
        (None, None, Some(d)) => {
            NestedMnistCnnConfig::new().ratios_for_densities(d, &Backend::default_compiled()?.device()?)?
        }
        (None, None, None) => LevelSpec::default_ratios(),
    };
    let masked_layers: Vec<String> = match &masking {
        None => Vec::new(),
        Some(_) => {
            let dense: Vec<&str> =
                a.dense_layers.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "none").collect();
            if let Some(bad) = dense.iter().find(|d| !MNIST_CNN_LAYERS.contains(d)) {
                bail!(
                    "unknown layer `{bad}` in --dense-layers (mnist-cnn has {})",
                    MNIST_CNN_LAYERS.join(", ")
                );
            }
            MNIST_CNN_LAYERS.iter().filter(|l| !dense.contains(l)).map(|l| l.to_string()).collect()
        }
    };
    let (channels, side, classes) = match a.dataset {
        DatasetKind::Mnist => (1, 28, 10),
        DatasetKind::Cifar10 => (3, 32, 10),
        DatasetKind::Cifar100 => (3, 32, 100),
    };
    let hierarchy = match hierarchy {
        Some(h) => {
            h.check_classes(classes)?;
            if levels.num_levels() != h.num_depths() {
                bail!(
                    "--task hierarchy trains one level per depth: the hierarchy has {} depths but --levels gives {} levels",
                    h.num_depths(),
                    levels.num_levels()
                );
            }
            Some(HierarchyConfig::one_level_per_depth(h))
        }
        None => None,
    };
    let model: ModelConfig = if residual {
        let default = if a.dataset == DatasetKind::Mnist { "mnist-resnet" } else { "wrn-32-4" };
        let mut net =
            NestedResNetConfig::from_name(a.model.as_deref().unwrap_or(default), channels, side, classes)?;
        let widths = a.widths.clone().unwrap_or_else(|| vec![1.0]);
        let depths = a.depths.clone().unwrap_or_else(|| vec![net.blocks_per_stage]);
        let lattice = LatticeSpec::grid(widths, depths);
        net.lattice = match &a.pairs {
            Some(pairs) => lattice.with_pairs_str(pairs)?,
            None => lattice,
        };
        net.validate()?;
        net.into()
    } else {
        NestedMnistCnnConfig::new()
            .with_in_channels(channels)
            .with_height(side)
            .with_width(side)
            .with_num_classes(classes)
            .with_levels(levels)
            .with_masked_layers(masked_layers)
            .with_level_classes(hierarchy.as_ref().map(HierarchyConfig::level_classes).unwrap_or_default())
            .into()
    };
    let distillation = match (a.distill, &a.teacher) {
        (None, None) => None,
        (alpha, teacher) => Some(
            DistillationConfig::new()
                .with_alpha(alpha.unwrap_or(0.5))
                .with_temperature(a.temperature)
                .with_teacher_run(teacher.as_ref().map(|t| t.display().to_string())),
        ),
    };
    let run = RunDir::new(&a.out);
    let config = if a.resume && run.exists() {
        // The stored configuration rules; only the number of epochs may be extended.
        run.load_config()?.with_epochs(a.epochs)
    } else {
        TrainingConfig::new(model)
            .with_dataset(a.dataset)
            .with_optimizer(optimizer)
            .with_learning_rate(a.lr)
            .with_lr_schedule(a.lr_schedule)
            .with_epochs(a.epochs)
            .with_batch_size(a.batch_size)
            .with_seed(a.seed)
            .with_level_loss_weights(a.loss_weights)
            .with_distillation(distillation)
            .with_train_limit(a.train_limit)
            .with_masking(masking)
            .with_hierarchy(hierarchy)
    };
    let job = TrainJob { config, data_dir: a.data_dir, run, backend: backend(a.device)?, resume: a.resume };
    if job.config.masking.as_ref().is_some_and(|m| m.method == MaskMethod::Magnitude) {
        let report = run_magnitude_jobs(&job, &mut BarProgress::default())?;
        println!("\n{}", report.table());
        println!(
            "one network per density in {}/density-*/; side-by-side report in {}",
            job.run.path().display(),
            job.run.report_path().display()
        );
        return Ok(());
    }
    let (_, report) = run_job(&job, &mut BarProgress::default())?;
    println!("\n{}", report.table());
    println!(
        "run folder: {} (config.json, model.bpk, report.json, accuracy_vs_macs.png)",
        job.run.path().display()
    );
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let backend = backend(a.device)?;
    let device = backend.device()?;
    let run = RunDir::new(&a.run);
    let (config, model) = run.load_model(&device)?;
    let only = a.level.as_deref().map(|key| config.model.find_level(key)).transpose()?;
    let (_, test) = a.dataset.load(&a.data_dir)?;
    let test = Arc::new(test);
    let labels = config.level_labels();
    nestednet::train::check_compatible(&model, &test, &labels, "test")?;
    let model = model.valid();
    let levels_width: usize = (0..model.num_levels()).map(|k| model.level_classes(k)).sum();
    let fine_classes = model.level_classes(model.num_levels() - 1);
    let consensus = run.load_consensus(levels_width, fine_classes, &device)?;
    if a.report {
        let context = ReportContext {
            model: &config.model.name(),
            dataset: &a.dataset.to_string(),
            backend: backend.name(),
            method: &config.method_name(),
            train_seconds_per_epoch: None,
            labels: &labels,
            hierarchy: config.hierarchy.as_ref(),
            consensus_layer: consensus.as_ref(),
        };
        let report = build_report(&model, context, test, &device)?;
        report.write_to_run(&run)?;
        println!("{}", report.table());
        return Ok(());
    }
    let tallies = evaluate(&model, test.clone(), 256, &device, &labels)?;
    println!("| level | accuracy | loss | correct/total | params | MACs/sample |\n|---|---|---|---|---|---|");
    for (level, t) in tallies.iter().enumerate().filter(|(k, _)| only.is_none_or(|l| l == *k)) {
        let cost = model.level_cost(level);
        println!(
            "| {level} | {:.4} | {:.4} | {}/{} | {} | {} |",
            t.accuracy(),
            t.loss(),
            t.correct,
            t.total,
            cost.params,
            cost.macs
        );
    }
    // What the levels give together: hierarchy metrics, consensus, early exit.
    let outputs = level_outputs(&model, test, 256, &device)?;
    let mut together = anytime_figures(&model, &outputs, config.hierarchy.as_ref(), consensus.as_ref())?;
    let full_macs = model.level_cost(model.num_levels() - 1).macs;
    if let Some(threshold) = a.early_exit {
        let macs: Vec<usize> = (0..model.num_levels()).map(|k| model.level_cost(k).macs).collect();
        let chosen = outputs.early_exit(threshold, &macs)?;
        let full = tallies.last().map_or(0.0, |t| t.accuracy());
        println!(
            "\nearly exit at {threshold}: accuracy {:.4} (full level {full:.4}, {:+.2} points), mean MACs/sample {:.0} = {:.3} of the full level's; answered by each level: {}",
            chosen.accuracy,
            100.0 * (chosen.accuracy - full),
            chosen.mean_macs,
            chosen.mean_macs / full_macs.max(1) as f64,
            chosen.exit_fractions.iter().map(|f| format!("{f:.3}")).collect::<Vec<_>>().join(" / ")
        );
        if !together.early_exit.iter().any(|e| e.threshold == threshold) {
            together.early_exit.push(chosen);
            together.early_exit.sort_by(|x, y| x.threshold.total_cmp(&y.threshold));
        }
    } else {
        together.early_exit.clear();
    }
    print!("{}", together.table(full_macs));
    if a.early_exit.is_some() {
        // Plot the sweep next to the levels alone.
        let report = Report {
            model: config.model.name(),
            dataset: a.dataset.to_string(),
            backend: backend.name().into(),
            levels: tallies
                .iter()
                .enumerate()
                .map(|(level, t)| LevelReport {
                    level,
                    classes: model.level_classes(level),
                    accuracy: t.accuracy(),
                    loss: t.loss(),
                    correct: t.correct,
                    total: t.total,
                    params: model.level_cost(level).params,
                    macs: model.level_cost(level).macs,
                    ..LevelReport::default()
                })
                .collect(),
            train_seconds_per_epoch: None,
            method: config.method_name(),
            hierarchy: None,
            consensus: Vec::new(),
            early_exit: together.early_exit,
        };
        let path = run.path().join("early_exit.png");
        plot_early_exit(&report, &path)?;
        println!("early-exit plot: {}", path.display());
    }
    Ok(())
}

fn cmd_export_consensus(a: &ExportArgs, method: ConsensusMethod) -> Result<()> {
    let device = backend(a.device)?.device()?;
    let run = RunDir::new(&a.run);
    let (config, model) = run.load_model(&device)?;
    let model = model.valid();
    let width: usize = (0..model.num_levels()).map(|k| model.level_classes(k)).sum();
    let layer = run.load_consensus(width, model.level_classes(model.num_levels() - 1), &device)?;
    export_consensus(&model, method, config.hierarchy.as_ref(), layer.as_ref(), &a.out)?;
    // Verify: reload the folder and compare the consensus's predictions with the run's.
    let reloaded = load_consensus_export(&a.out, &device)?;
    let [c, h, w] = model.input_shape();
    device.seed(0);
    let x = Tensor::<4>::random([64, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    let mut outputs = reloaded.outputs(x.clone());
    let nested: Vec<Vec<f32>> = (0..model.num_levels())
        .map(|k| {
            let p = nestednet::burn::tensor::activation::softmax(model.forward_level(x.clone(), k), 1);
            p.into_data().convert::<f32>().try_to_vec::<f32>().expect("probabilities")
        })
        .collect();
    let expected = {
        outputs.probs = nested;
        match method {
            ConsensusMethod::Average => outputs.consensus_average(config.hierarchy.as_ref())?,
            ConsensusMethod::Learned => {
                outputs.consensus_learned(layer.as_ref().expect("checked by the export"))?
            }
        }
    };
    let got = reloaded.predict(x)?;
    let agree = got.iter().zip(&expected).filter(|(a, b)| a == b).count();
    if agree != got.len() {
        bail!(
            "the exported consensus disagrees with the run on {} of {} inputs",
            got.len() - agree,
            got.len()
        );
    }
    println!(
        "exported the {method:?} consensus of {} levels to {} (level0..{}.{}, consensus.json{}); verified: same predictions on {} inputs",
        model.num_levels(),
        a.out.display(),
        model.num_levels() - 1,
        if model.as_resnet().is_some() { "bpk" } else { "safetensors" },
        if method == ConsensusMethod::Learned { ", consensus.safetensors" } else { "" },
        got.len()
    );
    Ok(())
}

fn cmd_export(a: ExportArgs) -> Result<()> {
    if let Some(method) = a.consensus {
        return cmd_export_consensus(&a, method);
    }
    let key = a.level.as_deref().context("give --level or --consensus")?;
    let device = backend(a.device)?.device()?;
    let (config, model) = RunDir::new(&a.run).load_model(&device)?;
    let level = config.model.find_level(key)?;
    let model = model.valid();
    let format = a.format.unwrap_or_else(|| ExportFormat::from_path(&a.out));
    let [c, h, w] = model.input_shape();
    device.seed(0);
    let x = Tensor::<4>::random([16, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    let nested = model.forward_level(x.clone(), level);
    // Export, reload the file, and compare with the nested level on a random batch.
    let (reloaded, bytes, path, shape) = match &model {
        NestedModel::MnistCnn(m) => {
            let info = export_level(m, level, &a.out, format)?;
            let (_, reloaded) = match format {
                ExportFormat::Burnpack => load_burnpack_level(&a.out, &device)?,
                ExportFormat::Safetensors | ExportFormat::SparseSafetensors => {
                    load_safetensors_level(&a.out, &device)?
                }
            };
            let shape = format!(
                "conv1/conv2/fc1/classes = {}/{}/{}/{}",
                info.config.conv1_channels,
                info.config.conv2_channels,
                info.config.hidden,
                info.config.num_classes
            );
            (reloaded.valid().forward(x), info.bytes, info.config_path.unwrap_or(info.path), shape)
        }
        NestedModel::ResNet(r) => {
            if format != ExportFormat::Burnpack {
                bail!("residual networks export as burnpack only (got {format:?}): use a .bpk file name");
            }
            let info = export_resnet_level(r, level, &a.out)?;
            let (_, reloaded) = load_resnet_level(&a.out, &device)?;
            let shape = format!(
                "{}: stem {}, stages {:?}, {} blocks per stage",
                info.config.name,
                info.config.stem_channels,
                info.config.stage_channels,
                info.config.blocks_per_stage
            );
            (reloaded.valid().forward_level(x, 0), info.bytes, info.config_path, shape)
        }
    };
    let diff = (reloaded - nested).abs().max().into_scalar::<f32>();
    if diff.is_nan() || diff > 1e-4 {
        bail!("exported level {key} differs from the nested level by {diff} (max abs logit difference)");
    }
    println!(
        "exported level {level} ({}, {format:?}) to {}: {bytes} bytes, {shape}; verified: max |Δlogit| = {diff:.2e}",
        model.level_name(level),
        a.out.display(),
    );
    if path != a.out {
        println!("configuration: {}", path.display());
    }
    Ok(())
}

fn cmd_inspect(a: InspectArgs) -> Result<()> {
    let run = RunDir::new(&a.run);
    let config = run.load_config()?;
    println!("run: {}", run.path().display());
    println!(
        "model: {}, {} levels ({}), data set {}",
        config.model.name(),
        config.model.num_levels(),
        config.model.describe_levels(),
        config.dataset
    );
    println!(
        "training: {:?}, lr {} ({:?}), {} epochs, batch {}, seed {}",
        config.optimizer,
        config.learning_rate,
        config.lr_schedule,
        config.epochs,
        config.batch_size,
        config.seed
    );
    if let Some(cnn) = config.model.as_mnist_cnn() {
        println!("\nper-layer widths (core → full):");
        for layer in cnn.schedule()?.layers() {
            println!("  {:<6} {:?} of {}", layer.name, layer.widths, layer.channels);
        }
    }
    if let Some(m) = &config.masking {
        println!(
            "\nmasks: {} on layers {} (γ = {}, {} epoch(s) per stage)",
            config.method_name(),
            config.model.masked_layers().join(", "),
            m.gamma,
            m.stage_epochs
        );
    }
    // Without masks, costs need only the shapes (a model on the CPU is initialised lazily and
    // not filled); masked levels are measured on the trained masks.
    let device = Backend::default_compiled()?.device()?;
    let trained = run.model_path().is_file();
    let model = if trained { run.load_model(&device)?.1 } else { config.model.try_init(&device)? };
    println!("\n| level | name | params | density | compression | MACs/sample |\n|---|---|---|---|---|---|");
    let full = model.level_cost(model.num_levels() - 1).params.max(1);
    for level in 0..model.num_levels() {
        let cost = model.level_cost(level);
        println!(
            "| {level} | {} | {} | {:.4} | {:.2}x | {} |",
            model.level_name(level),
            cost.params,
            cost.params as f64 / full as f64,
            full as f64 / cost.params.max(1) as f64,
            cost.macs
        );
    }
    if let (Some(_), true, NestedModel::MnistCnn(cnn)) = (&config.masking, trained, &model) {
        let names: Vec<String> = model.weight_layers().into_iter().map(|(n, _)| n).collect();
        println!(
            "\nper-layer weight density, and the level exported dense vs sparse (safetensors):\n\
             | level | {} | dense bytes | sparse bytes | sparse / dense |\n|---|{}---|---|---|",
            names.join(" | "),
            "---|".repeat(names.len())
        );
        for level in 0..model.num_levels() {
            let layers: Vec<String> = layer_densities(&model, level)
                .iter()
                .map(|d| format!("{:.3} ({}/{})", d.kept as f64 / d.total.max(1) as f64, d.kept, d.total))
                .collect();
            let (dense, sparse) = export_sizes(cnn, level)?;
            println!(
                "| {level} | {} | {dense} | {sparse} | {:.3} |",
                layers.join(" | "),
                sparse as f64 / dense.max(1) as f64
            );
        }
    }
    match run.load_checkpoint_state()? {
        Some(state) => {
            println!(
                "\ncheckpoint: {} of {} epochs completed ({} steps)",
                state.epochs_completed,
                config.epoch_plan().len(),
                state.global_step
            );
            for (level, tau) in &state.thresholds {
                println!("  level {level}'s mask binarised at tau = {tau:.6}");
            }
            for m in &state.history {
                let test = m
                    .test_accuracy
                    .as_ref()
                    .map(|t| t.iter().map(|a| format!("{:.4}", a)).collect::<Vec<_>>().join(", "));
                println!(
                    "  epoch {} ({}): {:.1} s, test accuracy per level: [{}]",
                    m.epoch + 1,
                    m.phase,
                    m.train_seconds,
                    test.unwrap_or_default()
                );
            }
        }
        None => println!("\ncheckpoint: none (no epoch completed)"),
    }
    if run.report_path().is_file() {
        let report = Report::read_json(&run.report_path()).context("reading report.json")?;
        println!("\nreport ({}):\n{}", report.backend, report.table());
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Train(a) => cmd_train(*a),
        Command::Eval(a) => cmd_eval(a),
        Command::Export(a) => cmd_export(a),
        Command::Inspect(a) => cmd_inspect(a),
    }
}
