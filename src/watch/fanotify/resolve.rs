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

/// The marked filesystems and the directory paths learnt so far.
pub(crate) struct Resolver {
    /// Per filesystem id: a descriptor on it (the root or mount point that was marked).
    mounts: Vec<([u8; 8], OwnedFd)>,
    cache: HashMap<Box<[u8]>, PathBuf>,
    /// The roots' own handles, kept through every [`Resolver::forget_all`]: `rm -r` of a
    /// root reports the deletes of its entries in the root, read when the root is gone
    /// already and its handle cannot be opened any more.
    pinned: Vec<(Box<[u8]>, PathBuf)>,
    /// Directories whose path is too long to read, already reported.
    too_long: std::collections::HashSet<Box<[u8]>>,
}

impl Resolver {
    pub(crate) fn new(mounts: Vec<([u8; 8], OwnedFd)>) -> Resolver {
        Resolver {
            mounts,
            cache: HashMap::new(),
            pinned: Vec::new(),
            too_long: std::collections::HashSet::new(),
        }
    }

    /// Learns the handles of the roots that are directories now (at start, after a
    /// directory rename, when a root comes back).
    pub(crate) fn pin(&mut self, roots: &[PathBuf]) {
        self.pinned.clear();
        for root in roots {
            let Ok(dir) = fs::File::open(root) else {
                continue;
            };
            let (Ok(fsid), Ok(handle)) = (
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
            self.cache.insert(key.clone(), path.clone());
        }
    }

    /// Number of marked filesystems.
    pub(crate) fn filesystems(&self) -> usize {
        self.mounts.len()
    }

    /// Where the directory is now; `None` when it is gone or cannot be reached.
    pub(crate) fn dir(&mut self, id: DirId<'_>) -> Option<PathBuf> {
        if let Some(path) = self.cache.get(id.key) {
            return Some(path.clone());
        }
        let fsid = id.fsid();
        let mount = &self.mounts.iter().find(|(id, _)| *id == fsid)?.1;
        let path = match super::sys::open_by_handle(mount, id.handle()).and_then(|fd| path_of(&fd))
        {
            Ok(path) => path?,
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
                // ESTALE: deleted since the event.
                log::trace!("fanotify: directory handle not resolved: {err}");
                return None;
            }
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.forget_all();
        }
        self.cache.insert(id.key.into(), path.clone());
        Some(path)
    }

    /// A directory was renamed: every cached path below it is wrong now.
    pub(crate) fn forget_all(&mut self) {
        self.cache.clear();
        for (key, path) in &self.pinned {
            self.cache.insert(key.clone(), path.clone());
        }
    }
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
