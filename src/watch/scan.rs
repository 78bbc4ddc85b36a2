//! Walking directory trees to add watches: the parallel walk used at startup and after an
//! overflow, and the watch-then-scan of a directory that appears while running.
//!
//! Every directory is watched *before* it is read, so that an entry created while we
//! walk is either seen by `read_dir` or reported by the new watch (both, at worst). The
//! walk emits no events: the startup full sync, or the `Rescan` that follows an
//! overflow, covers what already exists. Excluded directories are never watched and
//! never entered; symlinks are never followed (`DirEntry::file_type` is an `lstat`
//! when the filesystem reports `DT_UNKNOWN`).
//!
//! The walk only looks for subdirectories, and most directories of a large tree have
//! none. On filesystems whose directory link count is 2 plus the number of
//! subdirectories (tmpfs, ext2/3/4, XFS: [`SUBDIR_COUNTING`]) a directory whose count
//! is 2 once its watch is in place is not read at all: one `fstatat` from the parent's
//! descriptor instead of `open`, two `getdents64` and `close`. The same watch-first
//! order keeps that race-free: a subdirectory made before the watch is in the count
//! (the filesystem raises it before the kernel reports the `mkdir`), one made after it
//! is reported by the watch. Directories are read with `getdents64` into a buffer on
//! the stack (`rustix::fs::RawDir`): no `fstat` and no 32 KiB allocation per directory
//! as libc's `opendir` does.
//!
//! The walk runs on a pool of its own whose threads each have a working directory
//! (`unshare(CLONE_FS)`): a directory's task `fchdir`s into it and adds each
//! subdirectory's watch by its name, so the kernel looks up one component, not the
//! whole path, and no path is built per subdirectory. The kernel serializes
//! `inotify_add_watch` on the inotify instance's mark mutex, so more threads speed up
//! the reads, `fstatat`s and map inserts around the adds, not the adds themselves.

use std::cell::Cell;
use std::ffi::{CStr, OsStr};
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use inotify::WatchMask;

use super::event::{State, change};
use super::mask::Kind;
use super::outlet::Flow;
use super::tree::{NodeId, Tree};
use super::watches::WatchFd;
use crate::filter::Filter;
use crate::job::Op;

/// How often a long walk says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// `statfs` `f_type` of the filesystems whose directory link count is 2 plus the number
/// of subdirectories: tmpfs, ext2/3/4, XFS. Others (btrfs counts 1, FUSE and network
/// filesystems report what they like) have every directory read.
const SUBDIR_COUNTING: [i64; 3] = [0x0102_1994, 0xEF53, 0x5846_5342];

/// Longest path the kernel takes, its terminating NUL included.
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Bytes of `getdents64` buffer per directory read (on the walking thread's stack).
const DIR_BUFFER: usize = 16 * 1024;

/// What `lstat` says of a directory after its watch was added.
struct Facts {
    is_dir: bool,
    dev: u64,
    nlink: u64,
    /// The inode is the one `getdents64` listed under the name (not renamed over since).
    same_inode: bool,
}

/// Whether a directory has no subdirectory to walk: its link count says so on a
/// filesystem that keeps it (`counted_dev`: the device of a root on a
/// [`SUBDIR_COUNTING`] filesystem), it is on that device (not a mount point of another
/// filesystem), and it is still the directory that was listed.
fn has_no_subdirs(counted_dev: Option<u64>, facts: &Facts) -> bool {
    facts.is_dir && facts.same_inode && counted_dev == Some(facts.dev) && facts.nlink == 2
}

/// The device of `root` when its filesystem keeps subdirectory link counts.
fn subdir_counting_dev(root: &Path) -> Option<u64> {
    let fs = rustix::fs::statfs(root).ok()?;
    // `f_type` is `i64` here, narrower on other architectures.
    #[allow(clippy::useless_conversion)]
    if !SUBDIR_COUNTING.contains(&i64::from(fs.f_type)) {
        return None;
    }
    rustix::fs::stat(root).ok().map(|st| st.st_dev)
}

/// What a walk over every root found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The watches added (or found again: the kernel returns the existing descriptor),
    /// built while walking, so that a walk holds no path per directory.
    pub(crate) tree: Tree<i32>,
    /// Roots whose top directory could not be watched at all, with the reason.
    pub(crate) failed_roots: Vec<(usize, io::Error)>,
    /// Roots where the watch limit was hit, with the first directory left unwatched
    /// (relative to the root).
    pub(crate) out_of_watches: Vec<(usize, PathBuf)>,
    /// Directories that could not be watched for another reason (EACCES,
    /// ENAMETOOLONG, ...), relative to their root, with the errno.
    pub(crate) unwatched: Vec<(usize, PathBuf, i32)>,
}

