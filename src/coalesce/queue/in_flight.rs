//! The paths of one remote's running jobs, and the race rules against them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::job::Op;

/// Every path in a running job of one remote (a running subtree sync is marked as the
/// delete of its directory), with a count of in-flight paths below each directory.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    paths: HashMap<PathBuf, Op>,
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

    /// Whether pushing `path` now could race a running job: the same path, a directory
    /// above it being deleted, or (for a delete or a non-directory) anything below it.
    pub(super) fn conflicts(&self, path: &Path, op: Op, is_dir: bool) -> bool {
        if self.paths.is_empty() {
            return false;
        }
        self.paths.contains_key(path)
            || path
                .ancestors()
                .skip(1)
                .any(|a| self.paths.get(a) == Some(&Op::Delete))
            || ((op == Op::Delete || !is_dir) && self.below.get(path).is_some_and(|n| *n > 0))
    }

    pub(super) fn mark(&mut self, path: &Path, op: Op) {
        self.paths.insert(path.to_path_buf(), op);
        for ancestor in path.ancestors().skip(1) {
            *self.below.entry(ancestor.to_path_buf()).or_insert(0) += 1;
        }
    }

    pub(super) fn unmark(&mut self, path: &Path) {
        if self.paths.remove(path).is_none() {
            return;
        }
        for ancestor in path.ancestors().skip(1) {
            if let Some(count) = self.below.get_mut(ancestor) {
                *count -= 1;
                if *count == 0 {
                    self.below.remove(ancestor);
                }
            }
        }
    }
}
