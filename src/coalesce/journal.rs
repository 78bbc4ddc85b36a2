//! The scheduler's view of the failure journal ([`Journal`]), implemented on [`FailLog`].

use std::path::{Path, PathBuf};

use crate::faillog::{FailLog, Failure};
use crate::job::Entry;

/// Where failed work is made durable (the failure journal). Keys are the text form of a
/// [`crate::target_key::TargetKey`]; an entry with an empty path is the whole root, one of
/// a directory delete is replayed as a subtree sync of it.
pub trait Journal: Send + Sync {
    /// Records failed entries of one target; durable when it returns `Ok`.
    ///
    /// # Errors
    /// A message when the journal could not be written.
    fn record(
        &self,
        key: &str,
        entries: &[Entry],
        code: Option<i32>,
        reason: &str,
        command: &str,
    ) -> Result<(), String>;
    /// Clears entries that were pushed since; durable when it returns `Ok`.
    ///
    /// # Errors
    /// A message when the journal could not be written.
    fn clear(&self, key: &str, rels: &[PathBuf]) -> Result<(), String>;
    /// Every live entry as `(target key, entry)`.
    fn pending(&self) -> Vec<(String, Entry)>;
}

impl Journal for FailLog {
    fn record(
        &self,
        key: &str,
        entries: &[Entry],
        code: Option<i32>,
        reason: &str,
        command: &str,
    ) -> Result<(), String> {
        let failures: Vec<Failure<'_>> = entries
            .iter()
            .map(|e| Failure {
                target: key,
                rel: &e.rel,
                op: e.op,
                is_dir: e.is_dir,
            })
            .collect();
        FailLog::record(self, &failures, code, reason, command).map_err(|err| err.to_string())
    }

    fn clear(&self, key: &str, rels: &[PathBuf]) -> Result<(), String> {
        // A path is never in two running jobs of one remote, so a newer failure of the
        // same path cannot be recorded while the push that succeeded was running: a
        // plain clear cannot erase newer work.
        let rels: Vec<&Path> = rels.iter().map(PathBuf::as_path).collect();
        FailLog::clear(self, key, &rels)
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    fn pending(&self) -> Vec<(String, Entry)> {
        FailLog::pending(self)
            .into_iter()
            .map(|e| {
                (
                    e.target,
                    Entry {
                        rel: e.rel,
                        op: e.op,
                        is_dir: e.is_dir,
                    },
                )
            })
            .collect()
    }
}
