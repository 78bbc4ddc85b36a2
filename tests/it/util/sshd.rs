//! A real OpenSSH `sshd` on 127.0.0.1 for one test: generated host and user keys and a
//! temporary `sshd_config` in a temp dir, run in the foreground (`-D -e`) as the current
//! user (root is fine). The client side is an `ssh` command line for rsync's `-e` that
//! uses only the test's key, port and known-hosts file, never the user's `~/.ssh`.
//!
//! A machine without `sshd` fails the test, naming the package; `SERSYNC_NO_SSHD=1` (never
//! set by CI) skips the ssh tests instead.

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::rsyncd::{free_port, is_root};

/// The OpenSSH server; sshd refuses to re-exec itself unless started by absolute path.
const SSHD: &str = "/usr/sbin/sshd";

/// The opt-out variable: set to `1` to skip the ssh tests on a machine without sshd.
pub const OPT_OUT: &str = "SERSYNC_NO_SSHD";

/// An sshd, killed and reaped on drop.
pub struct Sshd {
    child: Option<Child>,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts an sshd that accepts the test's user key, and waits until it greets. `None`
    /// only when sshd is missing and [`OPT_OUT`] is set; missing without it panics.
    pub fn start() -> Option<Sshd> {
        if !present(Path::new(SSHD)) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for key in ["host_key", "user_key"] {
            keygen(&dir.path().join(key));
        }
        // The privilege separation directory a stopped openssh-server may lack.
        if is_root() {
            std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        }
        let mut sshd = Sshd {
            child: None,
            port: 0,
            dir,
        };
        sshd.authorize(true);
        sshd.spawn_on(free_port());
        let host_key = std::fs::read_to_string(sshd.path("host_key.pub")).expect("host key");
        let entry = format!("[127.0.0.1]:{} {host_key}", sshd.port);
        std::fs::write(sshd.path("known_hosts"), entry).expect("known_hosts");
        Some(sshd)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Puts the test's user key into `authorized_keys` (`true`) or empties it (`false`);
    /// sshd reads the file at every login.
    pub fn authorize(&self, yes: bool) {
        let key = if yes {
            std::fs::read_to_string(self.path("user_key.pub")).expect("user key")
        } else {
            String::new()
        };
        std::fs::write(self.path("authorized_keys"), key).expect("authorized_keys");
    }

    fn spawn_on(&mut self, port: u16) {
        let dir = self.dir.path().display();
        // StrictModes would refuse keys below /tmp (world-writable); MaxStartups lets every
        // push worker connect at once.
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nMaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n"
        );
        std::fs::write(self.path("sshd_config"), config).expect("sshd_config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))
            .expect("sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.greets() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd on port {port} did not greet: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when the port answers with an SSH banner.
    fn greets(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut banner = [0_u8; 4];
        stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
    }

    /// rsync's `-e` value: the test's key, port and known host only (`-F /dev/null`: no
    /// user config; no agent, no other identity, no prompt).
    pub fn rsh(&self) -> String {
        self.rsh_with_key(&self.path("user_key").display().to_string())
    }

    /// [`Sshd::rsh`] with `key` as the `-i` word, as written (quote it for rsync's split).
    pub fn rsh_with_key(&self, key: &str) -> String {
        let dir = self.dir.path().display();
        format!(
            "ssh -F /dev/null -p {port} -i {key} -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o UserKnownHostsFile={dir}/known_hosts -o GlobalKnownHostsFile=/dev/null \
             -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5",
            port = self.port
        )
    }

    /// The test's private key (mode 0600).
    pub fn user_key(&self) -> PathBuf {
        self.path("user_key")
    }

    /// [`super::base_config`] for `src` pushed over ssh to `mirror` on this sshd, with the
    /// stock `-artuz` as parsed (`-artz`) and [`Sshd::rsh`] as `-e`.
    pub fn config(&self, src: &Path, mirror: &Path) -> sersync::config::Config {
        let remote = sersync::config::Remote::Ssh {
            host: "127.0.0.1".into(),
            path: mirror.display().to_string(),
        };
        let mut config = super::base_config(src, vec![remote]);
        config.rsync.ssh = true;
        config.rsync.common_params =
            shell_words::split(&format!("-artz -e '{}'", self.rsh())).expect("split params");
        config
    }

    /// Stops sshd as a host going away would: the listener (port closed) and every
    /// connection it serves (each in a session of its own: sshd's children `setsid`), so
    /// that a shared connection ends too. Its files stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Stopped first, so that it accepts nothing more and its children keep it as
            // their parent (they are reparented when it exits) while they are found.
            let signal = |signal: &str, pid: u32| {
                let _ = Command::new("kill")
                    .arg(signal)
                    .arg(pid.to_string())
                    .status();
            };
            signal("-STOP", child.id());
            for pid in children_of(child.id()) {
                signal("-KILL", pid);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many logins sshd accepted so far (`Accepted publickey` lines of its log, at
    /// `LogLevel VERBOSE`): one per ssh connection, whatever runs on it.
    pub fn logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_on(self.port);
    }

    /// sshd's log (`-e`: stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when `sshd` is there; false when it is not and [`OPT_OUT`] is `1`; a panic naming
/// the package otherwise.
pub fn present(sshd: &Path) -> bool {
    if sshd.is_file() {
        return true;
    }
    assert!(
        std::env::var_os(OPT_OUT).is_some_and(|v| v == "1"),
        "{} not found: install openssh-server (apt-get install openssh-server), \
         or set {OPT_OUT}=1 to skip the ssh tests",
        sshd.display()
    );
    eprintln!(
        "{} not found and {OPT_OUT}=1: ssh test skipped",
        sshd.display()
    );
    false
}

/// The processes whose parent is `parent` (from `/proc/*/stat`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces, so split after its `)`.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sersync-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen (package openssh-client)");
    assert!(status.success(), "ssh-keygen -f {} failed", path.display());
}
