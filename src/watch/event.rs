//! Turning raw inotify events into [`FsEvent`]s while keeping the watch map right.
//!
//! Owned by the `sersync-watch` thread: [`State::handle`] takes one raw event and sends
//! what it means, in kernel order, on the bounded `event_tx` (blocking while it is full,
//! giving up only on stop or when the receiver is gone). The dispatch lives here; moves
//! are in `rename.rs`, new-directory scans in `scan.rs`, overflow and the watch limit in
//! `recovery.rs`. Rules that hold throughout:
//! - only what the `<inotify>` toggles ask for is emitted, but the watch map follows
//!   every directory creation, move and deletion whatever they say;
//! - an excluded path gets no event (counted in `events_filtered`) and an excluded
//!   directory is never watched;
//! - events for a descriptor no longer in the map (after `IN_IGNORED`, a directory moved
//!   out, wd reuse) are dropped with a debug log, never guessed at (the original's B4).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use inotify::{EventMask, WatchMask};

use super::held::Held;
use super::mask::{self, Emit, Kind};
use super::outlet::{Flow, Outlet};
use super::rename::{LastMove, MOVE_PAIR_TIMEOUT, PendingFrom};
use super::tree::Tree;
use super::watches::WatchFd;
use crate::config::InotifyToggles;
use crate::filter::Filter;
use crate::job::{Change, FsEvent, Op};
use crate::metrics::Metrics;

/// What the thread needs besides the inotify fd.
pub(crate) struct Shared {
    pub(crate) roots: Vec<PathBuf>,
    pub(crate) watches: WatchFd,
    pub(crate) mask: WatchMask,
    pub(crate) toggles: InotifyToggles,
    pub(crate) filter: Arc<Filter>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) watch_count: Arc<AtomicUsize>,
    pub(crate) outlet: Outlet,
    /// `Debug` with `<debug start="true">`, else `Trace`: raw events and added watches.
    pub(crate) log_level: log::Level,
}

/// The watch map plus everything needed to interpret the next event.
pub(crate) struct State {
    pub(super) shared: Shared,
    pub(super) tree: Tree<i32>,
    pub(super) pending: Option<PendingFrom>,
    /// The previous event, if it completed a paired move: see [`State::moved_within`].
    pub(super) last_move: Option<LastMove>,
    /// The one "out of watches" error was logged; cleared when a walk watches everything.
    pub(super) out_of_watches: bool,
    /// Per root: a `Rescan` was queued during the current out-of-watches episode.
    pub(super) rescan_queued: Vec<bool>,
    /// `Rescan`s decided but not sent yet (decided in `spawn`, before the thread runs).
    pub(super) rescans_due: Vec<usize>,
    /// Modified files waiting for their close (see `held.rs`).
    pub(super) held: Held,
    /// Per root: not watched now (missing, not a directory, deleted or moved away);
    /// retried every `rewatch::RETRY_INTERVAL`.
    pub(super) missing: Vec<bool>,
    /// Directories that could not be watched, with the errno; retried. For ENOSPC only
    /// the first directory of each root is kept (the walk stops there).
    pub(super) unwatched: BTreeMap<(usize, PathBuf), i32>,
    /// Directories that arrived (created, moved in) but were gone when their watch was
    /// to be added, until their own delete or move event, or a move of a directory
    /// above them, settles why: events are read late, and their paths are built from
    /// the map as it was then, so a directory above may have been renamed meanwhile
    /// (log rotation: `mv d d.old; mkdir d`) with the rename's events still queued.
    /// Such a move goes the old way (the new name is scanned), or what was gone would
    /// stay unwatched under it.
    pub(super) vanished: BTreeSet<(usize, PathBuf)>,
    /// Directories left unwatched by the watch limit, as counted at the last report.
    pub(super) enospc_unwatched: usize,
    /// Next retry of missing roots and unwatched directories.
    pub(super) next_retry: Option<Instant>,
    /// Next `Rescan` of the roots with directories left unwatched by the watch limit.
    pub(super) next_unwatched_rescan: Option<Instant>,
}

impl State {
    pub(crate) fn new(shared: Shared) -> State {
        let n_roots = shared.roots.len();
        State {
            shared,
            tree: Tree::default(),
            pending: None,
            last_move: None,
            out_of_watches: false,
            rescan_queued: vec![false; n_roots],
            rescans_due: Vec::new(),
            held: Held::default(),
            missing: vec![false; n_roots],
            unwatched: BTreeMap::new(),
            vanished: BTreeSet::new(),
            enospc_unwatched: 0,
            next_retry: None,
            next_unwatched_rescan: None,
        }
    }

