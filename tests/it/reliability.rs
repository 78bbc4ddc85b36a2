//! Reliability suite: the real `sersync` binary against a real rsync daemon, an ssh host
//! on a real sshd or a local directory remote, under seeded churn (with the operator
//! patterns `churn::Features` switches on, renames and moves across `<filter>` excludes
//! among them) and faults (daemon restart, SIGKILL, SIGTERM and SIGHUP at random
//! points, inotify queue overflow, refused auth), plus a structure-aware fuzzer for the
//! configuration parser. `SERSYNC_CHURN=+name,-name` and `SERSYNC_FAULTS=HUP,TERM,KILL`
//! turn patterns and signals on or off.
//!
//! Every sync test ends when sersync is idle: its own `/status` says nothing is queued,
//! running or journaled, the mirror equals the source byte-exact (names, types, content,
//! symlink targets, permission bits; what `churn::EXCLUDES` keeps off the mirror is not
//! compared) and the journal file holds no live entry, all three
//! for a full second; then a graceful stop must leave the journal empty. Seeds are printed and named in every
//! failure: `SERSYNC_SEED=<seed>` repeats a run. By default (CI) the seeds are a fixed
//! set; `SERSYNC_LONG=1` churns longer and runs more, fresh seeds; `SERSYNC_TEST_DEBUG=1` runs the binary with debug logging (the whole log
//! of a failed run is kept in the temp dir, named in the failure).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sersync::faillog::{FailLog, JournalEntry};
use sersync::job::Op;

use crate::churn::Rng;
use crate::util::sshd::Sshd;
use crate::util::{RsyncDaemon, rsyncd, tree, wait_until};

/// Whether the long variant runs.
fn long() -> bool {
    std::env::var("SERSYNC_LONG").is_ok_and(|v| v == "1")
}

/// Churn length: `short` by default, `long` with `SERSYNC_LONG=1`.
fn churn_for(short: u64, long_secs: u64) -> Duration {
    Duration::from_secs(if long() { long_secs } else { short })
}

/// The seeds the default (CI) run uses, the first `n_short` of them per test: a fixed
/// set, so a red CI run is repeated by running it again. Fresh seeds come only with
/// `SERSYNC_LONG=1`.
const FIXED_SEEDS: [u64; 4] = [0x5EED_0001, 0x5EED_0A17, 0x5EED_1F03, 0x5EED_7C45];

/// The seeds of one test: `SERSYNC_SEED` alone; else the first `n_short` of
/// [`FIXED_SEEDS`]; with `SERSYNC_LONG=1`, `n_long` fresh ones.
fn seeds(n_short: usize, n_long: usize) -> Vec<u64> {
    if let Some(seed) = std::env::var("SERSYNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    if !long() {
        return FIXED_SEEDS.iter().copied().cycle().take(n_short).collect();
    }
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng::new(base | 1);
    (0..n_long).map(|_| rng.next() | 1).collect()
}

/// How long convergence may take once the churn has stopped.
const CONVERGE_LIMIT: Duration = Duration::from_secs(90);
/// How long the mirror must stay equal with an empty journal to count as idle.
const QUIET: Duration = Duration::from_secs(1);

/// A source tree, a scratch dir beside it, an rsync daemon and a config for the binary.
struct Bench {
    _dir: tempfile::TempDir,
    seed: u64,
    src: PathBuf,
    outside: PathBuf,
    daemon: RsyncDaemon,
    /// The sshd of an ssh remote.
    _sshd: Option<Sshd>,
    /// The daemon's module, the ssh remote's directory or the local remote directory.
    mirror: PathBuf,
    /// More remotes of the same root (`Settings::local_remotes`): local directories.
    more_mirrors: Vec<PathBuf>,
    /// What the mirror never holds (`churn::EXCLUDES`, also the config's `<filter>`).
    filter: sersync::config::Filter,
    conf: PathBuf,
    journal: PathBuf,
    log: PathBuf,
    password_file: PathBuf,
    /// The `/status` port of the binary (`<host>`).
    status_port: u16,
}

/// What the configuration of a [`Bench`] says.
struct Settings {
    /// `timeToExecute` in minutes: the longest gap between retries.
    retry_minutes: &'static str,
    /// Use a password file of our own (for the refused-auth test) with this content.
    password: Option<&'static str>,
    /// Where the mirror is.
    remote: RemoteKind,
    /// This many local directory remotes besides it, on the same root (one ledger of
    /// pending changes and one dispatch order shared by all of them).
    local_remotes: usize,
}

/// The kind of remote a [`Bench`] pushes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemoteKind {
    /// The rsync daemon, with auth.
    Daemon,
    /// A directory on an ssh host (a real sshd on 127.0.0.1).
    Ssh,
    /// A local directory (`<remote path>`).
    Local,
}

impl RemoteKind {
    /// The `n`-th of `kinds`, round robin; `SERSYNC_REMOTE=daemon|ssh|local` instead
    /// names the kind of every run (with `SERSYNC_SEED`, to repeat one).
    fn nth(kinds: &[RemoteKind], n: usize) -> RemoteKind {
        match std::env::var("SERSYNC_REMOTE").as_deref() {
            Ok("daemon") => RemoteKind::Daemon,
            Ok("ssh") => RemoteKind::Ssh,
            Ok("local") => RemoteKind::Local,
            Ok(other) => panic!("SERSYNC_REMOTE: {other:?} is none of daemon, ssh, local"),
            Err(_) => kinds[n % kinds.len()],
        }
    }

    /// Its `SERSYNC_REMOTE` name.
    fn name(self) -> &'static str {
        match self {
            RemoteKind::Daemon => "daemon",
            RemoteKind::Ssh => "ssh",
            RemoteKind::Local => "local",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_minutes: "0.05",
            password: None,
            remote: RemoteKind::Daemon,
            local_remotes: 0,
        }
    }
}

