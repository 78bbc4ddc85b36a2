//! The fanotify backend (`<watch backend="fanotify"/>`): one filesystem mark per
//! filesystem holding a root (`FAN_MARK_FILESYSTEM`, names reported as directory handle
//! plus name with `FAN_REPORT_DFID_NAME`, renames as one `FAN_RENAME`), instead of one
//! inotify watch per directory. Nothing is walked at start, so the daemon is ready in
//! milliseconds whatever the tree's size, needs no `max_user_watches` and no memory per
//! directory, and a new directory is covered from its first moment (no mkdir race).
//!
//! The price: root (`CAP_SYS_ADMIN` for the mark, `CAP_DAC_READ_SEARCH` to open
//! handles), Linux 5.17 (`FAN_RENAME`), filesystems that hand out file handles (ext4,
//! XFS, btrfs, tmpfs do), and every event of those filesystems is read, its directory
//! resolved (`resolve.rs`, cached) and dropped unless it is under a root. When the
//! group or a mark cannot be made, [`spawn`] says why and the caller falls back to
//! inotify.
//!
//! Thread: `sersync-watch`, as with inotify: it blocks in `mio::Poll` on the fanotify
//! fd and a waker, decodes (`record.rs`), resolves, and lets `core.rs` decide; the sends
//! and the stop handover are `outlet.rs`'s.

mod core;
mod record;
mod resolve;
mod sys;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};

use self::core::{Core, Fact, Out};
use self::record::{Named, Record};
use self::resolve::{Resolver, Where};
use super::mask::Kind;
use super::outlet::{Flow, Halt, Outlet};
use super::{WatchOptions, Watcher};
use crate::config::{InotifyToggles, WatchBackend};
use crate::filter::Filter;
use crate::job::{FsEvent, Op};
use crate::metrics::Metrics;

/// Bytes read per `read(2)`: an event with one name record is 24 + 20 + handle + name.
const READ_BUFFER: usize = 64 * 1024;

