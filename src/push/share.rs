//! Shared ssh connections: one authenticated ssh connection per ssh destination, owned by
//! sersync, that every rsync run to that destination rides (OpenSSH connection sharing,
//! ssh_config(5) `ControlMaster`/`ControlPath`).
//!
//! Without it every rsync over ssh pays its own handshake (~300 ms on a LAN, key exchange
//! and authentication), and a move costs two runs in a row (`moves.rs`: the hard-linking
//! run, then the old name's delete). With it a run opens one session on the master's
//! connection (a few milliseconds).
//!
//! - The **master** of a destination is `ssh -o ControlPath=P -o ControlMaster=yes -o
//!   ControlPersist=no -o BatchMode=yes <the operator's ssh words> -N host`, a child of
//!   sersync in its own process group ([`SshMasters`], thread `sersync-ssh`), restarted
//!   with a doubling delay when it exits, stopped (SIGTERM, SIGKILL after 2 s) and reaped
//!   when the pipeline stops.
//! - Every **rsync** to it gets `-e "<the operator's ssh words> -o ControlPath=P -o
//!   ControlMaster=no"` ([`client_rsh`]): with the master up ssh opens a session on it;
//!   with the master down (no socket, or a dead one) ssh connects on its own, so a master
//!   that is down is never a push failure.
//! - Our `-o` options come right after the program name: ssh takes the first value it
//!   obtains for an option, command line first, so they win over the operator's own
//!   `-o ControlPath=…` and over `~/.ssh/config`.
//! - P is `<private 0700 dir>/<16 hex digits>`: a hash of the destination, never its name,
//!   in a directory short enough for a unix socket path (108 bytes, of which ssh needs 17
//!   for its temporary name).
//!
//! The operator's ssh command is the last `-e`/`--rsh` of `<commonParams>` (`ssh` when
//! there is none), split the way rsync splits it (spaces; single and double quotes; a
//! doubled quote inside quotes is the quote itself; no backslashes), never by a shell.
//! A command whose program is not `ssh` (a wrapper) is left alone: nothing is shared.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rustix::process::{Pid, Signal, kill_process_group};
use wait_timeout::ChildExt;

use crate::config::{Remote, RsyncConfig};
use crate::job::TargetId;
use crate::metrics::Metrics;

/// Short options of rsync that take an argument (as `config::rsync` knows them): in a
/// cluster, what follows one of them is its argument.
const SHORT_WITH_ARGUMENT: &[char] = &['e', 'B', 'f', 'T', 'M', '@'];

/// How long [`SshMasters::wait_up`] waits at start for the masters' first connection, so
/// that the startup full sync rides it; a remote that is slower or down is not waited for.
pub const START_WAIT: Duration = Duration::from_secs(5);

/// First delay before a master that exited is started again; it doubles up to
/// [`RESTART_MAX`], and starts over once a master stayed up for [`STABLE_AFTER`].
const RESTART_FIRST: Duration = Duration::from_secs(1);
/// Longest delay between two starts of a master.
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A master up this long counts as healthy: its next outage starts the delays over.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How often the thread looks at its masters.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopped master gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// Longest runtime directory used as the base of the socket directory; a longer
/// `$TMPDIR` is passed over for `/tmp`. 108 bytes of `sun_path`, minus the socket
/// directory's name (20), the socket's name (17) and ssh's temporary suffix (17).
const MAX_BASE: usize = 50;
/// Bytes of a master's stderr log kept for its exit message.
const LOG_TAIL: u64 = 2048;

