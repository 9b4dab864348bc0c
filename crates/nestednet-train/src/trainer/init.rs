//! A network's first weights: drawn from the seed alone, under one lock for the whole process.

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use nestednet_models::NestedNetworkConfig;

use crate::error::Result;
use crate::trainer::masks::MaskingConfig;
use crate::trainer::masks::enable_masks;

/// Serialises "seed the device, draw the weights" across threads: the device's generator is
/// shared by everything in the process (parallel tests, several trainers).
static SEEDED_INIT: Mutex<()> = Mutex::new(());

/// Runs `build` while no other thread seeds the device and draws weights. Building a network
/// lazily draws nothing, but reading a lazily initialised parameter's shape (turning a mask
/// on, counting a level's costs) draws that parameter from the device's shared generator:
/// outside this lock that could shift the weights of a seeded run in another thread.
pub fn with_init_lock<T>(build: impl FnOnce() -> T) -> T {
    let _guard = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
    build()
}

/// A freshly initialized network whose weights depend only on `seed`, with the nested masks
/// of `masking` (dense) on its masked layers.
pub fn seeded_model<C: NestedNetworkConfig>(
    config: &C,
    masking: Option<&MaskingConfig>,
    seed: u64,
    device: &Device,
) -> Result<C::Network> {
    with_init_lock(|| {
        device.seed(seed);
        let mut model = config.init_network(device)?;
        // Masks first: turning one on reads its weight's shape, which draws that weight, in
        // the layers' order (as masked runs always have: their published figures depend on it).
        if let Some(masking) = masking {
            enable_masks(&mut model, masking)?;
        }
        model.visit(&mut Materialize);
        crate::trainer::record::with_stable_ids(model)
    })
}

/// Draws every parameter of `module` now. Burn initializes parameters lazily, on first use,
/// from the device's random generator; drawing them all right after seeding makes the weights
/// a function of the seed alone, whatever else later uses the generator.
pub(crate) struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}
