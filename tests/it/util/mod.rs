//! Shared test helpers: deadlines, tree comparison, engine environments.
#![allow(dead_code)]

pub mod rsyncd;
pub mod sshd;
pub mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sersync::coalesce::{Journal, MemoryJournal};
use sersync::config::{
    Auth, Config, FailLogConfig, Filter, HostConfig, InotifyToggles, LogConfig, Remote, RootConfig,
    RsyncConfig, WatchBackend,
};
use sersync::pipeline::{Options, Pipeline};

pub use rsyncd::RsyncDaemon;

/// How long a sync may take in tests before it counts as lost.
pub const SYNC_LIMIT: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it holds; panics after `limit` naming what was awaited.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Set to `fanotify` to run the tests that start a watcher with `<watch
/// backend="fanotify"/>` (`scripts/test --fanotify` does, as root); unset or `inotify`:
/// the default backend. Anything else is a mistake and fails the test.
pub const WATCH_BACKEND: &str = "SERSYNC_TEST_WATCH_BACKEND";

/// The backend the tests run with (see [`WATCH_BACKEND`]).
pub fn watch_backend() -> WatchBackend {
    match std::env::var(WATCH_BACKEND).as_deref() {
        Err(_) | Ok("" | "inotify") => WatchBackend::Inotify,
        Ok("fanotify") => WatchBackend::Fanotify,
        Ok(other) => panic!("{WATCH_BACKEND}={other}: expected inotify or fanotify"),
    }
}

/// The `<watch>` element for configs written as XML (empty for inotify).
pub fn watch_element() -> &'static str {
    match watch_backend() {
        WatchBackend::Inotify => "",
        WatchBackend::Fanotify => "<watch backend=\"fanotify\"/>\n",
    }
}

/// What `Watcher::watch_count` says for a tree of `directories` watched directories:
/// that with inotify, the one filesystem mark of the temp dir with fanotify.
pub fn watches(directories: usize) -> usize {
    match watch_backend() {
        WatchBackend::Inotify => directories,
        WatchBackend::Fanotify => 1,
    }
}

/// True (and says so) when the calling test is about inotify's own machinery (watch
/// limits, watch descriptors, paths too long to watch) and the tests run with fanotify,
/// which has none of it: the test then does not run; it runs in the inotify pass.
pub fn inotify_only(what: &str) -> bool {
    let fanotify = watch_backend() == WatchBackend::Fanotify;
    if fanotify {
        eprintln!("not run with {WATCH_BACKEND}=fanotify: {what} is inotify's own");
    }
    fanotify
}

/// Set to `1` to let a test whose prerequisite is missing (root, user namespaces, a low
/// enough kernel limit) pass as skipped. CI does not set it: there such a test fails.
pub const ALLOW_SKIP: &str = "SERSYNC_TEST_ALLOW_SKIP";

/// A prerequisite of the calling test is missing: panics naming `reason`, unless
/// [`ALLOW_SKIP`] is `1`, where it prints `skipped: reason` and the caller returns.
#[track_caller]
pub fn missing_prerequisite(reason: &str) {
    if std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {reason}");
        return;
    }
    panic!("{reason} (set {ALLOW_SKIP}=1 to skip tests whose prerequisites are missing)");
}

/// Runs the test `exact_name` of this binary again, alone, as root of a new user
/// namespace (where `/proc/sys/user/max_inotify_watches` can be lowered without touching
/// the host's limit), with `child_var` set so that it runs its child half, and
/// `RUST_LOG=rust_log`. Returns what it printed (stdout, then stderr) once it passed;
/// `None` when `unshare` or user namespaces are missing (after [`missing_prerequisite`]).
pub fn run_in_user_namespace(exact_name: &str, child_var: &str, rust_log: &str) -> Option<String> {
    let exe = std::env::current_exe().expect("current exe");
    let output = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--"])
        .arg(exe)
        .args(["--exact", exact_name, "--nocapture", "--test-threads=1"])
        .env(child_var, "1")
        .env("RUST_LOG", rust_log)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) => {
            missing_prerequisite(&format!(
                "cannot run unshare (util-linux), needed for a user namespace: {err}"
            ));
            return None;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if text.contains("unshare: ") && !output.status.success() {
        missing_prerequisite(&format!("no user namespaces here: {text}"));
        return None;
    }
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
    Some(text)
}