/// Why the fanotify backend cannot run here (the caller falls back to inotify).
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// `fanotify_init` failed.
    #[error("cannot create a fanotify group ({source}): {hint}")]
    Init {
        /// What to do about it.
        hint: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A filesystem could not be marked.
    #[error("{path}: cannot mark its filesystem for fanotify ({source}): {hint}")]
    Mark {
        /// The root or mount point.
        path: PathBuf,
        /// What to do about it.
        hint: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// One filesystem is reached through two mounts (a bind mount) under the roots: a
    /// directory handle names one path, so one of them would see nothing.
    #[error(
        "{first} and {second} are one filesystem through two mounts (a bind mount): \
         fanotify names each directory by one path, so changes under one of them would be \
         missed"
    )]
    TwoMounts {
        /// The first place.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// The poll or the thread could not be set up.
    #[error("cannot start the fanotify watch thread ({0})")]
    Setup(#[source] io::Error),
}

/// The events asked for: names created, deleted and renamed (directories too) always
/// (they decide what is a root and keep the resolver right), writes and metadata as
/// the toggles ask.
fn fanotify_mask(toggles: &InotifyToggles) -> u64 {
    let mut mask = libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_RENAME | libc::FAN_ONDIR;
    if toggles.close_write || toggles.modify {
        mask |= libc::FAN_CLOSE_WRITE;
    }
    if toggles.modify {
        mask |= libc::FAN_MODIFY;
    }
    if toggles.attrib {
        mask |= libc::FAN_ATTRIB;
    }
    mask
}

/// The kinds one event stands for, in the order they are handled. fanotify merges
/// the events of one name that are still queued into one mask, so the order among them
/// is lost (`touch f; rm f` and `rm f; touch f` both read `CREATE|DELETE`); what is at
/// the name now (`exists`, asked only when a delete is in the mask) restores an order
/// that ends in the right state: a name that is gone ends with its delete, one that
/// exists starts with it.
fn kinds(mask: u64, exists: impl FnOnce() -> bool) -> Vec<Kind> {
    let has = |bit: u64| mask & bit != 0;
    let mut kinds = Vec::with_capacity(2);
    let delete_first = has(libc::FAN_DELETE) && exists();
    if delete_first {
        kinds.push(Kind::Deleted);
    }
    for (bit, kind) in [
        (libc::FAN_CREATE, Kind::Created),
        (libc::FAN_MODIFY, Kind::Modified),
        (libc::FAN_CLOSE_WRITE, Kind::ClosedWrite),
        (libc::FAN_ATTRIB, Kind::Attrib),
    ] {
        if has(bit) {
            kinds.push(kind);
        }
    }
    if has(libc::FAN_DELETE) && !delete_first {
        kinds.push(Kind::Deleted);
    }
    kinds
}

/// `path` with every symlink above it resolved; for a path that does not exist (a
/// missing root), its nearest existing ancestor resolved and the rest as written.
fn canonical(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        if let Ok(real) = fs::canonicalize(at) {
            return missing.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The nearest existing directory at or above `path` (a missing root is marked through
/// its parent's filesystem, so that its creation is seen).
fn existing_dir(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.is_dir())
}

/// Mount points strictly below one of `roots` (another filesystem there needs its own
/// mark), from `/proc/self/mountinfo`.
fn mounts_below(roots: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(info) = fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsString::from_vec(unescape_mountinfo(field))))
        .filter(|mount| {
            roots
                .iter()
                .any(|root| mount != root && mount.starts_with(root))
        })
        .collect()
}

/// `/proc/self/mountinfo` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

fn init_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => "needs CAP_SYS_ADMIN (run sersync as root)",
        Some(libc::EINVAL) => "this kernel lacks FAN_REPORT_DFID_NAME (needs Linux 5.9 or later)",
        Some(libc::EMFILE) => "too many fanotify groups (raise fs.fanotify.max_user_groups)",
        Some(libc::ENOSYS) => "this kernel has no fanotify (CONFIG_FANOTIFY)",
        _ => "see fanotify_init(2)",
    }
}

fn mark_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EINVAL) => "this kernel lacks FAN_RENAME (needs Linux 5.17 or later)",
        Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) => {
            "the filesystem does not hand out file handles (NFS, some FUSE filesystems)"
        }
        Some(libc::EXDEV) => "the filesystem has no usable id (a btrfs subvolume or an overlay)",
        Some(libc::EPERM) => "needs CAP_SYS_ADMIN (run sersync as root)",
        _ => "see fanotify_mark(2)",
    }
}