/// Shared state of one parallel walk. The tree is behind a lock, but inserting a node
/// is a few hash probes next to the two syscalls (`inotify_add_watch`, `getdents`)
/// each directory costs, which run unlocked on every core.
struct Ctx<'a> {
    roots: &'a [PathBuf],
    watches: &'a WatchFd,
    mask: WatchMask,
    filter: &'a Filter,
    log_level: log::Level,
    tree: Mutex<Tree<i32>>,
    /// Per root: its device when its directories' link counts count subdirectories.
    counted_dev: Vec<Option<u64>>,
    /// Watches added so far, for the progress log.
    watched: AtomicUsize,
    /// One flag per root: once ENOSPC is seen, every further add would fail too.
    full: Vec<AtomicBool>,
    first_unwatched: Mutex<Vec<(usize, PathBuf)>>,
    unwatched: Mutex<Vec<(usize, PathBuf, i32)>>,
}

impl Ctx<'_> {
    /// Adds the watch of the root itself; returns its node, or `None` when the watch
    /// limit is reached.
    fn add_root(&self, root: usize) -> io::Result<Option<NodeId>> {
        let Some(wd) = self.watch(root, None, self.roots[root].as_path())? else {
            return Ok(None);
        };
        let (node, displaced) = lock(&self.tree).insert_root(wd, wd, root);
        if let Some(displaced) = displaced {
            let _ = self.watches.remove(displaced);
        }
        self.watched.fetch_add(1, Ordering::Relaxed);
        Ok(Some(node))
    }

    /// Adds one watch on `target`, the directory `name` of the directory `parent` of
    /// `root` (`None`: the root itself), given as a full path or as the name alone when
    /// the walking thread's working directory is the parent; `None` when it is gone or
    /// is no directory any more (the events for that arrive on the parent's watch), or
    /// the watch limit is reached (recorded for the report). The map is not touched:
    /// [`settle`] puts a directory's watched children in it under one lock. No path is
    /// built unless something is logged or recorded.
    fn watch<P: rustix::path::Arg>(
        &self,
        root: usize,
        parent: Option<(&Path, &OsStr)>,
        target: P,
    ) -> io::Result<Option<i32>> {
        if self.full[root].load(Ordering::Relaxed) {
            return Ok(None);
        }
        let rel = || parent.map(|(dir, name)| dir.join(name)).unwrap_or_default();
        match self.watches.add(target, self.mask) {
            Ok(wd) => {
                if log::log_enabled!(self.log_level) {
                    let abs = self.roots[root].join(rel());
                    log::log!(self.log_level, "{}: watching (wd {wd})", abs.display());
                }
                Ok(Some(wd))
            }
            Err(err) if is_out_of_watches(&err) => {
                if !self.full[root].swap(true, Ordering::Relaxed) {
                    lock(&self.first_unwatched).push((root, rel()));
                }
                Ok(None)
            }
            // For a root, "gone" is the failure to report.
            Err(err) if is_gone(&err) && parent.is_some() => {
                log::debug!(
                    "{}: vanished before it could be watched",
                    self.roots[root].join(rel()).display()
                );
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Logs how far the walk got, every `PROGRESS_EVERY` until `done` closes.
    fn report_progress(&self, started: Instant, done: &Receiver<()>) {
        while let Err(RecvTimeoutError::Timeout) = done.recv_timeout(PROGRESS_EVERY) {
            let watched = self.watched.load(Ordering::Relaxed);
            let elapsed = started.elapsed().as_secs_f64();
            log::info!(
                "watching: {watched} directories so far, {:.0}/s, {elapsed:.0} s elapsed",
                watched as f64 / elapsed.max(f64::EPSILON)
            );
        }
    }
}

/// Watches every root and every non-excluded directory below, in parallel (rayon).
/// Directories already watched get their existing descriptor back, so this also
/// serves to rebuild the map after an overflow.
pub(crate) fn walk(
    roots: &[PathBuf],
    watches: &WatchFd,
    mask: WatchMask,
    filter: &Filter,
    log_level: log::Level,
) -> Walk {
    let all: Vec<usize> = (0..roots.len()).collect();
    walk_roots(roots, &all, watches, mask, filter, log_level)
}

/// [`walk`] over the roots listed in `which` only (a root that came back, roots with
/// directories left unwatched).
pub(crate) fn walk_roots(
    roots: &[PathBuf],
    which: &[usize],
    watches: &WatchFd,
    mask: WatchMask,
    filter: &Filter,
    log_level: log::Level,
) -> Walk {
    let ctx = Ctx {
        roots,
        watches,
        mask,
        filter,
        log_level,
        tree: Mutex::new(Tree::default()),
        counted_dev: roots.iter().map(|r| subdir_counting_dev(r)).collect(),
        watched: AtomicUsize::new(0),
        full: roots.iter().map(|_| AtomicBool::new(false)).collect(),
        first_unwatched: Mutex::new(Vec::new()),
        unwatched: Mutex::new(Vec::new()),
    };
    let failed_roots = Mutex::new(Vec::new());
    let started = Instant::now();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|threads| {
        let ctx = &ctx;
        threads.spawn(move || ctx.report_progress(started, &done_rx));
        let failed_roots = &failed_roots;
        match walk_pool() {
            Some(pool) => pool.scope(|scope| walk_all(scope, ctx, which, failed_roots)),
            None => rayon::scope(|scope| walk_all(scope, ctx, which, failed_roots)),
        }
        drop(done_tx);
    });
    let tree = into_inner(ctx.tree);
    let elapsed = started.elapsed();
    let level = if elapsed >= PROGRESS_EVERY {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    log::log!(
        level,
        "watching {} directories, walked in {:.1} s; the map holds {} KiB",
        tree.len(),
        elapsed.as_secs_f64(),
        tree.heap_bytes() / 1024
    );
    Walk {
        tree,
        failed_roots: into_inner(failed_roots),
        out_of_watches: into_inner(ctx.first_unwatched),
        unwatched: into_inner(ctx.unwatched),
    }
}

/// Starts the walk of each root of `which` on `scope`.
fn walk_all<'s>(
    scope: &rayon::Scope<'s>,
    ctx: &'s Ctx<'s>,
    which: &'s [usize],
    failed_roots: &'s Mutex<Vec<(usize, io::Error)>>,
) {
    for &root in which {
        scope.spawn(move |scope| match ctx.add_root(root) {
            Ok(Some(node)) => walk_dir(scope, ctx, root, node, PathBuf::new()),
            Ok(None) => {} // out of watches: reported through `out_of_watches`
            Err(err) => lock(failed_roots).push((root, err)),
        });
    }
}

/// Children of one directory watched but not yet in the map: [`settle`] takes the
/// map's lock once per this many (the lock is the walk's one shared write).
const SETTLE_EVERY: usize = 256;

/// The subdirectories of one directory whose watches were just added, before they go in
/// the map: their names back to back, and per child where its name ends, its
/// descriptor, and whether it must be read (it may have subdirectories). Two buffers per
/// directory, not a path per child.
#[derive(Default)]
struct Watched {
    names: Vec<u8>,
    children: Vec<(usize, i32, bool)>,
}

impl Watched {
    fn push(&mut self, name: &[u8], wd: i32, read: bool) {
        self.names.extend_from_slice(name);
        self.children.push((self.names.len(), wd, read));
    }

    fn len(&self) -> usize {
        self.children.len()
    }
}

thread_local! {
    /// Whether this thread has a working directory of its own (`unshare(CLONE_FS)` in a
    /// walk pool's thread), so that it may `fchdir` into the directory it reads and
    /// watch each subdirectory by its name. Never set on other threads: their working
    /// directory is the process's.
    static OWN_CWD: Cell<bool> = const { Cell::new(false) };
}

/// A thread pool for one walk whose threads have a working directory each
/// (`unshare(CLONE_FS)`): a watch added by name is a one-component lookup from there
/// instead of a lookup of every component of the full path (a C loop over a million
/// leaves six components deep: 1.37 µs a watch by name, 1.51 µs by full path). `None`
/// when the pool cannot be built; a thread where `unshare` fails uses full paths.
fn walk_pool() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("sersync-walk-{i}"))
        .start_handler(|_| OWN_CWD.set(unshare_cwd().is_ok()))
        .build()
        .map_err(|err| log::debug!("walk thread pool: {err}; walking on the global pool"))
        .ok()
}

