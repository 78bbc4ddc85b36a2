//! The paths of one remote's running jobs, and the race rules against them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::super::rel::parents;
use super::Rel;
use crate::job::Op;

/// Every path in a running job of one remote with its operation and whether it is a
/// directory (a running subtree sync is marked as the delete of its directory), with a
/// count of in-flight paths below each directory.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    paths: HashMap<Rel, (Op, bool)>,
    below: HashMap<PathBuf, usize>,
}

impl InFlight {
    /// Paths in running jobs.
    pub(super) fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether `path` itself is in a running job.
    pub(super) fn contains(&self, path: &Path) -> bool {
        self.paths.contains_key(path)
    }

    /// Whether pushing `path` now could race a running job: the same path, a path above
    /// it being deleted or sent as a non-directory (a directory that became a file: its
    /// receiver renames a file onto the name while `./path` would make it a directory),
    /// or (for a delete or a non-directory) anything below it.
    pub(super) fn conflicts(&self, path: &Path, op: Op, is_dir: bool) -> bool {
        if self.paths.is_empty() {
            return false;
        }
        let destructive = |op: Op, is_dir: bool| op == Op::Delete || !is_dir;
        self.paths.contains_key(path)
            || parents(path)
                .filter_map(|a| self.paths.get(a))
                .any(|(op, is_dir)| destructive(*op, *is_dir))
            || (destructive(op, is_dir) && self.below.get(path).is_some_and(|n| *n > 0))
    }

    /// Room for `more` paths (a batch about to be marked).
    pub(super) fn reserve(&mut self, more: usize) {
        self.paths.reserve(more);
    }

    pub(super) fn mark(&mut self, path: Rel, op: Op, is_dir: bool) {
        for ancestor in parents(&path) {
            match self.below.get_mut(ancestor) {
                Some(count) => *count += 1,
                None => {
                    self.below.insert(ancestor.to_path_buf(), 1);
                }
            }
        }
        self.paths.insert(path, (op, is_dir));
    }

    pub(super) fn unmark(&mut self, path: &Path) {
        if self.paths.remove(path).is_none() {
            return;
        }
        for ancestor in parents(path) {
            if let Some(count) = self.below.get_mut(ancestor) {
                *count -= 1;
                if *count == 0 {
                    self.below.remove(ancestor);
                }
            }
        }
    }
}
