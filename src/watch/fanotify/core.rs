//! What one fanotify event means for the remotes: the pure core of the fanotify
//! backend. The thread resolves the kernel's directory handles to absolute paths (what
//! the directory is called *now*), and this turns each [`Fact`] into [`Out`]s, under
//! the same rules as the inotify backend: the `<inotify>` toggles decide what is
//! emitted, excluded paths get nothing, modifications are held until their close
//! (`held.rs`), a rename inside one root is one [`Move`].
//!
//! What differs from inotify, and why it is simpler: a filesystem mark covers every
//! directory, so nothing is watched or unwatched, a new directory needs no scan (what is
//! made in it is reported by the same mark), and `FAN_RENAME` reports both names of a
//! rename in one event (no cookie to pair, no timeout). A directory moved in from
//! outside every root is scanned (its content was never reported under a root), and a
//! root that is deleted or moved away and comes back is rescanned as soon as the event
//! says so. A rename that reverses the one before it (`mv a b; mv b a`, or the second
//! half of `renameat2(RENAME_EXCHANGE)`, which the kernel reports as two renames) makes
//! both names a delete followed by an update of what is there now, as the inotify
//! backend does when it cannot tell the two apart.
//!
//! Pure: the clock and "stopping" are arguments, the filesystem is asked by the thread
//! for the [`Out`]s that need it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use inotify::EventMask;

use crate::config::InotifyToggles;
use crate::filter::Filter;
use crate::job::{FsEvent, Move, Op};
use crate::metrics::Metrics;
use crate::watch::event::change;
use crate::watch::held::Held;
use crate::watch::mask::{self, Emit, Kind};

/// One event, its directory resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fact {
    /// The kernel queue overflowed: events were lost.
    Overflow,
    /// A name changed; `path` is absolute.
    Entry {
        kind: Kind,
        path: PathBuf,
        is_dir: bool,
    },
    /// A rename; a side is `None` when its directory could not be resolved (gone,
    /// or on a filesystem we did not mark).
    Rename {
        from: Option<PathBuf>,
        to: Option<PathBuf>,
        is_dir: bool,
    },
}

/// What the thread does with a fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// Send this event.
    Send(FsEvent),
    /// A new non-directory with `createFile` off: pushed now only if it will never be
    /// closed after writing (`lstat`: not a regular file, or a hard link).
    IfCreateOnly {
        root: usize,
        rel: PathBuf,
        mask: u32,
        seen: Instant,
    },
    /// A directory moved in from outside the root: an update of it and of everything
    /// below it, read from the filesystem.
    Scan {
        root: usize,
        rel: PathBuf,
        mask: u32,
        seen: Instant,
    },
    /// After a rename away from `rel` (see [`Core::vacated`]): nothing if nothing is
    /// there now; a directory as a delete then an update; anything else an update.
    Vacated {
        root: usize,
        rel: PathBuf,
        mask: u32,
        seen: Instant,
    },
    /// A rename above the root: if a directory is under the root's name now, it is
    /// back ([`Core::root_back`]).
    RootCheck { root: usize },
    /// After a reversed rename: an update of what is at `rel` now, whatever it is (a
    /// directory is scanned; nothing when it is gone again: its own events follow).
    Again {
        root: usize,
        rel: PathBuf,
        mask: u32,
        seen: Instant,
    },
}

/// Where an absolute path is, for one root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// The root directory itself.
    Root(usize),
    /// Below a root.
    Inside(usize, PathBuf),
}

/// The state between events: held modifications, the last rename, missing roots.
pub(crate) struct Core {
    roots: Vec<PathBuf>,
    toggles: InotifyToggles,
    filter: Arc<Filter>,
    metrics: Arc<Metrics>,
    held: Held,
    /// The last event, if it was a rename inside a root: `(root, from, to)` per root.
    last_renames: Vec<(usize, PathBuf, PathBuf)>,
    /// Per root: deleted or moved away, until a directory is back under its name.
    missing: Vec<bool>,
    /// Directories made while `createFolder` is off: neither pushed nor followed (what
    /// happens in them is not reported), as inotify leaves them unwatched, until they
    /// are deleted or renamed (a renamed one is followed under its new name, scanned).
    unfollowed: BTreeSet<(usize, PathBuf)>,
}