/// Gives the calling thread its own working directory, root and umask.
#[allow(unsafe_code)]
fn unshare_cwd() -> io::Result<()> {
    // SAFETY: `CLONE_FS` unshares the working directory, root and umask only; memory
    // and the file descriptor table stay shared (what makes `unshare_unsafe` unsafe is
    // `CLONE_FILES`, which is not asked for).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
        .map_err(io::Error::from)
}

/// Reads one already watched directory and watches its subdirectories, each of which
/// is then read by its own rayon task unless its link count says it has none.
fn walk_dir<'s>(
    scope: &rayon::Scope<'s>,
    ctx: &'s Ctx<'s>,
    root: usize,
    node: NodeId,
    rel: PathBuf,
) {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
    let abs = ctx.roots[root].join(&rel);
    // A root may be a symlink to its tree; below it nothing is followed.
    let follow = if rel.as_os_str().is_empty() {
        OFlags::empty()
    } else {
        OFlags::NOFOLLOW
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | follow;
    let dir: OwnedFd = match rustix::fs::open(&abs, flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(err) => {
            log_read_error(&abs, &err.into());
            return;
        }
    };
    // Subdirectories are watched by name from inside `dir`, or by full path when this
    // thread shares the process's working directory.
    let by_name = OWN_CWD.get() && rustix::process::fchdir(&dir).is_ok();
    let mut child_abs = abs.clone();
    let mut watched = Watched::default();
    let mut buf = [MaybeUninit::<u8>::uninit(); DIR_BUFFER];
    let mut entries = RawDir::new(dir.as_fd(), &mut buf);
    while let Some(entry) = entries.next() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                log_read_error(&abs, &err.into());
                break;
            }
        };
        let name = entry.file_name();
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            // DT_UNKNOWN: the filesystem does not say; ask without following.
            FileType::Unknown => rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory),
            _ => false,
        };
        let bytes = name.to_bytes();
        if !is_dir || bytes == b"." || bytes == b".." {
            continue;
        }
        let os_name = OsStr::from_bytes(bytes);
        // The parents were checked on the way down; only the name itself is new.
        if !ctx.filter.is_empty() && ctx.filter.matches(&rel.join(os_name), true) {
            log::debug!("{}: excluded, not watched", abs.join(os_name).display());
            continue;
        }
        // A path the kernel would refuse (ENAMETOOLONG) is given whole, so that it is
        // refused: what is watched is what an event's path can reach.
        let added = if by_name && abs.as_os_str().len() + 1 + bytes.len() < PATH_MAX {
            ctx.watch(root, Some((&rel, os_name)), name)
        } else {
            child_abs.push(os_name);
            let added = ctx.watch(root, Some((&rel, os_name)), child_abs.as_path());
            child_abs.pop();
            added
        };
        match added {
            Ok(Some(wd)) => {
                let read = !ctx.has_no_subdirs(root, &dir, name, entry.ino());
                watched.push(bytes, wd, read);
            }
            Ok(None) => {}
            Err(err) => {
                let child = rel.join(os_name);
                log_unwatchable(&abs.join(os_name), &err);
                lock(&ctx.unwatched).push((root, child, err.raw_os_error().unwrap_or(0)));
            }
        }
        if watched.len() >= SETTLE_EVERY {
            settle(scope, ctx, root, node, &rel, &mut watched);
        }
    }
    settle(scope, ctx, root, node, &rel, &mut watched);
}