/// The operator's remote-shell command taken out of `params`: the params without it, and
/// its value (the last one given, as rsync takes the last). `-e X`, `-eX`, `--rsh=X`,
/// `--rsh X` and a short cluster ending in `e` (`-avze X`) are understood.
pub fn take_rsh(params: &[String]) -> (Vec<String>, Option<String>) {
    let mut rest = Vec::with_capacity(params.len());
    let mut rsh = None;
    let mut words = params.iter();
    while let Some(word) = words.next() {
        if word == "--rsh" {
            rsh = words.next().cloned();
            continue;
        }
        if let Some(value) = word.strip_prefix("--rsh=") {
            rsh = Some(value.to_owned());
            continue;
        }
        let Some(cluster) = word.strip_prefix('-').filter(|c| !c.starts_with('-')) else {
            rest.push(word.clone());
            continue;
        };
        // The first short option that takes an argument ends the cluster.
        let Some((at, option)) = cluster
            .char_indices()
            .find(|(_, c)| SHORT_WITH_ARGUMENT.contains(c))
        else {
            rest.push(word.clone());
            continue;
        };
        if option != 'e' {
            rest.push(word.clone());
            if at + 1 == cluster.len() {
                rest.extend(words.next().cloned()); // its argument, whatever it looks like
            }
            continue;
        }
        let value = &cluster[at + 1..];
        rsh = if value.is_empty() {
            words.next().cloned()
        } else {
            Some(value.to_owned())
        };
        if at > 0 {
            rest.push(format!("-{}", &cluster[..at]));
        }
    }
    (rest, rsh)
}

/// Splits a remote-shell command as rsync does (main.c `do_cmd`): words separated by
/// spaces; `'…'` and `"…"` keep spaces; inside quotes the quote doubled is the quote
/// itself; backslashes are plain characters. `Err` for a missing closing quote.
pub fn split_rsh(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = command.chars().peekable();
    loop {
        while chars.next_if_eq(&' ').is_some() {}
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        loop {
            match (chars.next(), quote) {
                (None, None) => break,
                (None, Some(q)) => {
                    return Err(format!("missing closing {q} in the remote-shell command"));
                }
                (Some(' '), None) => break,
                (Some(c @ ('\'' | '"')), None) => quote = Some(c),
                (Some(c), Some(q)) if c == q => {
                    if chars.next_if_eq(&q).is_some() {
                        word.push(q);
                    } else {
                        quote = None;
                    }
                }
                (Some(c), _) => word.push(c),
            }
        }
        words.push(word);
    }
}

