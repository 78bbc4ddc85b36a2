//! A real `rsync --daemon` on 127.0.0.1 with auth, one writable module, for one test.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// User name the daemon accepts.
pub const USER: &str = "tester";
/// Module name.
pub const MODULE: &str = "mirror";

/// An rsync daemon, killed and reaped on drop.
pub struct RsyncDaemon {
    child: Option<Child>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// What the daemon writes into.
    pub module_root: PathBuf,
    /// Client-side password file (0600).
    pub password_file: PathBuf,
    conf_dir: tempfile::TempDir,
    /// Lines added to the module's section (`refuse options = …`).
    module_extra: String,
}

/// A port on 127.0.0.1 nobody listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl RsyncDaemon {
    /// Starts a daemon serving `module_root` (created if missing) and waits until it answers.
    pub fn start(module_root: &Path) -> RsyncDaemon {
        RsyncDaemon::start_with(module_root, "")
    }

    /// As [`RsyncDaemon::start`], with `module_extra` (rsyncd.conf lines) in the module.
    pub fn start_with(module_root: &Path, module_extra: &str) -> RsyncDaemon {
        assert!(
            Command::new("rsync")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "rsync not found: install it (CI does `apt-get install -y rsync`)"
        );
        std::fs::create_dir_all(module_root).expect("module root");
        let conf_dir = tempfile::tempdir().expect("tempdir");
        let secrets = conf_dir.path().join("secrets");
        std::fs::write(&secrets, format!("{USER}:s3cret\n")).expect("secrets");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let password_file = conf_dir.path().join("password");
        std::fs::write(&password_file, "s3cret\n").expect("password");
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let mut daemon = RsyncDaemon {
            child: None,
            port: 0,
            module_root: module_root.to_path_buf(),
            password_file,
            conf_dir,
            module_extra: module_extra.to_owned(),
        };
        daemon.spawn_on(free_port());
        daemon
    }

    fn spawn_on(&mut self, port: u16) {
        self.port = port;
        self.write_conf("");
        let conf = self.conf_dir.path().join("rsyncd.conf");
        let _ = std::fs::remove_file(self.conf_dir.path().join("pid"));
        let child = Command::new("rsync")
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rsync --daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "rsync daemon on port {port} did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Adds `extra` (rsyncd.conf lines) to the module from the next connection on: the
    /// daemon reads its configuration at every connection. A restart, or `""`, goes back
    /// to the module as it started.
    pub fn reconfigure(&self, extra: &str) {
        self.write_conf(extra);
    }

    fn write_conf(&self, extra: &str) {
        let conf = self.conf_dir.path().join("rsyncd.conf");
        let identity = if is_root() {
            "uid = root\ngid = root\n"
        } else {
            ""
        };
        // The log file is set in the configuration: with `--log-file` only, the daemon's
        // connections log nothing after the login (no transfer lines, no refusals).
        std::fs::write(
            &conf,
            format!(
                "log file = {dir}/log\nuse chroot = no\naddress = 127.0.0.1\nport = {port}\npid file = {dir}/pid\nmax connections = 0\nsocket options = TCP_NODELAY\n\
                 [{MODULE}]\npath = {root}\nread only = no\nmunge symlinks = no\nauth users = {USER}\n\
                 secrets file = {dir}/secrets\n{identity}{module_extra}{extra}",
                dir = self.conf_dir.path().display(),
                port = self.port,
                root = self.module_root.display(),
                module_extra = self.module_extra,
            ),
        )
        .expect("rsyncd.conf");
    }

    fn answers(&self) -> bool {
        Command::new("rsync")
            .arg("--list-only")
            .arg(format!("--password-file={}", self.password_file.display()))
            .arg(format!("rsync://{USER}@127.0.0.1:{}/{MODULE}/", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the daemon (port closed) but keeps its files.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_on(self.port);
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.conf_dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