/// Puts the watched children of `parent` (the directory `rel`) in the map (one lock
/// for all), then starts a task reading each one that may have subdirectories.
fn settle<'s>(
    scope: &rayon::Scope<'s>,
    ctx: &'s Ctx<'s>,
    root: usize,
    parent: NodeId,
    rel: &Path,
    watched: &mut Watched,
) {
    if watched.children.is_empty() {
        return;
    }
    ctx.watched.fetch_add(watched.len(), Ordering::Relaxed);
    let mut to_read = Vec::new();
    let mut displaced = Vec::new();
    {
        let mut tree = lock(&ctx.tree);
        let mut start = 0;
        for (end, wd, read) in watched.children.drain(..) {
            let name = OsStr::from_bytes(&watched.names[start..end]);
            start = end;
            let (node, old) = tree.insert_child(parent, name, wd, wd);
            displaced.extend(old);
            if read {
                to_read.push((node, rel.join(name)));
            }
        }
    }
    watched.names.clear();
    for old in displaced {
        // Not in one walk (each path is visited once); kept in step anyway.
        let _ = ctx.watches.remove(old);
    }
    for (node, child) in to_read {
        scope.spawn(move |scope| walk_dir(scope, ctx, root, node, child));
    }
}

impl Ctx<'_> {
    /// Whether the directory `name` (inode `ino` when listed) of `parent`, just watched,
    /// has no subdirectory (so it need not be read); `false` when that cannot be told.
    fn has_no_subdirs(&self, root: usize, parent: &OwnedFd, name: &CStr, ino: u64) -> bool {
        let Some(counted) = self.counted_dev[root] else {
            return false;
        };
        // `st_nlink` is `u64` here, `u32` on other architectures.
        #[allow(clippy::useless_conversion)]
        rustix::fs::statat(parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            let is_dir =
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
            let facts = Facts {
                is_dir,
                dev: st.st_dev,
                nlink: u64::from(st.st_nlink),
                same_inode: st.st_ino == ino,
            };
            has_no_subdirs(Some(counted), &facts)
        })
    }
}

