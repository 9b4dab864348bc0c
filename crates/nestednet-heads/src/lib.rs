//! Task heads and losses for nested networks.
//!
//! - [`JointLoss`]: the paper's Eq. 5, the weighted mean of the per-level losses (weights
//!   default to `1/n`), combined into **one** scalar so a training step needs one `backward()`.
//! - [`cross_entropy`] and [`correct_count`] for classification levels.
//! - [`distillation_loss`] and [`soft_targets`]: knowledge distillation from a teacher's
//!   softened outputs (KL with batch-mean reduction, scaled by `T²`).
//! - [`Hierarchy`]: class hierarchies for coarse-to-fine classification (each level predicts
//!   its own granularity), read from JSON or CSV and validated, with built-ins for MNIST
//!   (digits by shape) and CIFAR-100 (its 20 super-classes).
//! - [`NestedHead`]: a network's output layer for every level: one shared nested classifier
//!   (every level predicts the same classes, or the leading classes of a split output), or a
//!   private classifier per level (coarse-to-fine levels predicting their own granularity, or
//!   the paper's un-nested output layer).
#![warn(missing_docs)]

mod classification;
mod distillation;
mod error;
mod head;
mod hierarchy;
mod joint;
mod metrics;

pub use classification::{correct_count, cross_entropy};
pub use distillation::{distillation_loss, soft_targets};
pub use error::{HeadError, Result};
pub use head::{HeadKind, NestedHead, NestedHeadConfig};
pub use hierarchy::{CIFAR100_COARSE, CIFAR100_COARSE_OF_FINE, CIFAR100_FINE, Hierarchy, HierarchyDepth};
pub use joint::JointLoss;
pub use metrics::{HierarchyLevelMetrics, hierarchy_metrics};
