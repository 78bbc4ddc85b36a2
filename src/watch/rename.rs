//! Rename handling: pairing `MOVED_FROM` with `MOVED_TO` by cookie, moves out of and
//! into the watched trees, and exchanges.
//!
//! A `MOVED_FROM` is held until the next event: if that is the `MOVED_TO` with the same
//! cookie, the pair is a move inside the watched trees (possibly between two roots);
//! anything else, or no event within [`MOVE_PAIR_TIMEOUT`] (the TO may only come with
//! the next `read`), makes it a move out. Resolving it before any later event keeps the
//! output in kernel order: `mv x /elsewhere; touch x` must not end with a delete of the
//! new `x`. inotify(7): the pair is "usually consecutive", not atomic, and a move out has
//! no TO.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::event::State;
use super::mask::{self, Emit, Kind};
use super::outlet::Flow;
use super::tree::Dir;
use crate::job::{FsEvent, Move, Op};
use crate::metrics::Metrics;

/// How long a `MOVED_FROM` waits for its `MOVED_TO` when the read ended between them.
/// The kernel queues both inside one `rename(2)`, so the TO is normally already there;
/// this only bounds the wait when the pair straddles a `read` (or the move left the tree).
pub(crate) const MOVE_PAIR_TIMEOUT: Duration = Duration::from_millis(20);

/// A `MOVED_FROM` waiting for its `MOVED_TO`.
#[derive(Debug)]
pub(super) struct PendingFrom {
    pub(super) cookie: u32,
    pub(super) root: usize,
    pub(super) rel: PathBuf,
    pub(super) is_dir: bool,
    pub(super) mask: u32,
    pub(super) seen: Instant,
    pub(super) deadline: Instant,
}

/// A paired move just handled, kept to recognise `renameat2(RENAME_EXCHANGE)`, which
/// the kernel reports as two moves: a→b, then b→a.
#[derive(Debug)]
pub(super) struct LastMove {
    from: (usize, PathBuf),
    to: (usize, PathBuf),
    /// Watches that were under `to` before the move (the other half of an exchange,
    /// or an empty directory the rename replaced, which the kernel drops by itself).
    replaced: Vec<(i32, Dir<i32>)>,
}