/// Held by every test that changes or compares a global inotify sysctl
/// (`/proc/sys/fs/inotify/*`), so that one never sees another's temporary value.
pub static INOTIFY_SYSCTLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A source tree mirrored to a real rsync daemon (and optionally a local directory).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub daemon: RsyncDaemon,
    pub config: Config,
    pub journal: Arc<MemoryJournal>,
}

impl Env {
    /// Source + daemon; config with stock toggles, `-artz` (the stock `-artuz` as
    /// parsed), auth.
    pub fn new() -> Env {
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).expect("src");
        let daemon = RsyncDaemon::start(&dir.path().join("mirror"));
        let config = daemon_config(&src, &daemon);
        Env {
            dir,
            src,
            daemon,
            config,
            journal: Arc::new(MemoryJournal::default()),
        }
    }

    /// The mirror directory the daemon writes.
    pub fn mirror(&self) -> &Path {
        &self.daemon.module_root
    }

    /// Starts the engine in-process.
    pub fn start(&self, options: &Options) -> Pipeline {
        let journal: Arc<dyn Journal> = self.journal.clone();
        Pipeline::start(&self.config, options, journal).expect("pipeline starts")
    }

    /// Writes a file under the source (parents created).
    pub fn write(&self, rel: impl AsRef<Path>, content: &[u8]) {
        let path = self.src.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("parents");
        }
        std::fs::write(path, content).expect("write");
    }

    /// Waits until the mirror equals the source, byte-exact.
    #[track_caller]
    pub fn wait_converged(&self, limit: Duration) {
        let mut last;
        let deadline = Instant::now() + limit;
        loop {
            match tree::diff(&self.src, self.mirror()) {
                None => return,
                Some(d) => last = d,
            }
            assert!(
                Instant::now() < deadline,
                "mirror did not converge within {limit:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A config mirroring `src` to the daemon's module with auth.
pub fn daemon_config(src: &Path, daemon: &RsyncDaemon) -> Config {
    let mut config = base_config(
        src,
        vec![Remote::Daemon {
            host: "127.0.0.1".into(),
            module: rsyncd::MODULE.into(),
            port: None,
        }],
    );
    config.rsync.auth = Some(Auth {
        user: rsyncd::USER.into(),
        password_file: daemon.password_file.clone(),
    });
    config.rsync.port = Some(daemon.port);
    config
}

/// A config with stock toggles and the given remotes.
pub fn base_config(src: &Path, remotes: Vec<Remote>) -> Config {
    Config {
        path: PathBuf::from("test.xml"),
        host: HostConfig {
            ip: "127.0.0.1".into(),
            port: 8008,
            start: false,
        },
        debug: false,
        xfs: false,
        filter: Filter::default(),
        inotify: InotifyToggles::default(),
        watch_backend: watch_backend(),
        roots: vec![RootConfig {
            path: src.to_path_buf(),
            remotes,
        }],
        rsync: RsyncConfig {
            // What the stock `-artuz` runs as: the config parser strips `-u` unless
            // `<update start="true"/>` keeps it (configs built here skip the parser).
            common_params: vec!["-artz".into()],
            auth: None,
            port: None,
            timeout: None,
            ssh: false,
            binary: PathBuf::from("rsync"),
            warm: sersync::config::WarmConfig::default(),
            share_ssh: true,
            ssh_control_dir: None,
        },
        fail_log: FailLogConfig {
            path: PathBuf::from("/nonexistent/faillog"),
            retry_max: Duration::from_secs(3),
        },
        crontab: None,
        plugins: Vec::new(),
        running: Vec::new(),
        command: None,
        socket: None,
        http: None,
        cdn: None,
        pidfile: None,
        log: LogConfig::default(),
        warnings: Vec::new(),
    }
}

/// Options with a few workers.
pub fn options(full_sync_first: bool) -> Options {
    Options {
        n_workers: 4,
        full_sync_first,
        ..Options::default()
    }
}