/// Joins words into one remote-shell command that [`split_rsh`] (and rsync) splits back
/// into them: a word with a space or a quote, or an empty one, is single-quoted, its
/// single quotes doubled.
pub fn join_rsh(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            if !word.is_empty() && !word.contains([' ', '\'', '"']) {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The operator's ssh command as words (`ssh` when `<commonParams>` gives none); `None`
/// when it cannot be shared: it does not split, or its program is not `ssh`.
pub fn ssh_words(rsync: &RsyncConfig) -> Option<Vec<String>> {
    let (_, rsh) = take_rsh(&rsync.common_params);
    let words = match rsh {
        Some(command) => split_rsh(&command).ok()?,
        None => vec!["ssh".to_owned()],
    };
    let program = Path::new(words.first()?);
    (program.file_name()? == "ssh").then_some(words)
}

/// The socket's name for the destination `host` (`[user@]host`) reached with `words`: a
/// hash, so that no host name (nor its length) reaches the path.
pub fn control_name(words: &[String], host: &str) -> String {
    // FNV-1a, 64 bits: stable across builds (std's hasher is not promised to be).
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    words.hash(&mut hash);
    host.hash(&mut hash);
    format!("{:016x}", hash.finish())
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Our options, first after the program name (ssh keeps the first value it obtains).
fn with_options(words: &[String], options: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len() + options.len());
    out.extend(words.first().cloned());
    out.extend(options.iter().cloned());
    out.extend(words.iter().skip(1).cloned());
    out
}

fn option(name: &str, value: impl std::fmt::Display) -> [String; 2] {
    ["-o".to_owned(), format!("{name}={value}")]
}

/// The `-e` value of every rsync run to a destination whose master listens at `socket`.
pub fn client_rsh(words: &[String], socket: &Path) -> String {
    let options: Vec<String> = [
        option("ControlPath", socket.display()),
        option("ControlMaster", "no"),
    ]
    .concat();
    join_rsh(&with_options(words, &options))
}

/// The master's program and arguments for `host`, listening at `socket`. ServerAlive
/// comes after the operator's words (theirs win): a master whose peer vanished exits
/// within a minute, so that runs stop trying its socket and connect on their own.
pub fn master_argv(words: &[String], socket: &Path, host: &str) -> (OsString, Vec<OsString>) {
    let ours: Vec<String> = [
        option("ControlPath", socket.display()),
        option("ControlMaster", "yes"),
        option("ControlPersist", "no"),
        option("BatchMode", "yes"),
    ]
    .concat();
    let mut words = with_options(words, &ours);
    let program = OsString::from(words.remove(0));
    let mut args: Vec<OsString> = words.into_iter().map(OsString::from).collect();
    for [o, value] in [
        option("ServerAliveInterval", 15),
        option("ServerAliveCountMax", 3),
    ] {
        args.push(o.into());
        args.push(value.into());
    }
    args.push("-N".into());
    // The destination is one argument after the options; `--` is not needed (ssh stops at
    // the first non-option) but a host starting with `-` is refused by the config anyway.
    args.push(host.into());
    (program, args)
}

/// The `-e` value of rsync runs to `remote`, when they ride a shared connection: an ssh
/// remote, `rsync.ssh_control_dir` set (the pipeline started the masters), and an ssh
/// command that can be shared.
pub fn rsh_for(rsync: &RsyncConfig, remote: &Remote) -> Option<String> {
    let (Remote::Ssh { host, .. }, Some(dir)) = (remote, &rsync.ssh_control_dir) else {
        return None;
    };
    let words = ssh_words(rsync)?;
    let socket = dir.join(control_name(&words, host));
    Some(client_rsh(&words, &socket))
}

/// What an outage of one master looks like to the log, pure: one line when it goes down,
/// one when it is back, and the delay before the next start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outage {
    /// Starts that ended without a stable connection since the last stable one.
    failures: u32,
    /// When the current connection came up (`None`: not up).
    up_since: Option<Instant>,
    /// An outage was logged and its end was not yet.
    logged: bool,
}

/// What the thread does after a master's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterExit {
    /// Log this exit (the first of an outage).
    pub log: bool,
    /// Start the master again after this long.
    pub retry_in: Duration,
}

impl Outage {
    /// The master's socket appeared: true when this ends a logged outage.
    pub fn up(&mut self, now: Instant) -> bool {
        self.up_since.get_or_insert(now);
        std::mem::take(&mut self.logged)
    }

    /// The master exited at `now`.
    pub fn exited(&mut self, now: Instant) -> AfterExit {
        if self
            .up_since
            .take()
            .is_some_and(|since| now.saturating_duration_since(since) >= STABLE_AFTER)
        {
            self.failures = 0;
        }
        let retry_in = crate::backoff::doubling(RESTART_FIRST, self.failures, RESTART_MAX);
        self.failures = self.failures.saturating_add(1);
        let log = !self.logged;
        self.logged = true;
        AfterExit { log, retry_in }
    }
}

/// One destination's master.
struct Master {
    /// `[user@]host`.
    host: String,
    socket: PathBuf,
    log: PathBuf,
    program: OsString,
    args: Vec<OsString>,
    /// The remotes it serves, for their `/status`.
    targets: Vec<TargetId>,
    child: Option<Child>,
    /// When to start it again (`None` with a child running).
    start_at: Option<Instant>,
    outage: Outage,
}

