//! The `sersync` binary as a service: `-d`, pid file, signals, log reopen, reload,
//! `/metrics`, `/status` and `--status`. Each test spawns the real binary with an XML
//! file in its own temp dir. Engine activity comes from `-r`, journal replay and crontab
//! full syncs, so these tests hold with or without a real inotify watcher.

mod process;
mod reload;
mod status;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::util::{RsyncDaemon, rsyncd, wait_until};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sersync");
/// Deadline for anything awaited here.
pub const LIMIT: Duration = Duration::from_secs(20);

pub use crate::util::rsyncd::free_port;

/// One test's files: source tree, config, pid file, log file, journal.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub config: PathBuf,
    pub pidfile: PathBuf,
    pub logfile: PathBuf,
    pub journal: PathBuf,
    pub status_port: u16,
}

/// What goes into the XML file.
#[derive(Default)]
pub struct Xml {
    /// `<remote …/>` elements.
    pub remotes: Vec<String>,
    /// rsync daemon port and password file (adds `<auth>` and `<userDefinedPort>`).
    pub daemon: Option<(u16, PathBuf)>,
    /// Serve `/status` and `/metrics`.
    pub status: bool,
    /// `<crontab schedule>` in minutes.
    pub crontab: Option<&'static str>,
    /// `<commonParams params>` (default `-artuz`).
    pub params: Option<&'static str>,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).expect("src");
        Setup {
            src,
            config: dir.path().join("confxml.xml"),
            pidfile: dir.path().join("run/sersync.pid"),
            logfile: dir.path().join("sersync.log"),
            journal: dir.path().join("state/faillog"),
            status_port: free_port(),
            dir,
        }
    }

    /// A local-directory remote `<remote path>` and its directory.
    pub fn local_remote(&self, name: &str) -> (String, PathBuf) {
        let path = self.dir.path().join(name);
        (format!("<remote path=\"{}\"/>", path.display()), path)
    }

    /// Writes `src/a.txt` and a config that mirrors `src` to a local directory; that
    /// directory.
    pub fn with_local_mirror(&self) -> PathBuf {
        let (remote, mirror) = self.local_remote("mirror");
        self.write("a.txt", "a");
        self.write_config(&Xml {
            remotes: vec![remote],
            ..Xml::default()
        });
        mirror
    }

    /// The remote element for `daemon`'s module.
    pub fn daemon_remote() -> String {
        format!("<remote ip=\"127.0.0.1\" name=\"{}\"/>", rsyncd::MODULE)
    }

    /// Writes `src/<rel>` with `content`.
    pub fn write(&self, rel: &str, content: &str) {
        let path = self.src.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    /// Writes the config file.
    pub fn write_config(&self, xml: &Xml) {
        fs::create_dir_all(self.pidfile.parent().expect("run dir")).expect("run dir");
        let (auth, port, password) = match &xml.daemon {
            Some((port, password)) => ("true", *port, password.display().to_string()),
            None => ("false", 874, String::new()),
        };
        let auth = match &xml.daemon {
            Some(_) => format!(
                "<auth start=\"{auth}\" users=\"{}\" passwordfile=\"{password}\"/>\n<userDefinedPort start=\"true\" port=\"{port}\"/>",
                rsyncd::USER
            ),
            None => String::new(),
        };
        let crontab = xml.crontab.map_or_else(String::new, |minutes| {
            format!("<crontab start=\"true\" schedule=\"{minutes}\"/>")
        });
        let text = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<head version=\"2.5\">\n\
             <host hostip=\"127.0.0.1\" port=\"{status_port}\" start=\"{status}\"/>\n<sersync>\n\
             <localpath watch=\"{src}\">\n{remotes}\n</localpath>\n\
             <rsync>\n<commonParams params=\"{params}\"/>\n{auth}\n<timeout start=\"true\" time=\"100\"/>\n</rsync>\n\
             <failLog path=\"{journal}\" timeToExecute=\"0.05\"/>\n{crontab}\n</sersync>\n</head>\n",
            status_port = self.status_port,
            status = xml.status,
            src = self.src.display(),
            remotes = xml.remotes.join("\n"),
            journal = self.journal.display(),
            params = xml.params.unwrap_or("-artuz"),
        );
        fs::write(&self.config, text).expect("write config");
    }

    /// `sersync -o CONFIG --pidfile PID --logfile LOG EXTRA…`, stdin closed, stdout and
    /// stderr into `out.txt` / `err.txt` in the temp dir.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("-o")
            .arg(&self.config)
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg("--logfile")
            .arg(&self.logfile)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(fs::File::create(self.dir.path().join("out.txt")).expect("out.txt"))
            .stderr(fs::File::create(self.dir.path().join("err.txt")).expect("err.txt"));
        command
    }

    /// Starts sersync in the foreground and waits for its "running" log line.
    pub fn start(&self, extra: &[&str]) -> Running {
        let before = self.log().matches(" running (pid ").count();
        let mut running = Running(self.command(extra).spawn().expect("spawn sersync"));
        wait_until("sersync running", LIMIT, || {
            if let Ok(Some(status)) = running.0.try_wait() {
                panic!(
                    "sersync exited with {status}: {}\n{}",
                    self.stderr(),
                    self.log()
                );
            }
            self.log().matches(" running (pid ").count() > before
        });
        running
    }

    /// Runs `sersync -d …` and waits for the foreground part to exit; its exit code.
    pub fn run_detached(&self, extra: &[&str]) -> i32 {
        let mut args = vec!["-d"];
        args.extend_from_slice(extra);
        let mut parent = self.command(&args).spawn().expect("spawn sersync -d");
        let status = parent
            .wait_timeout(LIMIT)
            .expect("wait")
            .unwrap_or_else(|| panic!("sersync -d did not return: {}", self.log()));
        status.code().expect("exit code")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.logfile).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("err.txt")).unwrap_or_default()
    }

    /// The pid in the pid file.
    pub fn pid(&self) -> u32 {
        let text = fs::read_to_string(&self.pidfile).expect("pid file");
        text.trim().parse().expect("a pid")
    }

    /// `GET path` on the status server: (HTTP status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http(
            "GET",
            &format!("http://127.0.0.1:{}{path}", self.status_port),
        )
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// Waits until the log has `needle` at least `count` times.
    #[track_caller]
    pub fn wait_log(&self, needle: &str, count: usize) {
        wait_until(&format!("{count}× {needle:?} in the log"), LIMIT, || {
            self.log().matches(needle).count() >= count
        });
    }
}

/// A request with any method; errors as HTTP statuses are returned, not raised.
pub fn http(method: &str, url: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(())
        .expect("request");
    let mut response = agent.run(request).expect("status server answers");
    let body = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), body)
}

/// A foreground sersync; killed on drop if still running.
pub struct Running(pub Child);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for the exit code, at most `LIMIT`.
    #[track_caller]
    pub fn wait_exit(&mut self) -> i32 {
        let status = self.0.wait_timeout(LIMIT).expect("wait");
        let status = status.unwrap_or_else(|| panic!("sersync still running after {LIMIT:?}"));
        status.code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kill -s NAME pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid}");
}

/// Whether `pid` is a live process (not a zombie waiting to be reaped).
pub fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        !matches!(state, Some('Z' | 'X'))
    })
}

/// An rsync daemon that is started, then stopped (port closed) until `restart`.
pub fn stopped_daemon(mirror: &Path) -> RsyncDaemon {
    let mut daemon = RsyncDaemon::start(mirror);
    daemon.stop();
    daemon
}
