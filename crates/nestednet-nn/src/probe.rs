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
