//! One child process from start to reaped: spawn (argument vector, never a shell) in its
//! own process group, feed stdin, keep the end of stderr, hand stdout to an observer,
//! wait with an optional time limit, stop it when a [`Cancel`] fires, and reap it.
//!
//! The rsync runner (`push::rsync`) and the command plugin both use it, so a timeout, a
//! shutdown and a kill mean the same thing for both. It knows nothing of rsync (it imports
//! only the leaf `argv`).
//!
//! Stopping is SIGTERM to the whole process group (rsync's ssh or local receiver child,
//! a command's own children), then SIGKILL after [`KILL_AFTER`]: rsync's receiver removes
//! its temporary file on SIGTERM, which a SIGKILL would leave behind in a local mirror.
//! The group is signalled before the leader is reaped, so its id cannot have been reused.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::argv::Argv;
use wait_timeout::ChildExt;

/// How long a stopped group gets between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(2);
/// How often a waiting runner looks at its [`Cancel`].
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// How long the end of stderr is waited for after the child exited (a grandchild outside
/// the group may hold the pipe open).
const STDERR_GRACE: Duration = Duration::from_millis(500);

/// A shared "stop now" flag: every run that holds a clone stops its child within
/// [`CANCEL_POLL`] (plus [`KILL_AFTER`] at worst) once [`Cancel::cancel`] was called, and
/// refuses to start a new one.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Stops every run holding this flag, now and later.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A consumer of the child's stdout, chunk by chunk.
pub type OnStdout<'a> = dyn FnMut(&[u8]) + Send + 'a;

/// Where the child's stdout goes.
pub enum Stdout<'o, 'f> {
    /// `/dev/null`.
    Null,
    /// Ours.
    Inherit,
    /// Read on its own thread and handed over chunk by chunk.
    Observe(&'o mut OnStdout<'f>),
}

/// What to run and how.
pub struct Spec<'a, 'o, 'f> {
    /// The program (looked up in `PATH` when it has no `/`).
    pub program: &'a OsStr,
    /// Its arguments, given away: the child has its copy once it started (a batch's
    /// thousands of paths are not kept while it runs).
    pub args: Argv,
    /// Variables added to the inherited environment.
    pub env: &'a [(&'a str, &'a OsStr)],
    /// Working directory; ours when `None`.
    pub dir: Option<&'a Path>,
    /// Bytes written to its stdin (then closed); `None`: `/dev/null`.
    pub stdin: Option<&'a [u8]>,
    /// Where stdout goes.
    pub stdout: Stdout<'o, 'f>,
    /// Keep at most this many bytes of the end of stderr; `None`: `/dev/null`.
    pub stderr_tail: Option<usize>,
    /// Stopped when still running after this long.
    pub limit: Option<Duration>,
    /// Stopped when this fires.
    pub cancel: Option<&'a Cancel>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited (or died of a signal we did not send).
    Exited(ExitStatus),
    /// It was still running after the limit and was stopped.
    TimedOut(Duration),
    /// The [`Cancel`] fired; it was stopped, or never started.
    Cancelled,
}

/// A reaped run.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub ending: Ending,
    /// The end of its stderr (empty when not kept).
    pub stderr: Vec<u8>,
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// `fork`/`exec` failed (missing program, missing working directory, …).
    #[error("{0}")]
    Spawn(#[source] std::io::Error),
    /// Waiting for it failed (it was stopped and reaped if it could be).
    #[error("cannot wait for it: {0}")]
    Wait(#[source] std::io::Error),
}

/// Runs `spec` to the end; the child is reaped whatever happens.
///
/// # Errors
/// [`ChildError`] when it cannot start or cannot be waited for.
pub fn run(spec: Spec<'_, '_, '_>) -> Result<Finished, ChildError> {
    if spec.cancel.is_some_and(Cancel::is_cancelled) {
        return Ok(Finished {
            ending: Ending::Cancelled,
            stderr: Vec::new(),
        });
    }
    let mut command = Command::new(spec.program);
    command
        .args(spec.args.iter())
        // Its own group, so that stopping it stops what it started (rsync's ssh).
        .process_group(0)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(match spec.stdout {
            Stdout::Null => Stdio::null(),
            Stdout::Inherit => Stdio::inherit(),
            Stdout::Observe(_) => Stdio::piped(),
        })
        .stderr(if spec.stderr_tail.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    for (name, value) in spec.env {
        command.env(name, value);
    }
    if let Some(dir) = spec.dir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(ChildError::Spawn)?;
    // Its copy of the arguments (thousands of paths for a big batch) is not needed while
    // the child runs, nor ours.
    drop(command);
    drop(spec.args);
    let stderr_rx = match (child.stderr.take(), spec.stderr_tail) {
        (Some(stderr), Some(keep)) => Some(tail_reader(stderr, keep)),
        _ => None,
    };
    let input = child.stdin.take();
    let output = child.stdout.take();
    let waited = std::thread::scope(|scope| {
        if let (Some(mut output), Stdout::Observe(observe)) = (output, spec.stdout) {
            scope.spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = output.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    observe(&buf[..n]);
                }
            });
        }
        match (input, spec.stdin) {
            // Nothing to write (a batch whose paths are arguments): closed at once, no
            // thread for it.
            (Some(input), Some([])) => drop(input),
            // On its own thread: the child may fill stdout or stderr before reading stdin.
            (Some(mut input), Some(bytes)) => {
                scope.spawn(move || {
                    let _ = input.write_all(bytes); // an early exit shows in its status
                });
            }
            _ => {}
        }
        wait(&mut child, spec.limit, spec.cancel)
    });
    let stderr = stderr_rx
        .and_then(|rx| rx.recv_timeout(STDERR_GRACE).ok())
        .unwrap_or_default();
    Ok(Finished {
        ending: waited?,
        stderr,
    })
}

