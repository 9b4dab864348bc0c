//! The bytes in use and their peak, from a counting global allocator (`peak_alloc`), so that
//! each fuzz input's allocation can be checked against its bound.

use std::sync::atomic::{AtomicUsize, Ordering};

use peak_alloc::PeakAlloc;

/// The system allocator, counting.
#[global_allocator]
static PEAK: PeakAlloc = PeakAlloc;

static MAX_EXCESS: AtomicUsize = AtomicUsize::new(0);

/// Starts measuring: the bytes in use now, which the peak is counted above.
pub fn start() -> usize {
    PEAK.reset_peak_usage();
    PEAK.current_usage()
}

/// The most bytes held above `baseline` since [`start`] returned it.
pub fn excess_since(baseline: usize) -> usize {
    let excess = PEAK.peak_usage().saturating_sub(baseline);
    MAX_EXCESS.fetch_max(excess, Ordering::Relaxed);
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
