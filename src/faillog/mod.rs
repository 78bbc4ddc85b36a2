//! The failure journal: a durable, private, human-readable record of work that failed
//! and must be retried.
//!
//! One live entry per (target key, relative path). A *target key* names one remote of one
//! root and survives restarts, upgrades and config edits (the versioned text of
//! [`crate::journal_key::TargetKey`], `v2 daemon /srv/www 10.0.0.2::www`, or
//! `v2 cdn /srv/www` for CDN purges); to this module it is an opaque string. An empty
//! relative path means the whole root (a failed full sync); above this module it is
//! typed ([`crate::job::Work::WholeRoot`]).
//!
//! Shared as `Arc<FailLog>`: the scheduler (through [`crate::coalesce::Journal`]) records
//! failed jobs and clears entries when a later push covered them; the CDN stage keeps its
//! failed purges the same way. Every call that changes the journal has
//! written and fsync'd it before it returns `Ok`; no thread of its own.
//!
//! # Safety of the file
//!
//! sersync 2.5 kept a world-writable shell script that root ran every `timeToExecute`
//! minutes and then truncated (reference §3.7, §4.3 F2, §4.5 S1). This journal is data
//! only, never executed and never passed to a shell. It is created with mode 0600 (and
//! its missing parent directories 0700), whatever the umask. [`FailLog::open`] refuses a
//! path that is a symbolic link, is not a regular file, is owned by another user than
//! the effective uid, or is writable by group or others, and a parent directory that is
//! world-writable without the sticky bit. A file of ours with other permission bits (such
//! as 0644) is set back to 0600.
//!
//! # Format (v1)
//!
//! UTF-8 text, one record per line, append-only; `docs/journal.md` has the details.
//!
//! ```text
//! # sersync journal v1
//! # failed at 2025-11-24T16:00:00Z, exit 10: 2 path(s)
//! # command: cd /srv/www && rsync -artuz -R ./a/b.txt ./c 10.0.0.2::www
//! F 2025-11-24T15:58:00Z 2025-11-24T16:00:00Z 2 10 update file /srv/www%20->%2010.0.0.2::www a/b.txt connection refused
//! F 2025-11-24T16:00:00Z 2025-11-24T16:00:00Z 1 10 delete dir /srv/www%20->%2010.0.0.2::www c connection refused
//! C /srv/www%20->%2010.0.0.2::www a/b.txt
//! ```
//!
//! - The first line is the version tag `# sersync journal v1`; a file that starts with
//!   anything else is refused, so a foreign file is never overwritten.
//! - `F <first> <last> <attempts> <code|-> <update|delete> <file|dir> <target> <path> [<reason>]`
//!   holds the whole current state of one entry; the last `F` or `C` line of a (target,
//!   path) wins. Times are RFC 3339 UTC; `-` is "no exit code" (not started, killed,
//!   queued at shutdown).
//! - `C <target> <path>`: the entry was delivered.
//! - `# command: …` gives the equivalent command of the `F` lines right after it, for a
//!   human; any other comment or blank line ends its scope. Other `#` lines are comments.
//! - Target and path are escaped (see `format::escape`): `%`, `\`, space, control,
//!   whitespace and invisible characters and invalid UTF-8 become `%XX`, so any byte
//!   sequence round-trips and each record stays one greppable line. The empty path (the
//!   whole root) is written `.`, and a path that is literally `.` is written `%2E`. The
//!   reason is last and keeps its spaces.
//!
//! # Recovery and compaction
//!
//! A record is appended with one `write` and then fsync'd; on error the file is cut back
//! to its previous length. On [`FailLog::open`] an incomplete last line (the daemon died
//! mid-write, so that call never returned `Ok`) is ignored with a warning, and a garbled
//! line elsewhere is skipped with a warning. The file is compacted (only the live entries
//! rewritten) on open when it holds anything else, and at run time when dead records
//! outnumber live ones (at least [`COMPACT_MIN_DEAD`]) or the last entry was cleared:
//! written to `<path>.tmp` (0600), fsync'd, renamed over `<path>`, directory fsync'd. A
//! `<path>.tmp` left by a crash is removed on open; the journal itself is intact then.

