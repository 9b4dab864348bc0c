//! Cost probe: what a forward pass through nested layers costs, recorded by the layers
//! themselves.
//!
//! A network built from this crate's layers does not have to count its own parameters and
//! multiply-accumulates: run one level's forward pass on a single sample inside
//! [`record_costs`], and every nested layer that runs adds what it used. Each parameter
//! tensor is counted once (a layer called twice still holds one weight), MACs every time
//! (a layer called twice computes twice). Outside `record_costs` the layers only read one
//! thread-local flag.
//!
//! Plain Burn layers (`Linear`, `Conv2d`, ...) inside a network are not seen: a network that
//! uses them counts them itself.

use std::cell::RefCell;
use std::collections::HashSet;

use burn::module::ParamId;

/// What the nested layers of one forward pass used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedCost {
    /// Trainable parameters of the layers that ran (each parameter tensor counted once).
    pub params: usize,
    /// Multiply-accumulates per sample.
    pub macs: usize,
}

#[derive(Default)]
struct Recorder {
    seen: HashSet<ParamId>,
    cost: RecordedCost,
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// Runs `forward` and returns its output with what the nested layers it ran used. Nested
/// calls are not supported: the inner call's layers are counted by the inner call only.
pub fn record_costs<T>(forward: impl FnOnce() -> T) -> (T, RecordedCost) {
    /// Puts the outer recorder back, also when `forward` panics (a wrong input shape, say).
    struct Restore(Option<Recorder>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            RECORDER.with(|r| *r.borrow_mut() = previous);
        }
    }
    let restore = Restore(RECORDER.with(|r| r.borrow_mut().replace(Recorder::default())));
    let output = forward();
    let recorded = RECORDER.with(|r| r.borrow_mut().take()).map(|r| r.cost).unwrap_or_default();
    drop(restore);
    (output, recorded)
}

/// Whether a [`record_costs`] call is active on this thread (layers skip the bookkeeping
/// otherwise).
pub(crate) fn recording() -> bool {
    RECORDER.with(|r| r.borrow().is_some())
}

/// Adds one layer call: `params` parameters held by the tensor `id` (counted once per
/// recording) and `macs` multiply-accumulates per sample.
pub(crate) fn record(id: ParamId, params: usize, macs: usize) {
    RECORDER.with(|r| {
        if let Some(recorder) = r.borrow_mut().as_mut() {
            if recorder.seen.insert(id) {
                recorder.cost.params += params;
            }
            recorder.cost.macs += macs;
        }
    });
}

/// Adds `macs` multiply-accumulates per sample of parameter-free work (attention's products
/// over positions), which no parameter tensor stands for.
pub(crate) fn record_macs(macs: usize) {
    RECORDER.with(|r| {
        if let Some(recorder) = r.borrow_mut().as_mut() {
            recorder.cost.macs += macs;
        }
    });
}

thread_local! {
    /// Batches each batch norm has seen in the active [`recalibrate_batch_norms`] call.
    static CALIBRATION: RefCell<Option<std::collections::HashMap<ParamId, usize>>> = const { RefCell::new(None) };
}

/// Runs `forward` (forward passes over a few training batches, on any device: no gradient is
/// needed) with every [`LevelBatchNorm`](crate::LevelBatchNorm) that runs normalising with
/// its batch's statistics and replacing its running statistics by the exact mean of the batch statistics it sees, instead of a moving
/// average: batch `i` (from 1) weighs `1/i`, so the first batch overwrites whatever the
/// statistics held. This is how a sub-network whose layers come from different levels (which
/// no level's statistics describe) gets its own, as Slimmable and US-Nets recalibrate theirs.
/// Nested calls are not supported.
pub fn recalibrate_batch_norms<T>(forward: impl FnOnce() -> T) -> T {
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            CALIBRATION.with(|c| *c.borrow_mut() = None);
        }
    }
    CALIBRATION.with(|c| *c.borrow_mut() = Some(Default::default()));
    let _restore = Restore;
    forward()
}

/// Whether a [`recalibrate_batch_norms`] call is active on this thread: a network with its own
/// inference path for batch norms (a fused kernel) must then go through
/// [`LevelBatchNorm::forward`](crate::LevelBatchNorm::forward).
pub fn recalibrating() -> bool {
    CALIBRATION.with(|c| c.borrow().is_some())
}

/// How many batch norms the active [`recalibrate_batch_norms`] call has updated so far on this
/// thread (0 outside one): a forward pass that updated none has nothing to recalibrate, and a
/// caller may skip its other calibration batches.
pub fn recalibrated_batch_norms() -> usize {
    CALIBRATION.with(|c| c.borrow().as_ref().map_or(0, |seen| seen.len()))
}

/// The momentum the batch norm whose scale is `id` uses for this batch, inside
/// [`recalibrate_batch_norms`] (`1/i` for its `i`-th batch); `None` outside.
pub(crate) fn calibration_momentum(id: ParamId) -> Option<f64> {
    CALIBRATION.with(|c| {
        c.borrow_mut().as_mut().map(|seen| {
            let count = seen.entry(id).or_insert(0);
            *count += 1;
            1.0 / *count as f64
        })
    })
}
