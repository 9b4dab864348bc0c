/// SplitMix64, a tiny, fast, well-mixed generator.
///
/// Used instead of a `rand` generator so that shuffles and augmentations are fixed by this
/// crate's code alone and never change with a dependency upgrade: a resumed run must see the
/// same epoch order as an uninterrupted one.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one stream, e.g. `(seed, epoch, index)`, with well-separated states.
    pub fn for_stream(parts: &[u64]) -> Self {
        let mut rng = Self::new(0x6a09_e667_f3bc_c909);
        for &p in parts {
            rng.state ^= p;
            rng.state = rng.next_u64();
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`), by Lemire's multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `n` values uniform in `[low, high)`, e.g. stand-in images for timing a network: unlike
    /// Burn's `Tensor::random`, they leave the device's generator (shared by every thread of the
    /// process, and seeded runs depend on it) alone.
    pub fn uniform_f32(&mut self, n: usize, low: f32, high: f32) -> Vec<f32> {
        // 24 random bits: every value of [0, 1) an f32 holds at that spacing.
        (0..n).map(|_| low + (high - low) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)).collect()
    }

    /// A seeded Fisher–Yates permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, self.below(i + 1));
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_seeded_permutation() {
        let a = SplitMix64::new(7).permutation(100);
        let b = SplitMix64::new(7).permutation(100);
        let c = SplitMix64::new(8).permutation(100);
        assert_eq!(a, b);
        let u = SplitMix64::new(7).uniform_f32(1000, -2.0, 2.0);
        assert!(u.iter().all(|v| (-2.0..2.0).contains(v)));
        assert!(u.iter().any(|v| *v < -1.5) && u.iter().any(|v| *v > 1.5));
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
