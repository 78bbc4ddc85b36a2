//! One rsync run: the argument vector (pure), running it, and what its exit code means.
//!
//! Every run is an argument vector handed to `execve`: no shell ever sees a path. A batch's
//! paths are arguments (`./a/b/c.txt`, rsync run in the root, [`batch_argv`]) or, for a
//! batch too big for the argument space, go on stdin NUL-separated (`--files-from=-
//! --from0`); both relative to the root, so `-R` recreates `a/b/c.txt` under the
//! destination as sersync's `-R` did.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::share;
use crate::argv::Argv;
use crate::child::{self, Cancel, ChildError, Ending};
use crate::config::{Remote, RsyncConfig};
use crate::job::{Disposition, Entry, Op, PushFailure};

/// How much of rsync's stderr is kept for the failure reason.
const STDERR_TAIL: usize = 2048;

/// Options added for every event-driven batch, after `commonParams`.
///
/// `--no-recursive`: a directory in a batch only creates the directory; its content is
/// listed by the watcher's scan, already filtered, so excluded files never travel.
/// `--ignore-times`: the event says the path changed; rsync's quick check (size and
/// whole-second mtime) would skip a same-size rewrite within the same second.
///
/// `--from0` comes first: rsync reads `*-from` lists while it parses options, so a later
/// `--from0` would not apply to them.
const BATCH_OPTIONS: [&str; 4] = [
    "--no-recursive",
    "--ignore-times",
    "--from0",
    "--files-from=-",
];

/// Options of a batch whose paths are arguments ([`batch_argv`]): the same meaning as
/// [`BATCH_OPTIONS`] (`--files-from` implies `--relative` and `--dirs`), spelled out.
const BATCH_ARGV_OPTIONS: [&str; 4] = ["--no-recursive", "--dirs", "--relative", "--ignore-times"];

/// Added to full syncs: compare mtimes to the nanosecond (rsync(1) `--modify-window`, a
/// negative value; the receiver must be rsync 3.1.3 or later). A full sync has no event
/// to prove a change, so it relies on rsync's quick check (size and mtime), which with
/// whole seconds misses a same-size rewrite within the second of the previous push.
/// rsync passes it to the receiver as `-@-1`; an older one refuses it
/// ([`refuses_nanosecond_window`]) and the run is repeated without.
pub const NANOSECOND_WINDOW: &str = "--modify-window=-1";

/// Bytes of path arguments at most in one run (Linux allows 2 MiB of arguments and
/// environment with the default 8 MiB stack); a bigger batch sends its list on stdin.
pub const ARGV_BUDGET: usize = 512 * 1024;

/// What kind of run this is, which decides the options after `commonParams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind<'a> {
    /// A batch of paths on stdin; `delete` turns missing paths into remote deletions.
    Batch {
        /// `<inotify><delete start="true">`.
        delete: bool,
    },
    /// One directory, recursively with `--delete`, to be run with the root as working
    /// directory: `./rel` is the only source (see [`SUBTREE_OPTIONS`]); excluded paths
    /// come on stdin as anchored root-relative patterns, as for full syncs.
    Subtree {
        /// The directory, relative to the root.
        rel: &'a Path,
    },
    /// The whole root, recursively; excluded paths come on stdin as anchored patterns.
    Full {
        /// Mirror deletions too (`--delete`).
        delete: bool,
    },
}

/// The full argument vector (without the program) for one run against one remote.
pub fn args(
    rsync: &RsyncConfig,
    root: &Path,
    remote: &Remote,
    kind: RunKind<'_>,
    extra_excludes: &[String],
) -> Vec<OsString> {
    if let RunKind::Subtree { rel } = kind {
        return subtree_argv(rsync, remote, rel);
    }
    let mut args = leading_params(rsync, remote);
    match kind {
        RunKind::Batch { delete } => {
            args.extend(BATCH_OPTIONS.iter().map(OsString::from));
            if delete {
                // A listed path missing here becomes a deletion there; `--force` lets it
                // remove a non-empty directory (rsync(1), --delete-missing-args).
                args.push("--delete-missing-args".into());
                args.push("--force".into());
            } else {
                args.push("--ignore-missing-args".into());
            }
        }
        RunKind::Subtree { .. } => {}
        RunKind::Full { delete } => {
            args.push("--recursive".into());
            if delete {
                args.push("--delete".into());
            }
            // `--from0` before `--exclude-from`, see BATCH_OPTIONS: otherwise rsync keeps
            // only the first pattern of the list.
            args.push("--from0".into());
            args.push("--exclude-from=-".into());
            for glob in extra_excludes {
                args.push(format!("--exclude={glob}").into());
            }
            args.push(NANOSECOND_WINDOW.into());
        }
    }
    args.extend(remote_options(rsync, remote));
    let mut source = root.as_os_str().to_os_string();
    source.push("/");
    args.push(source);
    args.push(destination(rsync, remote));
    args
}