impl State {
    /// Watches `rel` and every non-excluded directory below it, each before reading it,
    /// and (with `emit`) sends an `Update` for the directory and then for everything in
    /// it. Depth first with an explicit stack: a 4 KiB path is ~2000 levels deep.
    pub(super) fn watch_and_scan(
        &mut self,
        root: usize,
        rel: PathBuf,
        emit: bool,
        raw: u32,
        now: Instant,
    ) -> Flow {
        let mut stack = vec![(root, rel, raw)];
        while let Some((root, rel, mask)) = stack.pop() {
            if self.is_stopping() {
                // What is left of the walk would delay the exit; a full sync of the
                // root (journaled by the scheduler) covers it instead.
                self.update_count();
                return self.rescan_on_stop(root);
            }
            let abs = self.shared.roots[root].join(&rel);
            match self.shared.watches.add(abs.as_path(), self.shared.mask) {
                Ok(wd) => {
                    self.watched_again(root, &rel);
                    log::log!(
                        self.shared.log_level,
                        "{}: watching (wd {wd})",
                        abs.display()
                    );
                    let held = self.tree.get(wd).map(|dir| (dir.root, dir.rel));
                    if let Identity::HeldElsewhere(at_root, at) = identity(held, root, &rel) {
                        // The map took this inode for the one at `at` (events are read
                        // late: `mkdir d; mv d d.old; mkdir d`, the first CREATE read
                        // last, watched the second `d`, and the rename then moved that
                        // watch to `d.old`). The kernel's wd is the truth: the node and
                        // what is below it go back here, and what is at `at` was never
                        // watched, so it is watched and scanned as a new directory,
                        // after a delete: the remote may hold what moved there (the
                        // rename went out as a move), and delete then update makes the
                        // scheduler sync that subtree whole.
                        log::debug!(
                            "{}: the watch of {} (wd {wd}) is here; watching that name anew",
                            abs.display(),
                            self.shared.roots[at_root].join(&at).display()
                        );
                        let (_, replaced) = self.tree.rename_subtree(at_root, &at, root, &rel);
                        for (_, dir) in replaced {
                            self.rm_watch(dir.handle);
                        }
                        if emit {
                            self.emit(Kind::MovedFrom, at_root, at.clone(), true, 0, now)?;
                        }
                        stack.push((at_root, at, 0));
                    }
                    if let Some(displaced) = self.tree.insert(wd, wd, root, rel.clone()) {
                        // Another inode was watched under this path and left unseen
                        // (its move out was lost, e.g. in an overflow).
                        self.rm_watch(displaced.handle);
                    }
                }
                Err(err) if is_out_of_watches(&err) => {
                    // Still scan: what exists now gets pushed; later changes inside
                    // wait for the rescans the report schedules.
                    self.report_out_of_watches(root, &rel);
                }
                Err(err) if is_gone(&err) => {
                    log::debug!("{}: vanished before it could be watched", abs.display());
                    self.vanished.insert((root, rel));
                    continue;
                }
                Err(err) => {
                    log_unwatchable(&abs, &err);
                    self.add_unwatched(root, rel.clone(), err.raw_os_error().unwrap_or(0));
                }
            }
            if emit {
                self.send(change(root, rel.clone(), Op::Update, true, mask, now))?;
            }
            let entries = match fs::read_dir(&abs) {
                Ok(entries) => entries,
                Err(err) => {
                    log_read_error(&abs, &err);
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(err) => {
                        log_read_error(&abs, &err);
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
                    stack.push((root, child, 0));
                } else if emit {
                    self.send(change(root, child, Op::Update, false, 0, now))?;
                }
            }
        }
        self.update_count();
        Ok(())
    }
}

/// What a watch just added by path says of the map, which holds its wd at `held`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Identity {
    /// The map did not hold it, or held it at this very path (a directory watched
    /// twice: the kernel returns its wd again).
    Known,
    /// The map holds it at another directory: the inode was taken for the one there.
    HeldElsewhere(usize, PathBuf),
}