mod entries;
mod file;
mod format;
#[cfg(test)]
mod tests;
mod write;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use self::entries::Entries;
use self::file::parent_dir;
use crate::job::Op;

/// Compaction at run time waits for at least this many dead records (unless the journal
/// became empty), so that a small journal is not rewritten on every change.
pub const COMPACT_MIN_DEAD: usize = 64;
/// Longest reason kept, in bytes; longer ones are cut at a character boundary.
const MAX_REASON: usize = 512;
/// Longest command comment kept, in bytes.
const MAX_COMMAND: usize = 16 * 1024;

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FailLogError {
    /// The journal or its directory could be changed by someone else, or is not a
    /// regular file: refused, startup exits with status 2.
    #[error("{path}: refusing to use as failure journal: {reason}")]
    Unsafe {
        /// The file or directory refused.
        path: PathBuf,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// The file is not a journal this version can read; it is left untouched.
    #[error("{path}: not a sersync journal v1 (first line {first_line:?}); move it away")]
    NotJournal {
        /// The journal path.
        path: PathBuf,
        /// The start of the file's first line.
        first_line: String,
    },
    /// A system call on the journal failed.
    #[error("{path}: cannot {action}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was attempted (`open`, `write and fsync`, …).
        action: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// One path of a failed job, as passed to [`FailLog::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    /// The target key: one remote of one root, stable across restarts.
    pub target: &'a str,
    /// Path relative to the root; empty for the whole root.
    pub rel: &'a Path,
    /// What had to happen remotely.
    pub op: Op,
    /// Whether the path is (or was) a directory.
    pub is_dir: bool,
}

/// One live entry of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The target key.
    pub target: String,
    /// Path relative to the root; empty for the whole root.
    pub rel: PathBuf,
    /// What has to happen remotely (from the latest failure).
    pub op: Op,
    /// Whether the path is a directory (from the latest failure).
    pub is_dir: bool,
    /// Exit code of the latest failure; `None` if there was none (not started, killed,
    /// timed out, queued at shutdown).
    pub code: Option<i32>,
    /// Short reason of the latest failure.
    pub reason: String,
    /// Unix time (s) of the first failure since the entry was last cleared.
    pub first_failure: u64,
    /// Unix time (s) of the latest failure.
    pub last_failure: u64,
    /// Failures recorded since the entry was last cleared (at least 1).
    pub attempts: u32,
    /// The equivalent command of the latest failure, for humans (may be empty).
    pub command: Arc<str>,
    /// Changes each time the entry is recorded again; not persisted. Lets
    /// [`FailLog::clear_retried`] keep an entry that failed again during its retry.
    pub revision: u64,
}

/// The failure journal. See the module documentation.
#[derive(Debug)]
pub struct FailLog {
    path: PathBuf,
    tmp_path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The journal, opened for reading and appending.
    file: File,
    /// Length of the file up to the end of the last complete record.
    file_len: u64,
    /// `F` and `C` records in the file, live or dead.
    records: usize,
    /// Set when a failed append could not be cut off: compact before the next append.
    damaged: bool,
    /// Run-time compaction is not tried again before `records` reaches this (after a
    /// failed attempt).
    compact_retry_at: usize,
    entries: Entries,
}