/// Makes the group and marks every filesystem holding a root (or a mount below one),
/// then starts the thread. Nothing is walked.
pub(super) fn spawn(
    roots: &[PathBuf],
    options: &WatchOptions,
    filter: &Arc<Filter>,
    event_tx: &Sender<FsEvent>,
    metrics: &Arc<Metrics>,
) -> Result<Watcher, FanotifyError> {
    let started = Instant::now();
    // The paths events resolve to are canonical (`/proc/self/fd`): a root below a
    // symlinked directory (`/var/www` with `/var -> /data/var`) is matched by its
    // canonical path, or nothing under it would ever match.
    let roots: Vec<PathBuf> = roots.iter().map(|root| canonical(root)).collect();
    let roots = roots.as_slice();
    // Unlimited: the queue holds every event of the marked filesystems, other
    // processes' included, and an overflow costs a full sync of every root.
    let group = sys::fanotify_init(
        libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_UNLIMITED_QUEUE
            | libc::FAN_REPORT_DFID_NAME,
        libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC,
    )
    .map_err(|source| FanotifyError::Init {
        hint: init_hint(&source),
        source,
    })?;
    let mask = fanotify_mask(&options.toggles);
    let missing: Vec<bool> = roots.iter().map(|root| !root.is_dir()).collect();
    let mut places: Vec<PathBuf> = roots
        .iter()
        .filter_map(|root| existing_dir(root).map(Path::to_path_buf))
        .collect();
    places.extend(mounts_below(roots));
    let mut mounts: Vec<([u8; 8], PathBuf)> = Vec::new();
    let mut mount_ids: Vec<([u8; 8], libc::c_int, PathBuf)> = Vec::new();
    for place in &places {
        let mark_err = |source: io::Error| FanotifyError::Mark {
            path: place.clone(),
            hint: mark_hint(&source),
            source,
        };
        let dir = fs::File::open(place).map_err(mark_err)?;
        let dir = OwnedFd::from(dir);
        let fsid = sys::fsid_of(&dir).map_err(mark_err)?;
        let (_, mount_id) = sys::handle_of(place).map_err(mark_err)?;
        if let Some((_, _, first)) = mount_ids
            .iter()
            .find(|(id, mount, _)| *id == fsid && *mount != mount_id)
        {
            return Err(FanotifyError::TwoMounts {
                first: first.clone(),
                second: place.clone(),
            });
        }
        mount_ids.push((fsid, mount_id, place.clone()));
        if mounts.iter().any(|(id, _)| *id == fsid) {
            continue;
        }
        sys::fanotify_mark(
            &group,
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            mask,
            place,
        )
        .map_err(mark_err)?;
        mounts.push((fsid, place.clone()));
    }
    let mut resolver = Resolver::new(mounts, roots.to_vec());
    resolver.pin(roots);
    for (root, gone) in roots.iter().zip(&missing) {
        if *gone {
            log::error!(
                "{}: root is missing; rescanned as soon as a directory is there",
                root.display()
            );
        }
    }
    log::info!(
        "watching {} root(s) through fanotify marks on {} filesystem(s) ({} ms, nothing walked)",
        roots.len(),
        resolver.filesystems(),
        started.elapsed().as_millis()
    );

    let poll = Poll::new().map_err(FanotifyError::Setup)?;
    poll.registry()
        .register(
            &mut SourceFd(&group.as_raw_fd()),
            super::reader::QUEUE,
            Interest::READABLE,
        )
        .map_err(FanotifyError::Setup)?;
    let waker = Waker::new(poll.registry(), super::reader::WAKE).map_err(FanotifyError::Setup)?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    let watch_count = Arc::new(AtomicUsize::new(resolver.filesystems()));
    metrics
        .watches
        .store(resolver.filesystems() as u64, Ordering::Relaxed);
    metrics.fanotify.store(true, Ordering::Relaxed);
    let log_level = if options.debug {
        log::Level::Debug
    } else {
        log::Level::Trace
    };
    let state = Reader {
        group,
        resolver,
        core: Core::new(
            roots.to_vec(),
            options.toggles,
            Arc::clone(filter),
            Arc::clone(metrics),
            missing,
        ),
        outlet: Outlet::new(event_tx.clone(), stop_rx, roots.len()),
        filter: Arc::clone(filter),
        metrics: Arc::clone(metrics),
        log_level,
        out: Vec::new(),
        buffer: vec![0u64; READ_BUFFER / 8],
    };
    let thread = thread::Builder::new()
        .name("sersync-watch".to_owned())
        .spawn(move || super::reader::run(state, poll))
        .map_err(FanotifyError::Setup)?;
    Ok(Watcher {
        stop_tx: Some(stop_tx),
        waker,
        thread: Some(thread),
        watch_count,
        backend: WatchBackend::Fanotify,
    })
}

/// An update of `rel`.
fn update(root: usize, rel: PathBuf, is_dir: bool, raw: u32, seen: Instant) -> FsEvent {
    super::event::change(root, rel, Op::Update, is_dir, raw, seen)
}

/// How [`Reader::push_what_is_there`] pushes a directory.
#[derive(Debug, Clone, Copy)]
enum DirPush {
    /// An update of it and of everything below it (it arrived as a whole).
    Scan,
    /// A delete then an update: the scheduler syncs it whole (the remote's copy under
    /// that name is something else).
    Replace,
}

