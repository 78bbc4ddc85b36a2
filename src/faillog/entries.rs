//! The live entries in memory, and rebuilding them from the journal's lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{FailLogError, JournalEntry, format};

/// The live entries, by target and path, with their insertion order.
#[derive(Debug, Default)]
pub(super) struct Entries {
    by_target: HashMap<String, HashMap<PathBuf, Slot>>,
    live: usize,
    counter: u64,
}

#[derive(Debug)]
struct Slot {
    /// Insertion order of the entry (kept when it is recorded again).
    seq: u64,
    entry: JournalEntry,
}

impl Entries {
    pub(super) fn get(&self, target: &str, rel: &Path) -> Option<&JournalEntry> {
        Some(&self.by_target.get(target)?.get(rel)?.entry)
    }

    /// Inserts or replaces, giving the entry a new revision; a replaced entry keeps its
    /// place in the order.
    pub(super) fn insert(&mut self, mut entry: JournalEntry) {
        self.counter += 1;
        entry.revision = self.counter;
        let paths = self.by_target.entry(entry.target.clone()).or_default();
        match paths.get_mut(entry.rel.as_path()) {
            Some(slot) => slot.entry = entry,
            None => {
                let seq = self.counter;
                paths.insert(entry.rel.clone(), Slot { seq, entry });
                self.live += 1;
            }
        }
    }

    /// Number of live entries.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// The target keys with live entries, sorted.
    pub(super) fn targets(&self) -> Vec<String> {
        let mut targets: Vec<String> = self.by_target.keys().cloned().collect();
        targets.sort_unstable();
        targets
    }

    /// The earliest `first_failure`.
    pub(super) fn oldest_first_failure(&self) -> Option<u64> {
        self.by_target
            .values()
            .flat_map(HashMap::values)
            .map(|slot| slot.entry.first_failure)
            .min()
    }

    pub(super) fn remove(&mut self, target: &str, rel: &Path) -> Option<JournalEntry> {
        let paths = self.by_target.get_mut(target)?;
        let slot = paths.remove(rel)?;
        if paths.is_empty() {
            self.by_target.remove(target);
        }
        self.live -= 1;
        Some(slot.entry)
    }

    /// Copies of the live entries (of one target, if given) in insertion order.
    pub(super) fn snapshot(&self, target: Option<&str>) -> Vec<JournalEntry> {
        let mut slots: Vec<&Slot> = match target {
            Some(target) => self
                .by_target
                .get(target)
                .into_iter()
                .flat_map(HashMap::values)
                .collect(),
            None => self.by_target.values().flat_map(HashMap::values).collect(),
        };
        slots.sort_unstable_by_key(|slot| slot.seq);
        slots.into_iter().map(|slot| slot.entry.clone()).collect()
    }
}

/// What [`replay`] found in a journal.
pub(super) struct Replay {
    /// The live entries.
    pub(super) entries: Entries,
    /// `F` and `C` records read.
    pub(super) records: usize,
    /// Length of the file up to the end of its last complete line.
    pub(super) complete_len: usize,
    /// The file needs a rewrite: no header yet, torn last line or garbled lines.
    pub(super) needs_rewrite: bool,
}

/// Reads the journal's records into memory. Every `F` line is an entry's whole state and
/// replaces the previous one of its (target, path); `C` removes it.
pub(super) fn replay(path: &Path, bytes: &[u8]) -> Result<Replay, FailLogError> {
    let (complete, torn) = match bytes.iter().rposition(|&byte| byte == b'\n') {
        Some(end) => bytes.split_at(end + 1),
        None => (&b""[..], bytes),
    };
    let mut result = Replay {
        entries: Entries::default(),
        records: 0,
        complete_len: complete.len(),
        needs_rewrite: false,
    };
    let mut lines = complete.split(|&byte| byte == b'\n');
    let first_line = lines.next().unwrap_or_default();
    if complete.is_empty() {
        // New or empty, or the daemon died while writing the header.
        if !format::HEADER.as_bytes().starts_with(torn) {
            return Err(not_journal(path, torn));
        }
        result.needs_rewrite = true;
        return Ok(result);
    }
    if first_line != format::HEADER.as_bytes() {
        return Err(not_journal(path, first_line));
    }

    let mut command: Arc<str> = Arc::from("");
    // The last element of the split is the empty text after the final `\n`.
    let body: Vec<&[u8]> = lines.collect();
    let body = body.split_last().map_or(&[][..], |(_, body)| body);
    for (i, line) in body.iter().enumerate() {
        match format::parse_line(line) {
            Ok(format::Line::Failed(mut entry)) => {
                entry.command = Arc::clone(&command);
                result.entries.insert(entry);
                result.records += 1;
            }
            Ok(format::Line::Cleared { target, rel }) => {
                result.entries.remove(&target, &rel);
                result.records += 1;
                command = Arc::from("");
            }
            Ok(format::Line::Command(text)) => command = Arc::from(text),
            Ok(format::Line::Other) => command = Arc::from(""),
            Err(what) => {
                log::warn!(
                    "{}:{}: skipping garbled journal line ({what}): {}",
                    path.display(),
                    i + 2,
                    excerpt(line)
                );
                result.needs_rewrite = true;
                command = Arc::from("");
            }
        }
    }
    if !torn.is_empty() {
        log::warn!(
            "{}: ignoring incomplete last line ({} bytes, written when sersync stopped): {}",
            path.display(),
            torn.len(),
            excerpt(torn)
        );
        result.needs_rewrite = true;
    }
    Ok(result)
}

/// The start of a line, printable, for a log message.
pub(super) fn excerpt(line: &[u8]) -> String {
    let mut out = Vec::new();
    format::escape(&mut out, &line[..line.len().min(120)], format::Mode::Text);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if line.len() > 120 {
        text.push('…');
    }
    text
}

pub(super) fn not_journal(path: &Path, first_line: &[u8]) -> FailLogError {
    FailLogError::NotJournal {
        path: path.to_path_buf(),
        first_line: String::from_utf8_lossy(&first_line[..first_line.len().min(80)]).into_owned(),
    }
}
