//! The paths of one remote's running jobs, and the race rules against them.

// hashbrown's foldhash: several times faster than std's SipHash on the lookups every
// queued path of every remote makes here, and seeded per process, so names crafted in an
// upload tree cannot be chosen to collide ahead of time.
use hashbrown::HashMap;
use std::os::unix::ffi::OsStrExt;
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
        self.mark_all([(path, op, is_dir)]);
    }

    /// Marks every path of a batch. The counts above them are updated once per run of
    /// paths sharing a parent (a burst's batch holds whole directories), not per path.
    pub(super) fn mark_all(&mut self, paths: impl IntoIterator<Item = (Rel, Op, bool)>) {
        let mut run = Run::default();
        for (path, op, is_dir) in paths {
            if let Some((first, n)) = run.add(&path) {
                self.count_above(&first, n, true);
            }
            self.paths.insert(path, (op, is_dir));
        }
        if let Some((first, n)) = run.end() {
            self.count_above(&first, n, true);
        }
    }

    pub(super) fn unmark(&mut self, path: &Path) {
        self.unmark_all([path]);
    }

    /// Unmarks every path given (those not marked are skipped).
    pub(super) fn unmark_all<'p>(&mut self, paths: impl IntoIterator<Item = &'p Path>) {
        let mut run = Run::default();
        for path in paths {
            if self.paths.remove(path).is_none() {
                continue;
            }
            if let Some((first, n)) = run.add(path) {
                self.count_above(&first, n, false);
            }
        }
        if let Some((first, n)) = run.end() {
            self.count_above(&first, n, false);
        }
    }

    /// Adds (or takes) `n` to the count of every proper ancestor of `path`.
    fn count_above(&mut self, path: &Path, n: usize, add: bool) {
        for ancestor in parents(path) {
            match self.below.get_mut(ancestor) {
                Some(count) if add => *count += n,
                Some(count) => {
                    *count = count.saturating_sub(n);
                    if *count == 0 {
                        self.below.remove(ancestor);
                    }
                }
                None if add => {
                    self.below.insert(ancestor.to_path_buf(), n);
                }
                None => {}
            }
        }
    }
}

/// The parent of a normalized path as bytes: equal parents are equal bytes, and comparing
/// bytes does not parse components as `Path`'s `==` does.
fn parent_bytes(path: &Path) -> Option<&[u8]> {
    parents(path).next().map(|p| p.as_os_str().as_bytes())
}

/// Consecutive paths with the same parent: the first of them and how many.
#[derive(Default)]
struct Run {
    first: Option<PathBuf>,
    n: usize,
}

impl Run {
    /// Counts `path` in; returns the run it ended, if its parent differs.
    fn add(&mut self, path: &Path) -> Option<(PathBuf, usize)> {
        let same = self
            .first
            .as_deref()
            .is_some_and(|first| parent_bytes(first) == parent_bytes(path));
        if same {
            self.n += 1;
            return None;
        }
        let ended = self.end();
        self.first = Some(path.to_path_buf());
        self.n = 1;
        ended
    }

    /// The run so far, if any.
    fn end(&mut self) -> Option<(PathBuf, usize)> {
        let first = self.first.take()?;
        Some((first, std::mem::take(&mut self.n)))
    }
}
