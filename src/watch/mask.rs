//! Pure mapping between sersync's `<inotify>` toggles and inotify masks.
//!
//! Two directions: the toggles decide which kernel events we subscribe to
//! ([`watch_mask`]), and for each event read, its mask plus the toggles decide what the
//! remote has to do ([`kind`], [`emit`]). The events that keep the watch map right
//! (directory creation, moves, self deletion, `IN_IGNORED`) are subscribed whatever the
//! toggles say; the toggles only decide which `Change`s are emitted.

use inotify::{EventMask, WatchMask};

use crate::config::InotifyToggles;
use crate::job::Op;

/// The mask every directory is watched with.
///
/// Always on, whatever the toggles say:
/// - `CREATE`: new directories must be watched, and objects that produce nothing but
///   `IN_CREATE` (symlinks, fifos, device nodes, hard links) must still be pushed when
///   `createFile` is off (the original's bug B6);
/// - `MOVED_FROM`/`MOVED_TO`: renamed directories change the paths of their subtree;
/// - `DELETE_SELF`/`MOVE_SELF`: a root that disappears is reported;
/// - `ONLYDIR`/`DONT_FOLLOW`: the kernel checks, race free, that we watch a directory
///   and never a symlink's target; `EXCL_UNLINK`: no events for unlinked children that
///   are still open.
pub(crate) fn watch_mask(toggles: &InotifyToggles) -> WatchMask {
    let mut mask = WatchMask::CREATE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK;
    if toggles.delete {
        mask |= WatchMask::DELETE;
    }
    // With `modify`, the close releases the held writes as one update (`held.rs`).
    if toggles.close_write || toggles.modify {
        mask |= WatchMask::CLOSE_WRITE;
    }
    if toggles.modify {
        mask |= WatchMask::MODIFY;
    }
    if toggles.attrib {
        mask |= WatchMask::ATTRIB;
    }
    mask
}

/// What one raw event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The kernel queue overflowed; events were lost (wd is -1).
    Overflow,
    /// The kernel removed the watch (after deletion, unmount or `inotify_rm_watch`).
    Ignored,
    /// The watched directory itself was deleted.
    SelfDeleted,
    /// The watched directory itself was moved.
    SelfMoved,
    /// The filesystem holding the watched directory was unmounted.
    Unmounted,
    /// A name appeared in the directory.
    Created,
    /// A name was removed from the directory.
    Deleted,
    /// A name was moved away (maybe paired with a `MovedTo` by cookie).
    MovedFrom,
    /// A name was moved in (maybe paired with a `MovedFrom` by cookie).
    MovedTo,
    /// A file opened for writing was closed.
    ClosedWrite,
    /// A file was written to.
    Modified,
    /// Metadata changed (permissions, owner, timestamps, link count).
    Attrib,
    /// Anything we did not subscribe to.
    Other,
}

/// Classifies a raw mask. Each event carries exactly one event bit plus flags such as
/// `ISDIR`; the order below only matters for the flag-like bits.
pub(crate) fn kind(mask: EventMask) -> Kind {
    if mask.contains(EventMask::Q_OVERFLOW) {
        Kind::Overflow
    } else if mask.contains(EventMask::IGNORED) {
        Kind::Ignored
    } else if mask.contains(EventMask::UNMOUNT) {
        Kind::Unmounted
    } else if mask.contains(EventMask::DELETE_SELF) {
        Kind::SelfDeleted
    } else if mask.contains(EventMask::MOVE_SELF) {
        Kind::SelfMoved
    } else if mask.contains(EventMask::CREATE) {
        Kind::Created
    } else if mask.contains(EventMask::DELETE) {
        Kind::Deleted
    } else if mask.contains(EventMask::MOVED_FROM) {
        Kind::MovedFrom
    } else if mask.contains(EventMask::MOVED_TO) {
        Kind::MovedTo
    } else if mask.contains(EventMask::CLOSE_WRITE) {
        Kind::ClosedWrite
    } else if mask.contains(EventMask::MODIFY) {
        Kind::Modified
    } else if mask.contains(EventMask::ATTRIB) {
        Kind::Attrib
    } else {
        Kind::Other
    }
}

