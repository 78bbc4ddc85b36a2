//! From the kernel's directory handles to paths: `open_by_handle_at` through a
//! descriptor on the same filesystem, then `/proc/self/fd` says where the directory is
//! now. Checked against the name (an `lstat` of that path must be the same inode, so
//! that a directory unlinked or renamed meanwhile, or one not reachable through our
//! mount, never lends its old or partial name to an event), and cached until a
//! directory is renamed anywhere on the marked filesystems (which changes the paths of
//! everything below it).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::record::DirId;

/// Past this many cached directories the cache starts again (directories outside the
/// roots are cached too: a filesystem mark reports the whole filesystem).
const CACHE_LIMIT: usize = 65_536;

/// What the resolver knows of a directory handle.
#[derive(Debug, Clone)]
enum Known {
    /// Its path when last resolved.
    At(PathBuf),
    /// Neither at or below a root nor above one: nothing in it can concern a root, and
    /// renaming it cannot change a root's paths (every directory above one that
    /// matters matters too). Events there are dropped at once.
    Elsewhere,
    /// `ESTALE`: deleted. Handles are not reused, so it stays that way (and events
    /// of other processes' deleted directories are not opened again and again).
    Gone,
}

/// A directory, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Where {
    /// At this path, at or below a root or above one.
    At(PathBuf),
    /// Somewhere that concerns no root.
    Elsewhere,
}

/// The marked filesystems and the directory paths learnt so far.
pub(crate) struct Resolver {
    /// The roots (canonical), to tell [`Where::Elsewhere`].
    roots: Vec<PathBuf>,
    /// Per filesystem id: a directory on it (the root or mount point that was marked),
    /// opened for each handle to resolve, not held: a held descriptor would keep a
    /// filesystem mounted below a root from being unmounted.
    mounts: Vec<([u8; 8], PathBuf)>,
    cache: HashMap<Box<[u8]>, Known>,
    /// The roots' own handles, kept through every [`Resolver::forget_all`]: `rm -r` of a
    /// root reports the deletes of its entries in the root, read when the root is gone
    /// already and its handle cannot be opened any more.
    pinned: Vec<(Box<[u8]>, PathBuf)>,
    /// Directories whose path is too long to read, already reported.
    too_long: std::collections::HashSet<Box<[u8]>>,
}

impl Resolver {
    pub(crate) fn new(mounts: Vec<([u8; 8], PathBuf)>, roots: Vec<PathBuf>) -> Resolver {
        Resolver {
            roots,
            mounts,
            cache: HashMap::new(),
            pinned: Vec::new(),
            too_long: std::collections::HashSet::new(),
        }
    }

    /// Learns the handles of the roots that are directories now (at start, after a
    /// directory rename, when a root comes back); a root's old handle is forgotten (a
    /// root moved away must not lend its name to what happens in it now).
    pub(crate) fn pin(&mut self, roots: &[PathBuf]) {
        for (key, _) in std::mem::take(&mut self.pinned) {
            self.cache.remove(&key);
        }
        for root in roots {
            let Ok(dir) = fs::File::open(root) else {
                continue;
            };
            let (Ok(fsid), Ok((handle, _))) = (
                super::sys::fsid_of(&OwnedFd::from(dir)),
                super::sys::handle_of(root),
            ) else {
                continue;
            };
            let mut key = fsid.to_vec();
            key.extend_from_slice(&handle);
            self.pinned.push((key.into_boxed_slice(), root.clone()));
        }
        for (key, path) in &self.pinned {
            self.cache.insert(key.clone(), Known::At(path.clone()));
        }
    }

    /// Number of marked filesystems.
    pub(crate) fn filesystems(&self) -> usize {
        self.mounts.len()
    }

    /// Where the directory is now; `None` when it is gone or cannot be reached.
    pub(crate) fn dir(&mut self, id: DirId<'_>) -> Option<Where> {
        match self.cache.get(id.key) {
            Some(Known::At(path)) => return Some(Where::At(path.clone())),
            Some(Known::Elsewhere) => return Some(Where::Elsewhere),
            Some(Known::Gone) => return None,
            None => {}
        }
        let fsid = id.fsid();
        let place = &self.mounts.iter().find(|(id, _)| *id == fsid)?.1;
        let opened = open_on(place, fsid)
            .and_then(|mount| super::sys::open_by_handle(&mount, id.handle()))
            .and_then(|fd| path_of(&fd));
        let path = match opened {
            Ok(path) => path?, // not named by its path (renamed, unlinked): not cached
            Err(err) if err.raw_os_error() == Some(libc::ESTALE) => {
                self.remember(id.key, Known::Gone);
                return None;
            }
            Err(err) if err.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                if self.too_long.len() < CACHE_LIMIT && self.too_long.insert(id.key.into()) {
                    log::warn!(
                        "fanotify: a directory's path is longer than PATH_MAX ({err}); its \
                         changes reach the mirror only with a full sync (rename a directory \
                         above it to a shorter name)"
                    );
                }
                return None;
            }
            Err(err) => {
                log::debug!("fanotify: directory handle not resolved: {err}");
                return None;
            }
        };
        let matters = self
            .roots
            .iter()
            .any(|root| root.starts_with(&path) || path.starts_with(root));
        if !matters {
            self.remember(id.key, Known::Elsewhere);
            return Some(Where::Elsewhere);
        }
        self.remember(id.key, Known::At(path.clone()));
        Some(Where::At(path))
    }

    fn remember(&mut self, key: &[u8], known: Known) {
        if self.cache.len() >= CACHE_LIMIT {
            self.forget_all();
        }
        self.cache.insert(key.into(), known);
    }

    /// A directory that matters was renamed (or events were lost): every cached path
    /// below it may be wrong now. What is known gone stays gone.
    pub(crate) fn forget_all(&mut self) {
        self.cache.retain(|_, known| matches!(known, Known::Gone));
        if self.cache.len() >= CACHE_LIMIT / 2 {
            self.cache.clear();
        }
        for (key, path) in &self.pinned {
            self.cache.insert(key.clone(), Known::At(path.clone()));
        }
    }
}

/// A descriptor on the filesystem `fsid` through `place` or, when it is gone (a root
/// deleted: its deletion is reported in its parent), the nearest directory above it
/// that is still on that filesystem.
fn open_on(place: &std::path::Path, fsid: [u8; 8]) -> io::Result<OwnedFd> {
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for dir in place.ancestors() {
        match fs::File::open(dir) {
            Ok(file) => {
                let fd = OwnedFd::from(file);
                if super::sys::fsid_of(&fd)? == fsid {
                    return Ok(fd);
                }
                // Another filesystem: the marked one is not reachable from here.
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// The path of an open directory, if that path still names it.
fn path_of(fd: &OwnedFd) -> io::Result<Option<PathBuf>> {
    let link = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let opened = rustix::fs::fstat(fd)?;
    if opened.st_nlink == 0 || !link.is_absolute() {
        return Ok(None);
    }
    Ok(match rustix::fs::lstat(&link) {
        Ok(named) if named.st_dev == opened.st_dev && named.st_ino == opened.st_ino => Some(link),
        _ => None,
    })
}
