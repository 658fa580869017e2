//! How long to pause before trying again, for every retry and reconnect loop of the services: a pause that doubles
//! from a first delay up to a ceiling, each one jittered so that processes which failed together (a Redis restart)
//! do not come back together. The loops keep their own attempt counts and decide themselves what is worth retrying.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// How much of each pause is left to chance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere from nothing to the whole pause: spreads a crowd the most ("full jitter").
    Full,
    /// Between half and all of the pause: still spreads a crowd, and never hammers a service that is down
    /// ("equal jitter").
    Equal,
}

/// A retry policy: the pause after the first failure, the ceiling the pauses double up to, and their jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The most the pause after the first failure can be.
    pub first_delay: Duration,
    /// The most any pause can be, however many failures came before.
    pub longest_delay: Duration,
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// Pauses of at most `first_delay`, then twice that after each further failure, up to `longest_delay`.
    pub const fn doubling(first_delay: Duration, longest_delay: Duration, jitter: Jitter) -> Self {
        Self { first_delay, longest_delay, jitter }
    }

    /// Pauses of at most `delay` every time: a reconnect loop whose pace was a constant before it had jitter.
    pub const fn steady(delay: Duration, jitter: Jitter) -> Self {
        Self { first_delay: delay, longest_delay: delay, jitter }
    }

    /// The longest pause after `failures` failures in a row (1 for the first), before jitter takes its share.
    pub fn ceiling_after(&self, failures: u32) -> Duration {
        // The shift stops at 2^20: far past any ceiling, and no overflow however long the outage.
        let doubled = self.first_delay.saturating_mul(1 << failures.saturating_sub(1).min(20));
        doubled.min(self.longest_delay)
    }
}

/// The pauses of one retry loop: counts the failures since the last success, and draws each pause from a random
/// sequence of its own. The sequence is keyed by the operating system's randomness, fresh for every process and
/// every backoff, so two processes (or two loops) that fail at the same instant pause for different times.
#[derive(Debug, Clone)]
pub struct RetryBackoff {
    policy: RetryPolicy,
    failures: u32,
    /// SipHash keys drawn from the operating system (through std's `RandomState`): hashing a draw counter with
    /// them gives this backoff's random sequence, with no random-number crate in the shared vocabulary.
    random_keys: RandomState,
    draws: u64,
}

impl RetryBackoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, failures: 0, random_keys: RandomState::new(), draws: 0 }
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Failures since the last success (or since the start).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts one more failure and returns the pause before the next try: at most
    /// [`RetryPolicy::ceiling_after`] the failures so far, jittered by the policy.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.policy.ceiling_after(self.failures);
        let fraction = self.next_fraction();
        match self.policy.jitter {
            Jitter::Full => ceiling.mul_f64(fraction),
            Jitter::Equal => {
                let half = ceiling / 2;
                half + (ceiling - half).mul_f64(fraction)
            }
        }
    }

    /// As [`next_delay`](Self::next_delay), but never shorter than `floor` (what the other side asked for, such
    /// as a `Retry-After`), itself capped at the policy's longest delay so that no answer can park the caller.
    pub fn next_delay_at_least(&mut self, floor: Duration) -> Duration {
        self.next_delay().max(floor.min(self.policy.longest_delay))
    }

    /// Call after a success: the next failure pauses as briefly as the first one did.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// A number in [0, 1), the next of this backoff's random sequence.
    fn next_fraction(&mut self) -> f64 {
        self.draws = self.draws.wrapping_add(1);
        let random_bits = self.random_keys.hash_one(self.draws);
        // The top 53 bits fill an f64's mantissa exactly.
        (random_bits >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(100);
    const LONGEST: Duration = Duration::from_secs(2);

    fn delays(backoff: &mut RetryBackoff, count: usize) -> Vec<Duration> {
        (0..count).map(|_| backoff.next_delay()).collect()
    }

    #[test]
    fn the_ceiling_doubles_from_the_first_delay_and_stops_at_the_longest() {
        let policy = RetryPolicy::doubling(FIRST, LONGEST, Jitter::Full);
        let ceilings: Vec<u128> =
            (1..=7).map(|failures| policy.ceiling_after(failures).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_600, 2_000, 2_000]);
        assert_eq!(policy.ceiling_after(0), FIRST, "no failure yet pauses like the first");
        assert_eq!(
            policy.ceiling_after(u32::MAX),
            LONGEST,
            "a long outage neither overflows nor grows past it"
        );
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_ceiling() {
        let policy = RetryPolicy::doubling(FIRST, LONGEST, Jitter::Full);
        let mut backoff = RetryBackoff::new(policy);
        for failures in 1..=500 {
            let delay = backoff.next_delay();
            assert!(delay <= policy.ceiling_after(failures), "failure {failures}: {delay:?}");
        }
    }

    #[test]
    fn equal_jitter_stays_between_half_and_all_of_the_ceiling() {
        let policy = RetryPolicy::doubling(FIRST, LONGEST, Jitter::Equal);
        let mut backoff = RetryBackoff::new(policy);
        for failures in 1..=500 {
            let delay = backoff.next_delay();
            let ceiling = policy.ceiling_after(failures);
            assert!(ceiling / 2 <= delay && delay <= ceiling, "failure {failures}: {delay:?} of {ceiling:?}");
        }
    }

    #[test]
    fn a_steady_policy_never_pauses_longer_than_its_delay() {
        let policy = RetryPolicy::steady(Duration::from_millis(500), Jitter::Equal);
        let mut backoff = RetryBackoff::new(policy);
        for delay in delays(&mut backoff, 200) {
            assert!(Duration::from_millis(250) <= delay && delay <= Duration::from_millis(500), "{delay:?}");
        }
    }

    #[test]
    fn pauses_are_spread_over_their_range_rather_than_fixed() {
        let mut backoff = RetryBackoff::new(RetryPolicy::steady(LONGEST, Jitter::Full));
        let pauses = delays(&mut backoff, 200);
        let (shortest, longest) = (pauses.iter().min().copied(), pauses.iter().max().copied());
        // 200 uniform draws all landing in one half of the range would happen once in 2^199 runs.
        assert!(shortest < Some(LONGEST / 2) && longest > Some(LONGEST / 2), "{shortest:?}..{longest:?}");
    }

    #[test]
    fn two_backoffs_with_the_same_policy_pause_differently() {
        let policy = RetryPolicy::steady(LONGEST, Jitter::Full);
        let (mut one, mut other) = (RetryBackoff::new(policy), RetryBackoff::new(policy));
        assert_ne!(delays(&mut one, 8), delays(&mut other, 8));
    }

    #[test]
    fn a_reset_makes_the_next_pause_as_short_as_the_first() {
        let policy = RetryPolicy::doubling(FIRST, LONGEST, Jitter::Equal);
        let mut backoff = RetryBackoff::new(policy);
        delays(&mut backoff, 6);
        assert_eq!(backoff.failures(), 6);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        let delay = backoff.next_delay();
        assert!(FIRST / 2 <= delay && delay <= FIRST, "{delay:?}");
    }

    #[test]
    fn a_floor_is_honoured_up_to_the_longest_delay() {
        let policy = RetryPolicy::doubling(FIRST, LONGEST, Jitter::Full);
        let mut backoff = RetryBackoff::new(policy);
        assert!(backoff.next_delay_at_least(Duration::from_secs(1)) >= Duration::from_secs(1));
        assert_eq!(backoff.next_delay_at_least(Duration::from_secs(3_600)), LONGEST);
        assert!(backoff.next_delay_at_least(Duration::ZERO) <= policy.ceiling_after(3));
    }
}