/// What the toggles make of a directory-entry event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Emit {
    /// Nothing goes to the remote.
    Nothing,
    /// Emit a change with this op.
    Change(Op),
    /// `IN_CREATE` of a non-directory with `createFile` off: a regular file is pushed
    /// later on `IN_CLOSE_WRITE`, but anything that never gets one must be pushed now;
    /// the caller decides with `lstat` and [`is_create_only`].
    IfCreateOnly,
}

/// Decides what an event on `name` inside a watched directory means for the remote.
/// Moves are decided here per half; pairing them is the caller's job.
pub(crate) fn emit(kind: Kind, is_dir: bool, toggles: &InotifyToggles) -> Emit {
    let update = |on: bool| {
        if on {
            Emit::Change(Op::Update)
        } else {
            Emit::Nothing
        }
    };
    let delete = |on: bool| {
        if on {
            Emit::Change(Op::Delete)
        } else {
            Emit::Nothing
        }
    };
    match kind {
        Kind::Created if is_dir => update(toggles.create_folder),
        Kind::Created if toggles.create_file => Emit::Change(Op::Update),
        Kind::Created => Emit::IfCreateOnly,
        Kind::Deleted => delete(toggles.delete),
        Kind::MovedFrom => delete(toggles.move_from),
        Kind::MovedTo => update(toggles.move_to),
        Kind::ClosedWrite => update(toggles.close_write),
        Kind::Modified => update(toggles.modify),
        // sersync 2.5 turned IN_ATTRIB into a delete and unwatched the directory (B3).
        Kind::Attrib => update(toggles.attrib),
        Kind::Overflow
        | Kind::Ignored
        | Kind::SelfDeleted
        | Kind::SelfMoved
        | Kind::Unmounted
        | Kind::Other => Emit::Nothing,
    }
}

/// Whether a new directory gets watched (and scanned). `createFolder=false` keeps the
/// original meaning: new directories are neither pushed nor watched. A directory moved
/// in is always watched, so that the map matches the tree whatever `moveTo` says.
pub(crate) fn watches_new_dir(kind: Kind, toggles: &InotifyToggles) -> bool {
    match kind {
        Kind::Created => toggles.create_folder,
        Kind::MovedTo => true,
        _ => false,
    }
}

