//! The most bytes each fuzz input's read held at once, from nestednet's counting allocator
//! (`nestednet`'s `mimalloc` feature makes it this binary's allocator), so that each input's
//! allocation can be checked against its bound.

use std::sync::atomic::{AtomicUsize, Ordering};

static MAX_EXCESS: AtomicUsize = AtomicUsize::new(0);

/// Runs `read` and returns the most bytes it held at once above what was held before (`None`
/// if the allocator does not count, which this binary's always does). The cases run one at a
/// time, so no other thread's allocations count.
pub fn excess_during(read: impl FnOnce()) -> Option<usize> {
    let ((), excess) = nestednet::train::peak_bytes_during(read);
    if let Some(excess) = excess {
        MAX_EXCESS.fetch_max(excess, Ordering::Relaxed);
    }
    excess
}

/// The largest excess of any input so far.
pub fn max_excess() -> usize {
    MAX_EXCESS.load(Ordering::Relaxed)
}

/// Forgets the largest excess (between targets).
pub fn reset_max_excess() {
    MAX_EXCESS.store(0, Ordering::Relaxed);
}
