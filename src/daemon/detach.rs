//! `-d`: leave the terminal, and tell the parent when the daemon is up.
//!
//! [`detach`] forks once. The child starts a new session (`setsid`), moves to `/`, sets
//! umask 027 and points stdin, stdout and stderr at `/dev/null` (the log file is already
//! open by then). The parent waits on a socket pair until the child reports: one zero
//! byte when it runs (pid file written, journal open, pipeline started), or an exit code
//! byte and a message, which the parent prints and exits with. If the child dies before
//! reporting, the parent says so and exits 1. sersync 2.5 slept one second instead, and
//! kept the terminal's stdio.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use crate::cli::{EXIT_FAILURE, EXIT_OK};

/// Where [`detach`] returns.
#[derive(Debug)]
pub enum Detached {
    /// In the original process, after the daemon reported: exit with this code.
    Parent(u8),
    /// In the daemon: report readiness (or failure) through this.
    Child(Readiness),
}

/// The daemon's end of the start-up report channel.
#[derive(Debug)]
pub struct Readiness(UnixStream);

impl Readiness {
    /// The daemon runs: the parent exits 0.
    pub fn ready(mut self) {
        let _ = self.0.write_all(&[0]); // parent gone: nobody to tell
    }

    /// The daemon cannot start: the parent prints `message` and exits with `code`.
    pub fn failed(mut self, code: u8, message: &str) {
        let mut report = vec![code.max(1)];
        report.extend_from_slice(message.as_bytes());
        let _ = self.0.write_all(&report);
    }
}

/// Detaches from the terminal; see the module doc. Must run before any thread starts.
///
/// # Errors
/// When threads already run, or the socket pair, `/dev/null` or `fork` fail.
pub fn detach(log_hint: &str) -> io::Result<Detached> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count);
    if threads > 1 {
        return Err(io::Error::other(format!(
            "cannot detach: {threads} threads already running"
        )));
    }
    let (mut parent_end, child_end) = UnixStream::pair()?;
    let devnull = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    match fork_into_session(&devnull)? {
        None => {
            drop(parent_end);
            Ok(Detached::Child(Readiness(child_end)))
        }
        Some(child) => {
            drop(child_end);
            let mut report = Vec::new();
            let _ = parent_end.read_to_end(&mut report);
            let code = match report.split_first() {
                Some((0, _)) => EXIT_OK,
                Some((code, message)) => {
                    eprintln!("sersync: {}", String::from_utf8_lossy(message));
                    *code
                }
                None => {
                    eprintln!(
                        "sersync: the daemon (pid {child}) exited while starting; see {log_hint}"
                    );
                    EXIT_FAILURE
                }
            };
            Ok(Detached::Parent(code))
        }
    }
}

/// Forks; in the child, starts a session, chdir `/`, umask 027 and stdio to `devnull`.
/// Returns the child's pid in the parent and `None` in the child.
#[allow(unsafe_code)]
fn fork_into_session(devnull: &File) -> io::Result<Option<u32>> {
    // SAFETY: `fork` is sound here because the process has one thread (checked by the
    // caller through /proc/self/task right before): no lock can be held by a thread that
    // does not exist in the child. The child only calls async-signal-safe functions
    // (`setsid`, `umask`, `dup2`) before returning to ordinary Rust code, which is fine
    // with a single thread. `dup2` targets the standard descriptors 0-2, which Rust's std
    // treats as owned by the process, and `devnull` stays open for the duration.
    unsafe {
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                libc::umask(0o027);
                std::env::set_current_dir("/")?;
                let fd = devnull.as_raw_fd();
                for target in 0..=2 {
                    if libc::dup2(fd, target) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(None)
            }
            pid => Ok(Some(u32::try_from(pid).unwrap_or_default())),
        }
    }
}