/// A batch with its paths as arguments, `./rel` relative to the root, to be run with the
/// root as working directory ([`run_observed`]); `None` when the paths exceed [`ARGV_BUDGET`]
/// (or there are none), then [`args`] with [`batch_stdin`] is used.
///
/// rsync reads a `--files-from` list one byte per `read(2)` (plus a `poll(2)` each), so
/// for a list of 10,000 paths the list alone costs ~250,000 system calls; arguments cost
/// none (measured: client CPU of a 10,000-file batch 0.37 s → 0.18 s). The `./` prefix
/// keeps a name starting with `-` from being an option and a `:` in a name from making
/// it a remote `host:path`; `--` ends the options anyway. The paths go straight into
/// one [`Argv`] buffer: no string of its own per path.
pub fn batch_argv(
    rsync: &RsyncConfig,
    remote: &Remote,
    delete: bool,
    entries: &[Entry],
) -> Option<Argv> {
    let bytes: usize = entries
        .iter()
        .map(|e| e.rel.as_os_str().len() + 3 + std::mem::size_of::<usize>())
        .sum();
    if entries.is_empty() || bytes > ARGV_BUDGET {
        return None;
    }
    let mut args = leading_params(rsync, remote);
    args.extend(BATCH_ARGV_OPTIONS.iter().map(OsString::from));
    if delete {
        args.push("--delete-missing-args".into());
        args.push("--force".into());
    } else {
        args.push("--ignore-missing-args".into());
    }
    args.extend(remote_options(rsync, remote));
    args.push("--".into());
    let options: usize = args.iter().map(|a| a.len()).sum();
    let paths: usize = entries.iter().map(|e| e.rel.as_os_str().len() + 2).sum();
    let destination = destination(rsync, remote);
    let mut argv = Argv::with_capacity(
        args.len() + entries.len() + 1,
        options + paths + destination.len(),
    );
    argv.extend(&args);
    for entry in entries {
        argv.push_parts(&[b"./", entry.rel.as_os_str().as_bytes()]);
    }
    argv.push(destination);
    Some(argv)
}

/// Options of a subtree sync ([`RunKind::Subtree`]). `--relative` with the source
/// `./rel` makes the transfer root the root itself, so the anchored root-relative exclude
/// patterns of full syncs apply unchanged and no remote path is spelled out (an ssh
/// remote's shell never sees the name). `--delete` removes what the old directory held;
/// `--force` and `--delete-missing-args` let a directory that became a file, a symlink or
/// nothing since replace or remove the remote one. `--from0` before `--exclude-from`, see
/// [`BATCH_OPTIONS`].
const SUBTREE_OPTIONS: [&str; 7] = [
    "--recursive",
    "--relative",
    "--delete",
    "--force",
    "--delete-missing-args",
    "--from0",
    "--exclude-from=-",
];

/// The argument vector of a subtree sync of the directory `rel` (never empty), to be run
/// with the root as working directory.
fn subtree_argv(rsync: &RsyncConfig, remote: &Remote, rel: &Path) -> Vec<OsString> {
    let mut args = leading_params(rsync, remote);
    args.extend(SUBTREE_OPTIONS.iter().map(OsString::from));
    args.extend(remote_options(rsync, remote));
    args.push("--".into());
    let mut source = OsString::from("./");
    source.push(rel.as_os_str());
    args.push(source);
    args.push(destination(rsync, remote));
    args
}

