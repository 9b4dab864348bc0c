//! Nestify: a dense network trained elsewhere (its own weights, or a PyTorch state dict) made
//! into the full level of a nested model, its channels first re-ordered by importance so that
//! the smaller levels (the leading channels) start from what mattered most in it; then all
//! levels are fine-tuned jointly (`TrainingConfig::initial_weights`).

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use nestednet_models::{
    ChannelImportance, ChannelOrders, ModelError, NestedNetwork, NestedNetworkConfig, NetworkOutput,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::export::level::load_dense_weights;
use crate::trainer::init::{seeded_model, with_init_lock};
use crate::trainer::masks::MaskingConfig;
use crate::trainer::run::MAX_NETWORK_PARAMS;

/// What nestifying did.
#[derive(Debug)]
pub struct Nestified<N> {
    /// The nested network: its full level is the dense network (re-ordered), every level its
    /// leading channels.
    pub network: N,
    /// Each scheduled layer's channel order (new channel `i` = the dense layer's `order[i]`);
    /// empty without re-ordering.
    pub orders: ChannelOrders,
    /// Largest logit difference between the re-ordered and the original dense network (on 8
    /// fixed random images): re-ordering keeps the function.
    pub reorder_max_abs_diff: f32,
    /// Largest logit difference between the nested model's full level and the dense network.
    pub full_level_max_abs_diff: f32,
}

/// What `nestednet nestify` records beside the run (`RUN/nestify.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NestifyRecord {
    /// The dense network's file.
    pub from: String,
    /// The importance measure (`filter-l1`, `bn-gamma`), or `none`.
    pub importance: String,
    /// Each scheduled layer's channel order.
    pub orders: ChannelOrders,
    /// See [`Nestified::reorder_max_abs_diff`].
    pub reorder_max_abs_diff: f32,
    /// See [`Nestified::full_level_max_abs_diff`].
    pub full_level_max_abs_diff: f32,
}

/// Largest logit difference two functions may show and still be called the same network.
const SAME_FUNCTION: f32 = 1e-4;

/// Nests the dense network in `dense_path` (safetensors with PyTorch's names, or burnpack; the
/// full level's architecture of `config`'s model) into a fresh `config` model (masks of
/// `masking` on, other weights drawn from `seed` and then replaced), after re-ordering its
/// channels by `importance` (`None`: kept as they are, the ablation). Checks that
/// re-ordering and nesting kept the dense network's function.
pub fn nestify<C: NestedNetworkConfig>(
    config: &C,
    masking: Option<&MaskingConfig>,
    seed: u64,
    dense_path: &Path,
    importance: Option<ChannelImportance>,
    device: &Device,
) -> Result<Nestified<C::Network>> {
    let skeleton = with_init_lock(|| -> Result<_> {
        let network = config.init_network(device)?;
        let full = network.num_levels() - 1;
        if network.level_cost(full).params as u64 > MAX_NETWORK_PARAMS {
            return Err(TrainError::Invalid(format!(
                "networks of more than {MAX_NETWORK_PARAMS} parameters are refused"
            )));
        }
        let alone = config.level_alone(full).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "describing its full level alone ({}), which nestify loads into",
                config.name()
            ))
        })?;
        Ok(alone.init_network(device)?.extract_level(0))
    })?;
    let dense = load_dense_weights(skeleton, dense_path)?.valid();
    let (ordered, orders) = match importance {
        Some(importance) => {
            let (ordered, orders) = dense.reorder_channels(importance)?;
            (ordered.valid(), orders)
        }
        None => (dense.clone(), Vec::new()),
    };
    let input =
        crate::export::level::probe::<crate::trainer::data::InputOf<C>>(&dense.input_shape(), 8, device);
    let reference = dense.forward_level(input.clone(), 0).into_logits();
    let diff = |logits: Tensor<2>| (logits - reference.clone()).abs().max().into_scalar::<f32>();
    let reorder_max_abs_diff = diff(ordered.forward_level(input.clone(), 0).into_logits());
    let mut network = seeded_model(config, masking, seed, device)?;
    network.load_dense(&ordered)?;
    let full = network.num_levels() - 1;
    let full_level_max_abs_diff = diff(network.valid().forward_level(input, full).into_logits());
    for (what, d) in
        [("re-ordering its channels", reorder_max_abs_diff), ("nesting it", full_level_max_abs_diff)]
    {
        if d.is_nan() || d > SAME_FUNCTION {
            return Err(TrainError::Invalid(format!(
                "{what} changed the dense network's logits by {d} (more than {SAME_FUNCTION}): {} cannot be nestified this way",
                dense_path.display()
            )));
        }
    }
    Ok(Nestified { network, orders, reorder_max_abs_diff, full_level_max_abs_diff })
}