impl Bench {
    /// `None` only for an ssh remote without sshd where the opt-out is set (`util::sshd`).
    fn new(seed: u64, settings: &Settings) -> Option<Bench> {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&src).expect("src");
        fs::create_dir_all(&outside).expect("outside");
        let daemon = RsyncDaemon::start(&dir.path().join("mirror"));
        let password_file = match settings.password {
            Some(content) => {
                let path = dir.path().join("password");
                fs::write(&path, content).expect("password file");
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
                path
            }
            None => daemon.password_file.clone(),
        };
        let journal = dir.path().join("state/faillog");
        let conf = dir.path().join("sersync.xml");
        let daemon_rsync = format!(
            r#"<commonParams params="-artuz"/>
            <auth start="true" users="{user}" passwordfile="{password}"/>
            <userDefinedPort start="true" port="{port}"/>"#,
            user = rsyncd::USER,
            password = password_file.display(),
            port = daemon.port,
        );
        let mut sshd = None;
        let (mirror, remote, rsync) = match settings.remote {
            RemoteKind::Local => {
                let mirror = dir.path().join("local-mirror");
                let remote = format!("<remote path=\"{}\"/>", mirror.display());
                (mirror, remote, daemon_rsync)
            }
            RemoteKind::Daemon => {
                let remote = format!("<remote ip=\"127.0.0.1\" name=\"{}\"/>", rsyncd::MODULE);
                (daemon.module_root.clone(), remote, daemon_rsync)
            }
            RemoteKind::Ssh => {
                let server = Sshd::start()?;
                let mirror = dir.path().join("ssh-mirror");
                fs::create_dir_all(&mirror).expect("ssh mirror");
                let remote = format!("<remote ip=\"127.0.0.1\" name=\"{}\"/>", mirror.display());
                let rsync = format!(
                    r#"<commonParams params='-artuz -e "{rsh}"'/>
            <ssh start="true"/>"#,
                    rsh = server.rsh()
                );
                sshd = Some(server);
                (mirror, remote, rsync)
            }
        };
        let more_mirrors: Vec<PathBuf> = (0..settings.local_remotes)
            .map(|i| dir.path().join(format!("local-mirror-{i}")))
            .collect();
        let remote: String = std::iter::once(remote)
            .chain(
                more_mirrors
                    .iter()
                    .map(|m| format!("<remote path=\"{}\"/>", m.display())),
            )
            .collect::<Vec<_>>()
            .join("\n            ");
        let excludes: String = crate::churn::EXCLUDES
            .iter()
            .map(|e| format!("\n        <exclude expression=\"{e}\"/>"))
            .collect();
        let status_port = rsyncd::free_port();
        let watch_element = crate::util::watch_element();
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
{watch_element}    <host hostip="127.0.0.1" port="{status_port}" start="true"/>
    <debug start="{debug}"/>
    <filter start="true">{excludes}
    </filter>
{inotify}
    <sersync>
        <localpath watch="{src}">
            {remote}
        </localpath>
        <rsync>
            {rsync}
            <timeout start="false" time="100"/>
        </rsync>
        <failLog path="{journal}" timeToExecute="{retry}"/>
    </sersync>
</head>
"#,
            inotify = inotify_section(false),
            // With SERSYNC_TEST_DEBUG, raw inotify events are logged too (at debug).
            debug = std::env::var_os("SERSYNC_TEST_DEBUG").is_some(),
            src = src.display(),
            journal = journal.display(),
            retry = settings.retry_minutes,
        );
        fs::write(&conf, xml).expect("config");
        let log = dir.path().join("sersync.log");
        Some(Bench {
            status_port,
            _dir: dir,
            seed,
            src,
            outside,
            daemon,
            _sshd: sshd,
            mirror,
            more_mirrors,
            filter: sersync::config::Filter::from_patterns(&crate::churn::EXCLUDES)
                .expect("churn excludes"),
            conf,
            journal,
            log,
            password_file,
        })
    }

    /// [`Bench::new`] with the default settings and `remote`.
    fn on(seed: u64, remote: RemoteKind) -> Option<Bench> {
        Bench::new(
            seed,
            &Settings {
                remote,
                ..Settings::default()
            },
        )
    }

    fn mirror(&self) -> &Path {
        &self.mirror
    }

    /// Every path a mirror does not hold as the source does, except excluded ones (of
    /// every remote: the first mirror's first).
    fn differences(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for mirror in std::iter::once(&self.mirror).chain(&self.more_mirrors) {
            for rel in tree::differences(&self.src, mirror) {
                let is_dir = [&self.src, mirror]
                    .iter()
                    .any(|base| fs::symlink_metadata(base.join(&rel)).is_ok_and(|m| m.is_dir()));
                if !self.filter.is_excluded(&rel, is_dir) && !out.contains(&rel) {
                    out.push(rel);
                }
            }
        }
        out
    }

    /// Whether the binary's own `/status` says nothing is queued, running or journaled
    /// (false while it does not answer).
    fn daemon_idle(&self) -> bool {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build(),
        );
        let Ok(mut response) = agent
            .get(&format!("http://127.0.0.1:{}/status", self.status_port))
            .call()
        else {
            return false;
        };
        let Ok(body) = response.body_mut().read_to_string() else {
            return false;
        };
        let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
            return false;
        };
        status["queue_depth"] == 0 && status["in_flight"] == 0 && status["journal"]["entries"] == 0
    }

    /// Starts the binary (`-r` when `full`) and waits until it runs (watches in place).
    fn start(&self, full: bool) -> Sersync {
        let before = self.log_text().matches(" running (pid ").count();
        let mut command = Command::new(env!("CARGO_BIN_EXE_sersync"));
        command.args(["-n", "4", "-o"]).arg(&self.conf);
        if full {
            command.arg("-r");
        }
        let child = self.spawn(command);
        let mut proc = Sersync { child: Some(child) };
        wait_until(
            &format!("seed {}: sersync running\n{}", self.seed, self.log_tail()),
            Duration::from_secs(30),
            || {
                assert!(
                    proc.alive(),
                    "seed {}: sersync exited at start: {}\nsockets on the status port:\n{}",
                    self.seed,
                    self.log_tail(),
                    self.status_port_users()
                );
                self.log_text().matches(" running (pid ").count() > before
            },
        );
        proc
    }

    fn spawn(&self, mut command: Command) -> Child {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        if std::env::var_os("SERSYNC_TEST_DEBUG").is_some() {
            command.env("RUST_LOG", "sersync=debug"); // whole log kept on failure
        }
        // Its own process group, as under a service manager: a SIGKILL of the service
        // (systemd's KillMode=control-group) takes its rsync children too.
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn sersync")
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Who holds the status port (`ss`), for a start that could not bind it.
    fn status_port_users(&self) -> String {
        Command::new("ss")
            .args(["-tanp", &format!("( sport = :{} )", self.status_port)])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_else(|err| format!("ss: {err}"))
    }

    /// What the source and each mirror hold at `rel`, for failure messages.
    fn both_sides(&self, rel: &Path) -> String {
        let mut text = format!(
            "{}: src {} / mirror {}",
            rel.display(),
            describe(&self.src.join(rel)),
            describe(&self.mirror().join(rel))
        );
        for (i, mirror) in self.more_mirrors.iter().enumerate() {
            text.push_str(&format!(" / local {i} {}", describe(&mirror.join(rel))));
        }
        text
    }

    /// Copies the whole log out of the temp dir (removed when the bench drops), for a
    /// failure message to name.
    fn keep_log(&self) -> PathBuf {
        let kept = std::env::temp_dir().join(format!("sersync-reliability-{}.log", self.seed));
        let _ = fs::copy(&self.log, &kept);
        kept
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Live journal entries, read from a copy (the running process owns the file).
    fn journal_entries(&self) -> Vec<JournalEntry> {
        if !self.journal.exists() {
            return Vec::new();
        }
        let copy_dir = tempfile::tempdir().expect("tempdir");
        let copy = copy_dir.path().join("faillog");
        if fs::copy(&self.journal, &copy).is_err() {
            return Vec::new(); // being replaced by a compaction: read it next time
        }
        match FailLog::open(&copy) {
            Ok(log) => log.pending(),
            Err(err) => panic!("seed {}: journal unreadable: {err}", self.seed),
        }
    }

    /// Churns the source for `length` while `during` runs on this thread (faults).
    fn churn_while(&self, length: Duration, during: impl FnOnce()) {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let churn = scope.spawn(|| {
                crate::churn::run(&self.src, &self.outside, self.seed, length);
            });
            let extras = scope.spawn(|| links_and_modes(&self.src, self.seed, &stop));
            during();
            churn.join().expect("churn thread");
            stop.store(true, Ordering::Relaxed);
            extras.join().expect("links and modes thread");
        });
    }

    /// Waits until sersync is idle (see the module doc), then stops it gracefully and
    /// checks that the journal is still empty.
    fn converge_and_stop(&self, mut proc: Sersync, what: &str) {
        let started = Instant::now();
        let deadline = started + CONVERGE_LIMIT;
        let mut quiet_since: Option<Instant> = None;
        loop {
            assert!(
                proc.alive(),
                "seed {} ({what}): sersync died: {}",
                self.seed,
                self.log_tail()
            );
            let diff = self.differences();
            let journal = self.journal_entries();
            if diff.is_empty() && journal.is_empty() && self.daemon_idle() {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= QUIET {
                    break;
                }
            } else {
                quiet_since = None;
            }
            if Instant::now() > deadline {
                let detail: Vec<String> = diff
                    .iter()
                    .take(8)
                    .map(|rel| self.both_sides(rel))
                    .collect();
                let kept = self.keep_log();
                panic!(
                    "seed {seed} ({what}): not idle after {CONVERGE_LIMIT:?} (repeat with SERSYNC_SEED={seed})\n\
                     mirror: {n} difference(s)\n{detail}\njournal: {journal:#?}\n/status idle: {idle}\nwhole log: {kept}\nlog:\n{log}",
                    idle = self.daemon_idle(),
                    seed = self.seed,
                    n = diff.len(),
                    detail = detail.join("\n"),
                    kept = kept.display(),
                    log = self.log_tail(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "seed {} ({what}): idle {:.1}s after the churn",
            self.seed,
            (started.elapsed() - QUIET).as_secs_f64()
        );
        let status = proc.stop();
        assert!(
            status.success(),
            "seed {} ({what}): graceful stop failed: {status:?}: {}",
            self.seed,
            self.log_tail()
        );
        let left = self.journal_entries();
        if !left.is_empty() {
            let kept = self.keep_log();
            panic!(
                "seed {} ({what}): journal not empty after stop: {left:#?}\nwhole log: {}\nlog:\n{}",
                self.seed,
                kept.display(),
                self.log_tail()
            );
        }
        assert_eq!(
            self.differences(),
            Vec::<PathBuf>::new(),
            "seed {} ({what})",
            self.seed
        );
    }
}

/// The stock `<inotify>` section, with `<modify>` as asked.
pub(crate) fn inotify_section(modify: bool) -> String {
    format!(
        r#"    <inotify>
        <delete start="true"/>
        <createFolder start="true"/>
        <createFile start="false"/>
        <closeWrite start="true"/>
        <moveFrom start="true"/>
        <moveTo start="true"/>
        <attrib start="true"/>
        <modify start="{modify}"/>
    </inotify>"#
    )
}

/// Type, mode, size and link target of a path, for failure messages.
fn describe(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(err) => format!("({err})"),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                format!("link -> {:?}", fs::read_link(path).unwrap_or_default())
            } else if meta.is_dir() {
                format!("dir {mode:o}")
            } else {
                format!("file {mode:o} {} bytes", meta.len())
            }
        }
    }
}