/// Decides [`Identity`] for a watch added at `root`/`rel`. A root is never relinked
/// (nor relinked to): its path is configured, not learnt from events.
pub(super) fn identity(held: Option<(usize, PathBuf)>, root: usize, rel: &Path) -> Identity {
    match held {
        Some((at_root, at))
            if (at_root, at.as_path()) != (root, rel)
                && !at.as_os_str().is_empty()
                && !rel.as_os_str().is_empty() =>
        {
            Identity::HeldElsewhere(at_root, at)
        }
        _ => Identity::Known,
    }
}

/// ENOSPC from `inotify_add_watch`: the user's watch limit is reached.
pub(crate) fn is_out_of_watches(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC)
}

/// The directory vanished or was replaced by a non-directory (`IN_ONLYDIR` gives
/// ENOTDIR; a symlink with `IN_DONT_FOLLOW` too): its own events say what happened.
pub(crate) fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

/// A directory that cannot be watched (EACCES, ENAMETOOLONG, ...): it is retried.
pub(crate) fn log_unwatchable(abs: &Path, err: &io::Error) {
    log::warn!(
        "{}: cannot watch, changes below it are not seen until it can be: {err} \
         (retried every {} s)",
        abs.display(),
        super::rewatch::RETRY_INTERVAL.as_secs()
    );
}

/// A directory that cannot be read: expected (debug) when it vanished meanwhile.
pub(crate) fn log_read_error(abs: &Path, err: &io::Error) {
    if is_gone(err) {
        log::debug!("{}: vanished before it could be read", abs.display());
    } else {
        log::warn!("{}: cannot read directory: {err}", abs.display());
    }
}