impl Master {
    fn start(&mut self) {
        self.start_at = None;
        // A master that died without cleaning up left its socket: a new master would
        // find the name taken and run without sharing.
        let _ = std::fs::remove_file(&self.socket);
        let log = File::create(&self.log);
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its own group: stopping it stops nothing of ours, and SIGINT of a
            // terminal does not reach it.
            .process_group(0);
        end_with_this_thread(&mut command);
        match log {
            Ok(file) => command.stderr(file),
            Err(_) => command.stderr(Stdio::null()),
        };
        match command.spawn() {
            Ok(child) => {
                log::debug!(
                    "ssh {}: shared connection starting (pid {})",
                    self.host,
                    child.id()
                );
                self.child = Some(child);
            }
            Err(err) => {
                let reason = format!("cannot start {}: {err}", self.program.to_string_lossy());
                self.gone(&reason, Instant::now());
            }
        }
    }

    /// The master is not running any more (reaped or never started).
    fn gone(&mut self, reason: &str, now: Instant) {
        let after = self.outage.exited(now);
        if after.log {
            log::warn!(
                "ssh {}: shared connection down ({reason}); rsync connects on its own meanwhile, retrying in {}s",
                self.host,
                after.retry_in.as_secs()
            );
        } else {
            log::debug!("ssh {}: shared connection still down: {reason}", self.host);
        }
        self.start_at = Some(now + after.retry_in);
    }

    /// Reaps an exited master, notes a socket that appeared; true when it is up.
    fn look(&mut self, now: Instant) -> bool {
        let Some(child) = self.child.as_mut() else {
            if self.start_at.is_some_and(|at| now >= at) {
                self.start();
            }
            return false;
        };
        match child.try_wait() {
            Ok(None) => {
                let up = self.socket.exists();
                if up && self.outage.up(now) {
                    log::info!("ssh {}: shared connection up again", self.host);
                }
                up
            }
            Ok(Some(status)) => {
                self.child = None;
                let reason = format!("ssh {status}: {}", log_tail(&self.log));
                self.gone(&reason, now);
                false
            }
            Err(err) => {
                self.stop();
                self.gone(&format!("cannot wait for ssh: {err}"), now);
                false
            }
        }
    }

    /// SIGTERM to its group, SIGKILL after [`TERM_GRACE`], reaped.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_child(&child);
        if kill_process_group(group, Signal::TERM).is_err() {
            let _ = child.kill();
        }
        if !matches!(child.wait_timeout(TERM_GRACE), Ok(Some(_))) {
            if kill_process_group(group, Signal::KILL).is_err() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        log::debug!("ssh {}: shared connection stopped", self.host);
    }
}

/// Makes the child get SIGTERM when the thread that starts it (`sersync-ssh`) ends, so
/// that a sersync killed with SIGKILL leaves no master holding a connection for ever (the
/// thread itself stops its masters before it returns).
#[allow(unsafe_code)]
fn end_with_this_thread(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // prctl(2) and getppid(2) system calls, both async-signal-safe; it touches no memory
    // of the parent.
    let parent = rustix::process::getpid();
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
            // The parent died before the prctl took effect: no signal will come.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other("sersync is gone"));
            }
            Ok(())
        });
    }
}

/// The last line of a master's stderr log.
fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    super::rsync::tail_text(&bytes)
}

/// The masters of a pipeline: their runtime directory (removed on drop), and the thread
/// `sersync-ssh` that starts, watches, restarts and at the end stops and reaps them.
pub struct SshMasters {
    dir: tempfile::TempDir,
    stop_tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    up: Arc<AtomicBool>,
    hosts: usize,
}