impl State {
    /// When the thread must wake up without an event: a held `MOVED_FROM` or modified
    /// file to resolve, a retry of what could not be watched, a periodic rescan.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.pending.as_ref().map(|pending| pending.deadline),
            self.held.deadline(),
            self.next_retry,
            self.next_unwatched_rescan,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does what is due at `now`: a held `MOVED_FROM` whose partner did not come in time
    /// is a move out; modified files that were not closed are sent; retries and
    /// periodic rescans (`rewatch.rs`).
    pub(crate) fn expire(&mut self, now: Instant) -> Flow {
        if self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.deadline <= now)
        {
            if let Some(pending) = self.pending.take() {
                self.release_held()?;
                self.moved_out(pending)?;
            }
        }
        self.release_due(now)?;
        self.retry_due(now)
    }

    /// At stop: hand over the held move and the held modifications (blocking: the
    /// scheduler keeps receiving until this thread's sender is gone).
    pub(crate) fn finish(&mut self) -> Flow {
        self.release_held()?;
        if let Some(pending) = self.pending.take() {
            self.moved_out(pending)?;
        }
        self.send_due_rescans()
    }

    /// A `MOVED_FROM` with no partner: the path left the watched trees.
    pub(super) fn moved_out(&mut self, from: PendingFrom) -> Flow {
        if from.is_dir {
            self.unwatch(from.root, &from.rel, true);
        }
        self.emit(
            Kind::MovedFrom,
            from.root,
            from.rel,
            from.is_dir,
            from.mask,
            from.seen,
        )
    }

    /// A paired move, possibly between two roots: delete the old path, push the new one.
    /// A directory keeps its watches (same inodes); only its subtree's paths change, and
    /// the scan re-emits every descendant because the remote needs them under the new
    /// name. A side that is excluded turns the move into a plain create or delete.
    ///
    /// A pair that reverses the previous one (a→b, then b→a) is either the second half
    /// of an exchange (`renameat2(RENAME_EXCHANGE)`, `mv --exchange`: the kernel reports
    /// it as two moves) or a move back (`mv a b; mv b a`, maybe followed by `mkdir b`).
    /// Events alone cannot tell them apart for files; for directories the kernel can:
    /// in an exchange, the directory now at `a` is the one that was watched under `b`
    /// before the first half. Either way what `b` holds now is not what the first half
    /// pushed there, so `b` goes out as a delete followed by an update of what is there
    /// now (a directory then gets a subtree sync from the scheduler), and `a` as an
    /// update.
    pub(super) fn moved_within(
        &mut self,
        from: PendingFrom,
        root: usize,
        rel: PathBuf,
        is_dir: bool,
        raw: u32,
        now: Instant,
    ) -> Flow {
        let last_move = self.last_move.take();
        let reverses = last_move.as_ref().is_some_and(|last| {
            last.to.0 == from.root
                && last.to.1 == from.rel
                && last.from.0 == root
                && last.from.1 == rel
        });
        let from_key = (from.root, from.rel.clone());
        if reverses {
            let exchanged = last_move
                .filter(|last| is_dir && self.is_exchanged_dir(last, root, &rel))
                .map(|last| last.replaced);
            if let Some(replaced) = exchanged {
                for displaced in self.tree.graft(replaced, &from.rel, root, &rel) {
                    self.rm_watch(displaced.handle);
                }
                let (from_root, from_rel) = (from.root, from.rel.clone());
                self.emit(
                    Kind::MovedFrom,
                    from_root,
                    from_rel,
                    true,
                    from.mask,
                    from.seen,
                )?;
                self.arrived(Kind::MovedTo, root, rel, is_dir, raw, now)?;
            } else {
                let mut replaced = Vec::new();
                self.moved_pair(from, root, rel, is_dir, raw, now, &mut replaced)?;
            }
            return self.arrived_again(from_key.0, from_key.1, raw, now);
        }
        let to_key = (root, rel.clone());
        let mut replaced = Vec::new();
        let flow = self.moved_pair(from, root, rel, is_dir, raw, now, &mut replaced);
        self.last_move = Some(LastMove {
            from: from_key,
            to: to_key,
            replaced,
        });
        flow
    }

    /// Whether the directory now at `root`/`rel` is the one that was watched under
    /// `last.to` before `last` (an exchange), asked of the kernel: adding a watch on an
    /// inode that has one returns its descriptor.
    fn is_exchanged_dir(&self, last: &LastMove, root: usize, rel: &Path) -> bool {
        let abs = self.shared.roots[root].join(rel);
        let Ok(id) = self.shared.watches.add(abs.as_path(), self.shared.mask) else {
            return false;
        };
        last.replaced
            .iter()
            .any(|(replaced, dir)| *replaced == id && dir.root == last.to.0 && dir.rel == last.to.1)
    }

    /// After a reversed pair: whatever is at `root`/`rel` now is pushed as new (a
    /// directory is watched and scanned).
    fn arrived_again(&mut self, root: usize, rel: PathBuf, raw: u32, now: Instant) -> Flow {
        match fs::symlink_metadata(self.shared.roots[root].join(&rel)) {
            Ok(meta) => self.arrived(Kind::MovedTo, root, rel, meta.is_dir(), raw, now),
            Err(_) => Ok(()), // gone again: its own events follow
        }
    }

    /// [`State::moved_within`] for a pair that is not the second half of an exchange;
    /// `replaced` receives the watches that were under the new name.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn moved_pair(
        &mut self,
        from: PendingFrom,
        root: usize,
        rel: PathBuf,
        is_dir: bool,
        raw: u32,
        now: Instant,
        replaced: &mut Vec<(i32, Dir<i32>)>,
    ) -> Flow {
        let from_excluded = self.shared.filter.is_excluded(&from.rel, from.is_dir);
        if self.shared.filter.is_excluded(&rel, is_dir) {
            Metrics::incr(&self.shared.metrics.events_filtered);
            return self.moved_out(from);
        }
        if from_excluded {
            Metrics::incr(&self.shared.metrics.events_filtered);
            return self.arrived(Kind::MovedTo, root, rel, is_dir, raw, now);
        }
        // A directory below which a directory arrived that was gone when it was to be
        // watched goes the old way too: that one may have been moved along with this one
        // (`mv x d/m; mv d d.old`, both read after the second), and the scan of the new
        // name watches it.
        let vanished_below = from.is_dir && self.vanished_at_or_below(from.root, &from.rel);
        if vanished_below {
            self.forget_vanished(from.root, &from.rel);
        }
        // One root, both halves pushed: a move, which the remote can make from what it
        // holds (`coalesce`, `push::moves`); a directory's content moved with it, so no
        // scan re-sends it.
        let toggles = &self.shared.toggles;
        // A directory with unwatched directories below goes the old way: the scan of the
        // new name watches them (their retries know the old paths only).
        let unwatched_below = vanished_below
            || from.is_dir
                && self
                    .unwatched
                    .keys()
                    .any(|(r, p)| *r == from.root && p.starts_with(&from.rel));
        // A directory made and renamed before its watch could be added (a deploy swap's
        // `mv release.new release`) has no watches to follow: the scan of the new name
        // watches it, or nothing below it would ever be seen.
        let never_watched = from.is_dir && self.tree.wd_of(from.root, &from.rel).is_none();
        let as_move = from.root == root
            && !unwatched_below
            && !never_watched
            && mask::emit(Kind::MovedFrom, is_dir, toggles) == Emit::Change(Op::Delete)
            && mask::emit(Kind::MovedTo, is_dir, toggles) == Emit::Change(Op::Update);
        if as_move {
            if is_dir {
                *replaced = self.rename_watches(&from, root, &rel);
            }
            return self.send(FsEvent::Move(Move {
                root,
                from: from.rel,
                to: rel,
                is_dir,
                mask: raw,
                seen: now,
            }));
        }
        self.emit(
            Kind::MovedFrom,
            from.root,
            from.rel.clone(),
            from.is_dir,
            from.mask,
            from.seen,
        )?;
        if !is_dir {
            return self.emit(Kind::MovedTo, root, rel, false, raw, now);
        }
        *replaced = self.rename_watches(&from, root, &rel);
        let emits =
            mask::emit(Kind::MovedTo, true, &self.shared.toggles) == Emit::Change(Op::Update);
        self.watch_and_scan(root, rel, emits, raw, now)
    }

    /// A renamed directory keeps its watches (same inodes): its node is relinked under
    /// the new name; returns the watches that were under the new name.
    fn rename_watches(
        &mut self,
        from: &PendingFrom,
        root: usize,
        rel: &Path,
    ) -> Vec<(i32, Dir<i32>)> {
        let (moved, displaced) = self.tree.rename_subtree(from.root, &from.rel, root, rel);
        log::debug!(
            "{}: renamed from {}, {moved} watches follow",
            self.shared.roots[root].join(rel).display(),
            self.shared.roots[from.root].join(&from.rel).display()
        );
        displaced
    }
}