/// `<commonParams>` as the run starts with them: for a remote whose runs ride a shared ssh
/// connection (`share.rs`) without the operator's `-e`, which [`remote_options`] gives
/// again with the shared connection's options.
pub(crate) fn leading_params(rsync: &RsyncConfig, remote: &Remote) -> Vec<OsString> {
    if share::rsh_for(rsync, remote).is_some() {
        share::take_rsh(&rsync.common_params)
            .0
            .into_iter()
            .map(OsString::from)
            .collect()
    } else {
        rsync.common_params.iter().map(OsString::from).collect()
    }
}

/// Options that depend on the kind of remote.
pub(crate) fn remote_options(rsync: &RsyncConfig, remote: &Remote) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    if let Some(seconds) = rsync.timeout {
        out.push(format!("--timeout={seconds}").into());
    }
    match remote {
        Remote::Daemon { port, .. } => {
            if let Some(port) = port.or(rsync.port) {
                out.push(format!("--port={port}").into());
            }
            if let Some(auth) = &rsync.auth {
                let mut arg = OsString::from("--password-file=");
                arg.push(auth.password_file.as_os_str());
                out.push(arg);
            }
            // Without TCP_NODELAY every push to a daemon stalls ~80 ms on Nagle and
            // delayed ACK (measured: a one-file push drops from ~136 ms to ~10 ms).
            if !rsync
                .common_params
                .iter()
                .any(|p| p.starts_with("--sockopts"))
            {
                out.push("--sockopts=TCP_NODELAY".into());
            }
        }
        Remote::Ssh { .. } => {
            if let Some(rsh) = share::rsh_for(rsync, remote) {
                out.push("-e".into());
                out.push(rsh.into());
            } else if share::take_rsh(&rsync.common_params).1.is_none() {
                out.push("-e".into());
                out.push("ssh".into());
            }
        }
        Remote::Local { .. } => {}
    }
    out
}

/// `[user@]host::module/`, `host:path/` or `/local/path/`.
pub(crate) fn destination(rsync: &RsyncConfig, remote: &Remote) -> OsString {
    match remote {
        Remote::Daemon { host, module, .. } => {
            let user = rsync
                .auth
                .as_ref()
                .map(|a| format!("{}@", a.user))
                .unwrap_or_default();
            format!("{user}{host}::{module}/").into()
        }
        Remote::Ssh { host, path } => format!("{host}:{}/", path.trim_end_matches('/')).into(),
        Remote::Local { path } => {
            let mut dest = path.as_os_str().to_os_string();
            dest.push("/");
            dest
        }
    }
}

/// Whether `failure` is a receiver refusing [`NANOSECOND_WINDOW`]: one older than rsync
/// 3.1.3 (it knows neither `-@` nor a negative window: popt's "-@-1: unknown option"),
/// or a daemon with `refuse options = modify-window` ("The server is configured to
/// refuse --modify-window (-@)", exit code 4).
pub fn refuses_nanosecond_window(failure: &PushFailure) -> bool {
    let reason = failure.reason.as_str();
    let names_it = reason.contains("-@") || reason.contains("modify-window");
    names_it && (reason.contains("unknown option") || reason.contains("configured to refuse"))
}

/// The NUL-separated list of root-relative paths rsync reads for a batch.
pub fn batch_stdin(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.rel.as_os_str().len() + 1).sum());
    for entry in entries {
        out.extend_from_slice(entry.rel.as_os_str().as_bytes());
        out.push(0);
    }
    out
}

