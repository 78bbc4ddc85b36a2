//! The currency passed between stages: filesystem events, push jobs and their outcomes.
//!
//! Paths here are always relative to their root (`a/b/c.txt`, no leading `/`), held as
//! `PathBuf` so that non-UTF-8 names survive byte-exact.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use crate::rel::Rel;

/// What has to happen to a path on a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Make the remote copy equal to the local one (create, modify, attrib, moved in).
    Update,
    /// Remove the remote copy (deleted, moved out).
    Delete,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Update => "update",
            Op::Delete => "delete",
        })
    }
}

/// One change seen by the watcher, already filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    /// A path under a root changed.
    Change(Change),
    /// Events of this root may have been lost (inotify queue overflow, a subtree that
    /// could not be watched): the whole root must be synced again.
    Rescan {
        /// Index of the root in `Config::roots`.
        root: usize,
    },
    /// The watcher stopped while this root was still changing: what changes from here
    /// on is seen by nobody until the next start's watches are in place, so the root is
    /// journaled for a full sync (run by the next start, even without `-r`).
    ChangingAtStop {
        /// Index of the root in `Config::roots`.
        root: usize,
    },
    /// A path was renamed inside one root, both ends not excluded: one operation, so
    /// that the remote can make `to` from what it holds at `from` (`coalesce` decides
    /// whether it can, `push` how).
    Move(Move),
}

/// A rename inside one root. A directory's content moved with it (no scan follows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Index of the root in `Config::roots`.
    pub root: usize,
    /// The old path, relative to the root.
    pub from: PathBuf,
    /// The new path, relative to the root.
    pub to: PathBuf,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// The raw mask of the `MOVED_TO` (for plugins).
    pub mask: u32,
    /// When the kernel event was read.
    pub seen: Instant,
}

/// A change of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Index of the root in `Config::roots`.
    pub root: usize,
    /// Path relative to the root.
    pub rel: PathBuf,
    /// What to do with it remotely.
    pub op: Op,
    /// Whether the path is (or was) a directory.
    pub is_dir: bool,
    /// The raw inotify mask that caused it (0 for synthesized events from scans); the
    /// http plugin reports it.
    pub mask: u32,
    /// When the kernel event was read, for push latency metrics.
    pub seen: Instant,
}

/// Identifies one remote of one root: the unit that has its own queue and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId {
    /// Index in `Config::roots`.
    pub root: usize,
    /// Index in that root's `remotes`.
    pub remote: usize,
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root{}/remote{}", self.root, self.remote)
    }
}

/// One path in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// Path relative to the root, shared with the queues that hold it (and with the
    /// size measured for it, see [`Rel::size`]).
    pub rel: Rel,
    /// What to do remotely.
    pub op: Op,
    /// Whether it is a directory.
    pub is_dir: bool,
}

impl Entry {
    /// Whether pushing this leaves nothing below the path on the remote: a delete, or a
    /// file or symlink (pushed with `--force`, it replaces a directory whole).
    pub fn replaces_below(&self) -> bool {
        self.op == Op::Delete || !self.is_dir
    }
}

/// What one journal entry asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// Mirror the whole root (a failed or unfinished full sync).
    WholeRoot,
    /// One path (a directory delete is replayed as a subtree sync of it).
    Path(Entry),
}

impl Work {
    /// Which journal entry this is.
    pub fn scope(&self) -> Scope {
        match self {
            Work::WholeRoot => Scope::WholeRoot,
            Work::Path(entry) => Scope::Path(entry.rel.to_path_buf()),
        }
    }
}

/// The name of one journal entry of a target: the whole root or one path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The whole root.
    WholeRoot,
    /// One path, relative to the root (never empty).
    Path(PathBuf),
}

impl Scope {
    /// The path a journal file stores (empty for the whole root, which the file writes
    /// `.`): only storage code uses this form.
    pub fn storage_rel(&self) -> &std::path::Path {
        match self {
            Scope::WholeRoot => std::path::Path::new(""),
            Scope::Path(rel) => rel,
        }
    }

    /// The inverse of [`Scope::storage_rel`].
    pub fn from_storage(rel: PathBuf) -> Scope {
        if rel.as_os_str().is_empty() {
            Scope::WholeRoot
        } else {
            Scope::Path(rel)
        }
    }
}

/// Work for one push worker: one rsync run against one remote.
#[derive(Debug, Clone)]
pub struct PushJob {
    /// Unique per process; matches the outcome to the job.
    pub id: u64,
    /// The remote.
    pub target: TargetId,
    /// What to run.
    pub kind: JobKind,
}

