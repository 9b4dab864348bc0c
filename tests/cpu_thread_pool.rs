//! `join_cpu_thread_pool` in a process of its own (it builds the global thread pool, which
//! every other test of a binary would share).

use rayon::prelude::*;

/// The calling thread becomes the pool's first thread, parallel work runs on it and the
/// others with the same result, and a second call changes nothing.
#[test]
fn the_calling_thread_joins_the_cpu_thread_pool() {
    let threads = nestednet::train::trainer::cpu_pool_threads();
    let joined = nestednet::train::trainer::join_cpu_thread_pool();
    // A single thread would leave work from other threads waiting: not joined then.
    assert_eq!(joined, threads >= 2, "{threads} threads");
    if joined {
        assert_eq!(rayon::current_thread_index(), Some(0));
        assert_eq!(rayon::current_num_threads(), threads);
    }
    let sum: u64 = (0..100_000u64).into_par_iter().sum();
    assert_eq!(sum, 100_000 * 99_999 / 2);
    // Work handed to the pool from another thread still runs.
    let from_elsewhere = std::thread::spawn(|| (0..1_000u64).into_par_iter().map(|x| x * 2).sum::<u64>());
    assert_eq!(from_elsewhere.join().expect("the other thread"), 999_000);
    assert!(!nestednet::train::trainer::join_cpu_thread_pool(), "the pool exists already");
}