/// The running binary; killed on drop.
struct Sersync {
    child: Option<Child>,
}

impl Sersync {
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// SIGKILL to sersync and its rsync children (its process group): no chance to
    /// journal anything. (Killing sersync alone would leave its rsync children running;
    /// one finishing after the restart's full sync writes stale paths back: seen here as
    /// "extra in mirror" after a restart with -r.)
    fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "sersync did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sersync {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

/// SIGKILL to everything sersync runs, as a service manager killing its cgroup would:
/// the process group `child` leads (see [`Bench::spawn`]) and the process group of each
/// of its children (rsync runs in a group of its own, so that a graceful stop can kill
/// rsync with its ssh). The group is stopped first so that no child is started between
/// listing the children and killing them.
fn kill_group(child: &Child) {
    let signal = |signal: &str, group: u32| {
        Command::new("kill")
            .args([signal, "--"])
            .arg(format!("-{group}"))
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        signal("-STOP", child.id()),
        "kill -STOP -{} failed",
        child.id()
    );
    for pid in children(child.id()) {
        let _ = signal("-KILL", pid); // may have exited meanwhile
    }
    assert!(
        signal("-KILL", child.id()),
        "kill -KILL -{} failed",
        child.id()
    );
}

/// The pids of the children of `pid` (every thread's `/proc/PID/task/TID/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Beside the churn: symlinks (relative, dangling) and permission changes of files and
/// directories, so the comparison covers link targets and modes too.
fn links_and_modes(root: &Path, seed: u64, stop: &AtomicBool) {
    const FILE_MODES: [u32; 6] = [0o600, 0o640, 0o644, 0o664, 0o700, 0o755];
    const DIR_MODES: [u32; 4] = [0o700, 0o750, 0o755, 0o775];
    let mut rng = Rng::new(seed ^ 0x5EED_1111);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (files, dirs) = walk(root);
        let dir = &dirs[rng.below(dirs.len())];
        let _ = match rng.below(4) {
            0 => {
                // Targets never climb with `..`: the churn moves links to other depths,
                // and an rsync daemon without chroot rewrites a target that leaves the
                // module (sanitize_paths), which would be rsync's doing, not ours.
                let target = match files.get(rng.below(files.len().max(1))) {
                    Some(file) if rng.below(3) > 0 => file
                        .file_name()
                        .map_or_else(|| PathBuf::from("x"), PathBuf::from),
                    _ => PathBuf::from(format!("dangling/{n}")),
                };
                std::os::unix::fs::symlink(target, root.join(dir).join(format!("l{n}")))
            }
            1 | 2 if !files.is_empty() => {
                let f = root.join(&files[rng.below(files.len())]);
                match fs::symlink_metadata(&f) {
                    Ok(m) if m.file_type().is_file() => fs::set_permissions(
                        &f,
                        fs::Permissions::from_mode(FILE_MODES[rng.below(FILE_MODES.len())]),
                    ),
                    _ => Ok(()),
                }
            }
            3 if dirs.len() > 1 => {
                let d = root.join(&dirs[1 + rng.below(dirs.len() - 1)]);
                fs::set_permissions(
                    &d,
                    fs::Permissions::from_mode(DIR_MODES[rng.below(DIR_MODES.len())]),
                )
            }
            _ => Ok(()),
        };
        std::thread::sleep(Duration::from_millis(rng.below(30) as u64));
    }
}

