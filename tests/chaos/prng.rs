//! A small seeded pseudo-random generator (SplitMix64) for the chaos schedule.
//!
//! The schedule must be the same for the same seed on every machine and every build, so it comes
//! from this fixed, documented algorithm rather than from a library whose stream may change between
//! versions. It is a test-harness generator: fast, well spread, and not meant for cryptography.

use std::time::Duration;

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit counter passed through a mixing function.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole stream is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0). The multiply-shift mapping has a bias below
    /// `bound / 2^64`, far too small to matter for a schedule.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        u64::try_from(wide >> 64).unwrap_or(0)
    }

    /// A duration between `low_ms` and `high_ms` milliseconds, both included.
    pub(crate) fn millis_between(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        let span = high_ms.saturating_sub(low_ms).saturating_add(1);
        Duration::from_millis(low_ms + self.below(span))
    }

    /// True with probability `numerator / denominator`.
    pub(crate) fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// One of `items`, or `None` when there are none.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let index = usize::try_from(self.below(items.len() as u64)).ok()?;
        items.get(index).copied()
    }

    /// `count` distinct items of `items` in random order (all of them if there are fewer), by a
    /// partial Fisher-Yates shuffle.
    pub(crate) fn choose<T: Copy>(&mut self, items: &[T], count: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        let take = count.min(pool.len());
        for slot in 0..take {
            let remaining = (pool.len() - slot) as u64;
            let offset = usize::try_from(self.below(remaining)).unwrap_or(0);
            pool.swap(slot, slot + offset);
        }
        pool.truncate(take);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_the_published_splitmix64() {
        // The first outputs for seed 1234567 from the reference implementation.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn helpers_stay_in_range_and_repeat_for_a_seed() {
        let mut first = SplitMix64::new(7);
        let mut second = SplitMix64::new(7);
        for _ in 0..1000 {
            let value = first.below(6);
            assert!(value < 6);
            assert_eq!(value, second.below(6));
            let pause = first.millis_between(2000, 6000);
            assert!((2000..=6000).contains(&pause.as_millis()));
            assert_eq!(pause, second.millis_between(2000, 6000));
        }
        assert_eq!(first.below(0), 0);
        assert_eq!(first.pick::<u8>(&[]), None);
        let chosen = first.choose(&[1, 2, 3, 4, 5], 3);
        assert_eq!(chosen.len(), 3);
        assert!(chosen.iter().all(|item| (1..=5).contains(item)));
        let mut distinct = chosen.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        assert_eq!(first.choose(&[1, 2], 5).len(), 2);
    }
}