/// A human-readable command line for logs and the journal: quoted for a POSIX shell
/// (lossy for non-UTF-8 bytes), never containing a secret (rsync reads the password
/// from the file named by `--password-file`, whose content we never read).
pub fn describe<A: AsRef<OsStr>>(program: &Path, args: impl IntoIterator<Item = A>) -> String {
    let quote = |arg: &OsStr| shell_words::quote(&arg.to_string_lossy()).into_owned();
    std::iter::once(quote(program.as_os_str()))
        .chain(args.into_iter().map(|a| quote(a.as_ref())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How one rsync run ended: its disposition, and the paths rsync's stderr named in its
/// per-path messages (`link_stat "…" failed`, `file has vanished: "…"`), as printed
/// (absolute for the sender, module-relative for a daemon receiver), `\#ooo` escapes
/// decoded. `reported` is `None` when there were too many to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// What the exit status means.
    pub disposition: Disposition,
    /// Paths named by rsync's per-path messages.
    pub reported: Option<Vec<PathBuf>>,
}

/// How much of rsync's stderr is kept to find the paths its per-path messages name.
const REPORT_KEEP: usize = 1 << 20;

/// Most per-path messages kept from one run; beyond that no path is trusted as done.
const MAX_REPORTED: usize = 65_536;

/// Runs rsync with `stdin` as its standard input and waits, at most `limit` when given.
pub fn run(program: &Path, args: Argv, stdin: &[u8], limit: Option<Duration>) -> Finished {
    run_observed(program, args, stdin, limit, None, None, None)
}

/// A consumer of rsync's stdout, chunk by chunk.
pub type OnStdout<'a> = child::OnStdout<'a>;

/// As [`run`], in the working directory `dir` when given (for [`batch_argv`]), and when
/// `on_stdout` is given, rsync's stdout is read on its own thread and handed to it chunk
/// by chunk (full-sync progress); otherwise stdout is discarded. rsync runs in its own
/// process group ([`crate::child`]): a timeout or `cancel` (shutdown) stops rsync and
/// what it started (ssh, a local receiver) and reaps it before this returns. A spawn
/// failure (a missing `dir` named), a timeout or a cancelled run is
/// [`Disposition::RemoteDown`]: retried like an unreachable remote (a cancelled run's
/// paths are journaled by the scheduler).
pub fn run_observed(
    program: &Path,
    args: Argv,
    stdin: &[u8],
    limit: Option<Duration>,
    on_stdout: Option<&mut OnStdout<'_>>,
    dir: Option<&Path>,
    cancel: Option<&Cancel>,
) -> Finished {
    let down = |reason: String| Finished {
        disposition: Disposition::RemoteDown(PushFailure { code: None, reason }),
        reported: Some(Vec::new()),
    };
    let finished = match child::run(child::Spec {
        program: program.as_os_str(),
        args,
        env: &[],
        dir,
        stdin: Some(stdin),
        stdout: on_stdout.map_or(child::Stdout::Null, child::Stdout::Observe),
        stderr_tail: Some(REPORT_KEEP),
        limit,
        cancel,
    }) {
        Ok(finished) => finished,
        Err(ChildError::Spawn(err)) => {
            return down(match dir {
                Some(dir) if !dir.is_dir() => format!("cannot enter {}: {err}", dir.display()),
                _ => format!("cannot start {}: {err}", program.display()),
            });
        }
        Err(err @ ChildError::Wait(_)) => return down(format!("rsync: {err}")),
    };
    // A full tail may have lost its first lines: then no path is trusted as done.
    let reported = if finished.stderr.len() >= REPORT_KEEP {
        None
    } else {
        reported_paths(&finished.stderr)
    };
    let stderr = tail_text(&finished.stderr);
    if !stderr.is_empty() {
        // `<debug start="true">` shows rsync's own messages even when it succeeded;
        // failures carry them in their reason (logged at warn or error).
        log::debug!("rsync stderr: {stderr}");
    }
    let disposition = match finished.ending {
        Ending::TimedOut(limit) => {
            return down(format!("still running after {}s, killed", limit.as_secs()));
        }
        Ending::Cancelled => return down("stopped: sersync is shutting down".to_owned()),
        Ending::Exited(status) => match status.code() {
            Some(code) => classify(code, &stderr),
            None => Disposition::RemoteDown(PushFailure {
                code: None,
                reason: format!("killed by a signal: {stderr}"),
            }),
        },
    };
    Finished {
        disposition,
        reported,
    }
}

/// Collects the quoted path of every per-path message, line by line, as stderr arrives.
#[derive(Default)]
struct ReportedPaths {
    partial: Vec<u8>,
    paths: Vec<PathBuf>,
    overflow: bool,
}

impl ReportedPaths {
    fn feed(&mut self, chunk: &[u8]) {
        self.partial.extend_from_slice(chunk);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(&line);
        }
        if self.partial.len() > 64 * 1024 {
            self.overflow = true; // a line this long: its path cannot be trusted
            self.partial.clear();
        }
    }

    fn line(&mut self, line: &[u8]) {
        if self.overflow {
            return;
        }
        if let Some(path) = quoted_path(line) {
            if self.paths.len() >= MAX_REPORTED {
                self.overflow = true;
                self.paths.clear();
            } else {
                self.paths.push(path);
            }
        }
    }

    /// The paths named, `None` when some could not be kept.
    fn finish(mut self) -> Option<Vec<PathBuf>> {
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest);
        (!self.overflow).then_some(self.paths)
    }
}