/// Files (anything not a directory) and directories (the root as "") under `root`.
fn walk(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in read.flatten() {
            let rel = dir.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(rel.clone());
                stack.push(rel);
            } else if entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(rel);
            }
        }
    }
    (files, dirs)
}

/// Every remote kind, in the order the tests take them round robin.
const ALL_KINDS: [RemoteKind; 3] = [RemoteKind::Daemon, RemoteKind::Local, RemoteKind::Ssh];

#[test]
fn churn_through_the_binary_converges() {
    for (n, seed) in seeds(3, 6).into_iter().enumerate() {
        let remote = RemoteKind::nth(&ALL_KINDS, n);
        eprintln!(
            "seed {seed}: churn through the binary, {remote:?} (SERSYNC_SEED={seed} SERSYNC_REMOTE={} repeats it)",
            remote.name()
        );
        let Some(bench) = Bench::on(seed, remote) else {
            continue;
        };
        let proc = bench.start(false);
        bench.churn_while(churn_for(6, 60), || {});
        bench.converge_and_stop(proc, "churn");
    }
}

#[test]
fn daemon_stopped_and_restarted_during_churn() {
    for seed in seeds(1, 2) {
        eprintln!("seed {seed}: daemon restart during churn (SERSYNC_SEED={seed} repeats it)");
        let mut bench = Bench::new(seed, &Settings::default()).expect("daemon bench");
        let proc = bench.start(false);
        let length = churn_for(7, 40);
        let src = bench.src.clone();
        let outside = bench.outside.clone();
        let stop = AtomicBool::new(false);
        let journal_seen = std::thread::scope(|scope| {
            let churn = scope.spawn(|| crate::churn::run(&src, &outside, seed, length));
            let extras = scope.spawn(|| links_and_modes(&src, seed, &stop));
            // Fault timing (not a completion wait): down after a third of the churn.
            std::thread::sleep(length / 3);
            bench.daemon.stop();
            let mut journal_seen = false;
            let down_until = Instant::now() + length / 3;
            while Instant::now() < down_until || !journal_seen {
                journal_seen |= !bench.journal_entries().is_empty();
                assert!(
                    Instant::now() < down_until + Duration::from_secs(30),
                    "seed {seed}: nothing journaled while the daemon was down"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            bench.daemon.restart();
            churn.join().expect("churn");
            stop.store(true, Ordering::Relaxed);
            extras.join().expect("extras");
            journal_seen
        });
        assert!(journal_seen);
        bench.converge_and_stop(proc, "daemon restarted");
    }
}

/// Three remotes of one root (the daemon and two local directories) under churn, the
/// daemon stopped for a third of it: while its changes are journaled and retried, the
/// local remotes keep taking theirs, so the remotes' pending changes and dispatch orders,
/// which they share (one ledger per root), part ways and meet again. Every mirror must
/// end byte-exact.
#[test]
fn three_remotes_of_one_root_converge_while_one_is_down() {
    for seed in seeds(1, 2) {
        eprintln!("seed {seed}: three remotes, the daemon down a while (SERSYNC_SEED={seed})");
        let mut bench = Bench::new(
            seed,
            &Settings {
                local_remotes: 2,
                ..Settings::default()
            },
        )
        .expect("daemon bench");
        let proc = bench.start(false);
        let length = churn_for(7, 40);
        let src = bench.src.clone();
        let outside = bench.outside.clone();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let churn = scope.spawn(|| crate::churn::run(&src, &outside, seed, length));
            let extras = scope.spawn(|| links_and_modes(&src, seed, &stop));
            // Fault timing (not a completion wait): down from a third to two thirds.
            std::thread::sleep(length / 3);
            bench.daemon.stop();
            wait_until(
                &format!("seed {seed}: the daemon's changes journaled while it is down"),
                CONVERGE_LIMIT,
                || !bench.journal_entries().is_empty(),
            );
            std::thread::sleep(length / 3);
            bench.daemon.restart();
            churn.join().expect("churn");
            stop.store(true, Ordering::Relaxed);
            extras.join().expect("extras");
        });
        bench.converge_and_stop(proc, "three remotes, one down a while");
    }
}

/// Renames during partial failures, under churn: a third into the churn the daemon's
/// module starts to run as `nobody` (rsyncd.conf is read at every connection) over a
/// mirror that root owns, so every run that writes or deletes there fails with exit 23
/// (a partial failure: paths retried one by one, a move a move again with its old name
/// kept); a third later it runs as root again, and everything converges.
#[test]
fn partial_failures_during_churn_converge() {
    for seed in seeds(1, 2) {
        eprintln!("seed {seed}: partial failures during churn (SERSYNC_SEED={seed})");
        let bench = Bench::on(seed, RemoteKind::Daemon).expect("daemon bench");
        let proc = bench.start(false);
        let length = churn_for(6, 40);
        bench.churn_while(length, || {
            // Fault timing (not a completion wait): failing from a third to two thirds.
            std::thread::sleep(length / 3);
            let healed_at = Instant::now() + length / 3;
            bench.daemon.reconfigure("uid = nobody\ngid = nogroup\n");
            wait_until(
                &format!("seed {seed}: a partial failure (exit 23) journaled"),
                CONVERGE_LIMIT,
                || bench.journal_entries().iter().any(|e| e.code == Some(23)),
            );
            std::thread::sleep(healed_at.saturating_duration_since(Instant::now()));
            bench.daemon.reconfigure("");
        });
        bench.converge_and_stop(proc, "partial failures");
    }
}

/// Against the daemon and an ssh remote, one after the other.
#[test]
fn sigkill_during_churn_then_restart_with_full_sync() {
    let seed = seeds(1, 1)[0];
    for n in 0..2 {
        sigkill_then_full_sync(
            seed,
            RemoteKind::nth(&[RemoteKind::Daemon, RemoteKind::Ssh], n),
        );
    }
}

