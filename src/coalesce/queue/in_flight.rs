//! The paths of one remote's running jobs, and the race rules against them.

// hashbrown's foldhash: several times faster than std's SipHash on the lookups every
// queued path of every remote makes here, and seeded per process, so names crafted in an
// upload tree cannot be chosen to collide ahead of time. Keys are hashed and compared as
// bytes (`RelKey`): each candidate path is looked up with each of its parents.
use hashbrown::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::super::rel::{RelKey, key, parents};
use super::Rel;
use crate::job::Op;

/// Every path in a running job of one remote, by whether its push replaces what is
/// below it (a running subtree sync is marked as the delete of its directory), with a
/// count of in-flight paths below each directory. Two sets of paths rather than one map
/// to the operation: 9 bytes a slot instead of 17, and the parents' lookups only ever
/// ask whether a parent replaces.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// Deletes and non-directories.
    replacing: HashSet<RelKey>,
    /// Directories sent as updates.
    dirs: HashSet<RelKey>,
    below: HashMap<Box<[u8]>, usize>,
}

/// Whether pushing `op` on a path replaces what is below it there: a delete, or a file or
/// symlink sent over a directory.
fn replaces(op: Op, is_dir: bool) -> bool {
    op == Op::Delete || !is_dir
}

impl InFlight {
    /// Paths in running jobs.
    pub(super) fn len(&self) -> usize {
        self.replacing.len() + self.dirs.len()
    }

    /// Whether `path` itself is in a running job.
    pub(super) fn contains(&self, path: &Path) -> bool {
        let bytes = key(path);
        self.replacing.contains(bytes) || self.dirs.contains(bytes)
    }

    /// Whether pushing `path` now could race a running job: the same path, a path above
    /// it being deleted or sent as a non-directory (a directory that became a file: its
    /// receiver renames a file onto the name while `./path` would make it a directory),
    /// or (for a delete or a non-directory) anything below it.
    pub(super) fn conflicts(&self, path: &Path, op: Op, is_dir: bool) -> bool {
        if self.replacing.is_empty() && self.dirs.is_empty() {
            return false;
        }
        self.contains(path)
            || (!self.replacing.is_empty()
                && parents(path).any(|a| self.replacing.contains(key(a))))
            || (replaces(op, is_dir) && self.below.get(key(path)).is_some_and(|n| *n > 0))
    }

    /// Room for `more` paths (a batch about to be marked).
    pub(super) fn reserve(&mut self, more: usize) {
        self.replacing.reserve(more);
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
            // Marked again as the other kind: the latest marking is what it is.
            let (into, other) = if replaces(op, is_dir) {
                (&mut self.replacing, &mut self.dirs)
            } else {
                (&mut self.dirs, &mut self.replacing)
            };
            if !other.is_empty() {
                other.remove(key(&path));
            }
            into.insert(RelKey(path));
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
            let bytes = key(path);
            if !self.replacing.remove(bytes) && !self.dirs.remove(bytes) {
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
            let ancestor = key(ancestor);
            match self.below.get_mut(ancestor) {
                Some(count) if add => *count += n,
                Some(count) => {
                    *count = count.saturating_sub(n);
                    if *count == 0 {
                        self.below.remove(ancestor);
                    }
                }
                None if add => {
                    self.below.insert(ancestor.into(), n);
                }
                None => {}
            }
        }
    }
}

/// The parent of a normalized path as bytes: equal parents are equal bytes, and comparing
/// bytes does not parse components as `Path`'s `==` does.
fn parent_bytes(path: &Path) -> Option<&[u8]> {
    parents(path).next().map(key)
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