impl FailLog {
    /// Opens the journal at `path`, creating it (mode 0600, missing parent directories
    /// 0700) if it does not exist, and replays it: [`FailLog::pending`] then returns the
    /// entries that were live when the last process stopped.
    ///
    /// An incomplete last line is ignored and a garbled line elsewhere skipped, each with
    /// a warning. The file is compacted if it held anything else than live entries, and a
    /// `<path>.tmp` left by an interrupted compaction is removed.
    ///
    /// # Errors
    ///
    /// [`FailLogError::Unsafe`] if `path` is a symbolic link, not a regular file, owned
    /// by another user than the effective uid or writable by group or others, or if its
    /// directory is world-writable without the sticky bit. [`FailLogError::NotJournal`]
    /// if the file does not start with the v1 version tag. [`FailLogError::Io`] if a
    /// system call fails.
    pub fn open(path: &Path) -> Result<FailLog, FailLogError> {
        let dir = parent_dir(path);
        file::create_private_dirs(dir)?;
        file::check_dir(dir)?;
        let euid = file::effective_uid()?;
        let (mut file, created) = file::open_or_create(path, euid)?;
        if created {
            file::fsync_dir(dir)?;
        }
        let mut tmp_path = OsString::from(path);
        tmp_path.push(".tmp");
        let tmp_path = PathBuf::from(tmp_path);
        if let Err(err) = file::remove_leftover(&tmp_path) {
            // Only compaction needs the name.
            log::warn!("{}", describe(&err));
        }

        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| io_error(path, "read", source))?;
        let replay = entries::replay(path, &bytes)?;
        let journal = FailLog {
            path: path.to_path_buf(),
            tmp_path,
            state: Mutex::new(State {
                file,
                file_len: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                records: replay.records,
                damaged: false,
                compact_retry_at: 0,
                entries: replay.entries,
            }),
        };
        let mut state = journal.lock();
        if replay.needs_rewrite || state.records > state.entries.len() {
            if let Err(err) = journal.compact(&mut state) {
                log::warn!("{}; keeping the journal uncompacted", describe(&err));
                // Appending is still safe once no partial line is left at the end.
                let complete_len = u64::try_from(replay.complete_len).unwrap_or(u64::MAX);
                state
                    .file
                    .set_len(complete_len)
                    .and_then(|()| state.file.sync_data())
                    .map_err(|source| io_error(path, "cut off the incomplete last line", source))?;
                state.file_len = complete_len;
                if complete_len == 0 {
                    journal.append(&mut state, &format::header_block())?;
                }
            }
        }
        match state.entries.oldest_first_failure() {
            Some(oldest) => log::info!(
                "{}: {} failed path(s) to retry, oldest failed at {}",
                journal.path.display(),
                state.entries.len(),
                format::format_time(oldest)
            ),
            None => log::debug!("{}: journal empty", journal.path.display()),
        }
        drop(state);
        Ok(journal)
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies of all live entries, in the order they were first recorded.
    pub fn pending(&self) -> Vec<JournalEntry> {
        self.lock().entries.snapshot(None)
    }

    /// Copies of the live entries of one target, in the order they were first recorded.
    pub fn pending_for(&self, target: &str) -> Vec<JournalEntry> {
        self.lock().entries.snapshot(Some(target))
    }

