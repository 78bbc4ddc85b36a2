//! Turning raw inotify events into [`FsEvent`]s while keeping the watch map right.
//!
//! Owned by the `sersync-watch` thread. Rules, in the order they bite:
//! - A `MOVED_FROM` is held until the next event: if that is the `MOVED_TO` with the
//!   same cookie, the pair is a move inside the watched trees; anything else (or no
//!   event within [`MOVE_PAIR_TIMEOUT`], the TO may only come with the next `read`)
//!   makes it a move out. Resolving it before any later event keeps the output in
//!   kernel order (`mv x /elsewhere; touch x` must not end with a delete of the new x).
//! - New directories are watched first and scanned second; the scan emits an `Update`
//!   for the directory, then for everything inside, so nothing created before the watch
//!   landed is missed (the mkdir race, inotify(7)).
//! - Events for a descriptor no longer in the map (after `IN_IGNORED`, a directory
//!   moved out, wd reuse) are dropped with a debug log, never guessed at.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use inotify::{EventMask, WatchDescriptor, WatchMask, Watches};

use super::mask::{self, Emit, Kind};
use super::scan::{self, Walk};
use super::tree::{Dir, Tree};
use crate::config::InotifyToggles;
use crate::filter::Filter;
use crate::job::{Change, FsEvent, Op};
use crate::metrics::Metrics;

/// How long a `MOVED_FROM` waits for its `MOVED_TO` when the read ended between them.
/// The kernel queues both inside one `rename(2)`, so the TO is normally already there;
/// this only bounds the wait when the pair straddles a `read` (or the move left the tree).
pub(crate) const MOVE_PAIR_TIMEOUT: Duration = Duration::from_millis(20);

/// Why the thread has to stop handling events.
#[derive(Debug)]
pub(crate) enum Halt {
    /// `Watcher::stop` was called.
    Stopped,
    /// The receiver of `event_tx` is gone: nobody wants events any more.
    Disconnected,
}

/// Result of every step that may send.
pub(crate) type Flow = Result<(), Halt>;

/// A `MOVED_FROM` waiting for its `MOVED_TO`.
#[derive(Debug)]
struct PendingFrom {
    cookie: u32,
    root: usize,
    rel: PathBuf,
    is_dir: bool,
    mask: u32,
    seen: Instant,
    deadline: Instant,
}

/// A paired move just handled, kept to recognise `renameat2(RENAME_EXCHANGE)`, which
/// the kernel reports as two moves: a→b, then b→a.
#[derive(Debug)]
struct LastMove {
    from: (usize, PathBuf),
    to: (usize, PathBuf),
    /// Watches that were under `to` before the move (the other half of an exchange,
    /// or an empty directory the rename replaced, which the kernel drops by itself).
    replaced: Vec<(i32, Dir<WatchDescriptor>)>,
}

/// What the thread needs besides the inotify fd.
pub(crate) struct Shared {
    pub(crate) roots: Vec<PathBuf>,
    pub(crate) watches: Watches,
    pub(crate) mask: WatchMask,
    pub(crate) toggles: InotifyToggles,
    pub(crate) filter: Arc<Filter>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) watch_count: Arc<AtomicUsize>,
    pub(crate) event_tx: Sender<FsEvent>,
    pub(crate) stop_rx: Receiver<()>,
    /// `Debug` with `<debug start="true">`, else `Trace`: raw events and added watches.
    pub(crate) log_level: log::Level,
}