/// Every path rsync's per-path messages name in `stderr` (the whole of it), `None` when
/// there are too many to keep. See [`Finished::reported`].
pub fn reported_paths(stderr: &[u8]) -> Option<Vec<PathBuf>> {
    let mut paths = ReportedPaths::default();
    paths.feed(stderr);
    paths.finish()
}

/// The path one line of rsync's stderr names, with rsync's `\#ooo` escapes of
/// unprintable bytes decoded; `None` for a line without one. Quoted (`… "path" …`) in
/// most messages; a failed delete prints it bare (`delete_file: unlink(path) failed: …`,
/// also `rmdir(…)`): without that form a delete the receiver could not make passed for
/// done, and the path stayed on the remote (the reliability suite's daemon that cannot
/// write).
pub fn quoted_path(line: &[u8]) -> Option<PathBuf> {
    let raw = match (
        line.iter().position(|b| *b == b'"'),
        line.iter().rposition(|b| *b == b'"'),
    ) {
        (Some(first), Some(last)) if last > first + 1 => &line[first + 1..last],
        _ => failed_delete_path(line)?,
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let octal = raw
            .get(i + 2..i + 5)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (raw[i], raw.get(i + 1), octal) {
            (b'\\', Some(b'#'), Some(digits)) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 5;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(PathBuf::from(OsString::from_vec(out)))
}

/// `path` in `… delete_file: unlink(path) failed: …` (the last `) failed` ends it: a name
/// may hold parentheses).
fn failed_delete_path(line: &[u8]) -> Option<&[u8]> {
    const MARK: &[u8] = b"delete_file: ";
    const END: &[u8] = b") failed";
    let at = line.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let rest = &line[at..];
    let open = rest.iter().position(|b| *b == b'(')? + 1;
    let close = rest.windows(END.len()).rposition(|w| w == END)?;
    (close > open).then(|| &rest[open..close])
}

/// How an exit code is treated; the single place that decides it (see the table test).
///
/// - 0: done.
/// - 23 ("partial transfer due to error") and 24 ("some source files vanished"): partial;
///   the push worker decides per path which arrived, which are gone locally and which
///   to retry. Unlike sersync 2.5, 23 is never counted as success: only a retry that
///   succeeds proves a path arrived.
/// - 1 (usage), 2 (protocol), 3 (bad destination dir), 4 (unsupported), and 5 when the
///   daemon refused auth or does not know the module: configuration errors. Still kept
///   in the journal and retried at the longest interval, so fixing the server heals it.
/// - Everything else (5 busy, 10, 11, 12, 14, 20–22, 25, 30, 35, 255 …): the remote is down.
pub fn classify(code: i32, stderr: &str) -> Disposition {
    let mut reason = if stderr.is_empty() {
        format!("rsync exited with code {code}")
    } else {
        format!("rsync exited with code {code}: {stderr}")
    };
    if let Some(fix) = refusal_fix(stderr) {
        reason.push_str(" (");
        reason.push_str(fix);
        reason.push(')');
    }
    let failure = PushFailure {
        code: Some(code),
        reason,
    };
    match code {
        0 => Disposition::Done,
        23 | 24 => Disposition::Partial {
            failure,
            fates: Vec::new(),
        },
        // A receiver (3.2.5+) aborts the whole run when a path's parent is not a directory
        // in the sender's file list (generator.c, recv_generator: "Each parent dir must be
        // in the file list"): the parent vanished while the sender listed it, a race with
        // the source, not a configuration error. Paths listed before it may have arrived
        // and a receiver temp file may be left ([`may_leave_temp_files`]); the whole batch
        // is retried.
        2 if stderr.contains("invalid path from sender") => Disposition::RemoteDown(failure),
        1..=4 => Disposition::ConfigError(failure),
        5 if is_refusal(stderr) => Disposition::ConfigError(failure),
        _ => Disposition::RemoteDown(failure),
    }
}

/// Messages of a run that failed before it reached a receiver.
const NEVER_CONNECTED: [&str; 4] = [
    "failed to connect",
    "getaddrinfo",
    "0 bytes received so far",
    "Name or service not known",
];

/// Whether a failed run may have ended a receiver while it wrote a file, leaving its temp
/// file (`.NAME.XXXXXX`, mode 600) in the mirror for good ([`temp_cleanup`] removes it).
/// The receiver's "invalid path from sender" abort does (exit 2, or 10 when the sender
/// saw the connection drop first: measured with rsync 3.5.0); so may any broken
/// connection (10, 12) of a run that reached the receiver.
pub fn may_leave_temp_files(failure: &PushFailure) -> bool {
    let reason = failure.reason.as_str();
    match failure.code {
        Some(2) => reason.contains("invalid path from sender"),
        Some(10 | 12) => !NEVER_CONNECTED.iter().any(|n| reason.contains(n)),
        _ => false,
    }
}

/// Longest name (without a leading dot) a receiver's temp name keeps whole: rsync's
/// `get_tmpname` fits `.NAME.XXXXXX` in NAME_MAX (255) and trims a longer NAME.
const TEMP_NAME_WHOLE: usize = 246;

/// Options of a [`temp_cleanup`] run: each source directory's own entries only
/// (`--no-recursive` after a `commonParams` `-a`), nothing created or updated on the
/// receiver (`--existing --ignore-existing`: the entries are listed, so a source file whose
/// name looks like a temp name is not extraneous and stays), a source that vanished
/// locally skipped, the filter rules read from stdin as a merge file (`--from0`:
/// NUL-separated).
const TEMP_CLEANUP_OPTIONS: [&str; 9] = [
    "--no-recursive",
    "--dirs",
    "--existing",
    "--ignore-existing",
    "--relative",
    "--delete",
    "--ignore-missing-args",
    "--from0",
    "--filter=. -",
];

/// A run that removes receiver temp files of a batch's paths from the remote: rsync's
/// `.NAME.XXXXXX` names of exactly those paths, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempCleanup {
    /// The argument vector after the program; run in the root.
    pub args: Argv,
    /// The filter rules rsync reads as a merge file (`--filter=. -`), NUL-separated.
    pub stdin: Vec<u8>,
}

/// The cleanup run for a batch's root-relative `paths` (`None` when it has none, or their
/// directories do not fit [`ARGV_BUDGET`]). Each path's parent directory is a source (`./dir/`, with
/// `--dirs --relative`: that one directory's entries, no deeper) with `--delete`; the
/// sender lists their entries but nothing is created or updated (`--existing
/// --ignore-existing`; the directories are shown by `S` rules), and the receiver may delete
/// only a temp name of a batch path that the source does not hold
/// (`R /dir/.NAME.??????`), every other name protected (`P *`). Hiding the entries from
/// the sender instead would make a real source file named like a sibling's temp name
/// extraneous, and delete it from the mirror.
pub fn temp_cleanup<'p>(
    rsync: &RsyncConfig,
    remote: &Remote,
    paths: impl IntoIterator<Item = &'p Path>,
) -> Option<TempCleanup> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut risk = Vec::new();
    for rel in paths {
        let Some(name) = rel.file_name() else {
            continue;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        dirs.insert(parent);
        risk.push(temp_name_pattern(parent, name.as_bytes()));
    }
    let bytes: usize = dirs.iter().map(|d| d.as_os_str().len() + 4).sum();
    if dirs.is_empty() || bytes > ARGV_BUDGET {
        return None;
    }
    let mut stdin = Vec::new();
    let mut rule = |kind: &[u8], pattern: &[u8]| {
        stdin.extend_from_slice(kind);
        stdin.extend_from_slice(pattern);
        stdin.push(0);
    };
    for dir in dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
        let mut shown = exact_pattern(dir).into_vec();
        shown.push(b'/');
        rule(b"S ", &shown);
    }
    for pattern in &risk {
        rule(b"R ", pattern);
    }
    rule(b"P ", b"*");
    let mut args = leading_params(rsync, remote);
    args.extend(TEMP_CLEANUP_OPTIONS.iter().map(OsString::from));
    args.extend(remote_options(rsync, remote));
    args.push("--".into());
    for dir in &dirs {
        let mut source = OsString::from("./");
        source.push(dir.as_os_str());
        if !dir.as_os_str().is_empty() {
            source.push("/");
        }
        args.push(source);
    }
    args.push(destination(rsync, remote));
    Some(TempCleanup {
        args: args.into(),
        stdin,
    })
}