/// Locks a mutex, ignoring poisoning: the data are plain vectors that a panicking
/// pusher cannot leave half-updated in a way that matters here.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (wd held at, watch added at) → relinked from.
    #[test]
    fn a_wd_held_at_another_path_is_relinked_from_there() {
        type At = (usize, &'static str);
        let table: [(Option<At>, At, Option<At>); 7] = [
            (None, (0, "d"), None),                             // new to the map
            (Some((0, "d")), (0, "d"), None),                   // watched twice
            (Some((0, "d.old")), (0, "d"), Some((0, "d.old"))), // taken for d.old
            (Some((1, "d")), (0, "d"), Some((1, "d"))),         // the same name in another root
            (Some((0, "a")), (0, "a/b"), Some((0, "a"))),       // now below where it was
            (Some((0, "")), (0, "d"), None),                    // a root stays a root
            (Some((0, "d")), (1, ""), None),                    // nor is relinked to
        ];
        for (held, (root, rel), expected) in table {
            let held = held.map(|(r, p)| (r, PathBuf::from(p)));
            let expected = match expected {
                Some((r, p)) => Identity::HeldElsewhere(r, PathBuf::from(p)),
                None => Identity::Known,
            };
            assert_eq!(
                identity(held.clone(), root, Path::new(rel)),
                expected,
                "{held:?} → ({root}, {rel})"
            );
        }
    }

    /// (counted device, is a directory, its device, its link count, same inode as
    /// listed) → not to be read.
    #[test]
    fn only_a_counted_leaf_is_left_unread() {
        let table = [
            (Some(7), true, 7, 2, true, true),
            (Some(7), true, 7, 3, true, false), // one subdirectory
            (Some(7), true, 7, 1, true, false), // ext4 past 65000 subdirectories, btrfs
            (Some(7), true, 8, 2, true, false), // a mount point of another filesystem
            (None, true, 7, 2, true, false),    // a filesystem that does not count
            (Some(7), false, 7, 2, true, false), // replaced by a file with two links
            (Some(7), true, 7, 2, false, false), // renamed over since it was listed
        ];
        for (counted, is_dir, dev, nlink, same_inode, leaf) in table {
            let facts = Facts {
                is_dir,
                dev,
                nlink,
                same_inode,
            };
            assert_eq!(
                has_no_subdirs(counted, &facts),
                leaf,
                "{counted:?} {is_dir} {dev} {nlink} {same_inode}"
            );
        }
    }

    /// The walk watches every directory of a tree (by name from its own threads'
    /// working directories, past `SETTLE_EVERY` children of one directory too, with an
    /// excluded one left out) and leaves the process's working directory where it was.
    #[test]
    fn a_walk_watches_the_whole_tree_and_leaves_the_working_directory_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        for i in 0..SETTLE_EVERY + 10 {
            fs::create_dir_all(root.join(format!("p{i:03}/c/d"))).expect("mkdir");
        }
        fs::create_dir_all(root.join("skip/below")).expect("mkdir");
        fs::write(root.join("p000/c/file"), "x").expect("write");
        let filter = Filter::from_patterns(&["skip"]).expect("filter");
        let cwd = std::env::current_dir().expect("cwd");
        let inotify = inotify::Inotify::init().expect("inotify");
        let fd = WatchFd::new(inotify.as_fd()).expect("dup");
        let mask = WatchMask::CREATE | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW;
        let walk = super::walk(
            std::slice::from_ref(&root),
            &fd,
            mask,
            &filter,
            log::Level::Trace,
        );
        assert_eq!(std::env::current_dir().expect("cwd"), cwd);
        assert!(walk.failed_roots.is_empty() && walk.unwatched.is_empty());
        let tree = walk.tree;
        assert_eq!(tree.len(), 1 + 3 * (SETTLE_EVERY + 10));
        for rel in ["", "p000", "p000/c", "p265/c/d"] {
            assert!(tree.wd_of(0, Path::new(rel)).is_some(), "{rel} watched");
        }
        assert!(tree.wd_of(0, Path::new("skip")).is_none(), "excluded");
    }

    #[test]
    fn errno_classes() {
        assert!(is_out_of_watches(&io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
        assert!(is_gone(&io::Error::from_raw_os_error(libc::ENOTDIR)));
        assert!(is_gone(&io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(!is_gone(&io::Error::from_raw_os_error(libc::EACCES)));
    }
}