    /// The absolute path of a root.
    pub(crate) fn root_path(&self, root: usize) -> &Path {
        &self.shared.roots[root]
    }

    /// Number of roots.
    pub(crate) fn n_roots(&self) -> usize {
        self.shared.roots.len()
    }

    /// Number of directories watched now.
    pub(crate) fn watch_count(&self) -> usize {
        self.tree.len()
    }

    /// First thing the thread does: send what `spawn` could not.
    pub(crate) fn start(&mut self) -> Flow {
        self.send_due_rescans()
    }

    /// Handles one raw event read at `now`: resolves a held `MOVED_FROM` first (see
    /// `rename.rs`), then dispatches on the kind.
    pub(crate) fn handle(&mut self, event: inotify::Event<&OsStr>, now: Instant) -> Flow {
        Metrics::incr(&self.shared.metrics.events_seen);
        let wd = event.wd.get_watch_descriptor_id();
        log::log!(
            self.shared.log_level,
            "inotify wd={wd} mask={:?} cookie={} name={:?}",
            event.mask,
            event.cookie,
            event.name
        );
        let kind = mask::kind(event.mask);
        if !matches!(kind, Kind::MovedFrom | Kind::MovedTo | Kind::SelfMoved) {
            self.last_move = None;
        }
        if !matches!(
            kind,
            Kind::Modified | Kind::ClosedWrite | Kind::Attrib | Kind::Ignored | Kind::Other
        ) {
            // Before anything that changes the tree's shape, and before the held
            // MOVED_FROM (which came later than any held write) is resolved.
            self.release_held()?;
        }
        let from = match self.pending.take() {
            Some(pending) if kind == Kind::MovedTo && pending.cookie == event.cookie => {
                Some(pending)
            }
            Some(pending) => {
                self.moved_out(pending)?;
                None
            }
            None => None,
        };
        match kind {
            Kind::Overflow => self.overflow()?,
            Kind::Ignored => self.forget(wd),
            Kind::SelfDeleted | Kind::SelfMoved | Kind::Unmounted => self.lost_self(wd, kind),
            Kind::Other => {}
            _ => self.entry_event(wd, kind, event.mask, event.cookie, event.name, from, now)?,
        }
        self.send_due_rescans()
    }

