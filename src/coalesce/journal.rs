//! The scheduler's view of the failure journal ([`Journal`]), implemented on [`FailLog`].

use std::path::Path;

use crate::faillog::{FailLog, Failure};
use crate::job::{Entry, Op, Scope, Work};
use crate::rel::Rel;

/// Where failed work is made durable (the failure journal). Keys are the text form of a
/// [`crate::journal_key::TargetKey`]; one live entry per key and [`Scope`].
pub trait Journal: Send + Sync {
    /// Records failed work of one target; durable when it returns `Ok`.
    ///
    /// # Errors
    /// A message when the journal could not be written.
    fn record(
        &self,
        key: &str,
        work: &[Work],
        code: Option<i32>,
        reason: &str,
        command: &str,
    ) -> Result<(), String>;
    /// Clears entries that were pushed since; durable when it returns `Ok`.
    ///
    /// # Errors
    /// A message when the journal could not be written.
    fn clear(&self, key: &str, scopes: &[Scope]) -> Result<(), String>;
    /// Every live entry as `(target key, work)`.
    fn pending(&self) -> Vec<(String, Work)>;
}

impl Journal for FailLog {
    fn record(
        &self,
        key: &str,
        work: &[Work],
        code: Option<i32>,
        reason: &str,
        command: &str,
    ) -> Result<(), String> {
        let failures: Vec<Failure<'_>> = work
            .iter()
            .map(|w| match w {
                Work::WholeRoot => Failure {
                    target: key,
                    rel: Path::new(""),
                    op: Op::Update,
                    is_dir: true,
                },
                Work::Path(e) => Failure {
                    target: key,
                    rel: &e.rel,
                    op: e.op,
                    is_dir: e.is_dir,
                },
            })
            .collect();
        FailLog::record(self, &failures, code, reason, command).map_err(|err| err.to_string())
    }

    fn clear(&self, key: &str, scopes: &[Scope]) -> Result<(), String> {
        // A path is never in two running jobs of one remote, so a newer failure of the
        // same path cannot be recorded while the push that succeeded was running: a
        // plain clear cannot erase newer work.
        let rels: Vec<&Path> = scopes.iter().map(Scope::storage_rel).collect();
        FailLog::clear(self, key, &rels)
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    fn pending(&self) -> Vec<(String, Work)> {
        FailLog::pending(self)
            .into_iter()
            .map(|e| {
                let work = match Scope::from_storage(e.rel) {
                    Scope::WholeRoot => Work::WholeRoot,
                    Scope::Path(rel) => Work::Path(Entry {
                        rel: Rel::verbatim(rel),
                        op: e.op,
                        is_dir: e.is_dir,
                    }),
                };
                (e.target, work)
            })
            .collect()
    }
}
