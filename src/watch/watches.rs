//! The inotify instance as the walks and the event thread use it: adding and removing
//! watches by descriptor number, from any thread, without allocating.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use inotify::WatchMask;

/// The inotify instance, for adding and removing watches from any thread: a duplicate of
/// the descriptor the `sersync-watch` thread reads (the same instance). A watch is its
/// descriptor number, which the kernel hands out; the map keeps nothing else per watch.
#[derive(Debug)]
pub(crate) struct WatchFd(OwnedFd);

impl WatchFd {
    pub(crate) fn new(inotify: BorrowedFd<'_>) -> io::Result<WatchFd> {
        Ok(WatchFd(inotify.try_clone_to_owned()?))
    }

    /// `inotify_add_watch`: the descriptor of the watch on `path` (the existing one when
    /// the inode is watched already). A name (`&CStr`) is passed as it is, a path
    /// through a buffer on the stack (when under 256 bytes): no allocation.
    pub(crate) fn add<P: rustix::path::Arg>(&self, path: P, mask: WatchMask) -> io::Result<i32> {
        let flags = rustix::fs::inotify::WatchFlags::from_bits_retain(mask.bits());
        Ok(rustix::fs::inotify::add_watch(&self.0, path, flags)?)
    }

    /// `inotify_rm_watch`; EINVAL when the kernel dropped the watch already.
    pub(crate) fn remove(&self, wd: i32) -> io::Result<()> {
        Ok(rustix::fs::inotify::remove_watch(&self.0, wd)?)
    }
}