    /// An event about a name inside a watched directory.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn entry_event(
        &mut self,
        wd: i32,
        kind: Kind,
        mask: EventMask,
        cookie: u32,
        name: Option<&OsStr>,
        from: Option<PendingFrom>,
        now: Instant,
    ) -> Flow {
        let dir = self.tree.get(wd);
        let known = dir.is_some();
        let (Some(dir), Some(name)) = (dir, name) else {
            if !known {
                log::debug!(
                    "wd {wd}: no longer watched (removed or reused); {kind:?} {name:?} dropped"
                );
            }
            // Without a name the event is about the watched directory itself, and its
            // parent reports the same change with the name (roots aside: not mirrored).
            if let Some(pending) = from {
                self.moved_out(pending)?;
            }
            return Ok(());
        };
        let root = dir.root;
        let rel = dir.rel.join(name);
        let is_dir = mask.contains(EventMask::ISDIR);
        let raw = mask.bits();
        match kind {
            Kind::MovedFrom => {
                self.pending = Some(PendingFrom {
                    cookie,
                    root,
                    rel,
                    is_dir,
                    mask: raw,
                    seen: now,
                    deadline: now + MOVE_PAIR_TIMEOUT,
                });
                Ok(())
            }
            Kind::MovedTo => match from {
                Some(pending) => self.moved_within(pending, root, rel, is_dir, raw, now),
                None => self.arrived(kind, root, rel, is_dir, raw, now),
            },
            Kind::Created => self.arrived(kind, root, rel, is_dir, raw, now),
            Kind::Modified if !is_dir && !self.is_stopping() => {
                if mask::emit(kind, false, &self.shared.toggles) == Emit::Change(Op::Update)
                    && !self.is_filtered(&rel, false)
                {
                    self.held.hold(root, rel, raw, now);
                }
                Ok(())
            }
            Kind::ClosedWrite if !self.held.is_empty() => {
                match self.held.release(root, rel.clone()) {
                    Some(held) => self.send(held.into_update()),
                    None => self.emit(kind, root, rel, is_dir, raw, now),
                }
            }
            Kind::Deleted => {
                if is_dir {
                    // The kernel drops the watches of a deleted directory by itself.
                    self.unwatch(root, &rel, false);
                }
                self.emit(kind, root, rel, is_dir, raw, now)
            }
            _ => self.emit(kind, root, rel, is_dir, raw, now),
        }
    }

    /// A name that appeared: created, or moved in from outside the watched trees.
    pub(super) fn arrived(
        &mut self,
        kind: Kind,
        root: usize,
        rel: PathBuf,
        is_dir: bool,
        raw: u32,
        now: Instant,
    ) -> Flow {
        if self.is_filtered(&rel, is_dir) {
            return Ok(());
        }
        let emits = mask::emit(kind, is_dir, &self.shared.toggles);
        if is_dir {
            if mask::watches_new_dir(kind, &self.shared.toggles) {
                return self.watch_and_scan(root, rel, emits == Emit::Change(Op::Update), raw, now);
            }
            return Ok(());
        }
        match emits {
            Emit::Change(op) => self.send(change(root, rel, op, false, raw, now)),
            Emit::IfCreateOnly if self.is_create_only(root, &rel) => {
                self.send(change(root, rel, Op::Update, false, raw, now))
            }
            Emit::IfCreateOnly | Emit::Nothing => Ok(()),
        }
    }

    /// A plain event (delete, close_write, modify, attrib): filter, toggles, send.
    pub(super) fn emit(
        &mut self,
        kind: Kind,
        root: usize,
        rel: PathBuf,
        is_dir: bool,
        raw: u32,
        now: Instant,
    ) -> Flow {
        if self.is_filtered(&rel, is_dir) {
            return Ok(());
        }
        match mask::emit(kind, is_dir, &self.shared.toggles) {
            Emit::Change(op) => self.send(change(root, rel, op, is_dir, raw, now)),
            Emit::IfCreateOnly | Emit::Nothing => Ok(()),
        }
    }

    /// Sends every held modification (before a structural event, at stop).
    pub(super) fn release_held(&mut self) -> Flow {
        if self.held.is_empty() {
            return Ok(());
        }
        let all = self.held.take_all();
        self.send_held(all)
    }

    /// Sends the modifications whose settle time is over (no close came).
    pub(super) fn release_due(&mut self, now: Instant) -> Flow {
        let due = self.held.due(now);
        self.send_held(due)
    }

    fn send_held(&self, changes: Vec<super::held::HeldChange>) -> Flow {
        for held in changes {
            self.send(held.into_update())?;
        }
        Ok(())
    }

    /// `IN_IGNORED`: the kernel dropped the watch.
    pub(super) fn forget(&mut self, wd: i32) {
        match self.tree.remove_wd(wd) {
            Some(dir) if dir.rel.as_os_str().is_empty() => {
                log::warn!(
                    "{}: root no longer watched",
                    self.shared.roots[dir.root].display()
                );
                self.mark_missing(dir.root);
            }
            Some(_) => {}
            None => log::debug!("wd {wd}: ignored, was not in the map"),
        }
        self.update_count();
    }

    /// `DELETE_SELF`, `MOVE_SELF`, `UNMOUNT` on a watched directory: only matters for a
    /// root (for the others, the parent's event says it all).
    pub(super) fn lost_self(&mut self, wd: i32, kind: Kind) {
        let Some(dir) = self.tree.get(wd) else {
            return;
        };
        if !dir.rel.as_os_str().is_empty() {
            if kind == Kind::Unmounted {
                log::warn!("wd {wd}: filesystem unmounted under {}", dir.rel.display());
            }
            return;
        }
        let root = dir.root;
        let path = self.shared.roots[root].display();
        let every = super::rewatch::RETRY_INTERVAL.as_secs();
        match kind {
            Kind::SelfDeleted => log::error!(
                "{path}: root was deleted; watched again and rescanned when it reappears \
                 (checked every {every} s)"
            ),
            Kind::Unmounted => log::error!(
                "{path}: root's filesystem was unmounted; watched again and rescanned when it \
                 reappears (checked every {every} s)"
            ),
            _ => {
                log::error!(
                    "{path}: root was moved away; watched again and rescanned when a directory \
                     is back under its name (checked every {every} s)"
                );
                // Its watches would keep reporting paths under the old name.
                self.unwatch(root, Path::new(""), true);
            }
        }
        self.mark_missing(root);
    }

    /// Forgets `rel` and its subtree; removes the kernel watches too when they are still
    /// alive (moved out, now excluded).
    pub(super) fn unwatch(&mut self, root: usize, rel: &Path, remove_kernel_watch: bool) {
        self.forget_vanished(root, rel);
        let removed = self.tree.remove_subtree(root, rel);
        if removed.is_empty() {
            return;
        }
        log::log!(
            self.shared.log_level,
            "{}: {} watches dropped",
            self.shared.roots[root].join(rel).display(),
            removed.len()
        );
        if remove_kernel_watch {
            for (_, dir) in removed {
                self.rm_watch(dir.handle);
            }
        }
        self.update_count();
    }

    /// Whether a directory at or below `root`/`rel` arrived and was gone before its
    /// watch could be added (see [`State::vanished`]).
    pub(super) fn vanished_at_or_below(&self, root: usize, rel: &Path) -> bool {
        !self.vanished.is_empty()
            && self
                .vanished
                .range((root, rel.to_path_buf())..)
                .next()
                .is_some_and(|(r, p)| *r == root && p.starts_with(rel))
    }

    /// Forgets the [`State::vanished`] marks at or below `root`/`rel`.
    pub(super) fn forget_vanished(&mut self, root: usize, rel: &Path) {
        if self.vanished.is_empty() {
            return;
        }
        let settled: Vec<(usize, PathBuf)> = self
            .vanished
            .range((root, rel.to_path_buf())..)
            .take_while(|(r, p)| *r == root && p.starts_with(rel))
            .cloned()
            .collect();
        for mark in settled {
            self.vanished.remove(&mark);
        }
    }

    pub(super) fn rm_watch(&self, wd: i32) {
        // EINVAL means the kernel already dropped it (deleted directory); nothing to do.
        if let Err(err) = self.shared.watches.remove(wd) {
            log::debug!("inotify_rm_watch: {err}");
        }
    }

    /// True (and counted) when a filter rule excludes the path.
    pub(super) fn is_filtered(&self, rel: &Path, is_dir: bool) -> bool {
        let excluded = self.shared.filter.is_excluded(rel, is_dir);
        if excluded {
            Metrics::incr(&self.shared.metrics.events_filtered);
        }
        excluded
    }

    /// `lstat` decides whether a new non-directory only ever gets `IN_CREATE`.
    pub(super) fn is_create_only(&self, root: usize, rel: &Path) -> bool {
        is_create_only_at(&self.shared.roots[root].join(rel))
    }

    /// Whether `Watcher::stop` has been called (it drops the stop sender).
    pub(crate) fn is_stopping(&self) -> bool {
        self.shared.outlet.is_stopping()
    }

    /// Sends one event (see [`Outlet::send`]).
    pub(super) fn send(&self, event: FsEvent) -> Flow {
        self.shared.outlet.send(event)
    }

    /// While stopping, a scan gives way to one `Rescan` of its root (the scheduler
    /// journals it as a whole-root entry).
    pub(super) fn rescan_on_stop(&mut self, root: usize) -> Flow {
        self.shared
            .outlet
            .rescan_on_stop(root, &self.shared.roots[root])
    }

    pub(super) fn update_count(&self) {
        let n = self.tree.len();
        self.shared.watch_count.store(n, Ordering::Relaxed);
        self.shared
            .metrics
            .watches
            .store(n as u64, Ordering::Relaxed);
    }
}

/// `lstat` decides whether the new non-directory at `abs` only ever gets its creation
/// event (not a regular file, or a new hard link): see [`mask::is_create_only`].
pub(super) fn is_create_only_at(abs: &Path) -> bool {
    match fs::symlink_metadata(abs) {
        Ok(meta) => mask::is_create_only(meta.file_type().is_file(), meta.nlink()),
        Err(err) => {
            log::debug!("{}: lstat after create: {err}", abs.display());
            false
        }
    }
}

pub(super) fn change(
    root: usize,
    rel: PathBuf,
    op: Op,
    is_dir: bool,
    mask: u32,
    seen: Instant,
) -> FsEvent {
    FsEvent::Change(Change {
        root,
        rel,
        op,
        is_dir,
        mask,
        seen,
    })
}