/// The thread's state.
struct Reader {
    group: OwnedFd,
    resolver: Resolver,
    core: Core,
    outlet: Outlet,
    filter: Arc<Filter>,
    metrics: Arc<Metrics>,
    log_level: log::Level,
    /// What the core decided for the event at hand.
    out: Vec<Out>,
    /// What `read(2)` fills: u64-aligned, as `fanotify_event_metadata` wants.
    buffer: Vec<u64>,
}

impl super::reader::Queue for Reader {
    fn name(&self) -> &'static str {
        "fanotify"
    }

    fn outlet(&self) -> &Outlet {
        &self.outlet
    }

    fn read_once(&mut self) -> Result<io::Result<bool>, Halt> {
        // Taken out while its bytes are handled (which needs all of `self`).
        let mut buffer = std::mem::take(&mut self.buffer);
        let read = match sys::read(&self.group, &mut buffer) {
            Ok(Some(bytes)) => self.handle_read(bytes).map(|()| Ok(true)),
            Ok(None) => Ok(Ok(false)),
            Err(err) => Ok(Err(err)),
        };
        self.buffer = buffer;
        read
    }

    /// A held modification's settle time.
    fn next_deadline(&self) -> Option<Instant> {
        self.core.next_deadline()
    }

    fn expire(&mut self, now: Instant) -> Flow {
        let mut out = std::mem::take(&mut self.out);
        self.core.expire(now, &mut out);
        self.execute(&mut out)
    }

    fn finish(&mut self) -> Flow {
        let mut out = std::mem::take(&mut self.out);
        self.core.finish(&mut out);
        self.execute(&mut out)
    }

    fn rescan_all_on_stop(&mut self) -> Flow {
        for root in 0..self.core.roots().len() {
            self.rescan_on_stop(root)?;
        }
        Ok(())
    }
}

impl Reader {
    fn rescan_on_stop(&mut self, root: usize) -> Flow {
        self.outlet.rescan_on_stop(root, &self.core.roots()[root])
    }

    /// Decodes one read, resolves each event's directories, and carries out what the
    /// core makes of it, in kernel order.
    fn handle_read(&mut self, bytes: &[u8]) -> Flow {
        let records = match record::parse(bytes) {
            Ok(records) => records,
            Err(err) => {
                // Cannot happen with a kernel that speaks version 3; never guess.
                log::error!("{err}; rescanning every root");
                self.resolver.forget_all();
                let mut out = std::mem::take(&mut self.out);
                self.core
                    .handle(Fact::Overflow, Instant::now(), false, &mut out);
                return self.execute(&mut out);
            }
        };
        let now = Instant::now();
        let mut out = std::mem::take(&mut self.out);
        let mut facts = Vec::new();
        for record in records {
            Metrics::incr(&self.metrics.events_seen);
            self.facts(record, &mut facts);
            for fact in facts.drain(..) {
                let stopping = self.outlet.is_stopping();
                self.core.handle(fact, now, stopping, &mut out);
                self.execute(&mut out)?;
            }
        }
        self.out = out;
        Ok(())
    }

    /// The path an event names, and whether it is the directory itself; `None` when
    /// its directory cannot be resolved, `Some(None)` when it concerns no root.
    fn path(&mut self, at: Named<'_>) -> Option<Option<(PathBuf, bool)>> {
        let Where::At(dir) = self.resolver.dir(at.dir)? else {
            return Some(None);
        };
        Some(Some(match at.name {
            b"" | b"." => (dir, true),
            name => (dir.join(OsStr::from_bytes(name)), false),
        }))
    }

