//! One rsync run: the argument vector (pure), running it, and what its exit code means.
//!
//! Every run is an argument vector handed to `execve`: no shell ever sees a path. A batch's
//! paths are arguments (`./a/b/c.txt`, rsync run in the root, [`batch_argv`]) or, for a
//! batch too big for the argument space, go on stdin NUL-separated (`--files-from=-
//! --from0`); both relative to the root, so `-R` recreates `a/b/c.txt` under the
//! destination as sersync's `-R` did.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

use crate::child::{self, Cancel, ChildError, Ending};
use crate::config::{Remote, RsyncConfig};
use crate::job::{Entry, Op, PushFailure};

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
pub enum RunKind {
    /// A batch of paths on stdin; `delete` turns missing paths into remote deletions.
    Batch {
        /// `<inotify><delete start="true">`.
        delete: bool,
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
    kind: RunKind,
    extra_excludes: &[String],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = rsync.common_params.iter().map(OsString::from).collect();
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
/// it a remote `host:path`; `--` ends the options anyway.
pub fn batch_argv(
    rsync: &RsyncConfig,
    remote: &Remote,
    delete: bool,
    entries: &[Entry],
) -> Option<Vec<OsString>> {
    let bytes: usize = entries
        .iter()
        .map(|e| e.rel.as_os_str().len() + 3 + std::mem::size_of::<usize>())
        .sum();
    if entries.is_empty() || bytes > ARGV_BUDGET {
        return None;
    }
    let mut args: Vec<OsString> = rsync.common_params.iter().map(OsString::from).collect();
    args.extend(BATCH_ARGV_OPTIONS.iter().map(OsString::from));
    if delete {
        args.push("--delete-missing-args".into());
        args.push("--force".into());
    } else {
        args.push("--ignore-missing-args".into());
    }
    args.extend(remote_options(rsync, remote));
    args.push("--".into());
    for entry in entries {
        let mut arg = OsString::from("./");
        arg.push(entry.rel.as_os_str());
        args.push(arg);
    }
    args.push(destination(rsync, remote));
    Some(args)
}

/// Options that depend on the kind of remote.
fn remote_options(rsync: &RsyncConfig, remote: &Remote) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    if let Some(seconds) = rsync.timeout {
        out.push(format!("--timeout={seconds}").into());
    }
    match remote {
        Remote::Daemon { .. } => {
            if let Some(port) = rsync.port {
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
            let has_rsh = rsync.common_params.iter().any(|p| {
                p == "-e" || p.starts_with("--rsh") || (p.starts_with("-e") && p.len() > 2)
            });
            if !has_rsh {
                out.push("-e".into());
                out.push("ssh".into());
            }
        }
        Remote::Local { .. } => {}
    }
    out
}

/// `[user@]host::module/`, `host:path/` or `/local/path/`.
fn destination(rsync: &RsyncConfig, remote: &Remote) -> OsString {
    match remote {
        Remote::Daemon { host, module } => {
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
pub fn describe(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|arg| shell_words::quote(&arg.to_string_lossy()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs rsync with `stdin` as its standard input and waits, at most `limit` when given.
///
/// # Errors
/// A [`PushFailure`] describing a spawn error, a timeout or a non-success exit code.
pub fn run(
    program: &Path,
    args: &[OsString],
    stdin: &[u8],
    limit: Option<Duration>,
) -> Result<(), PushFailure> {
    run_observed(program, args, stdin, limit, None, None, None)
}

/// A consumer of rsync's stdout, chunk by chunk.
pub type OnStdout<'a> = child::OnStdout<'a>;

/// As [`run`], in the working directory `dir` when given (for [`batch_argv`]), and when
/// `on_stdout` is given, rsync's stdout is read on its own thread and handed to it chunk
/// by chunk (full-sync progress); otherwise stdout is discarded. rsync runs in its own
/// process group ([`crate::child`]): a timeout or `cancel` (shutdown) stops rsync and
/// what it started (ssh, a local receiver) and reaps it before this returns.
///
/// # Errors
/// As [`run`]; a missing `dir` is a retryable failure naming it; a cancelled run is a
/// retryable failure (its paths are journaled by the scheduler).
pub fn run_observed(
    program: &Path,
    args: &[OsString],
    stdin: &[u8],
    limit: Option<Duration>,
    on_stdout: Option<&mut OnStdout<'_>>,
    dir: Option<&Path>,
    cancel: Option<&Cancel>,
) -> Result<(), PushFailure> {
    let retry = |reason: String| PushFailure {
        code: None,
        reason,
        retryable: true,
    };
    let finished = child::run(child::Spec {
        program: program.as_os_str(),
        args,
        env: &[],
        dir,
        stdin: Some(stdin),
        stdout: on_stdout.map_or(child::Stdout::Null, child::Stdout::Observe),
        stderr_tail: Some(4 * STDERR_TAIL),
        limit,
        cancel,
    })
    .map_err(|err| match (err, dir) {
        (ChildError::Spawn(err), Some(dir)) if !dir.is_dir() => {
            retry(format!("cannot enter {}: {err}", dir.display()))
        }
        (ChildError::Spawn(err), _) => retry(format!("cannot start {}: {err}", program.display())),
        (err @ ChildError::Wait(_), _) => retry(format!("rsync: {err}")),
    })?;
    let stderr = tail_text(&finished.stderr);
    if !stderr.is_empty() {
        // `<debug start="true">` shows rsync's own messages even when it succeeded;
        // failures carry them in their reason (logged at warn or error).
        log::debug!("rsync stderr: {stderr}");
    }
    match finished.ending {
        Ending::TimedOut(limit) => Err(retry(format!(
            "still running after {}s, killed",
            limit.as_secs()
        ))),
        Ending::Cancelled => Err(retry("stopped: sersync is shutting down".to_owned())),
        Ending::Exited(status) => match status.code() {
            Some(code) => classify(code, &stderr),
            None => Err(retry(format!("killed by a signal: {stderr}"))),
        },
    }
}

/// How an exit code is treated; the single place that decides it (see the table test).
///
/// - 0: success. 24 ("some source files vanished"): success, the event that removed them
///   is queued and pushes the deletion.
/// - 23 ("partial transfer due to error"): a failure, unlike sersync 2.5 which counted it
///   as success: some listed path did not arrive (unreadable file, receiver error), and
///   only a retry that succeeds proves it did. Retried like any failure.
/// - 1 (usage), 2 (protocol), 3 (bad destination dir), 4 (unsupported), and 5 when the
///   daemon refused auth or does not know the module: configuration errors. Still kept
///   in the journal and retried at the longest interval, so fixing the server heals it.
/// - Everything else (5 busy, 10, 11, 12, 14, 20–22, 25, 30, 35, 255 …): retryable.
pub fn classify(code: i32, stderr: &str) -> Result<(), PushFailure> {
    let retryable = match code {
        0 | 24 => return Ok(()),
        1..=4 => false,
        5 => !is_refusal(stderr),
        _ => true,
    };
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
    Err(PushFailure {
        code: Some(code),
        reason,
        retryable,
    })
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
    for &b in bytes {
        if wild && matches!(b, b'*' | b'?' | b'[' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    OsString::from_vec(out)
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
