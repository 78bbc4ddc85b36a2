//! Backoff between retries of a failing remote.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First retry delay: the first retry comes within 5 s (2 s ± 20 %).
const FIRST_RETRY: Duration = Duration::from_secs(2);

/// Delay before the next attempt after `failures` consecutive failures: doubling from
/// 2 s with ±20 % jitter (so many remotes that failed together do not retry in step),
/// never more than `cap` (`timeToExecute`). A configuration error (auth, unknown module)
/// waits the full `cap`: only an operator fixes it, but fixing it must still heal.
pub fn backoff(failures: u32, cap: Duration, config_error: bool) -> Duration {
    backoff_with(failures, cap, config_error, unit_random())
}

/// As [`backoff`], with the jitter given: `unit` in [0, 1) picks the point in ±20 %.
pub fn backoff_with(failures: u32, cap: Duration, config_error: bool, unit: f64) -> Duration {
    let cap = cap.max(Duration::from_secs(1));
    if config_error {
        return cap;
    }
    let exponent = failures.saturating_sub(1).min(30);
    let base = FIRST_RETRY
        .saturating_mul(1u32 << exponent.min(20))
        .min(cap);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