    /// What one record says, appended to `facts` in the order to handle it.
    fn facts(&mut self, record: Record<'_>, facts: &mut Vec<Fact>) {
        match record {
            Record::Overflow => {
                // Renames were lost with the rest: no cached path can be trusted.
                self.resolver.forget_all();
                facts.push(Fact::Overflow);
            }
            Record::Incomplete { mask } => {
                log::debug!("fanotify: event {mask:#x} without its names, dropped");
            }
            Record::Entry { mask, at } => {
                let is_dir = mask & libc::FAN_ONDIR != 0;
                // No name (or `.`): the event is about the directory itself (its
                // `chmod`), which inotify reports through the parent.
                let Some(Some((path, itself))) = self.path(at) else {
                    return; // gone, or concerns no root
                };
                log::log!(self.log_level, "fanotify mask={mask:#x} path={path:?}");
                for kind in kinds(mask, || fs::symlink_metadata(&path).is_ok()) {
                    facts.push(Fact::Entry {
                        kind,
                        path: path.clone(),
                        is_dir: is_dir || itself,
                    });
                }
            }
            Record::Rename { mask, from, to } => {
                let is_dir = mask & libc::FAN_ONDIR != 0;
                let (from, to) = (self.path(from), self.path(to));
                if from == Some(None) && to == Some(None) {
                    return; // both names concern no root, nor do the paths below them
                }
                let from = from.flatten().map(|(p, _)| p);
                let to = to.flatten().map(|(p, _)| p);
                log::log!(
                    self.log_level,
                    "fanotify rename {from:?} -> {to:?} dir={is_dir}"
                );
                if is_dir {
                    // The paths below it changed; a root may be what moved.
                    self.resolver.forget_all();
                    self.resolver.pin(self.core.roots());
                }
                facts.push(Fact::Rename { from, to, is_dir });
            }
        }
    }

