//! The journal's text format: escaping, timestamps, and one record per line.
//!
//! Pure functions, no I/O; the parent module owns the file. The format itself is described
//! in the parent module's documentation and in `docs/journal.md`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::JournalEntry;
use crate::job::Op;

/// The first line of every journal.
pub(super) const HEADER: &str = "# sersync journal v1";
/// The comment that carries a failed job's equivalent command.
pub(super) const COMMAND_PREFIX: &str = "# command: ";
/// A comment that ends the scope of the previous `# command:` line.
pub(super) const NO_COMMAND: &str = "# command: (none recorded)";

/// The header block of a freshly created or compacted journal: the version tag, then
/// comments that tell a human what the file is.
pub(super) fn header_block() -> Vec<u8> {
    format!(
        "{HEADER}\n\
         # Work that failed and will be retried by sersync; data only, never run this file.\n\
         # F <first failure> <last failure> <attempts> <exit code|-> <update|delete> <file|dir> <target> <path> <reason>\n\
         # C <target> <path>    (cleared: delivered since; the last line for a target and path wins)\n\
         # Bytes that are blank, invisible or '%' are written %XX; the path \".\" is the whole root.\n"
    )
    .into_bytes()
}

/// One parsed line of a journal (after the header).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// `F …`: the complete, current state of one entry (command and revision unset).
    Failed(JournalEntry),
    /// `C <target> <rel>`: the entry was delivered.
    Cleared {
        /// Target key.
        target: String,
        /// Path relative to the root.
        rel: PathBuf,
    },
    /// `# command: …`: the equivalent command of the `F` lines that follow it.
    Command(String),
    /// Any other comment, or a blank line.
    Other,
}

/// Parses one line, without its `\n`. `Err` says what is wrong with it.
pub(super) fn parse_line(line: &[u8]) -> Result<Line, &'static str> {
    if line.first() == Some(&b'#') {
        if line == NO_COMMAND.as_bytes() {
            return Ok(Line::Other);
        }
        if let Some(command) = line.strip_prefix(COMMAND_PREFIX.as_bytes()) {
            // Informational only: a damaged command comment never makes a line invalid.
            let bytes = unescape(command).unwrap_or_else(|| command.to_vec());
            return Ok(Line::Command(String::from_utf8_lossy(&bytes).into_owned()));
        }
        return Ok(Line::Other);
    }
    if line.is_empty() {
        return Ok(Line::Other);
    }
    let fields: Vec<&[u8]> = line.splitn(10, |&byte| byte == b' ').collect();
    match fields.first().copied() {
        Some(b"F") => parse_failed(&fields),
        Some(b"C") => match fields[..] {
            [_, target, rel] => Ok(Line::Cleared {
                target: decode_target(target)?,
                rel: decode_rel(rel)?,
            }),
            _ => Err("a C record has 3 fields"),
        },
        _ => Err("unknown record type"),
    }
}

fn parse_failed(fields: &[&[u8]]) -> Result<Line, &'static str> {
    let (fixed, reason) = match fields.len() {
        9 => (fields, &b""[..]),
        10 => (&fields[..9], fields[9]),
        _ => return Err("an F record has 9 or 10 fields"),
    };
    let [_, first, last, attempts, code, op, kind, target, rel] = fixed else {
        return Err("an F record has 9 or 10 fields");
    };
    let first_failure = parse_time(first).ok_or("bad first failure time")?;
    let last_failure = parse_time(last).ok_or("bad last failure time")?;
    let attempts = parse_number::<u32>(attempts).ok_or("bad attempt count")?;
    let code = match *code {
        b"-" => None,
        digits => Some(parse_number::<i32>(digits).ok_or("bad exit code")?),
    };
    let op = match *op {
        b"update" => Op::Update,
        b"delete" => Op::Delete,
        _ => return Err("op is neither update nor delete"),
    };
    let is_dir = match *kind {
        b"file" => false,
        b"dir" => true,
        _ => return Err("kind is neither file nor dir"),
    };
    if reason.iter().any(|&byte| byte < 0x20 || byte == 0x7F) {
        return Err("raw control byte in reason");
    }
    let reason = unescape(reason).ok_or("bad %-escape in reason")?;
    Ok(Line::Failed(JournalEntry {
        target: decode_target(target)?,
        rel: decode_rel(rel)?,
        op,
        is_dir,
        code,
        reason: String::from_utf8_lossy(&reason).into_owned(),
        first_failure,
        last_failure,
        attempts,
        command: Arc::from(""),
        revision: 0,
    }))
}

fn parse_number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn decode_target(field: &[u8]) -> Result<String, &'static str> {
    String::from_utf8(unescape_field(field).ok_or("bad target field")?)
        .map_err(|_| "target is not UTF-8")
}

fn decode_rel(field: &[u8]) -> Result<PathBuf, &'static str> {
    let bytes = unescape_field(field).ok_or("bad path field")?;
    Ok(PathBuf::from(OsStr::from_bytes(&bytes)))
}

/// Appends the `F` record of `entry`, with its `\n`.
pub(super) fn write_failed(out: &mut Vec<u8>, entry: &JournalEntry) {
    out.extend_from_slice(b"F ");
    write_time(out, entry.first_failure);
    out.push(b' ');
    write_time(out, entry.last_failure);
    out.extend_from_slice(format!(" {} ", entry.attempts).as_bytes());
    match entry.code {
        Some(code) => out.extend_from_slice(code.to_string().as_bytes()),
        None => out.push(b'-'),
    }
    out.extend_from_slice(format!(" {} ", entry.op).as_bytes());
    out.extend_from_slice(if entry.is_dir { b"dir " } else { b"file " });
    escape_field(out, entry.target.as_bytes());
    out.push(b' ');
    escape_field(out, entry.rel.as_os_str().as_bytes());
    if !entry.reason.is_empty() {
        out.push(b' ');
        escape(out, entry.reason.as_bytes(), Mode::Text);
    }
    out.push(b'\n');
}

