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
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use inotify::WatchDescriptor;

use super::event::{Flow, State, change};
use super::mask::{self, Emit, Kind};
use super::tree::Dir;
use crate::job::Op;
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
    replaced: Vec<(i32, Dir<WatchDescriptor>)>,
}

impl State {
    /// When the held `MOVED_FROM` (if any) must be resolved.
    pub(crate) fn pending_deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|pending| pending.deadline)
    }

    /// Resolves a held `MOVED_FROM` whose partner did not come in time: moved out.
    pub(crate) fn expire(&mut self, now: Instant) -> Flow {
        if self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.deadline <= now)
        {
            if let Some(pending) = self.pending.take() {
                self.moved_out(pending)?;
            }
        }
        Ok(())
    }

    /// At stop: hand over the held move without blocking (the receiver is still being
    /// drained by the next stage during shutdown).
    pub(crate) fn finish(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let emits = mask::emit(Kind::MovedFrom, pending.is_dir, &self.shared.toggles);
        if emits == Emit::Nothing || self.shared.filter.is_excluded(&pending.rel, pending.is_dir) {
            return;
        }
        let event = change(
            pending.root,
            pending.rel,
            Op::Delete,
            pending.is_dir,
            pending.mask,
            pending.seen,
        );
        if let Err(TrySendError::Full(event) | TrySendError::Disconnected(event)) =
            self.shared.event_tx.try_send(event)
        {
            log::warn!("stopping: moved-away path not handed over: {event:?}");
        }
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
    /// An exchange (`renameat2(RENAME_EXCHANGE)`, `mv --exchange`) arrives as a→b then
    /// b→a with nothing in between but `MOVE_SELF`; in its second half the "from" name
    /// still exists, so it must not be deleted (a delete after b's update would remove
    /// b from the mirror), and the watches set aside in the first half come back.
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
        let is_exchange = last_move.as_ref().is_some_and(|last| {
            last.to.0 == from.root
                && last.to.1 == from.rel
                && last.from.0 == root
                && last.from.1 == rel
        }) && fs::symlink_metadata(self.shared.roots[from.root].join(&from.rel))
            .is_ok();
        if is_exchange {
            if let Some(last) = last_move {
                self.tree.graft(last.replaced, &from.rel, root, &rel);
            }
            return self.arrived(Kind::MovedTo, root, rel, is_dir, raw, now);
        }
        let from_key = (from.root, from.rel.clone());
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
        replaced: &mut Vec<(i32, Dir<WatchDescriptor>)>,
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
        let (moved, displaced) = self.tree.rename_subtree(from.root, &from.rel, root, &rel);
        *replaced = displaced;
        log::debug!(
            "{}: renamed from {}, {moved} watches follow",
            self.shared.roots[root].join(&rel).display(),
            self.shared.roots[from.root].join(&from.rel).display()
        );
        let emits =
            mask::emit(Kind::MovedTo, true, &self.shared.toggles) == Emit::Change(Op::Update);
        self.watch_and_scan(root, rel, emits, raw, now)
    }
}
