//! The pid file: where it is, whether another instance holds it, writing it atomically
//! and removing it on exit.
//!
//! Default path: `/run/sersync.pid` for root, else `$XDG_RUNTIME_DIR/sersync.pid`, else
//! `/tmp/sersync-$UID.pid`. A file naming a live process whose command is sersync means
//! another instance runs: refused. Any other content (a dead pid, a pid reused by another
//! program, garbage, our own pid) is stale and overwritten with a warning.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the pid file cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another sersync runs with this pid file.
    #[error("{}: sersync is already running as pid {pid} (stop it, or use another --pidfile)", path.display())]
    Running {
        /// The pid file.
        path: PathBuf,
        /// The live process.
        pid: u32,
    },
    /// Reading or writing failed.
    #[error("{}: cannot {action}: {source}", path.display())]
    Io {
        /// The pid file.
        path: PathBuf,
        /// What was attempted.
        action: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// The default pid file for this user (see the module doc).
pub fn default_path() -> PathBuf {
    let uid = process_uid();
    if uid == 0 {
        return PathBuf::from("/run/sersync.pid");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => Path::new(&dir).join("sersync.pid"),
        _ => PathBuf::from(format!("/tmp/sersync-{uid}.pid")),
    }
}

/// The effective uid, read from `/proc/self` (no libc call needed).
pub fn process_uid() -> u32 {
    fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// Checks that no other live sersync holds `path`. Returns the stale pid found, if any,
/// so the caller can warn about it.
///
/// # Errors
/// [`PidFileError::Running`] when another instance holds it; `Io` when it cannot be read.
pub fn check(path: &Path) -> Result<Option<String>, PidFileError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PidFileError::Io {
                path: path.to_path_buf(),
                action: "read",
                source,
            });
        }
    };
    let content = text.trim();
    match content.parse::<u32>() {
        Ok(pid) if pid != std::process::id() && is_sersync(pid) => Err(PidFileError::Running {
            path: path.to_path_buf(),
            pid,
        }),
        _ => Ok(Some(content.chars().take(32).collect())),
    }
}

/// Whether `pid` is a live (not zombie) process whose command name or `argv[0]` says
/// sersync: a recycled pid of another program is not an instance.
pub fn is_sersync(pid: u32) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // `pid (comm) S …`: the state follows the last `)`, as comm may contain one.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X')) {
        return false;
    }
    let comm = fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    let argv0 = fs::read(proc_dir.join("cmdline"))
        .ok()
        .and_then(|bytes| bytes.split(|b| *b == 0).next().map(<[u8]>::to_vec))
        .map(|arg| String::from_utf8_lossy(&arg).into_owned())
        .unwrap_or_default();
    let argv0_name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    comm.trim().contains("sersync") || argv0_name.contains("sersync")
}

/// A pid file written by this process; removed on drop if it still names this process.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Checks `path` (see [`check`]) and writes this process's pid into it atomically
    /// (`.NAME.PID.tmp` then rename), mode 0644. Returns the stale content replaced.
    ///
    /// # Errors
    /// As [`check`], or when the file cannot be written.
    pub fn create(path: &Path) -> Result<(PidFile, Option<String>), PidFileError> {
        let stale = check(path)?;
        let pid = std::process::id();
        let io_err = |action, source| PidFileError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let name = path.file_name().map_or_else(
            || "sersync.pid".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let tmp = path.with_file_name(format!(".{name}.{pid}.tmp"));
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
            writeln!(file, "{pid}")?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        };
        if let Err(source) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", source));
        }
        let pidfile = PidFile {
            path: path.to_path_buf(),
            pid,
        };
        Ok((pidfile, stale))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file now if it still holds this process's pid (another instance may
    /// have taken it over after deciding ours was stale).
    pub fn remove(&self) {
        let ours = fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim().parse::<u32>() == Ok(self.pid));
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_garbage_dead_and_own_pids_are_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.pid");
        assert_eq!(check(&path).expect("missing"), None);
        for (content, stale) in [
            ("garbage\n", "garbage"),
            ("4294967295\n", "4294967295"),
            (
                &format!("{}\n", std::process::id()),
                &std::process::id().to_string(),
            ),
        ] {
            fs::write(&path, content).expect("write");
            assert_eq!(check(&path).expect(content).as_deref(), Some(stale));
        }
    }

    #[test]
    fn a_live_process_counts_only_when_it_is_sersync() {
        // This test binary is `sersync-<hash>`; `sleep` is alive but another program.
        assert!(is_sersync(std::process::id()));
        let mut sleep = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let alive_other = is_sersync(sleep.id());
        let _ = sleep.kill();
        let _ = sleep.wait();
        assert!(!alive_other);
    }

    #[test]
    fn create_writes_pid_0644_and_drop_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub.pid");
        fs::write(&path, "999999999\n").expect("stale");
        let (pidfile, stale) = PidFile::create(&path).expect("create");
        assert_eq!(stale.as_deref(), Some("999999999"));
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, format!("{}\n", std::process::id()));
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no tmp file left"
        );
        drop(pidfile);
        assert!(!path.exists());
    }

    #[test]
    fn remove_keeps_a_file_taken_over_by_another_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.pid");
        let (pidfile, _) = PidFile::create(&path).expect("create");
        fs::write(&path, "1\n").expect("overwrite");
        drop(pidfile);
        assert!(path.exists());
    }
}