/// `/dir/.NAME.??????` (anchored, literal parts escaped): the temp names rsync's receiver
/// gives `dir/NAME` (a leading dot of NAME dropped, a long NAME trimmed: then a prefix).
fn temp_name_pattern(parent: &Path, name: &[u8]) -> Vec<u8> {
    // The pattern always holds wildcards (`??????`), so every literal part is escaped.
    let mut out = vec![b'/'];
    if !parent.as_os_str().is_empty() {
        push_escaped(&mut out, parent.as_os_str().as_bytes());
        out.push(b'/');
    }
    let name = name.strip_prefix(b".").unwrap_or(name);
    out.push(b'.');
    if name.len() > TEMP_NAME_WHOLE {
        // Trimmed to at most TEMP_NAME_WHOLE bytes, fewer at a split UTF-8 character.
        push_escaped(&mut out, &name[..TEMP_NAME_WHOLE - 8]);
        out.push(b'*');
    } else {
        push_escaped(&mut out, name);
    }
    out.extend_from_slice(b".??????");
    out
}

/// What to do about a daemon's refusal, named in the failure reason (and so in the log).
fn refusal_fix(stderr: &str) -> Option<&'static str> {
    if stderr.contains("auth failed") {
        Some(
            "fix: the <auth passwordfile> must hold the password that the daemon's secrets file gives <auth users>",
        )
    } else if stderr.contains("nknown module") {
        Some("fix: <remote name> must be a module of the daemon's rsyncd.conf")
    } else {
        None
    }
}