/// Waits for `child`, stopping it on `limit` or `cancel`; always reaps it.
fn wait(
    child: &mut Child,
    limit: Option<Duration>,
    cancel: Option<&Cancel>,
) -> Result<Ending, ChildError> {
    let started = Instant::now();
    let exit = ExitWatch::open(child);
    loop {
        let left = limit.map(|limit| limit.saturating_sub(started.elapsed()));
        let step = match (left, cancel) {
            (None, None) => None,
            (Some(left), None) => Some(left),
            (None, Some(_)) => Some(CANCEL_POLL),
            (Some(left), Some(_)) => Some(left.min(CANCEL_POLL)),
        };
        let status = match step {
            None => child.wait().map(Some),
            Some(step) => exit.wait(child, step),
        };
        match status {
            Ok(Some(status)) => return Ok(Ending::Exited(status)),
            Ok(None) => {}
            Err(err) => {
                stop(child);
                return Err(ChildError::Wait(err));
            }
        }
        if cancel.is_some_and(Cancel::is_cancelled) {
            stop(child);
            return Ok(Ending::Cancelled);
        }
        if let Some(limit) = limit.filter(|limit| started.elapsed() >= *limit) {
            stop(child);
            return Ok(Ending::TimedOut(limit));
        }
    }
}

/// Waits at most `step` for `child` to exit and reaps it if it did (`None`: still
/// running). Returns as soon as it exits.
///
/// # Errors
/// When waiting fails.
pub fn wait_up_to(child: &mut Child, step: Duration) -> std::io::Result<Option<ExitStatus>> {
    ExitWatch::open(child).wait(child, step)
}

/// How a waiting runner learns that its child exited: the child's pidfd, readable once
/// it exits (Linux 5.3 and later), or else `wait_timeout`'s SIGCHLD handler. The pidfd
/// costs one `poll` per step; `wait_timeout` makes a socket pair per call and wakes
/// every waiting thread on every child's exit, which ten remotes' concurrent pushes
/// (each polling for its `Cancel`) paid for in CPU.
struct ExitWatch(Option<rustix::fd::OwnedFd>);

