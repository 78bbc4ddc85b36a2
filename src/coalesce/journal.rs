//! The scheduler's view of the failure journal, implemented on [`FailLog`].

use std::path::{Path, PathBuf};

use super::state::Journal;
use crate::faillog::{FailLog, Failure};
use crate::job::Entry;

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