/// Messages of an rsync daemon that only a configuration change can fix.
fn is_refusal(stderr: &str) -> bool {
    [
        "auth failed",
        "Unknown module",
        "unknown module",
        "access denied",
        "chroot failed",
    ]
    .iter()
    .any(|needle| stderr.contains(needle))
}

/// The last lines of rsync's stderr as one line of text.
pub(crate) fn tail_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(4);
    let mut joined = lines[start..].join(" | ");
    if joined.len() > STDERR_TAIL {
        let mut cut = joined.len() - STDERR_TAIL;
        while !joined.is_char_boundary(cut) {
            cut += 1;
        }
        joined.drain(..cut);
    }
    joined
}

/// True when `op` entries of a batch need rsync to see deletions.
pub fn has_deletes(entries: &[Entry]) -> bool {
    entries.iter().any(|e| e.op == Op::Delete)
}

/// Pattern that excludes exactly the root-relative path `rel` (anchored at the transfer
/// root), for `--exclude-from`. rsync only treats `\` as an escape in patterns holding a
/// wildcard, so escaping happens only then.
pub fn exact_pattern(rel: &Path) -> OsString {
    let bytes = rel.as_os_str().as_bytes();
    let wild = bytes.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'/');
    if wild {
        push_escaped(&mut out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
    OsString::from_vec(out)
}

/// Appends `bytes` to a pattern that holds wildcards, each wildcard and backslash
/// escaped: rsync reads a backslash as an escape only in a pattern with wildcards.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The NUL-separated exclude list for a full sync.
pub fn exclude_stdin(patterns: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for pattern in patterns {
        out.extend_from_slice(OsStr::as_bytes(pattern));
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests;