/// Appends the `C` record for one path, with its `\n`.
pub(super) fn write_cleared(out: &mut Vec<u8>, target: &str, rel: &std::path::Path) {
    out.extend_from_slice(b"C ");
    escape_field(out, target.as_bytes());
    out.push(b' ');
    escape_field(out, rel.as_os_str().as_bytes());
    out.push(b'\n');
}

/// Appends a comment line: `# ` and `text`, escaped so that it stays one line.
pub(super) fn write_comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"# ");
    escape(out, text.as_bytes(), Mode::Text);
    out.push(b'\n');
}

/// Appends the `# command:` line for `command` (which must not be empty).
pub(super) fn write_command(out: &mut Vec<u8>, command: &str) {
    out.extend_from_slice(COMMAND_PREFIX.as_bytes());
    escape(out, command.as_bytes(), Mode::Text);
    out.push(b'\n');
}

/// How much [`escape`] leaves literal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A space-separated field: spaces and `\` are escaped too.
    Field,
    /// Free text at the end of a line: spaces and `\` stay literal.
    Text,
}

/// Appends one field: the empty string is `.`, a lone `.` is `%2E`, anything else is
/// [`escape`]d, so that the field is never empty and never contains a space.
pub(super) fn escape_field(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes {
        b"" => out.push(b'.'),
        b"." => out.extend_from_slice(b"%2E"),
        _ => escape(out, bytes, Mode::Field),
    }
}

/// Reverses [`escape_field`]; `None` if `field` cannot have been written by it.
pub(super) fn unescape_field(field: &[u8]) -> Option<Vec<u8>> {
    if field == b"." {
        return Some(Vec::new());
    }
    if field.is_empty() || field.iter().any(|&byte| byte <= b' ' || byte == 0x7F) {
        return None;
    }
    unescape(field)
}

/// Appends `bytes`, writing as `%XX` (upper-case hex) every byte of: `%`; ASCII control
/// characters and DEL; invalid UTF-8; any Unicode control, whitespace (including NEL and
/// the line and paragraph separators) or invisible formatting character (zero-width and
/// bidirectional marks, BOM); in [`Mode::Field`] also space and `\`. Everything else,
/// including printable non-ASCII text such as `图片.jpg`, is written literally, so
/// `grep` finds a path by its name.
pub(super) fn escape(out: &mut Vec<u8>, bytes: &[u8], mode: Mode) {
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            let mut utf8 = [0; 4];
            let encoded = ch.encode_utf8(&mut utf8).as_bytes();
            if needs_escape(ch, mode) {
                encoded.iter().for_each(|&byte| push_escaped(out, byte));
            } else {
                out.extend_from_slice(encoded);
            }
        }
        chunk
            .invalid()
            .iter()
            .for_each(|&byte| push_escaped(out, byte));
    }
}

fn needs_escape(ch: char, mode: Mode) -> bool {
    match ch {
        ' ' | '\\' => mode == Mode::Field,
        '%' => true,
        // Invisible formatting: soft hyphen, zero-width and bidirectional marks, word
        // joiners, BOM, interlinear annotations. They would make two names look alike.
        '\u{AD}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' => true,
        _ => ch.is_control() || ch.is_whitespace(),
    }
}

fn push_escaped(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[
        b'%',
        HEX[usize::from(byte >> 4)],
        HEX[usize::from(byte & 0xF)],
    ]);
}

/// Reverses [`escape`]: every `%XX` (either case) becomes that byte, everything else is
/// kept. `None` on a `%` not followed by two hex digits.
pub(super) fn unescape(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let [high, low, ..] = *tail else { return None };
            out.push(hex_value(high)? << 4 | hex_value(low)?);
            rest = &tail[2..];
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

/// 9999-12-31T23:59:59Z, the last time with a four-digit year.
pub(super) const MAX_TIME: u64 = 253_402_300_799;

/// Appends unix time `secs` as RFC 3339 UTC with second precision: `2026-11-24T04:41:01Z`.
pub(super) fn write_time(out: &mut Vec<u8>, secs: u64) {
    out.extend_from_slice(format_time(secs).as_bytes());
}

/// Unix time `secs` as RFC 3339 UTC with second precision: `2026-11-24T04:41:01Z`.
/// Times after the year 9999 are written as its last second, to keep the width.
pub(super) fn format_time(secs: u64) -> String {
    let secs = secs.min(MAX_TIME);
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// Reverses [`format_time`]; only its exact output is accepted.
pub(super) fn parse_time(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let bytes = text.as_bytes();
    if bytes.len() != 20
        || [4, 7].iter().any(|&i| bytes[i] != b'-')
        || bytes[10] != b'T'
        || [13, 16].iter().any(|&i| bytes[i] != b':')
        || bytes[19] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
        digits.parse().ok()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year < 1970
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    // Rejects days past the end of their month (2026-02-30) by a round trip.
    (format_time(secs) == text).then_some(secs)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
/// Howard Hinnant's `civil_from_days`, for non-negative days only.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March is 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`], for years from 1970 and any day 1..=31 (days past
/// the end of a month roll over into the next one).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}