fn sigkill_then_full_sync(seed: u64, remote: RemoteKind) {
    eprintln!(
        "seed {seed}: SIGKILL during churn, restart with -r, {remote:?} (SERSYNC_SEED={seed})"
    );
    let Some(bench) = Bench::on(seed, remote) else {
        return;
    };
    let mut proc = Some(bench.start(false));
    let length = churn_for(6, 40);
    let mut restarted = None;
    bench.churn_while(length, || {
        // Fault timing: killed after a third, dead (while the churn goes on) for a third.
        std::thread::sleep(length / 3);
        if let Some(p) = proc.take() {
            p.kill();
        }
        std::thread::sleep(length / 3);
        // Changes made while it was dead are only found by the full sync of -r.
        restarted = Some(bench.start(true));
    });
    bench.converge_and_stop(restarted.expect("restarted"), "SIGKILL, -r");
}

#[test]
fn sigkill_without_full_sync_recovers_from_the_journal_alone() {
    let seed = seeds(1, 1)[0];
    eprintln!("seed {seed}: SIGKILL, restart without -r from the journal (SERSYNC_SEED={seed})");
    let mut bench = Bench::new(seed, &Settings::default()).expect("daemon bench");
    let proc = bench.start(false);
    // Remote down: every change fails and must end up in the journal.
    bench.daemon.stop();
    bench.churn_while(churn_for(3, 20), || {});
    // No more changes from here on. Wait until every difference is covered by a journal
    // entry of its own path, or by the delete of a directory above it.
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        let journal = bench.journal_entries();
        let uncovered: Vec<PathBuf> = bench
            .differences()
            .into_iter()
            .filter(|path| !covered(path, &journal))
            .collect();
        if uncovered.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let detail: Vec<String> = uncovered
                .iter()
                .take(8)
                .map(|rel| {
                    let above: Vec<String> = journal
                        .iter()
                        .filter(|e| rel.starts_with(&e.rel))
                        .map(|e| format!("{} {} (dir {})", e.op, e.rel.display(), e.is_dir))
                        .collect();
                    format!(
                        "{}; journaled at or above: {above:?}",
                        bench.both_sides(rel)
                    )
                })
                .collect();
            panic!(
                "seed {seed}: changes never journaled while the remote was down \
                 (repeat with SERSYNC_SEED={seed}): {uncovered:?}\n{}\nwhole log: {}\n{}",
                detail.join("\n"),
                bench.keep_log().display(),
                bench.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let entries = bench.journal_entries().len();
    assert!(
        entries > 0,
        "seed {seed}: the churn left nothing to recover"
    );
    proc.kill();
    bench.daemon.restart();
    eprintln!("seed {seed}: killed with {entries} journal entries; restarting without -r");
    let proc = bench.start(false);
    bench.converge_and_stop(proc, "SIGKILL, journal only");
}

/// Which signals [`signals_at_random_points_converge`] sends, each behind its own switch
/// so that one whose fix is not merged yet stays off. `SERSYNC_FAULTS=HUP,TERM,KILL`
/// (any subset) overrides [`SIGNALS_DEFAULT`]. All three are on: a TERM during the
/// churn journals the root for a full sync (what changes between the old watcher's stop
/// and the new one's watches is seen by nobody; seed 1592590337 lost such changes).
const SIGNALS_DEFAULT: [&str; 3] = ["HUP", "TERM", "KILL"];

fn signals_enabled() -> Vec<String> {
    match std::env::var("SERSYNC_FAULTS") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().to_uppercase())
            .filter(|s| !s.is_empty())
            .inspect(|s| {
                assert!(
                    ["HUP", "TERM", "KILL"].contains(&s.as_str()),
                    "SERSYNC_FAULTS: unknown signal {s:?}"
                );
            })
            .collect(),
        Err(_) => SIGNALS_DEFAULT.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// SIGHUP (reload), SIGTERM (graceful stop, restart without `-r`: the journal must
/// carry everything) and SIGKILL of the process group (restart with `-r`) at random
/// points of the churn, against the remote kinds in turn (daemon and local by default,
/// ssh too with `SERSYNC_LONG=1`). Converges on every seed: 2 by default, 20 in a row
/// with `SERSYNC_LONG=1`.
#[test]
fn signals_at_random_points_converge() {
    let signals = signals_enabled();
    assert!(!signals.is_empty(), "SERSYNC_FAULTS names no signal");
    for (n, seed) in seeds(2, 20).into_iter().enumerate() {
        let remote = RemoteKind::nth(&ALL_KINDS, n);
        eprintln!(
            "seed {seed}: signals during churn, {remote:?} (SERSYNC_SEED={seed} SERSYNC_REMOTE={})",
            remote.name()
        );
        let Some(bench) = Bench::on(seed, remote) else {
            continue;
        };
        let mut proc = Some(bench.start(false));
        let length = churn_for(6, 30);
        let mut faults = Rng::new(seed ^ 0xFA17);
        let mut done = Vec::new();
        bench.churn_while(length, || {
            let deadline = Instant::now() + length;
            loop {
                // Fault timing (not a completion wait): 0.3 to 1.8 s apart.
                std::thread::sleep(Duration::from_millis(300 + faults.below(1500) as u64));
                if Instant::now() >= deadline {
                    break;
                }
                let Some(mut running) = proc.take() else {
                    break;
                };
                let fault = signals[faults.below(signals.len())].clone();
                match fault.as_str() {
                    "HUP" => {
                        let pid = running.child.as_ref().map_or(0, Child::id);
                        let sent = Command::new("kill")
                            .args(["-HUP", &pid.to_string()])
                            .status()
                            .is_ok_and(|s| s.success());
                        assert!(sent && running.alive(), "seed {seed}: SIGHUP");
                        proc = Some(running);
                    }
                    "TERM" => {
                        let status = running.stop();
                        assert!(
                            status.success(),
                            "seed {seed}: SIGTERM exit {status:?}: {}",
                            bench.log_tail()
                        );
                        proc = Some(bench.start(false));
                    }
                    _ => {
                        running.kill();
                        proc = Some(bench.start(true));
                    }
                }
                done.push(fault);
            }
        });
        eprintln!("seed {seed}: faults {done:?}");
        bench.converge_and_stop(proc.expect("running"), "signals");
    }
}

/// Whether `path` is brought in line by replaying `journal`: an entry of its own or of
/// the whole root, or one above it that the replay pushes with `--delete-missing-args
/// --force`, which removes or replaces whatever the remote holds under that name whole: a
/// delete (of a directory, or of what the churn made a file or symlink since), or the
/// update of a non-directory. So the directory that the remote still holds at `d`, with
/// `path` in it, goes after `rm -r d; echo > d` (and `rm d`).
fn covered(path: &Path, journal: &[JournalEntry]) -> bool {
    journal.iter().any(|e| {
        e.rel.as_os_str().is_empty()
            || e.rel == path
            || (path.starts_with(&e.rel) && (e.op == Op::Delete || !e.is_dir))
    })
}

/// Lowers `fs.inotify.max_queued_events` until dropped (also when a test panics),
/// holding [`crate::util::INOTIFY_SYSCTLS`] meanwhile.
struct QueueLimit {
    saved: String,
    _lock: std::sync::MutexGuard<'static, ()>,
}

const MAX_QUEUED: &str = "/proc/sys/fs/inotify/max_queued_events";

impl QueueLimit {
    fn lower(to: u32) -> Option<QueueLimit> {
        let lock = crate::util::INOTIFY_SYSCTLS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let saved = fs::read_to_string(MAX_QUEUED).ok()?;
        fs::write(MAX_QUEUED, to.to_string()).ok()?;
        Some(QueueLimit { saved, _lock: lock })
    }
}

impl Drop for QueueLimit {
    fn drop(&mut self) {
        if let Err(err) = fs::write(MAX_QUEUED, self.saved.trim()) {
            eprintln!(
                "cannot restore {MAX_QUEUED} to {}: {err}",
                self.saved.trim()
            );
        }
    }
}

/// Whether `pid` holds an inotify instance yet.
fn has_inotify(pid: u32) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify"))
}

