//! Progress lines for long full syncs.
//!
//! A full sync runs rsync with `--info=progress2`, whose stdout is a stream of
//! `\r`-separated lines such as
//! `  1,234,567  45%   12.34MB/s    0:00:05 (xfr#12, to-chk=34/100)`. The reader thread
//! feeds it to [`Progress`], which logs one info line at most every [`EVERY`]: files
//! sent, bytes so far, average rate, files checked, percent and an estimate of the time
//! left. A sync shorter than [`EVERY`] logs nothing here. Batches never use this.

use std::time::{Duration, Instant};

/// The shortest gap between two progress lines of one full sync.
pub const EVERY: Duration = Duration::from_secs(5);

/// The option that makes rsync report progress on stdout.
pub const RSYNC_OPTION: &str = "--info=progress2";

/// One progress2 line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Bytes sent so far (file data, before compression).
    pub bytes: u64,
    /// rsync's percent of the bytes known so far.
    pub percent: u8,
    /// Files sent so far (`xfr#N`).
    pub files: u64,
    /// Files checked and files known so far (`to-chk=left/total` or `ir-chk`).
    pub checked: Option<(u64, u64)>,
}

/// Parses one progress2 line; `None` for anything else (names with `-v`, blank lines).
pub fn parse_line(line: &str) -> Option<Sample> {
    let mut fields = line.split_whitespace();
    let bytes = parse_size(fields.next()?)?;
    let percent = fields.next()?.strip_suffix('%')?.parse().ok()?;
    let mut sample = Sample {
        bytes,
        percent,
        ..Sample::default()
    };
    let rest: String = fields.collect::<Vec<_>>().join(" ");
    if let Some(start) = rest.find("xfr#") {
        let digits: String = rest[start + 4..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        sample.files = digits.parse().unwrap_or(0);
    }
    if let Some(start) = rest.find("-chk=") {
        let tail = &rest[start + 5..];
        let end = tail.find(')').unwrap_or(tail.len());
        if let Some((left, total)) = tail[..end].split_once('/') {
            if let (Ok(left), Ok(total)) = (left.parse::<u64>(), total.parse::<u64>()) {
                sample.checked = Some((total.saturating_sub(left), total));
            }
        }
    }
    Some(sample)
}

/// `1,234,567`, `1234567`, or with `-h` in commonParams `1.23M` / `12.50K`.
fn parse_size(text: &str) -> Option<u64> {
    let plain: String = text.chars().filter(|c| *c != ',').collect();
    if let Ok(n) = plain.parse::<u64>() {
        return Some(n);
    }
    let (number, unit) = plain.split_at(plain.len().checked_sub(1)?);
    let scale: f64 = match unit {
        "K" | "k" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    // Rounded, non-negative and far below 2^64: the cast is exact enough.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((value * scale).round().max(0.0) as u64)
}

/// `512 B`, `3.4 KiB`, `12.0 MiB`, `1.50 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{value:.0} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Follows one full sync's rsync stdout and decides when to log.
#[derive(Debug)]
pub struct Progress {
    label: String,
    started: Instant,
    next_line: Instant,
    partial: Vec<u8>,
    latest: Option<Sample>,
}

impl Progress {
    /// Starts following a full sync described by `label` (`/src -> host::module`).
    pub fn new(label: String, now: Instant) -> Progress {
        Progress {
            label,
            started: now,
            next_line: now + EVERY,
            partial: Vec::new(),
            latest: None,
        }
    }

    /// Takes a chunk of stdout; returns the line to log, if one is due.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) -> Option<String> {
        for &byte in chunk {
            if byte == b'\r' || byte == b'\n' {
                if let Some(sample) = parse_line(&String::from_utf8_lossy(&self.partial)) {
                    self.latest = Some(sample);
                }
                self.partial.clear();
            } else if self.partial.len() < 4096 {
                self.partial.push(byte);
            }
        }
        if now < self.next_line {
            return None;
        }
        let sample = self.latest?;
        self.next_line = now + EVERY;
        Some(self.line(&sample, now))
    }

    /// The latest figures, if rsync reported any.
    pub fn latest(&self) -> Option<Sample> {
        self.latest
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // display only
    fn line(&self, sample: &Sample, now: Instant) -> String {
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        #[allow(clippy::cast_precision_loss)] // display only
        let bytes = sample.bytes as f64;
        let rate = if elapsed > 0.0 { bytes / elapsed } else { 0.0 };
        let checked = sample
            .checked
            .map(|(done, total)| format!(", {done} of {total} file(s) checked"))
            .unwrap_or_default();
        let eta = match sample.percent {
            1..=99 => {
                let left = elapsed * f64::from(100 - sample.percent) / f64::from(sample.percent);
                format!(
                    ", eta ~{}",
                    crate::humanize::human_duration(left.round() as u64)
                )
            }
            _ => String::new(),
        };
        format!(
            "{}: full sync: {} file(s), {} sent in {}, {}/s, {}%{checked}{eta}",
            self.label,
            sample.files,
            human_bytes(bytes),
            crate::humanize::human_duration(elapsed.round() as u64),
            human_bytes(rate),
            sample.percent,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress2_lines_parse() {
        let table = [
            (
                "     20,000   0%    0.00kB/s    0:00:00  ",
                Some((20_000, 0, 0, None)),
            ),
            (
                "  6,000,000 100%   23.86MB/s    0:00:00 (xfr#300, to-chk=0/301)",
                Some((6_000_000, 100, 300, Some((301, 301)))),
            ),
            (
                "      1.50M  45%   12.34MB/s    0:00:05 (xfr#12, ir-chk=1034/2000)",
                Some((1_572_864, 45, 12, Some((966, 2000)))),
            ),
            ("sending incremental file list", None),
            ("dir/file.txt", None),
            ("", None),
        ];
        for (line, expected) in table {
            let got = parse_line(line).map(|s| (s.bytes, s.percent, s.files, s.checked));
            assert_eq!(got, expected, "{line:?}");
        }
    }

    #[test]
    fn lines_are_throttled_and_split_on_carriage_returns() {
        let t0 = Instant::now();
        let mut progress = Progress::new("/src -> m".into(), t0);
        let chunk = b"\r  1,048,576  10%  1.00MB/s  0:00:09 (xfr#3, to-chk=90/100)\r  2,097,1";
        assert_eq!(progress.feed(chunk, t0 + Duration::from_secs(1)), None);
        let line = progress
            .feed(
                b"52  20%  1.00MB/s 0:00:08 (xfr#7, to-chk=80/100)\r",
                t0 + EVERY,
            )
            .expect("due after EVERY");
        assert_eq!(
            line,
            "/src -> m: full sync: 7 file(s), 2.0 MiB sent in 5s, 409.6 KiB/s, 20%, 20 of 100 file(s) checked, eta ~20s"
        );
        assert_eq!(
            progress.feed(b"", t0 + EVERY + Duration::from_secs(4)),
            None
        );
        assert!(progress.feed(b"", t0 + EVERY * 2).is_some());
        assert_eq!(progress.latest().map(|s| s.files), Some(7));
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