/// The two kinds of rsync run.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// Push these paths (updates and deletes) in one run.
    Batch {
        /// The paths, each at most once.
        entries: Vec<Entry>,
    },
    /// Mirror one directory recursively, `--delete` included: it was deleted (or moved
    /// away) and is a directory again under the same name, so the remote may still hold
    /// what the old one held. Nothing at or below `rel` runs beside it on its remote.
    Subtree {
        /// The directory, relative to the root (never empty).
        rel: PathBuf,
    },
    /// Make the `to` of each move on the remote from what it holds at its `from`
    /// (hard links or a local basis there, not bytes over the wire). The deletes of the
    /// old names wait in the queue until this succeeded. A directory move is alone in
    /// its job; file moves share one when their new and their old names each share a
    /// directory.
    Move {
        /// `(from, to)` pairs, relative to the root.
        moves: Vec<(PathBuf, PathBuf)>,
        /// Whether the moved paths are directories.
        is_dir: bool,
        /// Compare files by content (`--checksum`), not size and mtime: the remote may
        /// hold something at a new name already (always so for files).
        by_content: bool,
        /// The update of every `to`, in the order of `moves`; outcomes' fates follow it.
        entries: Vec<Entry>,
    },
    /// Mirror the whole root.
    Full {
        /// Why: `startup`, `crontab`, `rescan`, `journal`.
        reason: &'static str,
        /// Extra rsync `--exclude` globs (crontabfilter).
        extra_excludes: Vec<String>,
    },
}

/// What a push worker reports back after a job.
#[derive(Debug)]
pub struct PushOutcome {
    /// The job as it was dispatched.
    pub job: PushJob,
    /// What the run means, decided by `push::rsync`; the scheduler only consumes it.
    pub disposition: Disposition,
    /// How many entries at the end of a batch were not sent (the batch's byte limit,
    /// measured by the worker); they go back to the queue without penalty and
    /// `Disposition::Partial::fates` covers only the others.
    pub unsent: usize,
    /// The equivalent command line, without secrets, for the journal and logs (a cold
    /// run that succeeded leaves it empty: nothing reads it then).
    pub command: String,
}

/// What one rsync run means for its paths and its remote. `push::rsync::classify` turns an
/// exit status into one of these and the push worker resolves [`Disposition::Partial`]
/// into per-path fates; no other stage interprets exit codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Every path arrived (exit 0).
    Done,
    /// rsync ran against a reachable remote but not every path arrived (exit 23, 24).
    /// `fates` is index-aligned with the batch's entries; empty when they are unknown (a
    /// full or subtree sync, or a batch whose errors could not be attributed): then
    /// every path is retried.
    Partial {
        /// Exit code and reason.
        failure: PushFailure,
        /// What became of each entry.
        fates: Vec<PathFate>,
    },
    /// The remote (or the way to it) failed as a whole: connection refused, timeout,
    /// killed, spawn failure, daemon busy. The remote backs off; its paths wait.
    RemoteDown(PushFailure),
    /// Only a configuration change helps (usage error, auth refused, unknown module). The
    /// work stays in the journal and is retried at the longest interval.
    ConfigError(PushFailure),
}

impl Disposition {
    /// The failure, unless the run succeeded.
    pub fn failure(&self) -> Option<&PushFailure> {
        match self {
            Disposition::Done => None,
            Disposition::Partial { failure, .. }
            | Disposition::RemoteDown(failure)
            | Disposition::ConfigError(failure) => Some(failure),
        }
    }
}

/// What became of one path of a partially failed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathFate {
    /// It arrived.
    Done,
    /// It no longer exists locally in the form queued (deleted, its parent became a file
    /// or a symlink loop, a file became a directory): nothing to retry; the event that
    /// changed it is (or was) queued on its own.
    Gone,
    /// It did not arrive and still exists: retry it alone, with its own backoff.
    Retry,
}

/// Why a job did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFailure {
    /// rsync's exit code (`None`: not started, killed or timed out).
    pub code: Option<i32>,
    /// A short reason (last lines of stderr, or the spawn error), without secrets.
    pub reason: String,
}

/// A change that reached every remote of its root: what plugins and the CDN act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Index in `Config::roots`.
    pub root: usize,
    /// Path relative to the root.
    pub rel: PathBuf,
    /// What happened.
    pub op: Op,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// The inotify mask of the last event for the path (0 if synthesized).
    pub mask: u32,
}
