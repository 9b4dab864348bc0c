//! Nested networks: the trait every nested network implements, and the built-in models.
//!
//! - [`NestedNetwork`]: `forward_level(x, k)` runs level `k` on its own slices of the shared
//!   weights, `level_cost(k)` says what that level costs, `extract_level(k)` makes it a
//!   standalone network whose tensors are physically the level's size. Training, masks,
//!   heads, reports, exports and checkpoints are written against this trait, so a user's own
//!   network gets all of them by implementing it ([`NestedNetworkConfig`] for its
//!   configuration).
//! - The built-in models, registered in one place ([`registry`](crate::ModelConfig)):
//!   `mnist-cnn` ([`NestedMnistCnn`]) and the residual networks ([`NestedResNet`]:
//!   `mnist-resnet`, `resnet-N`, `wrn-D-K`, `resnet-18`), built by name from a
//!   [`ModelRequest`] whose input shape and classes come from the data.
#![warn(missing_docs)]

mod error;
mod mnist_cnn;
mod network;
mod recipe;
mod registry;
mod resnet;

pub use error::{ModelError, Result};
pub use mnist_cnn::{
    LAYERS as MNIST_CNN_LAYERS, MnistCnn, MnistCnnConfig, NestedMnistCnn, NestedMnistCnnConfig,
};
pub use nestednet_nn::{ChannelImportance, Maskable};
pub use network::{
    ChannelOrders, InputShape, LevelCost, MixableLayer, NestedNetwork, NestedNetworkConfig, NetworkInput,
    NetworkOutput, TokenShape, measure_level,
};
pub use recipe::{Recipe, RecipeContext, RecipeLevelWeights, RecipeOptimizer, RecipeSchedule};
pub use registry::{LevelModel, LevelRequest, ModelConfig, ModelFamily, ModelRequest, NestedModel};
pub use resnet::{NestedBasicBlock, NestedResNet, NestedResNetConfig, Shortcut, Stem};