/// Whether a just created non-directory will never see `IN_CLOSE_WRITE`, judged from
/// its `lstat`: anything but a regular file (symlink, fifo, socket, device node), or a
/// regular file with more than one link (a new hard link to existing content).
pub(crate) fn is_create_only(is_regular_file: bool, nlink: u64) -> bool {
    !is_regular_file || nlink > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_off() -> InotifyToggles {
        InotifyToggles::none()
    }

    const ALWAYS: WatchMask = WatchMask::CREATE
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF)
        .union(WatchMask::ONLYDIR)
        .union(WatchMask::DONT_FOLLOW)
        .union(WatchMask::EXCL_UNLINK);

    #[test]
    fn map_keeping_events_are_always_subscribed() {
        assert_eq!(watch_mask(&all_off()), ALWAYS);
    }

    #[test]
    fn stock_toggles_subscribe_delete_and_close_write() {
        let mask = watch_mask(&InotifyToggles::default());
        assert_eq!(mask, ALWAYS | WatchMask::DELETE | WatchMask::CLOSE_WRITE);
    }

    #[test]
    fn each_toggle_adds_its_bit() {
        type Set = fn(&mut InotifyToggles);
        let cases: [(Set, WatchMask); 4] = [
            (|t| t.delete = true, WatchMask::DELETE),
            (|t| t.close_write = true, WatchMask::CLOSE_WRITE),
            (
                |t| t.modify = true,
                WatchMask::MODIFY.union(WatchMask::CLOSE_WRITE),
            ),
            (|t| t.attrib = true, WatchMask::ATTRIB),
        ];
        for (set, bit) in cases {
            let mut toggles = all_off();
            set(&mut toggles);
            assert_eq!(watch_mask(&toggles), ALWAYS | bit, "{bit:?}");
        }
        // These only change what is emitted, never the subscription.
        let mut toggles = all_off();
        toggles.create_file = true;
        toggles.create_folder = true;
        toggles.move_from = true;
        toggles.move_to = true;
        assert_eq!(watch_mask(&toggles), ALWAYS);
    }

    #[test]
    fn kinds_from_raw_masks() {
        let cases = [
            (EventMask::Q_OVERFLOW, Kind::Overflow),
            (EventMask::IGNORED, Kind::Ignored),
            (EventMask::UNMOUNT, Kind::Unmounted),
            (EventMask::DELETE_SELF, Kind::SelfDeleted),
            (EventMask::MOVE_SELF, Kind::SelfMoved),
            (EventMask::CREATE, Kind::Created),
            (EventMask::CREATE | EventMask::ISDIR, Kind::Created),
            (EventMask::DELETE | EventMask::ISDIR, Kind::Deleted),
            (EventMask::MOVED_FROM, Kind::MovedFrom),
            (EventMask::MOVED_TO | EventMask::ISDIR, Kind::MovedTo),
            (EventMask::CLOSE_WRITE, Kind::ClosedWrite),
            (EventMask::MODIFY, Kind::Modified),
            (EventMask::ATTRIB | EventMask::ISDIR, Kind::Attrib),
            (EventMask::OPEN, Kind::Other),
        ];
        for (mask, expected) in cases {
            assert_eq!(kind(mask), expected, "{mask:?}");
        }
    }

    #[test]
    fn stock_toggles_emit() {
        let t = InotifyToggles::default();
        let update = Emit::Change(Op::Update);
        let delete = Emit::Change(Op::Delete);
        assert_eq!(emit(Kind::Created, true, &t), update);
        assert_eq!(emit(Kind::Created, false, &t), Emit::IfCreateOnly);
        assert_eq!(emit(Kind::ClosedWrite, false, &t), update);
        assert_eq!(emit(Kind::Deleted, false, &t), delete);
        assert_eq!(emit(Kind::Deleted, true, &t), delete);
        assert_eq!(emit(Kind::MovedFrom, true, &t), delete);
        assert_eq!(emit(Kind::MovedTo, false, &t), update);
        assert_eq!(emit(Kind::Modified, false, &t), Emit::Nothing);
        assert_eq!(emit(Kind::Attrib, false, &t), Emit::Nothing);
    }

    #[test]
    fn attrib_is_an_update_never_a_delete() {
        let mut t = all_off();
        t.attrib = true;
        assert_eq!(emit(Kind::Attrib, true, &t), Emit::Change(Op::Update));
        assert_eq!(emit(Kind::Attrib, false, &t), Emit::Change(Op::Update));
    }

    #[test]
    fn create_file_pushes_files_on_create() {
        let mut t = all_off();
        t.create_file = true;
        assert_eq!(emit(Kind::Created, false, &t), Emit::Change(Op::Update));
        assert_eq!(emit(Kind::Created, true, &t), Emit::Nothing);
    }

    #[test]
    fn all_off_emits_nothing() {
        let t = all_off();
        for kind in [
            Kind::Deleted,
            Kind::MovedFrom,
            Kind::MovedTo,
            Kind::ClosedWrite,
            Kind::Modified,
            Kind::Attrib,
            Kind::Overflow,
            Kind::Ignored,
            Kind::SelfDeleted,
            Kind::SelfMoved,
            Kind::Other,
        ] {
            assert_eq!(emit(kind, false, &t), Emit::Nothing, "{kind:?}");
            assert_eq!(emit(kind, true, &t), Emit::Nothing, "{kind:?}");
        }
    }

    #[test]
    fn new_directory_watching() {
        let mut t = all_off();
        assert!(!watches_new_dir(Kind::Created, &t));
        assert!(watches_new_dir(Kind::MovedTo, &t));
        t.create_folder = true;
        assert!(watches_new_dir(Kind::Created, &t));
        assert!(!watches_new_dir(Kind::Attrib, &t));
    }

    #[test]
    fn create_only_objects() {
        assert!(
            !is_create_only(true, 1),
            "fresh regular file waits for close_write"
        );
        assert!(is_create_only(true, 2), "hard link");
        assert!(is_create_only(false, 1), "symlink, fifo, device");
    }
}