/// Where a path is relative to the unfollowed directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Followed {
    Yes,
    /// It is an unfollowed directory.
    Itself,
    /// It is below one.
    Below,
}

impl Core {
    pub(crate) fn new(
        roots: Vec<PathBuf>,
        toggles: InotifyToggles,
        filter: Arc<Filter>,
        metrics: Arc<Metrics>,
        missing: Vec<bool>,
    ) -> Core {
        let core = Core {
            roots,
            toggles,
            filter,
            metrics,
            held: Held::default(),
            last_renames: Vec::new(),
            missing,
            unfollowed: BTreeSet::new(),
        };
        core.publish_missing();
        core
    }

    /// `/status` and `/metrics` say which roots are missing.
    fn publish_missing(&self) {
        let missing: Vec<usize> = (0..self.missing.len())
            .filter(|r| self.missing[*r])
            .collect();
        self.metrics
            .roots_missing
            .store(missing.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut list) = self.metrics.missing_roots.lock() {
            *list = missing;
        }
    }

    fn followed(&self, root: usize, rel: &Path) -> Followed {
        if self.unfollowed.is_empty() {
            return Followed::Yes;
        }
        if self.unfollowed.contains(&(root, rel.to_path_buf())) {
            return Followed::Itself;
        }
        let below = rel
            .ancestors()
            .skip(1)
            .any(|dir| self.unfollowed.contains(&(root, dir.to_path_buf())));
        if below {
            Followed::Below
        } else {
            Followed::Yes
        }
    }

    /// Forgets the unfollowed directories at or below `root`/`rel`.
    fn follow_again(&mut self, root: usize, rel: &Path) {
        self.unfollowed
            .retain(|(r, p)| *r != root || !p.starts_with(rel));
    }

