//! A tiny seeded random generator (splitmix64 over one atomic), so injected failures and hangs repeat from run to
//! run without a dependency on `rand`. Not for anything that needs real randomness.

use std::sync::atomic::{AtomicU64, Ordering};

/// Added to the state at every draw; the odd constant of splitmix64 (2^64 divided by the golden ratio).
pub(crate) const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Draws shared by all requests. Concurrent requests take draws in arrival order, so a sequential run repeats
/// exactly; a concurrent one repeats in distribution.
#[derive(Debug)]
pub(crate) struct SeededRandom {
    state: AtomicU64,
}

impl SeededRandom {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: AtomicU64::new(seed) }
    }

    pub(crate) fn reseed(&self, seed: u64) {
        self.state.store(seed, Ordering::Relaxed);
    }

    /// True with the given probability. Certain and impossible outcomes take no draw, so requests that do not use
    /// randomness leave the sequence of the ones that do unchanged.
    pub(crate) fn decide(&self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        if probability >= 1.0 {
            return true;
        }
        self.next_unit_interval() < probability
    }

    /// A number in [0, 1) built from the top 53 bits of a draw, the precision of an `f64`.
    fn next_unit_interval(&self) -> f64 {
        let previous_state = self.state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed);
        let draw = splitmix64(previous_state);
        (draw >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// The splitmix64 step: advances by the gamma and spreads every input bit over the whole output.
pub(crate) fn splitmix64(mut value: u64) -> u64 {
    value = value.wrapping_add(GOLDEN_GAMMA);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_decisions() {
        let first = SeededRandom::new(7);
        let second = SeededRandom::new(7);
        let first_decisions: Vec<bool> = (0..100).map(|_| first.decide(0.5)).collect();
        let second_decisions: Vec<bool> = (0..100).map(|_| second.decide(0.5)).collect();
        assert_eq!(first_decisions, second_decisions);
    }

    #[test]
    fn decisions_follow_the_probability_roughly() {
        let random = SeededRandom::new(42);
        let hits = (0..10_000).filter(|_| random.decide(0.3)).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }

    #[test]
    fn certain_and_impossible_outcomes_take_no_draw() {
        let random = SeededRandom::new(1);
        assert!(random.decide(1.0));
        assert!(!random.decide(0.0));
        let untouched = SeededRandom::new(1);
        assert_eq!(random.next_unit_interval(), untouched.next_unit_interval());
    }
}