#[test]
fn inotify_queue_overflow_converges_through_a_rescan() {
    if crate::util::inotify_only("an inotify queue overflow (fanotify's queue is unlimited)") {
        return;
    }
    let seed = seeds(1, 1)[0];
    let bench = Bench::new(seed, &Settings::default()).expect("daemon bench");
    // The kernel reads the limit when an instance is created: lower it around sersync's
    // start only (other processes may create instances meanwhile), restore it at once.
    let proc = {
        let Some(_limit) = QueueLimit::lower(16) else {
            crate::util::missing_prerequisite(&format!("cannot write {MAX_QUEUED} (needs root)"));
            return;
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_sersync"));
        command.args(["-n", "4", "-o"]).arg(&bench.conf);
        let child = bench.spawn(command);
        let pid = child.id();
        let mut proc = Sersync { child: Some(child) };
        wait_until(
            "sersync's inotify instance",
            Duration::from_secs(30),
            || {
                assert!(proc.alive(), "sersync exited: {}", bench.log_tail());
                has_inotify(pid)
            },
        );
        proc
    };
    wait_until("sersync running", Duration::from_secs(30), || {
        bench.log_text().contains(" running (pid ")
    });
    let mut bursts = 0;
    while !bench.log_text().contains("full sync (rescan)") {
        bursts += 1;
        assert!(
            bursts <= 5,
            "seed {seed}: 5 bursts and no queue overflow seen:\n{}",
            bench.log_tail()
        );
        for d in 0..20 {
            let dir = bench.src.join(format!("b{bursts}/d{d:02}"));
            fs::create_dir_all(&dir).expect("mkdir");
            for f in 0..100 {
                fs::write(dir.join(format!("f{f:03}")), [b'o'; 512]).expect("write");
            }
        }
        // Let the watcher report what it saw before deciding whether to burst again.
        let _ = wait_for_log(&bench, "full sync (rescan)", Duration::from_secs(2));
    }
    eprintln!("seed {seed}: overflow after {bursts} burst(s)");
    bench.churn_while(churn_for(2, 20), || {});
    bench.converge_and_stop(proc, "queue overflow");
}

/// Polls the log for `needle` up to `limit`; returns whether it appeared.
fn wait_for_log(bench: &Bench, needle: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if bench.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[test]
fn refused_auth_is_journaled_and_heals_when_the_password_is_fixed() {
    let seed = seeds(1, 1)[0];
    let bench = Bench::new(
        seed,
        &Settings {
            password: Some("wrong password\n"),
            ..Settings::default()
        },
    )
    .expect("daemon bench");
    let mut proc = bench.start(false);
    fs::create_dir_all(bench.src.join("a/b")).expect("mkdir");
    fs::write(bench.src.join("a/b/one.txt"), b"one").expect("write");
    fs::write(bench.src.join("two.txt"), b"two").expect("write");
    wait_until(
        "refused pushes journaled and logged as a configuration error",
        Duration::from_secs(30),
        || !bench.journal_entries().is_empty() && bench.log_text().contains("configuration error"),
    );
    assert!(proc.alive(), "a refusing remote must not stop sersync");
    let entries = bench.journal_entries();
    assert!(
        entries.iter().all(|e| e.code == Some(5)),
        "auth refusal is rsync exit 5: {entries:#?}"
    );
    let password = fs::read(&bench.daemon.password_file).expect("right password");
    fs::write(&bench.password_file, password).expect("fix the password file");
    bench.converge_and_stop(proc, "auth fixed");
}

// ---------------------------------------------------------------------------------------
// Configuration fuzzing: documents generated by walking the schema (right elements in the
// right places, most of the time), with values from each attribute's own vocabulary or
// from a list of hostile ones, then damaged: unknown or misplaced elements, duplicates,
// case changes, unescaped values, truncation. A proptest case is a generator seed.

mod config_fuzz {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use proptest::prelude::*;
    use sersync::config::{ConfigError, ParseOptions, PluginKind, parse_with};

    use crate::churn::Rng;

    /// Element → (attributes, child elements), as the parser reads them.
    const SCHEMA: &[(&str, &[&str], &[&str])] = &[
        (
            "head",
            &["version"],
            &[
                "host",
                "debug",
                "fileSystem",
                "filter",
                "inotify",
                "sersync",
                "plugin",
                "pidfile",
                "log",
            ],
        ),
        ("host", &["hostip", "port", "start"], &[]),
        ("debug", &["start"], &[]),
        ("fileSystem", &["xfs"], &[]),
        ("filter", &["start"], &["exclude", "include"]),
        ("exclude", &["expression"], &[]),
        ("include", &["expression"], &[]),
        (
            "inotify",
            &[],
            &[
                "delete",
                "createFolder",
                "createFile",
                "closeWrite",
                "moveFrom",
                "moveTo",
                "attrib",
                "modify",
            ],
        ),
        ("delete", &["start"], &[]),
        ("createFolder", &["start"], &[]),
        ("createFile", &["start"], &[]),
        ("closeWrite", &["start"], &[]),
        ("moveFrom", &["start"], &[]),
        ("moveTo", &["start"], &[]),
        ("attrib", &["start"], &[]),
        ("modify", &["start"], &[]),
        (
            "sersync",
            &[],
            &["localpath", "rsync", "failLog", "crontab", "plugin"],
        ),
        (
            "localpath",
            &["watch"],
            &["remote", "deshost", "cdninfo", "sendurl", "regexurl"],
        ),
        ("remote", &["ip", "name", "path"], &[]),
        (
            "rsync",
            &[],
            &[
                "commonParams",
                "auth",
                "userDefinedPort",
                "timeout",
                "ssh",
                "binary",
            ],
        ),
        ("commonParams", &["params"], &[]),
        ("auth", &["start", "users", "passwordfile"], &[]),
        ("userDefinedPort", &["start", "port"], &[]),
        ("timeout", &["start", "time"], &[]),
        ("ssh", &["start"], &[]),
        ("binary", &["path"], &[]),
        ("failLog", &["path", "timeToExecute"], &[]),
        ("crontab", &["start", "schedule"], &["crontabfilter"]),
        ("crontabfilter", &["start"], &["exclude"]),
        (
            "plugin",
            &["start", "name"],
            &["param", "filter", "localpath"],
        ),
        (
            "param",
            &["prefix", "suffix", "ignoreError", "timeout", "concurrency"],
            &[],
        ),
        ("deshost", &["ip", "port", "format", "url"], &[]),
        (
            "cdninfo",
            &[
                "provider",
                "domainname",
                "port",
                "username",
                "passwd",
                "tokenfile",
                "zone",
                "endpoint",
                "url",
                "batch",
                "rate",
                "timeout",
            ],
            &[],
        ),
        ("sendurl", &["base"], &[]),
        ("regexurl", &["regex", "match"], &[]),
        ("pidfile", &["path"], &[]),
        ("log", &["path", "level"], &[]),
    ];

    /// Plausible values of an attribute of an element; `@DIR@` is an existing temp
    /// directory holding `src/`, `src2/`, `pw600` (mode 0600) and `pw644`.
    fn good_values(element: &str, attr: &str) -> &'static [&'static str] {
        match (element, attr) {
            ("ssh", "start") => &["false", "false", "true"],
            (_, "start" | "xfs" | "ignoreError" | "regex") => &["true", "false"],
            (_, "version") => &["2.5"],
            ("host", "hostip") => &["127.0.0.1", "localhost"],
            ("remote", "ip") => &["127.0.0.1", "10.0.0.2"],
            ("deshost", "ip") => &["127.0.0.1"],
            (_, "port") => &["8008", "873", "874"],
            (_, "watch") => &["@DIR@/src", "@DIR@/src2", "@DIR@/src/"],
            ("plugin", "name") => &["command", "socket", "http", "refreshCDN"],
            (_, "name") => &["tongbu1", "www"],
            ("remote", "path") => &["@DIR@/mirror", "@DIR@/mirror2"],
            ("binary", "path") => &["rsync", "/bin/sh"],
            ("failLog", "path") => &["@DIR@/state/faillog"],
            (_, "path") => &["@DIR@/state/file"],
            (_, "params") => &["-artuz", "-az --delete-after", "-a -e \"ssh -p 22\""],
            (_, "users") => &["root", "rsync"],
            (_, "passwordfile" | "tokenfile") => &["@DIR@/pw600", "@DIR@/pw600", "@DIR@/pw644"],
            ("timeout", "time") => &["100", "5"],
            (_, "time" | "timeToExecute" | "schedule" | "timeout" | "rate") => {
                &["60", "0.05", "10"]
            }
            ("exclude", "expression") => &["(.*)\\.svn", "^tmp/*", "(.*)\\.swp"],
            (_, "expression") => &["(.*)\\.php", "^static/.*"],
            (_, "prefix") => &["/bin/echo changed:", "/bin/sh"],
            (_, "suffix") => &["", "--done"],
            (_, "concurrency" | "batch") => &["4", "30"],
            (_, "format") => &["path", "lines"],
            (_, "url" | "endpoint") => &["http://127.0.0.1:1/hook"],
            (_, "provider") => &["chinacache", "purge", "cloudflare", "webhook"],
            (_, "domainname") => &["ccms.chinacache.com"],
            (_, "username" | "passwd" | "zone") => &["someone"],
            (_, "base") => &["http://cdn.example.com/"],
            (_, "match") => &["/data0/(.*)", "(.*)"],
            (_, "level") => &["info", "debug", "warn"],
            _ => &["x"],
        }
    }

    /// Values that break things: wrong switches, numbers out of range, bad paths,
    /// invalid or unsupported regexes, odd URLs and text.
    const HOSTILE: &[&str] = &[
        "True",
        "yes",
        "1",
        "",
        " ",
        "0",
        "-1",
        "65536",
        "99999999999999999999999",
        "1e3",
        "NaN",
        "inf",
        "abc",
        "/",
        "/nonexistent/dir",
        "relative/path",
        "/etc/passwd",
        "/dev/null",
        "@DIR@/src/inner",
        "@DIR@",
        "unbalanced \"quote",
        "(?<=x)y",
        "[",
        "(no group)",
        "ftp://x",
        "http://",
        "bogus",
        "caf\u{e9}",
        "\u{202e}evil",
        "tab\there",
        "line\nbreak",
        "&amp;&lt;",
    ];

    const ALIENS: &[&str] = &["unknownThing", "x", "Head", "plugins", "remote2"];

    struct Gen {
        rng: Rng,
        /// Percent chance of each kind of damage.
        damage: usize,
    }

    impl Gen {
        fn chance(&mut self, percent: usize) -> bool {
            self.rng.below(100) < percent
        }

        fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
            list[self.rng.below(list.len())]
        }

        fn name(&mut self, name: &str) -> String {
            if self.chance(self.damage / 3) {
                match self.rng.below(3) {
                    0 => name.to_uppercase(),
                    1 => name.to_lowercase(),
                    _ => name.chars().rev().collect(),
                }
            } else {
                name.to_owned()
            }
        }

        fn value(&mut self, element: &str, attr: &str) -> String {
            if self.chance(self.damage) {
                self.pick(HOSTILE).to_owned()
            } else {
                self.pick(good_values(element, attr)).to_owned()
            }
        }

        fn element(&mut self, name: &str, depth: usize, out: &mut String) {
            let spec = SCHEMA.iter().find(|(n, _, _)| *n == name);
            let (attrs, children): (&[&str], &[&str]) = spec.map_or((&[], &[]), |s| (s.1, s.2));
            let indent = "  ".repeat(depth);
            let tag = self.name(name);
            out.push_str(&format!("{indent}<{tag}"));
            // A remote is a local directory (path) or a daemon (ip + name), rarely both.
            let local_remote = name == "remote" && self.chance(30);
            for attr in attrs {
                let skip = name == "remote"
                    && ((local_remote && *attr != "path") || (!local_remote && *attr == "path"))
                    && !self.chance(self.damage / 4);
                if !skip && self.chance(96) {
                    let value = self.value(name, attr);
                    let value = if self.chance(self.damage / 5) {
                        value // unescaped: quotes and ampersands break the document
                    } else {
                        escape(&value)
                    };
                    out.push_str(&format!(" {}=\"{value}\"", self.name(attr)));
                }
            }
            if self.chance(self.damage / 4) {
                let stray = self.pick(&["bogus", "start", "Port"]);
                out.push_str(&format!(
                    " {stray}=\"{}\"",
                    escape(&self.value(name, stray))
                ));
            }
            let mut inner = String::new();
            if depth < 6 {
                for child in children {
                    // plugin sections repeat; everything else is usually there once
                    let copies = if *child == "plugin" || *child == "exclude" {
                        self.rng.below(3)
                    } else if *child == "remote" || *child == "localpath" {
                        1 + self.rng.below(2)
                    } else if self.chance(85) {
                        1 + usize::from(self.chance(self.damage / 5))
                    } else {
                        0
                    };
                    for _ in 0..copies {
                        self.element(child, depth + 1, &mut inner);
                    }
                }
                if self.chance(self.damage / 3) {
                    let alien = if self.chance(50) {
                        self.pick(ALIENS)
                    } else {
                        SCHEMA[self.rng.below(SCHEMA.len())].0
                    };
                    self.element(alien, depth + 1, &mut inner);
                }
                if self.chance(self.damage / 5) {
                    inner.push_str(&format!("{indent}  text {}\n", escape(self.pick(HOSTILE))));
                }
                if self.chance(10) {
                    inner.push_str(&format!("{indent}  <!-- a comment -->\n"));
                }
            }
            if inner.is_empty() {
                out.push_str("/>\n");
            } else {
                out.push_str(">\n");
                out.push_str(&inner);
                let close = if self.chance(self.damage / 6) {
                    self.name(name)
                } else {
                    tag
                };
                out.push_str(&format!("{indent}</{close}>\n"));
            }
        }

        fn document(&mut self) -> String {
            let mut out = String::new();
            if self.chance(70) {
                out.push_str("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n");
            }
            let root = if self.chance(95) {
                "head"
            } else {
                SCHEMA[self.rng.below(SCHEMA.len())].0
            };
            self.element(root, 0, &mut out);
            if self.chance(self.damage / 2) {
                let mut at = self.rng.below(out.len().max(1));
                while !out.is_char_boundary(at) {
                    at -= 1;
                }
                out.truncate(at);
            }
            out
        }
    }

    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;")
    }

    /// A temp directory with what the good values point at.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["src/inner", "src2"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        for (name, mode) in [("pw600", 0o600), ("pw644", 0o644)] {
            let path = dir.path().join(name);
            std::fs::write(&path, "secret\n").expect("password file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        dir
    }

    fn generate(seed: u64, damage: usize, dir: &Path) -> String {
        let mut generator = Gen {
            rng: Rng::new(seed),
            damage,
        };
        generator
            .document()
            .replace("@DIR@", &dir.display().to_string())
    }

    fn plugin(n: usize) -> Option<PluginKind> {
        match n {
            0 => Some(PluginKind::Command),
            1 => Some(PluginKind::Socket),
            2 => Some(PluginKind::Http),
            3 => Some(PluginKind::RefreshCdn),
            _ => None,
        }
    }

    /// `FILE:LINE:COL: message`, with LINE within the document and COL at least 1.
    fn check_position(line: &str, file: &str, n_lines: usize) -> Result<(), TestCaseError> {
        let rest = line
            .strip_prefix(file)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(|| TestCaseError::fail(format!("no {file}: prefix: {line:?}")))?;
        let mut parts = rest.splitn(3, ':');
        let l: usize = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no LINE: {line:?}")))?;
        let c: usize = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TestCaseError::fail(format!("no COL: {line:?}")))?;
        let message = parts.next().unwrap_or_default();
        prop_assert!(
            l >= 1 && l <= n_lines + 1,
            "line {} of {}: {:?}",
            l,
            n_lines,
            line
        );
        prop_assert!(c >= 1, "column {}: {:?}", c, line);
        prop_assert!(
            message.starts_with(' ') && message.trim().len() > 1,
            "empty message: {:?}",
            line
        );
        Ok(())
    }

    /// `short` cases from a fixed seed by default (CI: the same documents every run),
    /// `long` cases from a fresh seed with `SERSYNC_LONG=1`.
    fn fuzz_config(short: u32, long: u32) -> ProptestConfig {
        if super::long() {
            ProptestConfig::with_cases(long)
        } else {
            ProptestConfig {
                rng_seed: proptest::test_runner::RngSeed::Fixed(super::FIXED_SEEDS[0]),
                ..ProptestConfig::with_cases(short)
            }
        }
    }

    proptest! {
        #![proptest_config(fuzz_config(1_000, 20_000))]

        /// Never a panic; every problem and every warning reads `t.xml:LINE:COL: message`.
        #[test]
        fn config_parser_never_panics_and_locates_every_problem(
            seed in any::<u64>(),
            damage in 0..40usize,
            standalone in 0..12usize,
        ) {
            let dir = fixture();
            let text = generate(seed, damage, dir.path());
            let n_lines = text.lines().count().max(1);
            let options = ParseOptions { standalone_plugin: plugin(standalone) };
            match parse_with(text.as_bytes(), Path::new("t.xml"), &options) {
                Ok(config) => {
                    for warning in &config.warnings {
                        prop_assert!(!warning.contains('\n'), "multi-line warning: {:?}", warning);
                        check_position(warning, "t.xml", n_lines)?;
                    }
                }
                Err(problems) => {
                    prop_assert!(!problems.is_empty(), "an error without a problem");
                    let n = problems.len();
                    let message = ConfigError::Invalid { path: "t.xml".into(), problems }.to_string();
                    // One line per problem, each located: nothing unlocated slips through.
                    prop_assert_eq!(message.lines().count(), n, "{}", message);
                    for line in message.lines() {
                        check_position(line, "t.xml", n_lines)?;
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(fuzz_config(24, 300))]

        /// `sersync --check` on the same documents exits 0 or 2, never by a panic or a
        /// signal, and an exit 2 names the file, line and column.
        #[test]
        fn check_flag_exits_cleanly_on_fuzzed_files(seed in any::<u64>(), damage in 0..40usize) {
            let dir = fixture();
            let path = dir.path().join("c.xml");
            let text = generate(seed, damage, dir.path());
            std::fs::write(&path, &text).expect("write");
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sersync"))
                .arg("--check")
                .arg("-o")
                .arg(&path)
                .output()
                .expect("run sersync --check");
            let code = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(
                code == Some(0) || code == Some(2),
                "exit {:?}\n{}\n{}", out.status, stderr, text
            );
            if code == Some(2) {
                let file = path.display().to_string();
                let n_lines = text.lines().count().max(1);
                let located: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&file)).collect();
                prop_assert!(!located.is_empty(), "no located error: {}", stderr);
                for line in located {
                    check_position(line, &file, n_lines)?;
                }
            }
        }
    }
}
