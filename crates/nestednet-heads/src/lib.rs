//! Task heads and losses for nested networks.
//!
//! - [`JointLoss`]: the paper's Eq. 5, the weighted mean of the per-level losses (weights
//!   default to `1/n`), combined into **one** scalar so a training step needs one `backward()`.
//! - [`cross_entropy`] and [`correct_count`] for classification levels.
#![warn(missing_docs)]

mod classification;
mod error;
mod joint;

pub use classification::{correct_count, cross_entropy};
pub use error::{HeadError, Result};
pub use joint::JointLoss;