/// The watch map plus everything needed to interpret the next event.
pub(crate) struct State {
    shared: Shared,
    tree: Tree<WatchDescriptor>,
    pending: Option<PendingFrom>,
    /// The previous event, if it completed a paired move: see [`State::moved_within`].
    last_move: Option<LastMove>,
    /// The one "out of watches" error was logged; cleared when a walk watches everything.
    out_of_watches: bool,
    /// Per root: a `Rescan` was queued during the current out-of-watches episode.
    rescan_queued: Vec<bool>,
    /// `Rescan`s decided but not sent yet (decided in `spawn`, before the thread runs).
    rescans_due: Vec<usize>,
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
        }
    }

    /// The absolute path of a root.
    pub(crate) fn root_path(&self, root: usize) -> &Path {
        &self.shared.roots[root]
    }

    /// Number of directories watched now.
    pub(crate) fn watch_count(&self) -> usize {
        self.tree.len()
    }

    /// Replaces the map with what a walk found. After an overflow (`rebuild`), watches
    /// of directories the walk did not find any more are removed from the kernel.
    /// Returns the roots that could not be watched at all.
    pub(crate) fn apply_walk(&mut self, walk: Walk, rebuild: bool) -> Vec<(usize, std::io::Error)> {
        let mut fresh = Tree::default();
        for added in walk.added {
            let id = added.wd.get_watch_descriptor_id();
            fresh.insert(id, added.wd, added.root, added.rel);
        }
        let mut stale = std::mem::replace(&mut self.tree, fresh);
        if rebuild {
            for (wd, dir) in stale.drain() {
                if self.tree.get(wd).is_none() {
                    self.rm_watch(dir.handle);
                }
            }
        }
        if walk.out_of_watches.is_empty() {
            self.out_of_watches = false;
            self.rescan_queued
                .iter_mut()
                .for_each(|queued| *queued = false);
        }
        for (root, dir) in &walk.out_of_watches {
            self.report_out_of_watches(*root, dir);
        }
        self.update_count();
        walk.failed_roots
    }

    /// First thing the thread does: send what `spawn` could not.
    pub(crate) fn start(&mut self) -> Flow {
        self.send_due_rescans()
    }

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

    /// Handles one raw event read at `now`.
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
    fn entry_event(
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
        let (Some(dir), Some(name)) = (dir, name) else {
            if dir.is_none() {
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
    fn arrived(
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
    fn emit(
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

    /// A `MOVED_FROM` with no partner: the path left the watched trees.
    fn moved_out(&mut self, from: PendingFrom) -> Flow {
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
    fn moved_within(
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
    fn moved_pair(
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

    /// Watches `rel` and every non-excluded directory below it, each before reading it,
    /// and (with `emit`) sends an `Update` for the directory and then for everything in
    /// it. Depth first with an explicit stack: a 4 KiB path is ~2000 levels deep.
    fn watch_and_scan(
        &mut self,
        root: usize,
        rel: PathBuf,
        emit: bool,
        raw: u32,
        now: Instant,
    ) -> Flow {
        let mut stack = vec![(rel, raw)];
        while let Some((rel, mask)) = stack.pop() {
            let abs = self.shared.roots[root].join(&rel);
            match self.shared.watches.add(&abs, self.shared.mask) {
                Ok(wd) => {
                    let id = wd.get_watch_descriptor_id();
                    log::log!(
                        self.shared.log_level,
                        "{}: watching (wd {id})",
                        abs.display()
                    );
                    if let Some(displaced) = self.tree.insert(id, wd, root, rel.clone()) {
                        // Another inode was watched under this path and left unseen
                        // (its move out was lost, e.g. in an overflow).
                        self.rm_watch(displaced.handle);
                    }
                }
                Err(err) if scan::is_out_of_watches(&err) => {
                    // Still scan: what exists now gets pushed; later changes inside
                    // wait for the full sync the report queues.
                    self.report_out_of_watches(root, &abs);
                }
                Err(err) if scan::is_gone(&err) => {
                    log::debug!("{}: vanished before it could be watched", abs.display());
                    continue;
                }
                Err(err) => log::warn!(
                    "{}: cannot watch, changes below it are not seen: {err}",
                    abs.display()
                ),
            }
            if emit {
                self.send(change(root, rel.clone(), Op::Update, true, mask, now))?;
            }
            let entries = match fs::read_dir(&abs) {
                Ok(entries) => entries,
                Err(err) => {
                    scan::log_read_error(&abs, &err);
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) => {
                        scan::log_read_error(&abs, &err);
                        break;
                    }
                };
                // `file_type` falls back to `lstat` for DT_UNKNOWN; it fails only when
                // the entry vanished meanwhile (its delete event follows).
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                let is_dir = file_type.is_dir();
                let child = rel.join(entry.file_name());
                // The parents are not excluded (we are inside them): test the name only.
                if self.shared.filter.matches(&child, is_dir) {
                    if is_dir {
                        // A rename can bring a watched directory under an excluded name.
                        self.unwatch(root, &child, true);
                    }
                    continue;
                }
                if is_dir {
                    stack.push((child, 0));
                } else if emit {
                    self.send(change(root, child, Op::Update, false, 0, now))?;
                }
            }
        }
        self.update_count();
        Ok(())
    }

    /// `IN_Q_OVERFLOW`: events were lost. Rebuild the map (watch what is new, drop what
    /// is gone), then ask for a full sync of every root. Never a restart (lsyncd's
    /// restart loop, its issue #315).
    fn overflow(&mut self) -> Flow {
        Metrics::incr(&self.shared.metrics.overflows);
        log::warn!(
            "inotify queue overflowed, events were lost (see fs.inotify.max_queued_events); \
             rebuilding {} watches and rescanning every root",
            self.tree.len()
        );
        let shared = &self.shared;
        let walk = scan::walk(
            &shared.roots,
            &shared.watches,
            shared.mask,
            &shared.filter,
            shared.log_level,
        );
        for (root, err) in self.apply_walk(walk, true) {
            log::error!(
                "{}: cannot watch root: {err}",
                self.shared.roots[root].display()
            );
        }
        self.rescans_due.clear();
        for root in 0..self.shared.roots.len() {
            self.send(FsEvent::Rescan { root })?;
        }
        Ok(())
    }

    /// `IN_IGNORED`: the kernel dropped the watch.
    fn forget(&mut self, wd: i32) {
        match self.tree.remove_wd(wd) {
            Some(dir) if dir.rel.as_os_str().is_empty() => {
                log::warn!(
                    "{}: root no longer watched",
                    self.shared.roots[dir.root].display()
                );
            }
            Some(_) => {}
            None => log::debug!("wd {wd}: ignored, was not in the map"),
        }
        self.update_count();
    }

    /// `DELETE_SELF`, `MOVE_SELF`, `UNMOUNT` on a watched directory: only matters for a
    /// root (for the others, the parent's event says it all).
    fn lost_self(&mut self, wd: i32, kind: Kind) {
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
        match kind {
            Kind::SelfDeleted => {
                log::error!("{path}: root was deleted; its changes are no longer seen")
            }
            Kind::Unmounted => log::error!(
                "{path}: root's filesystem was unmounted; its changes are no longer seen"
            ),
            _ => {
                log::error!("{path}: root was moved away; its changes are no longer seen");
                // Its watches would keep reporting paths under the old name.
                self.unwatch(root, Path::new(""), true);
            }
        }
    }

    /// Forgets `rel` and its subtree; removes the kernel watches too when they are still
    /// alive (moved out, now excluded).
    fn unwatch(&mut self, root: usize, rel: &Path, remove_kernel_watch: bool) {
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

    fn rm_watch(&self, wd: WatchDescriptor) {
        // EINVAL means the kernel already dropped it (deleted directory); nothing to do.
        if let Err(err) = self.shared.watches.clone().remove(wd) {
            log::debug!("inotify_rm_watch: {err}");
        }
    }

    /// Logs the watch limit once per episode and queues a full sync of the root.
    fn report_out_of_watches(&mut self, root: usize, dir: &Path) {
        if self.out_of_watches {
            log::debug!("{}: not watched, out of inotify watches", dir.display());
        } else {
            self.out_of_watches = true;
            let needed = scan::count_dirs(&self.shared.roots, &self.shared.filter);
            log::error!(
                "{}",
                scan::out_of_watches_message(dir, self.tree.len(), needed)
            );
        }
        if !self.rescan_queued[root] {
            self.rescan_queued[root] = true;
            self.rescans_due.push(root);
        }
    }

    fn send_due_rescans(&mut self) -> Flow {
        for root in std::mem::take(&mut self.rescans_due) {
            self.send(FsEvent::Rescan { root })?;
        }
        Ok(())
    }

    /// True (and counted) when a filter rule excludes the path.
    fn is_filtered(&self, rel: &Path, is_dir: bool) -> bool {
        let excluded = self.shared.filter.is_excluded(rel, is_dir);
        if excluded {
            Metrics::incr(&self.shared.metrics.events_filtered);
        }
        excluded
    }

    /// `lstat` decides whether a new non-directory only ever gets `IN_CREATE`.
    fn is_create_only(&self, root: usize, rel: &Path) -> bool {
        match fs::symlink_metadata(self.shared.roots[root].join(rel)) {
            Ok(meta) => mask::is_create_only(meta.file_type().is_file(), meta.nlink()),
            Err(err) => {
                log::debug!("{}: lstat after create: {err}", rel.display());
                false
            }
        }
    }

    /// Sends one event, blocking while the channel is full (the kernel queue then
    /// absorbs the burst, and overflows into a rescan at worst) unless stopped.
    fn send(&self, event: FsEvent) -> Flow {
        let event = match self.shared.event_tx.try_send(event) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(Halt::Disconnected),
            Err(TrySendError::Full(event)) => event,
        };
        crossbeam_channel::select! {
            send(self.shared.event_tx, event) -> sent => sent.map_err(|_| Halt::Disconnected),
            recv(self.shared.stop_rx) -> _ => Err(Halt::Stopped),
        }
    }

    fn update_count(&self) {
        let n = self.tree.len();
        self.shared.watch_count.store(n, Ordering::Relaxed);
        self.shared
            .metrics
            .watches
            .store(n as u64, Ordering::Relaxed);
    }
}

fn change(root: usize, rel: PathBuf, op: Op, is_dir: bool, mask: u32, seen: Instant) -> FsEvent {
    FsEvent::Change(Change {
        root,
        rel,
        op,
        is_dir,
        mask,
        seen,
    })
}
