//! Nested networks: the trait every nested network implements, and the built-in models.
//!
//! - [`NestedNetwork`]: `forward_level(x, k)` runs level `k` on its own slices of the shared
//!   weights, `level_cost(k)` says what that level costs, `extract_level(k)` makes it a
//!   standalone network whose tensors are physically the level's size. Training, masks,
//!   heads, reports, exports and checkpoints are written against this trait, so a user's own
//!   network gets all of them by implementing it ([`NestedNetworkConfig`] for its
//!   configuration).
//! - [`ModelFamily`]: a network built by name from a [`ModelRequest`] whose sample shape and
//!   classes come from the data. The built-in families: `mnist-cnn` ([`NestedMnistCnn`]) and
//!   the residual networks ([`NestedResNet`]: `mnist-resnet`, `resnet-N`, `wrn-D-K`,
//!   `resnet-18`) and the vision transformers ([`NestedVit`]: `vit-tiny`, `vit-small`, nested
//!   in heads, feed-forward width, model width and depth), the text classifier
//!   ([`NestedTextClassifier`]: `text-tiny`, `text-small`) and the causal language model
//!   ([`NestedLanguageModel`]: `lm-tiny`, `lm-small`), nested alike; the jobs layer registers
//!   them beside a user's own.
#![warn(missing_docs)]

mod error;
mod family;
mod mnist_cnn;
mod network;
mod resnet;
mod text;
mod vit;

pub use error::{ModelError, Result};
pub use family::{LevelRequest, ModelFamily, ModelRequest};
pub use mnist_cnn::{
    LAYERS as MNIST_CNN_LAYERS, MnistCnn, MnistCnnConfig, NestedMnistCnn, NestedMnistCnnConfig,
};
pub use nestednet_nn::{ChannelImportance, Maskable};
pub use network::{
    ChannelOrders, InputShape, LevelCost, MixableLayer, NestedNetwork, NestedNetworkConfig, NetworkInput,
    NetworkOutput, TokenShape, measure_level,
};
pub use resnet::{NestedBasicBlock, NestedResNet, NestedResNetConfig, Shortcut, Stem};
pub use text::{
    NestedLanguageModel, NestedLanguageModelConfig, NestedTextClassifier, NestedTextClassifierConfig,
    PAD_TOKEN, TextTransformer, TextTransformerConfig,
};
pub use vit::{NestedVit, NestedVitConfig};