impl SshMasters {
    /// Starts one master per distinct ssh destination of `roots`, when `<ssh
    /// shareConnection>` is on and the ssh command can be shared; `Ok(None)` when there is
    /// nothing to share (logged when sharing was wanted but cannot be).
    ///
    /// # Errors
    /// When the runtime directory or the thread cannot be made.
    pub fn start(
        rsync: &RsyncConfig,
        roots: &[(PathBuf, Vec<Remote>)],
        metrics: &Arc<Metrics>,
    ) -> std::io::Result<Option<SshMasters>> {
        let mut targets: BTreeMap<&str, Vec<TargetId>> = BTreeMap::new();
        for (root, (_, remotes)) in roots.iter().enumerate() {
            for (remote, r) in remotes.iter().enumerate() {
                if let Remote::Ssh { host, .. } = r {
                    targets
                        .entry(host.as_str())
                        .or_default()
                        .push(TargetId { root, remote });
                }
            }
        }
        if targets.is_empty() || !rsync.share_ssh {
            return Ok(None);
        }
        let Some(words) = ssh_words(rsync) else {
            log::warn!(
                "<ssh shareConnection>: the remote shell of <commonParams> is not ssh (or does not split): every rsync connects on its own"
            );
            return Ok(None);
        };
        let dir = runtime_dir()?;
        let masters: Vec<Master> = targets
            .into_iter()
            .map(|(host, targets)| {
                let name = control_name(&words, host);
                let socket = dir.path().join(&name);
                let (program, args) = master_argv(&words, &socket, host);
                Master {
                    host: host.to_owned(),
                    log: dir.path().join(format!("{name}.log")),
                    socket,
                    program,
                    args,
                    targets,
                    child: None,
                    start_at: Some(Instant::now()),
                    outage: Outage::default(),
                }
            })
            .collect();
        let hosts = masters.len();
        let up = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let thread = {
            let (metrics, up) = (Arc::clone(metrics), Arc::clone(&up));
            std::thread::Builder::new()
                .name("sersync-ssh".into())
                .spawn(move || watch_loop(masters, &stop_rx, &metrics, &up))?
        };
        Ok(Some(SshMasters {
            dir,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
            up,
            hosts,
        }))
    }

    /// The directory of the sockets, for `RsyncConfig::ssh_control_dir`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until every master is up, at most `limit` (a remote that is down or slow is
    /// not waited for: its runs connect on their own).
    pub fn wait_up(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.up.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.up.load(Ordering::SeqCst) {
            log::info!(
                "ssh: not every shared connection ({} destination(s)) is up after {}s; runs connect on their own until it is",
                self.hosts,
                limit.as_secs()
            );
        }
    }

    /// Stops and reaps every master and removes the runtime directory. Call once no rsync
    /// rides them any more (a session on a stopped master ends with it).
    pub fn shutdown(&mut self) {
        self.stop_tx.take(); // disconnects: the thread stops its masters and returns
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SshMasters {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for SshMasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshMasters")
            .field("dir", &self.dir.path())
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// Where the socket directory goes: `$TMPDIR` when that is short enough, else `/tmp`.
fn runtime_base() -> PathBuf {
    let base = std::env::temp_dir();
    if base.as_os_str().len() <= MAX_BASE {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// The socket directory as `--check` shows it (its random part is made at start).
pub fn preview_dir() -> PathBuf {
    runtime_base().join(format!("{DIR_PREFIX}XXXXXX"))
}

/// The socket directory's name before its random part.
const DIR_PREFIX: &str = "sersync-ssh.";

/// A private (0700) directory for the sockets, in [`runtime_base`].
fn runtime_dir() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir_in(runtime_base())?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

fn watch_loop(
    mut masters: Vec<Master>,
    stop_rx: &Receiver<()>,
    metrics: &Metrics,
    all_up: &AtomicBool,
) {
    loop {
        let now = Instant::now();
        let mut every = true;
        for master in &mut masters {
            let up = master.look(now);
            every &= up;
            for target in &master.targets {
                metrics.with_target(*target, |t| t.ssh_shared = up);
            }
        }
        all_up.store(every, Ordering::SeqCst);
        match stop_rx.recv_timeout(TICK) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    for master in &mut masters {
        master.stop();
        for target in &master.targets {
            metrics.with_target(*target, |t| t.ssh_shared = false);
        }
    }
}

#[cfg(test)]
mod tests;
