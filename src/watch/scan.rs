//! Walking directory trees to add watches: the parallel walk used at startup and after an
//! overflow, and the watch-limit (ENOSPC) diagnosis.
//!
//! Every directory is watched *before* it is read, so that an entry created while we
//! walk is either seen by `read_dir` or reported by the new watch (both, at worst). The
//! walk emits no events: the startup full sync, or the `Rescan` that follows an
//! overflow, covers what already exists. Excluded directories are never watched and
//! never entered; symlinks are never followed (`DirEntry::file_type` is an `lstat`
//! when the filesystem reports `DT_UNKNOWN`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use inotify::{WatchDescriptor, WatchMask, Watches};

use crate::filter::Filter;

/// Where the kernel publishes the per-user watch limit.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";
/// The same limit as seen by the current user namespace (Linux 5.11+).
const MAX_INOTIFY_WATCHES_NS: &str = "/proc/sys/user/max_inotify_watches";

/// A watch added by a walk.
#[derive(Debug)]
pub(crate) struct Added {
    pub(crate) wd: WatchDescriptor,
    pub(crate) root: usize,
    pub(crate) rel: PathBuf,
}

/// What a walk over every root found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Watches added (or found again: the kernel returns the existing descriptor).
    pub(crate) added: Vec<Added>,
    /// Roots whose top directory could not be watched at all, with the reason.
    pub(crate) failed_roots: Vec<(usize, io::Error)>,
    /// Roots where the watch limit was hit, with the first directory left unwatched.
    pub(crate) out_of_watches: Vec<(usize, PathBuf)>,
}

/// Shared, read-only state of one parallel walk.
struct Ctx<'a> {
    roots: &'a [PathBuf],
    watches: &'a Watches,
    mask: WatchMask,
    filter: &'a Filter,
    log_level: log::Level,
    added: Mutex<Vec<Added>>,
    /// One flag per root: once ENOSPC is seen, every further add would fail too.
    full: Vec<AtomicBool>,
    first_unwatched: Mutex<Vec<(usize, PathBuf)>>,
}

impl Ctx<'_> {
    /// Adds one watch; `Ok(false)` when the directory is gone or is no directory any
    /// more (the events for that arrive on the parent's watch).
    fn add(&self, root: usize, rel: &Path) -> io::Result<bool> {
        if self.full[root].load(Ordering::Relaxed) {
            return Ok(false);
        }
        let abs = self.roots[root].join(rel);
        match self.watches.clone().add(&abs, self.mask) {
            Ok(wd) => {
                log::log!(
                    self.log_level,
                    "{}: watching (wd {})",
                    abs.display(),
                    wd.get_watch_descriptor_id()
                );
                lock(&self.added).push(Added {
                    wd,
                    root,
                    rel: rel.to_path_buf(),
                });
                Ok(true)
            }
            Err(err) if is_out_of_watches(&err) => {
                if !self.full[root].swap(true, Ordering::Relaxed) {
                    lock(&self.first_unwatched).push((root, abs));
                }
                Ok(false)
            }
            // For a root, "gone" is the failure to report.
            Err(err) if is_gone(&err) && !rel.as_os_str().is_empty() => {
                log::debug!("{}: vanished before it could be watched", abs.display());
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }
}

/// Watches every root and every non-excluded directory below, in parallel (rayon).
/// Directories already watched get their existing descriptor back, so this also
/// serves to rebuild the map after an overflow.
pub(crate) fn walk(
    roots: &[PathBuf],
    watches: &Watches,
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
        added: Mutex::new(Vec::new()),
        full: roots.iter().map(|_| AtomicBool::new(false)).collect(),
        first_unwatched: Mutex::new(Vec::new()),
    };
    let failed_roots = Mutex::new(Vec::new());
    rayon::scope(|scope| {
        for root in 0..roots.len() {
            let ctx = &ctx;
            let failed_roots = &failed_roots;
            scope.spawn(move |scope| match ctx.add(root, Path::new("")) {
                Ok(true) => walk_dir(scope, ctx, root, PathBuf::new()),
                Ok(false) => {} // out of watches: reported through `out_of_watches`
                Err(err) => lock(failed_roots).push((root, err)),
            });
        }
    });
    Walk {
        added: into_inner(ctx.added),
        failed_roots: into_inner(failed_roots),
        out_of_watches: into_inner(ctx.first_unwatched),
    }
}