impl ExitWatch {
    fn open(child: &Child) -> ExitWatch {
        let pid = Pid::from_child(child);
        ExitWatch(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
    }

    fn wait(&self, child: &mut Child, step: Duration) -> std::io::Result<Option<ExitStatus>> {
        let Some(pidfd) = &self.0 else {
            return child.wait_timeout(step);
        };
        let deadline = Instant::now() + step;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let timeout = rustix::event::Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: left.subsec_nanos().into(),
            };
            let mut fds = [rustix::event::PollFd::new(
                pidfd,
                rustix::event::PollFlags::IN,
            )];
            // Interrupted (a signal handler elsewhere in the process): wait on.
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// SIGTERM to the group `child` leads, SIGKILL after [`KILL_AFTER`], then reaps it.
fn stop(child: &mut Child) {
    let group = Pid::from_child(child);
    if kill_process_group(group, Signal::TERM).is_err() {
        let _ = child.kill();
    }
    if let Ok(Some(_)) = child.wait_timeout(KILL_AFTER) {
        return;
    }
    if kill_process_group(group, Signal::KILL).is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Reads `stderr` to its end on a helper thread, keeping the last `keep` bytes; the
/// result comes on the returned channel.
fn tail_reader(
    mut stderr: std::process::ChildStderr,
    keep: usize,
) -> crossbeam_channel::Receiver<Vec<u8>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("sersync-stderr".into())
        .spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
            let _ = tx.send(tail);
        });
    if spawned.is_err() {
        log::warn!("cannot start a thread to read a child's stderr; its messages are lost");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a, 'o, 'f>(program: &'a str, args: &Argv) -> Spec<'a, 'o, 'f> {
        Spec {
            program: OsStr::new(program),
            args: args.clone(),
            env: &[],
            dir: None,
            stdin: None,
            stdout: Stdout::Null,
            stderr_tail: Some(64),
            limit: None,
            cancel: None,
        }
    }

    fn sh(script: &str) -> Argv {
        ["-c", script].into_iter().collect()
    }

    #[test]
    fn exit_status_and_stderr_tail_are_kept() {
        let args = sh("printf 'one\\ntwo' >&2; exit 3");
        let done = run(spec("sh", &args)).expect("runs");
        assert!(matches!(done.ending, Ending::Exited(s) if s.code() == Some(3)));
        assert_eq!(done.stderr, b"one\ntwo");
    }

    #[test]
    fn stdin_and_stdout_travel() {
        let args = sh("cat");
        let mut seen = Vec::new();
        let mut observe = |chunk: &[u8]| seen.extend_from_slice(chunk);
        let mut spec = spec("sh", &args);
        spec.stdin = Some(b"a\0b");
        spec.stdout = Stdout::Observe(&mut observe);
        let done = run(spec).expect("runs");
        assert!(matches!(done.ending, Ending::Exited(s) if s.success()));
        assert_eq!(seen, b"a\0b");
    }

    #[test]
    fn a_timeout_stops_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("grandchild");
        // The grandchild writes its pid, then sleeps; the group must take it along.
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let args = sh(&script);
        let mut spec = spec("sh", &args);
        spec.limit = Some(Duration::from_millis(300));
        let started = Instant::now();
        let done = run(spec).expect("runs");
        assert_eq!(done.ending, Ending::TimedOut(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pid_file).expect("pid written");
        let proc_dir = Path::new("/proc").join(pid.trim());
        let deadline = Instant::now() + Duration::from_secs(10);
        // Reaped by init (or a subreaper) shortly after it died of the signal.
        while proc_dir.exists() && !is_zombie(&proc_dir) {
            assert!(Instant::now() < deadline, "grandchild {pid} survived");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_zombie(proc_dir: &Path) -> bool {
        std::fs::read_to_string(proc_dir.join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    }

    #[test]
    fn cancel_stops_a_running_child_and_refuses_new_ones() {
        let cancel = Cancel::default();
        let args = sh("sleep 30");
        let stopper = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                cancel.cancel();
            })
        };
        let mut running = spec("sh", &args);
        running.cancel = Some(&cancel);
        let started = Instant::now();
        let done = run(running).expect("runs");
        stopper.join().expect("stopper");
        assert_eq!(done.ending, Ending::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut refused = spec("sh", &args);
        refused.cancel = Some(&cancel);
        assert_eq!(run(refused).expect("no spawn").ending, Ending::Cancelled);
    }

    #[test]
    fn an_exit_is_seen_at_once_with_a_pidfd_and_without() {
        for pidfd in [true, false] {
            let mut child = Command::new("sh")
                .args(["-c", "sleep 0.2; exit 7"])
                .spawn()
                .expect("sh");
            let watch = if pidfd {
                ExitWatch::open(&child)
            } else {
                ExitWatch(None) // a kernel without pidfd_open
            };
            assert_eq!(
                watch.0.is_some(),
                pidfd,
                "pidfd_open (Linux 5.3+) works here"
            );
            let started = Instant::now();
            let status = watch
                .wait(&mut child, Duration::from_secs(30))
                .expect("waits")
                .expect("exited within the step");
            assert_eq!(status.code(), Some(7));
            assert!(started.elapsed() < Duration::from_secs(10), "{pidfd}");
            // Still running: the step's end says so.
            let mut long = Command::new("sleep").arg("30").spawn().expect("sleep");
            let watch = if pidfd {
                ExitWatch::open(&long)
            } else {
                ExitWatch(None)
            };
            let started = Instant::now();
            assert!(
                watch
                    .wait(&mut long, Duration::from_millis(100))
                    .expect("waits")
                    .is_none()
            );
            // wait_timeout rounds its poll down to whole milliseconds.
            assert!(
                started.elapsed() >= Duration::from_millis(90),
                "pidfd {pidfd}: {:?}",
                started.elapsed()
            );
            let _ = long.kill();
            let _ = long.wait();
        }
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let args = Argv::new();
        assert!(matches!(
            run(spec("/nonexistent/program", &args)),
            Err(ChildError::Spawn(_))
        ));
    }
}
