//! A counting global allocator, so that the peak memory of a level's inference can be measured
//! on the running machine (`memory-mb=` budgets of `nestednet select`).
//!
//! A library cannot choose the process's allocator: the binary does, by wrapping its own in
//! [`PeakAllocator`] (`nestednet` wraps mimalloc). Without it, memory is reported as not
//! measured rather than guessed.
//!
//! With the `mimalloc` feature, [`NestednetAllocator`] is mimalloc, counted, tuned for training
//! loops on its first allocation ([`mimalloc_retain_freed_memory`]): the allocator of every
//! binary that depends on `nestednet` with its default `mimalloc` feature, so that a user's
//! `main` needs no allocator set-up of its own.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

// Counted only while a measurement runs ([`peak_bytes_during`]): outside one, an allocation
// reads two flags that no thread writes, so the counting wrapper costs a training loop nothing
// measurable. (Counting every allocation of every thread into shared counters made training
// epochs several per cent slower: the threads' writes fought over one cache line.)
static MEASURING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed since the measurement started (negative when it freed
/// what was allocated before).
static DELTA: AtomicIsize = AtomicIsize::new(0);
/// The largest `DELTA` since the measurement started.
static PEAK_DELTA: AtomicIsize = AtomicIsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Wraps the allocator `A`, counting the bytes held at most at once during a measurement
/// ([`peak_bytes_during`]).
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: nestednet_alloc::PeakAllocator<std::alloc::System> =
///     nestednet_alloc::PeakAllocator::new(std::alloc::System);
/// ```
#[derive(Debug)]
pub struct PeakAllocator<A> {
    inner: A,
}

impl<A> PeakAllocator<A> {
    /// Counts the allocations of `inner`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

fn installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

fn added(bytes: usize) {
    if MEASURING.load(Ordering::Relaxed) {
        let bytes = bytes as isize;
        let now = DELTA.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK_DELTA.fetch_max(now, Ordering::Relaxed);
    }
}

fn removed(bytes: usize) {
    if MEASURING.load(Ordering::Relaxed) {
        DELTA.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `inner`; only counters are updated around it.
unsafe impl<A: GlobalAlloc> GlobalAlloc for PeakAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        installed();
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            added(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        installed();
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            added(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { self.inner.dealloc(ptr, layout) };
        removed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            removed(layout.size());
            added(new_size);
        }
        new
    }
}

/// Whether a [`PeakAllocator`] is the process's allocator (it has counted an allocation).
pub fn peak_memory_measured() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Runs `f` and returns its result with the most bytes held at once during it above what was
/// held when it started (`None` without a [`PeakAllocator`]). Allocations of other threads
/// count too: run it while nothing else works (the measurement of `select` does), and one
/// measurement at a time (a nested or concurrent one restarts the counts).
pub fn peak_bytes_during<T>(f: impl FnOnce() -> T) -> (T, Option<usize>) {
    DELTA.store(0, Ordering::Relaxed);
    PEAK_DELTA.store(0, Ordering::Relaxed);
    MEASURING.store(true, Ordering::SeqCst);
    let out = f();
    MEASURING.store(false, Ordering::SeqCst);
    let peak = PEAK_DELTA.load(Ordering::Relaxed).max(0) as usize;
    (out, peak_memory_measured().then_some(peak))
}

/// mimalloc's `purge_delay` option (its place in `mi_option_t`, the same in mimalloc 2 and 3;
/// `libmimalloc-sys` names no constant for it).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc keep the memory it frees for the process's next allocations instead of
/// returning it to the OS after its purge delay (1 s by default).
///
/// A training step frees and allocates the same hundreds of megabytes every few dozen
/// milliseconds; with the default, mimalloc hands freed ranges back about once a second, and
/// the next steps fault them in again page by page, each page zeroed by the kernel (on this
/// project's virtual machine, where first touches are expensive, 15,000 page faults and 11% of
/// a joint `mnist-cnn` epoch's CPU time; 370 faults with this). The cost: the process keeps
/// its peak memory until it exits. Call it first thing in `main`, before any thread starts
/// (mimalloc's options are not thread-safe). Does nothing unless mimalloc is the allocator.
#[cfg(feature = "mimalloc")]
pub fn mimalloc_retain_freed_memory() {
    // SAFETY: sets one integer option (the documented "-1: never purge"); mimalloc reads it at
    // its next purge. Not thread-safe, hence the caller's contract above.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// mimalloc, counted ([`PeakAllocator`]), keeping freed memory mapped
/// ([`mimalloc_retain_freed_memory`], set on the first allocation, before `main`): Burn
/// allocates a fresh buffer for most op outputs, which glibc's malloc turned into fresh mappings
/// and page zeroing (a quarter of a training step), and mimalloc's default purge re-faulted a
/// second later.
#[cfg(feature = "mimalloc")]
pub struct NestednetAllocator {
    inner: PeakAllocator<mimalloc::MiMalloc>,
}

#[cfg(feature = "mimalloc")]
static TUNED: AtomicBool = AtomicBool::new(false);

#[cfg(feature = "mimalloc")]
impl NestednetAllocator {
    /// The allocator (for a `#[global_allocator]` static).
    pub const fn new() -> Self {
        Self { inner: PeakAllocator::new(mimalloc::MiMalloc) }
    }

    fn tune_once() {
        if !TUNED.load(Ordering::Relaxed) && !TUNED.swap(true, Ordering::Relaxed) {
            mimalloc_retain_freed_memory();
        }
    }
}

#[cfg(feature = "mimalloc")]
impl std::fmt::Debug for NestednetAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NestednetAllocator(mimalloc, counted)")
    }
}

#[cfg(feature = "mimalloc")]
impl Default for NestednetAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call goes to the counted mimalloc unchanged; setting mimalloc's purge option
// allocates nothing.
#[cfg(feature = "mimalloc")]
unsafe impl GlobalAlloc for NestednetAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::tune_once();
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::tune_once();
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static COUNTING: PeakAllocator<std::alloc::System> = PeakAllocator::new(std::alloc::System);

    #[test]
    fn the_peak_of_a_closure_is_what_it_held_at_once() {
        let (_, idle) = peak_bytes_during(|| ());
        assert!(peak_memory_measured());
        // Other test threads may allocate meanwhile: bounds, not equalities.
        assert!(idle.unwrap() < 1 << 20);
        let (sum, peak) = peak_bytes_during(|| {
            let a = vec![1u8; 4 << 20];
            let b = vec![2u8; 2 << 20];
            let s = a.iter().map(|&x| x as usize).sum::<usize>() + b.len();
            drop(a);
            drop(b);
            // Freed first: this one reuses the space, the peak stays at 6 MiB.
            let c = vec![3u8; 3 << 20];
            s + c.len()
        });
        assert_eq!(sum, (4 << 20) + (2 << 20) + (3 << 20));
        let peak = peak.unwrap();
        assert!((6 << 20..8 << 20).contains(&peak), "{peak}");
        // A reallocation counts its new size, not both.
        let (_, grown) = peak_bytes_during(|| {
            let mut v = vec![0u8; 1 << 20];
            v.resize(2 << 20, 0);
            v
        });
        assert!((2 << 20..4 << 20).contains(&grown.unwrap()), "{grown:?}");
    }

    /// The option set is the one read back, and it was the purge delay: its default (1,000
    /// ms in mimalloc 3, 10 in 2) unless the environment set it.
    #[cfg(feature = "mimalloc")]
    #[test]
    fn retaining_sets_the_purge_delay() {
        // SAFETY: reads one option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!(before == 1000 || before == 10, "{before}");
        }
        mimalloc_retain_freed_memory();
        // SAFETY: reads one option.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
