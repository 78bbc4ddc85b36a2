//! Delays between retries, for every stage that retries: the scheduler (a failing
//! remote), the CDN stage (a failing purge endpoint) and the socket plugin (a peer that
//! went away). One doubling rule, [`doubling`]; a leaf, it imports nothing from the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First retry delay of a failing remote: the first retry comes within 5 s (2 s ± 20 %).
const FIRST_RETRY: Duration = Duration::from_secs(2);

/// `first` doubled `steps` times, never more than `cap` (nor less than `min(first, cap)`).
pub fn doubling(first: Duration, steps: u32, cap: Duration) -> Duration {
    first.saturating_mul(1u32 << steps.min(20)).min(cap)
}

/// Delay before the next attempt after `failures` consecutive failures of a remote:
/// doubling from 2 s with ±20 % jitter (so many remotes that failed together do not
/// retry in step), never more than `cap` (`timeToExecute`). A configuration error (auth,
/// unknown module) waits the full `cap`: only an operator fixes it, but fixing it must
/// still heal.
pub fn backoff(failures: u32, cap: Duration, config_error: bool) -> Duration {
    backoff_with(failures, cap, config_error, unit_random())
}

/// As [`backoff`], with the jitter given: `unit` in [0, 1) picks the point in ±20 %
/// (the scheduler injects it, so its tables can assert exact delays).
pub fn backoff_with(failures: u32, cap: Duration, config_error: bool, unit: f64) -> Duration {
    let cap = cap.max(Duration::from_secs(1));
    if config_error {
        return cap;
    }
    let base = doubling(FIRST_RETRY, failures.saturating_sub(1), cap);
    let jitter = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
    base.mul_f64(jitter).min(cap)
}

/// A number in [0, 1) that differs between calls; not for cryptography.
pub fn unit_random() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = u64::from(nanos) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    #[allow(clippy::cast_precision_loss)]
    let unit = (x % 1_000_000) as f64 / 1_000_000.0;
    unit
}

/// A retry delay that remembers how many attempts failed: `initial`, doubling, capped at
/// `max`, without jitter (one endpoint or peer, nothing to spread).
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Starts at `min(initial, max)`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial: initial.min(max),
            max,
            failures: 0,
        }
    }

    /// The delay before the next retry; the one after is twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let delay = doubling(self.initial, self.failures, self.max);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_is_capped_and_never_overflows() {
        let s = Duration::from_secs;
        let table = [
            (s(2), 0, s(60), s(2)),
            (s(2), 1, s(60), s(4)),
            (s(2), 4, s(60), s(32)),
            (s(2), 5, s(60), s(60)),
            (s(2), u32::MAX, s(60), s(60)),
            (
                s(5),
                0,
                Duration::from_millis(300),
                Duration::from_millis(300),
            ),
        ];
        for (first, steps, cap, want) in table {
            assert_eq!(
                doubling(first, steps, cap),
                want,
                "{first:?} x2^{steps} cap {cap:?}"
            );
        }
    }

    #[test]
    fn first_retry_within_five_seconds_then_doubles_to_cap() {
        let cap = Duration::from_secs(60);
        assert!(backoff(1, cap, false) <= Duration::from_secs(5));
        assert!(backoff(1, cap, false) >= Duration::from_millis(1600));
        let third = backoff(3, cap, false);
        assert!(
            third >= Duration::from_millis(6400) && third <= Duration::from_millis(9600),
            "{third:?}"
        );
        assert_eq!(backoff(30, cap, false).max(cap), cap);
        assert!(backoff(30, cap, false) >= cap.mul_f64(0.8));
    }

    #[test]
    fn config_errors_wait_the_cap() {
        assert_eq!(
            backoff(1, Duration::from_secs(3600), true),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn tiny_cap_is_respected() {
        assert!(backoff(5, Duration::from_millis(1500), false) <= Duration::from_millis(1500));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(12));
        let delays: Vec<u64> = (0..4).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [5, 10, 12, 12]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(5));
        let mut small = Backoff::new(Duration::from_secs(5), Duration::from_millis(300));
        assert_eq!(small.next_delay(), Duration::from_millis(300));
    }
}