    /// The target keys that have live entries, sorted.
    pub fn targets(&self) -> Vec<String> {
        self.lock().entries.targets()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is waiting to be retried.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unix time (s) of the earliest `first_failure` among the live entries.
    pub fn oldest_first_failure(&self) -> Option<u64> {
        self.lock().entries.oldest_first_failure()
    }

    /// Records the paths of one failed job: its exit code (`None` if there was none), a
    /// short reason, and the equivalent command for a human (already without secrets;
    /// may be empty). An entry that exists for the same target and path is updated: op,
    /// kind, code, reason and command replaced, `attempts` + 1, `last_failure` now,
    /// `first_failure` kept. A path given twice counts once, the later op wins.
    ///
    /// The records are written with one `write` and fsync'd before this returns: on `Ok`
    /// the work survives a crash. On `Err` nothing was recorded.
    ///
    /// # Errors
    ///
    /// [`FailLogError::Io`] if the journal cannot be written or fsync'd.
    pub fn record(
        &self,
        failures: &[Failure<'_>],
        code: Option<i32>,
        reason: &str,
        command: &str,
    ) -> Result<(), FailLogError> {
        self.record_at(failures, code, reason, command, unix_now())
    }

    fn record_at(
        &self,
        failures: &[Failure<'_>],
        code: Option<i32>,
        reason: &str,
        command: &str,
        now: u64,
    ) -> Result<(), FailLogError> {
        if failures.is_empty() {
            return Ok(());
        }
        let reason = truncate(reason.trim(), MAX_REASON);
        let command: Arc<str> = Arc::from(truncate(command.trim(), MAX_COMMAND));
        let mut state = self.lock();

        let mut batch: Vec<JournalEntry> = Vec::with_capacity(failures.len());
        let mut index: HashMap<(&str, &Path), usize> = HashMap::with_capacity(failures.len());
        for failure in failures {
            if let Some(&i) = index.get(&(failure.target, failure.rel)) {
                batch[i].op = failure.op;
                batch[i].is_dir = failure.is_dir;
                continue;
            }
            let (first_failure, attempts) = match state.entries.get(failure.target, failure.rel) {
                Some(old) => (old.first_failure, old.attempts.saturating_add(1)),
                None => (now, 1),
            };
            index.insert((failure.target, failure.rel), batch.len());
            batch.push(JournalEntry {
                target: failure.target.to_owned(),
                rel: failure.rel.to_path_buf(),
                op: failure.op,
                is_dir: failure.is_dir,
                code,
                reason: reason.to_owned(),
                first_failure,
                last_failure: now.max(first_failure),
                attempts,
                command: Arc::clone(&command),
                revision: 0,
            });
        }

        let mut buf = Vec::new();
        let exit = code.map_or_else(|| "no exit code".to_owned(), |code| format!("exit {code}"));
        format::write_comment(
            &mut buf,
            &format!(
                "failed at {}, {exit}: {} path(s)",
                format::format_time(now),
                batch.len()
            ),
        );
        if !command.is_empty() {
            format::write_command(&mut buf, &command);
        }
        for entry in &batch {
            format::write_failed(&mut buf, entry);
        }
        self.append(&mut state, &buf)?;

        state.records += batch.len();
        for entry in batch {
            state.entries.insert(entry);
        }
        log::debug!(
            "{}: recorded {} failed path(s), {} pending",
            self.path.display(),
            failures.len(),
            state.entries.len()
        );
        self.maybe_compact(&mut state);
        Ok(())
    }

    /// Clears the entries of these paths of `target`, whatever happened to them since
    /// they were read: for work that a newer successful job covered. Paths without an
    /// entry are ignored. Returns how many entries were cleared; fsync'd before it
    /// returns.
    ///
    /// # Errors
    ///
    /// [`FailLogError::Io`] if the journal cannot be written or fsync'd; nothing was
    /// cleared then.
    pub fn clear(&self, target: &str, rels: &[&Path]) -> Result<usize, FailLogError> {
        self.clear_where(rels.iter().map(|rel| (target, *rel, None)))
    }

    /// Clears the entries whose retry succeeded, given as returned by
    /// [`FailLog::pending_for`], unless an entry was recorded again since (its
    /// `revision` changed): that newer failure stays. Returns how many entries were
    /// cleared; fsync'd before it returns.
    ///
    /// # Errors
    ///
    /// [`FailLogError::Io`] if the journal cannot be written or fsync'd; nothing was
    /// cleared then.
    pub fn clear_retried(&self, retried: &[JournalEntry]) -> Result<usize, FailLogError> {
        self.clear_where(retried.iter().map(|entry| {
            (
                entry.target.as_str(),
                entry.rel.as_path(),
                Some(entry.revision),
            )
        }))
    }

    fn clear_where<'a>(
        &self,
        keys: impl Iterator<Item = (&'a str, &'a Path, Option<u64>)>,
    ) -> Result<usize, FailLogError> {
        let mut state = self.lock();
        let mut doomed: Vec<(&str, &Path)> = Vec::new();
        let mut seen: HashSet<(&str, &Path)> = HashSet::new();
        for (target, rel, revision) in keys {
            let Some(entry) = state.entries.get(target, rel) else {
                continue;
            };
            let unchanged = revision.is_none_or(|revision| revision == entry.revision);
            if unchanged && seen.insert((target, rel)) {
                doomed.push((target, rel));
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::new();
        for (target, rel) in &doomed {
            format::write_cleared(&mut buf, target, rel);
        }
        self.append(&mut state, &buf)?;
        state.records += doomed.len();
        for (target, rel) in &doomed {
            state.entries.remove(target, rel);
        }
        log::debug!(
            "{}: cleared {} path(s), {} pending",
            self.path.display(),
            doomed.len(),
            state.entries.len()
        );
        self.maybe_compact(&mut state);
        Ok(doomed.len())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Memory is changed only after the file was written, so a panic in another
        // thread cannot have left the two out of step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn io_error(path: &Path, action: &'static str, source: io::Error) -> FailLogError {
    FailLogError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn unsafe_path(path: &Path, reason: String) -> FailLogError {
    FailLogError::Unsafe {
        path: path.to_path_buf(),
        reason,
    }
}

/// The error and its sources, `: `-separated, for a log line.
fn describe(err: &FailLogError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