    pub(crate) fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// When [`Core::expire`] must run without an event: a held modification's settle
    /// time.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.held.deadline()
    }

    /// The held modifications whose settle time is over.
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Vec<Out>) {
        for held in self.held.due(now) {
            out.push(Out::Send(held.into_update()));
        }
    }

    /// At stop: every held modification.
    pub(crate) fn finish(&mut self, out: &mut Vec<Out>) {
        self.release_held(out);
    }

    fn release_held(&mut self, out: &mut Vec<Out>) {
        if self.held.is_empty() {
            return;
        }
        for held in self.held.take_all() {
            out.push(Out::Send(held.into_update()));
        }
    }

    /// Every root containing `path`, and where.
    fn places(&self, path: &Path) -> Vec<Place> {
        self.roots
            .iter()
            .enumerate()
            .filter_map(|(root, top)| {
                let rel = path.strip_prefix(top).ok()?;
                Some(if rel.as_os_str().is_empty() {
                    Place::Root(root)
                } else {
                    Place::Inside(root, rel.to_path_buf())
                })
            })
            .collect()
    }

    fn is_filtered(&self, rel: &Path, is_dir: bool) -> bool {
        let excluded = self.filter.is_excluded(rel, is_dir);
        if excluded {
            Metrics::incr(&self.metrics.events_filtered);
        }
        excluded
    }

    /// Turns one fact read at `now` into what to do, appended to `out`.
    pub(crate) fn handle(&mut self, fact: Fact, now: Instant, stopping: bool, out: &mut Vec<Out>) {
        match fact {
            Fact::Overflow => {
                self.last_renames.clear();
                self.release_held(out);
                Metrics::incr(&self.metrics.overflows);
                log::warn!(
                    "fanotify queue overflowed, events were lost (see \
                     fs.fanotify.max_queued_events); rescanning every root"
                );
                for root in 0..self.roots.len() {
                    out.push(Out::Send(FsEvent::Rescan { root }));
                }
            }
            Fact::Entry { kind, path, is_dir } => {
                self.last_renames.clear();
                if !matches!(kind, Kind::Modified | Kind::ClosedWrite | Kind::Attrib) {
                    // Before anything that changes the tree's shape (kernel order).
                    self.release_held(out);
                }
                for place in self.places(&path) {
                    match place {
                        Place::Root(root) => self.root_event(root, kind, is_dir, out),
                        Place::Inside(root, rel) => {
                            self.entry(root, rel, kind, is_dir, now, stopping, out);
                        }
                    }
                }
            }
            Fact::Rename { from, to, is_dir } => {
                self.release_held(out);
                self.rename(from, to, is_dir, now, out);
            }
        }
    }

    fn root_event(&mut self, root: usize, kind: Kind, is_dir: bool, out: &mut Vec<Out>) {
        let path = self.roots[root].display();
        match kind {
            Kind::Deleted | Kind::MovedFrom => {
                if !self.missing[root] {
                    log::error!(
                        "{path}: root was deleted or moved away; rescanned as soon as a \
                         directory is back under its name"
                    );
                }
                self.missing[root] = true;
                self.publish_missing();
            }
            Kind::Created | Kind::MovedTo if is_dir => {
                log::warn!("{path}: root is back; rescanning it");
                self.missing[root] = false;
                self.publish_missing();
                out.push(Out::Send(FsEvent::Rescan { root }));
            }
            _ => {} // the root's own metadata is not mirrored
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        root: usize,
        rel: PathBuf,
        kind: Kind,
        is_dir: bool,
        now: Instant,
        stopping: bool,
        out: &mut Vec<Out>,
    ) {
        let raw = raw_mask(kind, is_dir);
        if self.is_filtered(&rel, is_dir) {
            return;
        }
        match self.followed(root, &rel) {
            Followed::Below => return,
            _ if kind == Kind::Deleted && is_dir => self.follow_again(root, &rel),
            _ => {}
        }
        if kind == Kind::Created && is_dir && !self.toggles.create_folder {
            self.unfollowed.insert((root, rel));
            return;
        }
        match kind {
            Kind::Modified if !is_dir && !stopping => {
                if mask::emit(kind, false, &self.toggles) == Emit::Change(Op::Update) {
                    self.held.hold(root, rel, raw, now);
                }
            }
            Kind::ClosedWrite if !self.held.is_empty() => {
                match self.held.release(root, rel.clone()) {
                    Some(held) => out.push(Out::Send(held.into_update())),
                    None => self.emit(kind, root, rel, is_dir, raw, now, out),
                }
            }
            // A new directory is pushed as itself: what is made in it has events of
            // its own (the filesystem mark covers it from its first moment).
            Kind::Created if !is_dir => match mask::emit(kind, false, &self.toggles) {
                Emit::Change(op) => out.push(Out::Send(change(root, rel, op, false, raw, now))),
                Emit::IfCreateOnly => out.push(Out::IfCreateOnly {
                    root,
                    rel,
                    mask: raw,
                    seen: now,
                }),
                Emit::Nothing => {}
            },
            _ => self.emit(kind, root, rel, is_dir, raw, now, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        kind: Kind,
        root: usize,
        rel: PathBuf,
        is_dir: bool,
        raw: u32,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        if let Emit::Change(op) = mask::emit(kind, is_dir, &self.toggles) {
            out.push(Out::Send(change(root, rel, op, is_dir, raw, now)));
        }
    }

    /// The old name left: a delete when `moveFrom` says so.
    fn moved_out(&self, root: usize, rel: PathBuf, is_dir: bool, now: Instant, out: &mut Vec<Out>) {
        let raw = raw_mask(Kind::MovedFrom, is_dir);
        self.emit(Kind::MovedFrom, root, rel, is_dir, raw, now, out);
    }

    /// A name arrived from outside the root: a file is pushed, a directory scanned.
    fn moved_in(&self, root: usize, rel: PathBuf, is_dir: bool, now: Instant, out: &mut Vec<Out>) {
        let raw = raw_mask(Kind::MovedTo, is_dir);
        if !is_dir {
            return self.emit(Kind::MovedTo, root, rel, false, raw, now, out);
        }
        if mask::emit(Kind::MovedTo, true, &self.toggles) == Emit::Change(Op::Update) {
            out.push(Out::Scan {
                root,
                rel,
                mask: raw,
                seen: now,
            });
        }
    }

    fn rename(
        &mut self,
        from: Option<PathBuf>,
        to: Option<PathBuf>,
        is_dir: bool,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let last = std::mem::take(&mut self.last_renames);
        // A rename of a root, or of a directory above one, moves the root: gone under
        // its name, or (maybe) back.
        for root in 0..self.roots.len() {
            let top = self.roots[root].clone();
            if from.as_ref().is_some_and(|from| top.starts_with(from)) {
                self.root_event(root, Kind::MovedFrom, is_dir, out);
            }
            match &to {
                Some(to) if *to == top => self.root_event(root, Kind::MovedTo, is_dir, out),
                Some(to) if top.starts_with(to) => out.push(Out::RootCheck { root }),
                _ => {}
            }
        }
        // Then each root that holds either name, on its own (nested roots each mirror it).
        for root in 0..self.roots.len() {
            let inside = |path: &Option<PathBuf>| {
                let rel = path.as_ref()?.strip_prefix(&self.roots[root]).ok()?;
                (!rel.as_os_str().is_empty()).then(|| rel.to_path_buf())
            };
            let (old, new) = (inside(&from), inside(&to));
            if old.is_some() || new.is_some() {
                self.rename_in(root, old, new, is_dir, now, &last, out);
            }
        }
    }

    /// A rename as one root sees it: `old` and `new` relative to it, `None` for a name
    /// outside it.
    #[allow(clippy::too_many_arguments)]
    fn rename_in(
        &mut self,
        root: usize,
        old: Option<PathBuf>,
        new: Option<PathBuf>,
        is_dir: bool,
        now: Instant,
        last: &[(usize, PathBuf, PathBuf)],
        out: &mut Vec<Out>,
    ) {
        let mut old = old.filter(|rel| !self.is_filtered(rel, is_dir));
        let mut was_unfollowed = false;
        if let Some(rel) = &old {
            match self.followed(root, rel) {
                Followed::Yes => {}
                Followed::Itself => {
                    self.follow_again(root, rel);
                    was_unfollowed = true;
                }
                Followed::Below => old = None, // left a directory nobody follows
            }
        }
        let new = new.filter(|rel| {
            !self.is_filtered(rel, is_dir) && self.followed(root, rel) != Followed::Below
        });
        let toggles = &self.toggles;
        // An unfollowed directory's remote copy (if any) is not what it holds: its new
        // name is scanned, as inotify watches and scans it.
        let as_move = !was_unfollowed
            && mask::emit(Kind::MovedFrom, is_dir, toggles) == Emit::Change(Op::Delete)
            && mask::emit(Kind::MovedTo, is_dir, toggles) == Emit::Change(Op::Update);
        match (old, new) {
            (Some(old), Some(new)) if as_move => {
                if last
                    .iter()
                    .any(|(r, a, b)| *r == root && *a == new && *b == old)
                {
                    // What each name holds now is not what the first rename pushed
                    // there: the old name goes as a delete, then both as what they are.
                    let raw = raw_mask(Kind::MovedFrom, is_dir);
                    out.push(Out::Send(change(
                        root,
                        old.clone(),
                        Op::Delete,
                        is_dir,
                        raw,
                        now,
                    )));
                    for rel in [new, old] {
                        let raw = raw_mask(Kind::MovedTo, is_dir);
                        out.push(Out::Again {
                            root,
                            rel,
                            mask: raw,
                            seen: now,
                        });
                    }
                    return;
                }
                if is_dir {
                    self.rename_unfollowed(root, &old, &new);
                }
                out.push(Out::Send(FsEvent::Move(Move {
                    root,
                    from: old.clone(),
                    to: new.clone(),
                    is_dir,
                    mask: raw_mask(Kind::MovedTo, is_dir),
                    seen: now,
                })));
                self.last_renames.push((root, old.clone(), new));
                self.vacated(root, old, now, out);
            }
            (old, new) => {
                if let Some(rel) = old {
                    if is_dir {
                        self.follow_again(root, &rel);
                    }
                    self.moved_out(root, rel.clone(), is_dir, now, out);
                    self.vacated(root, rel, now, out);
                }
                if let Some(rel) = new {
                    if is_dir {
                        self.follow_again(root, &rel);
                    }
                    self.moved_in(root, rel, is_dir, now, out);
                }
            }
        }
    }

    /// After a rename away from `rel`: fanotify merges the queued events of one name
    /// from one process, so a name made again after the rename (`mkdir d; mv d d.old;
    /// mkdir d` in one script) may have had its creation reported before the rename. The
    /// thread looks: whatever is at `rel` now is pushed after the rename's delete (a
    /// directory as a delete then an update, so that the scheduler syncs it whole).
    fn vacated(&self, root: usize, rel: PathBuf, now: Instant, out: &mut Vec<Out>) {
        if mask::emit(Kind::Created, true, &self.toggles) == Emit::Nothing
            && mask::emit(Kind::ClosedWrite, false, &self.toggles) == Emit::Nothing
        {
            return;
        }
        out.push(Out::Vacated {
            root,
            rel,
            mask: raw_mask(Kind::Created, false),
            seen: now,
        });
    }

    /// A root that was gone and has a directory under its name again (found by the
    /// thread after a rename above it): rescanned.
    pub(crate) fn root_back(&mut self, root: usize, out: &mut Vec<Out>) {
        if self.missing[root] {
            self.root_event(root, Kind::MovedTo, true, out);
        } else {
            // Replaced while we looked the other way (`mv site site.old; mv site.new
            // site` above the root): what is there now is another tree.
            log::warn!(
                "{}: a directory above the root was replaced; rescanning it",
                self.roots[root].display()
            );
            out.push(Out::Send(FsEvent::Rescan { root }));
        }
    }

    /// Unfollowed directories below a renamed one keep being unfollowed under its new
    /// name.
    fn rename_unfollowed(&mut self, root: usize, old: &Path, new: &Path) {
        if self.unfollowed.is_empty() {
            return;
        }
        let moved: Vec<(usize, PathBuf)> = self
            .unfollowed
            .iter()
            .filter(|(r, p)| *r == root && p.starts_with(old))
            .cloned()
            .collect();
        for (r, p) in moved {
            self.unfollowed.remove(&(r, p.clone()));
            if let Ok(below) = p.strip_prefix(old) {
                self.unfollowed.insert((r, new.join(below)));
            }
        }
    }
}

/// The inotify mask a change reports (`Change::mask`, for plugins): fanotify's event
/// bits are inotify's, and a rename is a `MOVED_FROM` and a `MOVED_TO`.
pub(crate) fn raw_mask(kind: Kind, is_dir: bool) -> u32 {
    let bit = match kind {
        Kind::Created => EventMask::CREATE,
        Kind::Deleted => EventMask::DELETE,
        Kind::MovedFrom => EventMask::MOVED_FROM,
        Kind::MovedTo => EventMask::MOVED_TO,
        Kind::ClosedWrite => EventMask::CLOSE_WRITE,
        Kind::Modified => EventMask::MODIFY,
        Kind::Attrib => EventMask::ATTRIB,
        _ => EventMask::empty(),
    };
    let dir = if is_dir {
        EventMask::ISDIR
    } else {
        EventMask::empty()
    };
    (bit | dir).bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Rule;
    use crate::job::Change;

    fn core(toggles: InotifyToggles) -> Core {
        let filter = Filter::new(vec![Rule::new(r"(.*)\.tmp").expect("regex")]);
        Core::new(
            vec![PathBuf::from("/r0"), PathBuf::from("/r1")],
            toggles,
            Arc::new(filter),
            Arc::new(Metrics::default()),
            vec![false, false],
        )
    }

    fn p(path: &str) -> Option<PathBuf> {
        Some(PathBuf::from(path))
    }

    fn entry(kind: Kind, path: &str, is_dir: bool) -> Fact {
        Fact::Entry {
            kind,
            path: PathBuf::from(path),
            is_dir,
        }
    }

    fn rename(from: Option<PathBuf>, to: Option<PathBuf>, is_dir: bool) -> Fact {
        Fact::Rename { from, to, is_dir }
    }

    /// What came out, as short strings: `op root rel`, `move root from to`, `scan …`.
    fn run(core: &mut Core, facts: Vec<Fact>, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for fact in facts {
            core.handle(fact, now, false, &mut out);
        }
        out.into_iter()
            .map(|o| match o {
                Out::Send(FsEvent::Change(Change {
                    root,
                    rel,
                    op,
                    is_dir,
                    ..
                })) => {
                    let slash = if is_dir { "/" } else { "" };
                    format!("{op} {root} {}{slash}", rel.display())
                }
                Out::Send(FsEvent::Move(m)) => {
                    format!("move {} {} {}", m.root, m.from.display(), m.to.display())
                }
                Out::Send(FsEvent::Rescan { root }) => format!("rescan {root}"),
                Out::Send(other) => format!("{other:?}"),
                Out::IfCreateOnly { root, rel, .. } => format!("created? {root} {}", rel.display()),
                Out::Scan { root, rel, .. } => format!("scan {root} {}", rel.display()),
                Out::Again { root, rel, .. } => format!("again {root} {}", rel.display()),
                Out::Vacated { root, rel, .. } => format!("vacated {root} {}", rel.display()),
                Out::RootCheck { root } => format!("root? {root}"),
            })
            .collect()
    }

    #[test]
    fn facts_become_the_changes_the_inotify_backend_would_send() {
        use Kind::*;
        let stock = InotifyToggles::default();
        let folders_off = InotifyToggles {
            create_folder: false,
            ..InotifyToggles::default()
        };
        // (toggles, facts, what comes out)
        #[rustfmt::skip]
        let table: Vec<(InotifyToggles, Vec<Fact>, Vec<&str>)> = vec![
            (stock, vec![entry(Created, "/r0/f", false), entry(ClosedWrite, "/r0/f", false)],
             vec!["created? 0 f", "update 0 f"]),
            (stock, vec![entry(Created, "/r0/d", true)], vec!["update 0 d/"]),
            (stock, vec![entry(Deleted, "/r0/d", true)], vec!["delete 0 d/"]),
            // Outside every root, or only sharing a prefix with one.
            (stock, vec![entry(ClosedWrite, "/elsewhere/f", false), entry(ClosedWrite, "/r0x/f", false)],
             vec![]),
            // Excluded names get nothing; attrib is off in the stock toggles.
            (stock, vec![entry(ClosedWrite, "/r0/a.tmp", false), entry(Attrib, "/r0/f", false)], vec![]),
            (stock, vec![rename(p("/r0/a"), p("/r0/b"), false)], vec!["move 0 a b", "vacated 0 a"]),
            (stock, vec![rename(p("/r0/a"), p("/r0/b"), true)], vec!["move 0 a b", "vacated 0 a"]),
            // Between roots: a delete in one, the new name pushed (a directory scanned).
            (stock, vec![rename(p("/r0/a"), p("/r1/a"), false)], vec!["delete 0 a", "vacated 0 a", "update 1 a"]),
            (stock, vec![rename(p("/r0/d"), p("/r1/d"), true)], vec!["delete 0 d/", "vacated 0 d", "scan 1 d"]),
            // In from outside (or from a directory that is gone), out to outside.
            (stock, vec![rename(p("/elsewhere/d"), p("/r0/d"), true)], vec!["scan 0 d"]),
            (stock, vec![rename(None, p("/r0/f"), false)], vec!["update 0 f"]),
            (stock, vec![rename(p("/r0/d"), p("/elsewhere/d"), true)], vec!["delete 0 d/", "vacated 0 d"]),
            // Across the exclusion boundary: an editor's atomic save, and the reverse.
            (stock, vec![rename(p("/r0/f.tmp"), p("/r0/f"), false)], vec!["update 0 f"]),
            (stock, vec![rename(p("/r0/f"), p("/r0/f.tmp"), false)], vec!["delete 0 f", "vacated 0 f"]),
            // An exchange (or a move back): the old name is deleted, both pushed as they are.
            (stock, vec![rename(p("/r0/a"), p("/r0/b"), true), rename(p("/r0/b"), p("/r0/a"), true)],
             vec!["move 0 a b", "vacated 0 a", "delete 0 b/", "again 0 a", "again 0 b"]),
            // Not reversed when something came between.
            (stock, vec![rename(p("/r0/a"), p("/r0/b"), false), entry(Created, "/r0/c", true),
                         rename(p("/r0/b"), p("/r0/a"), false)],
             vec!["move 0 a b", "vacated 0 a", "update 0 c/", "move 0 b a", "vacated 0 b"]),
            // A root deleted, then back: a rescan; a root's own attributes are not mirrored.
            (stock, vec![entry(Deleted, "/r0", true), entry(Created, "/r0", true), entry(Attrib, "/r1", true)],
             vec!["rescan 0"]),
            (stock, vec![rename(p("/r1"), p("/old"), true), rename(p("/new"), p("/r1"), true)],
             vec!["rescan 1"]),
            (stock, vec![Fact::Overflow], vec!["rescan 0", "rescan 1"]),
            // createFolder off: a new directory is neither pushed nor followed …
            (folders_off, vec![entry(Created, "/r0/d", true), entry(ClosedWrite, "/r0/d/f", false),
                               entry(Created, "/r0/d/e", true), entry(ClosedWrite, "/r0/g", false)],
             vec!["update 0 g"]),
            // … until it is renamed (scanned under the new name) …
            (folders_off, vec![entry(Created, "/r0/d", true), rename(p("/r0/d"), p("/r0/e"), true),
                               entry(ClosedWrite, "/r0/e/f", false)],
             vec!["delete 0 d/", "vacated 0 d", "scan 0 e", "update 0 e/f"]),
            // … and the unfollowed directories below a renamed one stay unfollowed
            // under its new name, while one moved in over the old name is followed.
            (folders_off, vec![entry(Created, "/r0/x/d", true), rename(p("/r0/x"), p("/r0/y"), true),
                               rename(p("/elsewhere/x"), p("/r0/x"), true),
                               entry(ClosedWrite, "/r0/x/d/f", false), entry(ClosedWrite, "/r0/y/d/f", false)],
             vec!["move 0 x y", "vacated 0 x", "scan 0 x", "update 0 x/d/f"]),
            // … or deleted (and a new one under that name is not followed either).
            (folders_off, vec![entry(Created, "/r0/d", true), entry(Deleted, "/r0/d", true),
                               entry(ClosedWrite, "/r0/d2/f", false)],
             vec!["delete 0 d/", "update 0 d2/f"]),
        ];
        let now = Instant::now();
        for (toggles, facts, expected) in table {
            let shown = format!("{facts:?}");
            let mut core = core(toggles);
            assert_eq!(run(&mut core, facts, now), expected, "{shown}");
        }
    }

    #[test]
    fn renames_above_a_root_and_in_nested_roots() {
        let roots = vec![
            PathBuf::from("/srv/site/htdocs"),
            PathBuf::from("/srv/site/htdocs/sub"),
        ];
        let fresh = || {
            Core::new(
                roots.clone(),
                InotifyToggles::default(),
                Arc::new(Filter::default()),
                Arc::new(Metrics::default()),
                vec![false, false],
            )
        };
        let now = Instant::now();
        // A deploy that swaps a directory above both roots: gone, then maybe back.
        let mut core = fresh();
        let swap = vec![
            rename(p("/srv/site"), p("/srv/site.old"), true),
            rename(p("/srv/site.new"), p("/srv/site"), true),
        ];
        assert_eq!(run(&mut core, swap, now), vec!["root? 0", "root? 1"]);
        assert_eq!(core.missing, vec![true, true]);
        let mut out = Vec::new();
        core.root_back(0, &mut out);
        assert_eq!(out, vec![Out::Send(FsEvent::Rescan { root: 0 })]);
        assert_eq!(core.missing, vec![false, true]);
        // Replaced without being seen to go: rescanned all the same.
        let mut out = Vec::new();
        core.root_back(0, &mut out);
        assert_eq!(out, vec![Out::Send(FsEvent::Rescan { root: 0 })]);
        // Each nested root mirrors a rename on its own.
        let mut core = fresh();
        #[rustfmt::skip]
        let table: Vec<(Fact, Vec<&str>)> = vec![
            (rename(p("/srv/site/htdocs/sub/a"), p("/srv/site/htdocs/sub/b"), false),
             vec!["move 0 sub/a sub/b", "vacated 0 sub/a", "move 1 a b", "vacated 1 a"]),
            (rename(p("/srv/site/htdocs/x"), p("/srv/site/htdocs/sub/x"), false),
             vec!["move 0 x sub/x", "vacated 0 x", "update 1 x"]),
            (rename(p("/srv/site/htdocs/sub/y"), p("/srv/other/y"), true),
             vec!["delete 0 sub/y/", "vacated 0 sub/y", "delete 1 y/", "vacated 1 y"]),
        ];
        for (fact, expected) in table {
            let shown = format!("{fact:?}");
            assert_eq!(run(&mut core, vec![fact], now), expected, "{shown}");
        }
    }

    #[test]
    fn writes_are_held_until_their_close_or_the_next_change_of_shape() {
        let toggles = InotifyToggles {
            modify: true,
            ..InotifyToggles::default()
        };
        let mut core = core(toggles);
        let now = Instant::now();
        let writes = vec![
            entry(Kind::Modified, "/r0/log", false),
            entry(Kind::Modified, "/r0/log", false),
            entry(Kind::Modified, "/r0/f", false),
            entry(Kind::ClosedWrite, "/r0/f", false),
        ];
        assert_eq!(run(&mut core, writes, now), vec!["update 0 f"]);
        assert_eq!(
            core.next_deadline(),
            Some(now + crate::watch::MODIFY_SETTLE)
        );
        // A rename releases what is held first, in kernel order.
        assert_eq!(
            run(
                &mut core,
                vec![rename(p("/r0/log"), p("/r0/log.1"), false)],
                now
            ),
            vec!["update 0 log", "move 0 log log.1", "vacated 0 log"]
        );
        run(&mut core, vec![entry(Kind::Modified, "/r0/x", false)], now);
        let mut out = Vec::new();
        core.expire(now, &mut out);
        assert!(out.is_empty(), "not due yet");
        core.expire(now + crate::watch::MODIFY_SETTLE, &mut out);
        assert_eq!(out.len(), 1, "due after the settle time");
        // While stopping nothing is held: a write goes out as it is.
        let mut out = Vec::new();
        core.handle(entry(Kind::Modified, "/r0/y", false), now, true, &mut out);
        assert_eq!(out.len(), 1);
        run(&mut core, vec![entry(Kind::Modified, "/r0/z", false)], now);
        let mut out = Vec::new();
        core.finish(&mut out);
        assert_eq!(out.len(), 1, "the stop hands the held write over");
    }
}