    /// Carries out (and empties) `out`.
    fn execute(&mut self, out: &mut Vec<Out>) -> Flow {
        for step in out.drain(..) {
            match step {
                Out::Send(event) => {
                    if matches!(event, FsEvent::Rescan { .. }) {
                        // A root may be back: learn its new handle.
                        self.resolver.pin(self.core.roots());
                    }
                    self.outlet.send(event)?;
                }
                Out::IfCreateOnly {
                    root,
                    rel,
                    mask: raw,
                    seen,
                } => {
                    let abs = self.core.roots()[root].join(&rel);
                    if super::event::is_create_only_at(&abs) {
                        self.outlet.send(update(root, rel, false, raw, seen))?;
                    }
                }
                Out::Again {
                    root,
                    rel,
                    mask: raw,
                    seen,
                } => self.push_what_is_there(root, rel, raw, seen, DirPush::Scan)?,
                Out::Scan {
                    root,
                    rel,
                    mask: raw,
                    seen,
                } => self.scan(root, rel, raw, seen)?,
                Out::Vacated {
                    root,
                    rel,
                    mask: raw,
                    seen,
                } => self.push_what_is_there(root, rel, raw, seen, DirPush::Replace)?,
                Out::RootCheck { root } => {
                    if self.core.roots()[root].is_dir() {
                        let mut back = Vec::new();
                        self.core.root_back(root, &mut back);
                        self.execute(&mut back)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What is at `root`/`rel` now goes out as an update (a directory as `dir` says);
    /// nothing when it is gone (its own events follow).
    fn push_what_is_there(
        &mut self,
        root: usize,
        rel: PathBuf,
        raw: u32,
        seen: Instant,
        dir: DirPush,
    ) -> Flow {
        let abs = self.core.roots()[root].join(&rel);
        let Ok(meta) = fs::symlink_metadata(&abs) else {
            return Ok(());
        };
        match (meta.is_dir(), dir) {
            (true, DirPush::Scan) => self.scan(root, rel, raw, seen),
            (true, DirPush::Replace) => {
                let delete = super::event::change(root, rel.clone(), Op::Delete, true, raw, seen);
                self.outlet.send(delete)?;
                self.outlet.send(update(root, rel, true, raw, seen))
            }
            (false, _) => self.outlet.send(update(root, rel, false, raw, seen)),
        }
    }

    /// A directory that arrived from outside: an update of it and of everything below
    /// it that is not excluded (excluded directories are not entered, symlinks not
    /// followed). Depth first with an explicit stack.
    fn scan(&mut self, root: usize, rel: PathBuf, raw: u32, seen: Instant) -> Flow {
        let mut stack = vec![(rel, raw)];
        while let Some((rel, raw)) = stack.pop() {
            if self.outlet.is_stopping() {
                return self.rescan_on_stop(root);
            }
            self.outlet
                .send(update(root, rel.clone(), true, raw, seen))?;
            let abs = self.core.roots()[root].join(&rel);
            let Ok(entries) = fs::read_dir(&abs) else {
                continue; // gone or renamed meanwhile: its own events follow
            };
            for entry in entries.flatten() {
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                let is_dir = file_type.is_dir();
                let child = rel.join(entry.file_name());
                if self.filter.matches(&child, is_dir) {
                    continue;
                }
                if is_dir {
                    stack.push((child, 0));
                } else {
                    self.outlet.send(update(root, child, false, 0, seen))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        let table: &[(&[u8], &[u8])] = &[
            (b"/srv/www", b"/srv/www"),
            (b"/mnt/with\\040space", b"/mnt/with space"),
            (b"/a\\011tab\\012nl\\134bs", b"/a\ttab\nnl\\bs"),
            (b"/trailing\\04", b"/trailing\\04"),
            (b"/not\\9999octal", b"/not\\9999octal"),
        ];
        for (raw, expected) in table {
            assert_eq!(&unescape_mountinfo(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn the_mask_follows_the_toggles_and_always_keeps_names_and_renames() {
        let always = libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_RENAME | libc::FAN_ONDIR;
        let off = InotifyToggles::none();
        assert_eq!(fanotify_mask(&off), always);
        let stock = InotifyToggles::default();
        assert_eq!(fanotify_mask(&stock), always | libc::FAN_CLOSE_WRITE);
        let all = InotifyToggles {
            modify: true,
            attrib: true,
            ..InotifyToggles::none()
        };
        assert_eq!(
            fanotify_mask(&all),
            always | libc::FAN_CLOSE_WRITE | libc::FAN_MODIFY | libc::FAN_ATTRIB
        );
    }

    #[test]
    fn merged_events_are_ordered_so_that_the_last_kind_matches_the_name_now() {
        use Kind::*;
        const C: u64 = libc::FAN_CREATE;
        const D: u64 = libc::FAN_DELETE;
        const W: u64 = libc::FAN_CLOSE_WRITE;
        const M: u64 = libc::FAN_MODIFY;
        const A: u64 = libc::FAN_ATTRIB;
        // (mask, exists now, kinds in order)
        #[rustfmt::skip]
        let table: &[(u64, bool, &[Kind])] = &[
            (C, true, &[Created]),
            (C | libc::FAN_ONDIR, true, &[Created]),
            (W, true, &[ClosedWrite]),
            (C | M | W, true, &[Created, Modified, ClosedWrite]),
            (C | W | A, true, &[Created, ClosedWrite, Attrib]),
            (D, false, &[Deleted]),
            // `touch f; rm f`: gone, so the delete goes last.
            (C | D, false, &[Created, Deleted]),
            (C | W | D, false, &[Created, ClosedWrite, Deleted]),
            // `rm f; echo x > f`: there, so the delete goes first.
            (C | D, true, &[Deleted, Created]),
            (C | W | D, true, &[Deleted, Created, ClosedWrite]),
            // `rm f` then `mv g f` (the rename is an event of its own).
            (D, true, &[Deleted]),
            (libc::FAN_ACCESS, true, &[]),
        ];
        for (mask, exists, expected) in table {
            assert_eq!(
                &kinds(*mask, || *exists),
                expected,
                "{mask:#x} exists={exists}"
            );
        }
        // Without a delete nothing is asked of the filesystem.
        assert_eq!(kinds(C | W, || panic!("asked")), vec![Created, ClosedWrite]);
    }
}
