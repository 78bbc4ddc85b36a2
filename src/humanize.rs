//! Human-readable quantities for logs and terminal reports. A leaf: it imports nothing
//! from the crate.

/// `3s`, `4m05s`, `2h03m`, `5d02h`.
pub fn human_duration(seconds: u64) -> String {
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86400);
    if d > 0 {
        format!("{d}d{:02}h", h % 24)
    } else if h > 0 {
        format!("{h}h{:02}m", m % 60)
    } else if m > 0 {
        format!("{m}m{:02}s", seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        let table = [
            (0, "0s"),
            (59, "59s"),
            (61, "1m01s"),
            (3725, "1h02m"),
            (90000, "1d01h"),
        ];
        for (seconds, text) in table {
            assert_eq!(human_duration(seconds), text);
        }
    }
}