/// Reads one already watched directory and watches its subdirectories, each of which
/// is then read by its own rayon task.
fn walk_dir<'s>(scope: &rayon::Scope<'s>, ctx: &'s Ctx<'s>, root: usize, rel: PathBuf) {
    let abs = ctx.roots[root].join(&rel);
    let entries = match fs::read_dir(&abs) {
        Ok(entries) => entries,
        Err(err) => {
            log_read_error(&abs, &err);
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                log_read_error(&abs, &err);
                return;
            }
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let child = rel.join(entry.file_name());
        // The parents were checked on the way down; only the name itself is new.
        if ctx.filter.matches(&child, true) {
            log::debug!(
                "{}: excluded, not watched",
                abs.join(entry.file_name()).display()
            );
            continue;
        }
        match ctx.add(root, &child) {
            Ok(true) => scope.spawn(move |scope| walk_dir(scope, ctx, root, child)),
            Ok(false) => {}
            Err(err) => log::warn!(
                "{}: cannot watch, changes below it are not seen: {err}",
                ctx.roots[root].join(&child).display()
            ),
        }
    }
}

/// Counts the directories that watching every root needs (excluded subtrees left out),
/// for the ENOSPC message.
pub(crate) fn count_dirs(roots: &[PathBuf], filter: &Filter) -> usize {
    let mut count = 0;
    for root in roots {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let Ok(entries) = fs::read_dir(root.join(&rel)) else {
                continue;
            };
            count += 1;
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let child = rel.join(entry.file_name());
                    if !filter.is_excluded(&child, true) {
                        stack.push(child);
                    }
                }
            }
        }
    }
    count
}

/// The one error logged when the watch limit is hit: names the sysctl, its value, how
/// many directories the trees need and what happens meanwhile. Never writes `/proc/sys`.
pub(crate) fn out_of_watches_message(dir: &Path, watched: usize, needed: usize) -> String {
    let global = read_number(MAX_USER_WATCHES);
    // Inside a user namespace (a container) the namespace's own limit may be lower.
    let namespace = read_number(MAX_INOTIFY_WATCHES_NS).filter(|ns| Some(*ns) != global);
    let mut limit_text = global.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    if let Some(ns) = namespace {
        limit_text.push_str(&format!(
            " (user.max_inotify_watches of this user namespace: {ns})"
        ));
    }
    let effective = match (global, namespace) {
        (Some(g), Some(ns)) => g.min(ns),
        (limit, None) | (None, limit) => limit.unwrap_or(0),
    };
    // Room for growth; the limit is per user and shared with its other processes.
    let needed = needed as u64;
    let suggest = needed
        .saturating_mul(2)
        .max(effective.saturating_add(needed));
    format!(
        "{}: cannot watch, out of inotify watches: fs.inotify.max_user_watches is {limit_text}, \
         per user and shared by all its processes; this process watches {watched} directories and \
         the trees need {needed}; raise it, e.g. `sysctl -w fs.inotify.max_user_watches={suggest}` \
         (and in /etc/sysctl.d/ to persist), then restart; until then directories left unwatched \
         are only covered by full syncs",
        dir.display()
    )
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
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

    #[test]
    fn message_names_sysctl_and_counts() {
        let msg = out_of_watches_message(Path::new("/srv/www/a"), 8190, 12000);
        assert!(msg.starts_with("/srv/www/a: cannot watch"), "{msg}");
        assert!(msg.contains("fs.inotify.max_user_watches is "), "{msg}");
        assert!(msg.contains("watches 8190 directories"), "{msg}");
        assert!(msg.contains("need 12000"), "{msg}");
    }

    #[test]
    fn count_dirs_skips_excluded_and_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["a/b", "a/c", "skip/x"] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).expect("symlink");
        fs::write(dir.path().join("a/f"), "x").expect("write");
        let filter = Filter::new(vec![regex::bytes::Regex::new("skip").expect("regex")]);
        // root, a, a/b, a/c
        assert_eq!(count_dirs(&[dir.path().to_path_buf()], &filter), 4);
        assert_eq!(
            count_dirs(&[dir.path().to_path_buf()], &Filter::default()),
            6
        );
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
