//! Warm rsync clients: one per remote, started ahead of need and blocked reading its path
//! list, so that a small batch skips exec, connect, the daemon's fork and auth, the ssh
//! handshake and the protocol set-up: only the file list and the data are left.
//!
//! rsync reads `--files-from=-` only when it builds the file list, after connecting and
//! authenticating (`client_run` → `send_file_list`). A warm client runs the exact argument
//! vector of a cold files-from batch ([`rsync::args`] with [`RunKind::Batch`]); a batch
//! writes its NUL-separated paths to the client's stdin and closes it, so the result is
//! the one a cold run would give.
//!
//! rsync reads that list one byte per `read(2)`, so warm pays only for small lists
//! ([`MAX_LIST_BYTES`], measured against the argument form); bigger batches run cold.
//!
//! The decisions ([`maintain`], [`use_warm`], [`after_job`]) are pure and take the clock;
//! [`WarmPool`] is the thin part around them: one slot per remote behind a mutex, and one
//! maintainer thread (`sersync-warm`) that starts, recycles and reaps clients off the hot
//! path. Every client runs in its own process group, killed as a whole and reaped.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use wait_timeout::ChildExt;

use super::rsync::{self, RunKind};
use crate::config::{Remote, RsyncConfig, WarmConfig};
use crate::job::{Disposition, JobKind, PushFailure, PushJob, PushOutcome, TargetId};
use crate::metrics::Metrics;

/// Bytes of NUL-separated path list at most for a warm run. Measured on this machine with a
/// real daemon (p50 of 25 runs, warm vs. the argument form cold): 1 path 3.8 vs 12.6 ms,
/// 16 paths (496 bytes) 12.2 vs 41.6 ms, 64 paths (1,984 bytes) 24.5 vs 24.3 ms, 256
/// paths 154 vs 136 ms: the gain is gone at about 2 KiB, so half of that.
pub const MAX_LIST_BYTES: usize = 1024;

/// How long a remote whose daemon refused a connection for `max connections` gets no
/// warm client, so that its cold runs find the connection free.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(60);

/// The longest the maintainer sleeps between looks at the slots.
const TICK: Duration = Duration::from_secs(1);
/// How long a stopped client gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How often a running warm client looks at the pool's cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// How warm clients are used, from `<rsync><warm>` and `<timeout>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmPolicy {
    /// Warm clients at all.
    pub enabled: bool,
    /// A waiting client older than this is replaced.
    pub idle: Duration,
    /// Largest path list handed to a warm client.
    pub max_list_bytes: usize,
}

impl WarmPolicy {
    /// The policy for `<rsync>`: rsync's own `--timeout` would end an idle client too, so
    /// the idle age stays under half of it.
    pub fn new(warm: WarmConfig, timeout: Option<u32>) -> WarmPolicy {
        let idle = match timeout {
            Some(seconds) if seconds > 0 => {
                warm.idle.min(Duration::from_secs(u64::from(seconds)) / 2)
            }
            _ => warm.idle,
        };
        WarmPolicy {
            enabled: warm.start,
            idle: idle.max(Duration::from_millis(500)),
            max_list_bytes: MAX_LIST_BYTES,
        }
    }
}

/// What the slot's client is doing, as the decisions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFacts {
    /// No client.
    Absent,
    /// Started at this time and still running (blocked on its path list).
    Waiting {
        /// When it was started.
        started: Instant,
    },
    /// It exited on its own before it was given work (killed, refused, connection lost).
    Exited,
}

/// The facts about one remote's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotFacts {
    /// Its client.
    pub client: ClientFacts,
    /// The last job failed, or the last client died on its own: no new client until a
    /// job of this remote succeeds (its probe runs cold).
    pub parked: bool,
    /// Jobs of this remote running now (a running cold job keeps its connection alone).
    pub running: usize,
    /// No client before this time (the daemon refused for `max connections`).
    pub paused_until: Option<Instant>,
    /// The pool is shutting down.
    pub stopping: bool,
}

/// What the maintainer does with a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Keep,
    /// Start a client.
    Start,
    /// Kill the client and start a new one (it is old enough to be timed out soon).
    Recycle,
    /// Kill the client and start none.
    Kill,
    /// Reap the client that exited and park the slot.
    Discard,
}

/// The maintainer's decision for one slot at `now` (see the table test).
pub fn maintain(policy: &WarmPolicy, facts: &SlotFacts, now: Instant) -> Action {
    let paused = facts.paused_until.is_some_and(|until| now < until);
    let wanted =
        policy.enabled && !facts.stopping && !facts.parked && facts.running == 0 && !paused;
    match facts.client {
        ClientFacts::Exited => Action::Discard,
        ClientFacts::Waiting { .. } if !wanted => Action::Kill,
        ClientFacts::Waiting { started } if now.duration_since(started) >= policy.idle => {
            Action::Recycle
        }
        ClientFacts::Waiting { .. } => Action::Keep,
        ClientFacts::Absent if wanted => Action::Start,
        ClientFacts::Absent => Action::Keep,
    }
}

/// Whether a batch with a path list of `list_bytes` goes to a waiting client.
pub fn use_warm(policy: &WarmPolicy, list_bytes: usize) -> bool {
    policy.enabled && list_bytes > 0 && list_bytes <= policy.max_list_bytes
}

/// How a finished job changes its slot: `(parked, paused_until)`.
pub fn after_job(
    disposition: &Disposition,
    paused_until: Option<Instant>,
    now: Instant,
) -> (bool, Option<Instant>) {
    match disposition.failure() {
        None => (false, paused_until),
        Some(failure) if is_max_connections(&failure.reason) => (true, Some(now + REFUSED_PAUSE)),
        Some(_) => (true, paused_until),
    }
}

/// The rsync daemon's refusal when `max connections` is reached.
fn is_max_connections(stderr: &str) -> bool {
    stderr.contains("max connections")
}

/// One rsync started ahead of need, blocked reading its path list.
#[derive(Debug)]
pub struct WarmClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<ChildStderr>,
    started: Instant,
    reaped: bool,
    has_children: bool,
}

impl WarmClient {
    /// Starts `binary args` in its own process group, stdin a pipe it blocks on.
    /// `has_children`: rsync forks (ssh, a local receiver), so it is stopped with SIGTERM
    /// first to reap them itself; a daemon client is a single process, SIGKILLed at once.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn spawn(
        binary: &std::path::Path,
        args: &[OsString],
        has_children: bool,
    ) -> std::io::Result<WarmClient> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group: killing it also ends rsync's ssh or local receiver child.
            .process_group(0)
            .spawn()?;
        Ok(WarmClient {
            stdin: child.stdin.take(),
            stderr: child.stderr.take(),
            child,
            started: Instant::now(),
            reaped: false,
            has_children,
        })
    }

    /// The process (and process group) id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it exited (reaping it if so).
    fn exited(&mut self) -> bool {
        if self.reaped {
            return true;
        }
        let done = !matches!(self.child.try_wait(), Ok(None));
        self.reaped = done;
        done
    }

    /// What it wrote on stderr, once it exited.
    fn stderr_text(&mut self) -> String {
        let mut bytes = Vec::new();
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.read_to_end(&mut bytes);
        }
        rsync::tail_text(&bytes)
    }

    /// Hands it `list` (NUL-separated root-relative paths), closes its stdin and waits, at
    /// most `limit`, killing its process group when `cancel` is set.
    ///
    /// # Errors
    /// A [`PushFailure`] as a cold run would give one.
    pub fn run(
        mut self,
        list: &[u8],
        limit: Option<Duration>,
        cancel: &AtomicBool,
    ) -> Result<(), PushFailure> {
        let failure = |reason: String| PushFailure { code: None, reason };
        if let Some(mut stdin) = self.stdin.take() {
            // At most MAX_LIST_BYTES: fits in the pipe, never blocks. An error means rsync
            // exited, which its status reports.
            let _ = stdin.write_all(list);
        }
        let mut stderr = self.stderr.take();
        let reader = std::thread::Builder::new()
            .name("sersync-warm-stderr".into())
            .spawn(move || {
                let mut bytes = Vec::new();
                if let Some(stderr) = stderr.as_mut() {
                    let _ = stderr.read_to_end(&mut bytes);
                }
                bytes
            })
            .map_err(|err| failure(format!("cannot read rsync's stderr: {err}")))?;
        let deadline = limit.map(|limit| Instant::now() + limit);
        let status = loop {
            // Returns as soon as the child exits: polling adds no latency.
            match crate::child::wait_up_to(&mut self.child, CANCEL_POLL) {
                Ok(Some(status)) => {
                    self.reaped = true;
                    break Ok(status);
                }
                Ok(None) if cancel.load(Ordering::SeqCst) => {
                    break Err("stopped at shutdown".to_owned());
                }
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    break Err(format!(
                        "still running after {}s, killed",
                        limit.map_or(0, |l| l.as_secs())
                    ));
                }
                Ok(None) => {}
                Err(err) => break Err(format!("cannot wait for rsync: {err}")),
            }
        };
        if status.is_err() {
            self.kill();
        }
        let stderr = rsync::tail_text(&reader.join().unwrap_or_default());
        if !stderr.is_empty() {
            log::debug!("rsync stderr: {stderr}");
        }
        // Anything but a clean exit (a partial transfer too) goes to a cold run, whose
        // per-path fates are the outcome.
        match status.map_err(failure)?.code() {
            Some(code) => match rsync::classify(code, &stderr) {
                Disposition::Done => Ok(()),
                other => Err(other
                    .failure()
                    .cloned()
                    .unwrap_or_else(|| failure(format!("rsync exited with code {code}")))),
            },
            None => Err(failure(format!("killed by a signal: {stderr}"))),
        }
    }

    /// Kills its process group and reaps it.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        // With children, SIGTERM first: rsync's handler reaps them (ssh, a local
        // receiver), which a SIGKILL would orphan (and an init that does not reap would
        // keep as zombies); it can take rsync a while, hence off the hot path (`doomed`).
        // The group is signalled before the leader is reaped: its id is still ours.
        if self.has_children {
            signal_group(self.child.id(), libc::SIGTERM);
        }
        if !self.has_children || !matches!(self.child.wait_timeout(TERM_GRACE), Ok(Some(_))) {
            signal_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.reaped = true;
    }
}

impl Drop for WarmClient {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `signal` to the process group `pgid` (a child started with `process_group(0)`).
#[allow(unsafe_code)]
fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative id
    // names the process group of our own unreaped child.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// One remote's warm state.
#[derive(Debug)]
struct Slot {
    target: TargetId,
    args: Vec<OsString>,
    /// ssh or local remote: rsync forks a child.
    has_children: bool,
    client: Option<WarmClient>,
    parked: bool,
    running: usize,
    paused_until: Option<Instant>,
}

impl Slot {
    fn facts(&mut self, stopping: bool) -> SlotFacts {
        let client = match self.client.as_mut() {
            None => ClientFacts::Absent,
            Some(client) => {
                if client.exited() {
                    ClientFacts::Exited
                } else {
                    ClientFacts::Waiting {
                        started: client.started,
                    }
                }
            }
        };
        SlotFacts {
            client,
            parked: self.parked,
            running: self.running,
            paused_until: self.paused_until,
            stopping,
        }
    }
}

struct Shared {
    policy: WarmPolicy,
    binary: PathBuf,
    limit: Option<Duration>,
    /// The remote of each slot, by slot index (looked up without taking a slot's lock).
    targets: Vec<TargetId>,
    slots: Vec<Mutex<Slot>>,
    stopping: AtomicBool,
    /// Set by [`WarmPool::cancel_running`]: clients already handed a batch stop too.
    cancel: AtomicBool,
    /// Warm clients running a batch now.
    active: AtomicUsize,
    /// Clients to stop, handed over by a cold job so that it does not wait for the kill.
    doomed: Mutex<Vec<WarmClient>>,
    metrics: Arc<Metrics>,
}

/// The warm clients of every remote, and the thread that keeps them.
pub struct WarmPool {
    shared: Arc<Shared>,
    wake_tx: Mutex<Option<Sender<()>>>,
    maintainer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("policy", &self.shared.policy)
            .field("slots", &self.shared.slots.len())
            .finish_non_exhaustive()
    }
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    match slot.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl WarmPool {
    /// Starts the maintainer, which starts one client per remote right away.
    ///
    /// `roots` are the roots with their remotes by index; `delete` as for batches. Each
    /// client runs the argument vector of a cold files-from batch for its remote.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn start(
        policy: WarmPolicy,
        rsync_config: &RsyncConfig,
        roots: &[(PathBuf, Vec<Remote>)],
        delete: bool,
        limit: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<WarmPool> {
        let mut slots = Vec::new();
        for (root_idx, (root, remotes)) in roots.iter().enumerate() {
            for (remote_idx, remote) in remotes.iter().enumerate() {
                let args = rsync::args(rsync_config, root, remote, RunKind::Batch { delete }, &[]);
                slots.push(Mutex::new(Slot {
                    target: TargetId {
                        root: root_idx,
                        remote: remote_idx,
                    },
                    args,
                    has_children: !matches!(remote, Remote::Daemon { .. }),
                    client: None,
                    // A local mirror's directory is created by the first cold run.
                    parked: matches!(remote, Remote::Local { .. }),
                    running: 0,
                    paused_until: None,
                }));
            }
        }
        let targets = slots.iter().map(|slot| lock(slot).target).collect();
        let shared = Arc::new(Shared {
            policy,
            binary: rsync_config.binary.clone(),
            limit,
            targets,
            slots,
            stopping: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            doomed: Mutex::new(Vec::new()),
            metrics,
        });
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let maintainer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("sersync-warm".into())
                .spawn(move || maintain_loop(&shared, &wake_rx))?
        };
        Ok(WarmPool {
            shared,
            wake_tx: Mutex::new(Some(wake_tx)),
            maintainer: Mutex::new(Some(maintainer)),
        })
    }

    fn slot(&self, target: TargetId) -> Option<&Mutex<Slot>> {
        let idx = self.shared.targets.iter().position(|t| *t == target)?;
        self.shared.slots.get(idx)
    }

    fn wake(&self) {
        if let Ok(guard) = self.wake_tx.lock() {
            if let Some(tx) = guard.as_ref() {
                let _ = tx.try_send(());
            }
        }
    }

    /// Whether a batch whose path list is `list_bytes` long may go to a warm client.
    pub fn takes(&self, list_bytes: usize) -> bool {
        use_warm(&self.shared.policy, list_bytes)
    }

    /// Runs `job`: a small batch on the remote's waiting client when one is ready, else
    /// (or when the warm run failed) `cold`. `list` is the batch's NUL-separated path list
    /// exactly as a cold files-from run would read it ([`rsync::batch_stdin`]; empty for a
    /// full sync). The batch's outcome is the cold run's when one ran, so a dead or
    /// refused warm client costs no failure and loses nothing.
    pub fn run(
        &self,
        job: PushJob,
        list: &[u8],
        cold: impl FnOnce(PushJob, Option<&PushFailure>) -> PushOutcome,
    ) -> PushOutcome {
        let Some(slot) = self.slot(job.target) else {
            return cold(job, None);
        };
        let list = match &job.kind {
            JobKind::Batch { .. } => list,
            JobKind::Full { .. } | JobKind::Subtree { .. } | JobKind::Move { .. } => &[],
        };
        let client = {
            let mut slot = lock(slot);
            slot.running += 1;
            let ready = !self.shared.stopping.load(Ordering::SeqCst)
                && use_warm(&self.shared.policy, list.len());
            let mut client = slot.client.take();
            if client.as_mut().is_some_and(WarmClient::exited) {
                client = None; // died while waiting: reaped, this batch runs cold
                slot.parked = true;
            }
            self.shared
                .metrics
                .with_target(job.target, |t| t.warm_ready = false);
            match client {
                Some(client) if ready => Some((client, slot.args.clone())),
                Some(unused) => {
                    // A cold run ends the waiting client: the daemon then sees no more
                    // connections than without warm clients. Stopped by the maintainer.
                    if let Ok(mut doomed) = self.shared.doomed.lock() {
                        doomed.push(unused);
                    }
                    None
                }
                None => None,
            }
        };
        self.wake();
        let outcome = match client {
            Some((client, args)) => {
                let started = Instant::now();
                self.shared.active.fetch_add(1, Ordering::SeqCst);
                let result = client.run(list, self.shared.limit, &self.shared.cancel);
                self.shared.active.fetch_sub(1, Ordering::SeqCst);
                match result {
                    Ok(()) => {
                        log::debug!(
                            "{}: warm rsync done in {:.3}s",
                            job.target,
                            started.elapsed().as_secs_f64()
                        );
                        self.shared
                            .metrics
                            .with_target(job.target, |t| t.warm_pushes += 1);
                        PushOutcome {
                            job,
                            disposition: Disposition::Done,
                            unsent: 0,
                            command: rsync::describe(&self.shared.binary, &args),
                        }
                    }
                    Err(failure) if self.shared.cancel.load(Ordering::SeqCst) => {
                        // Shutdown: the scheduler journaled the batch; no cold run now.
                        PushOutcome {
                            job,
                            disposition: Disposition::RemoteDown(failure),
                            unsent: 0,
                            command: rsync::describe(&self.shared.binary, &args),
                        }
                    }
                    Err(failure) => {
                        log::debug!(
                            "{}: warm rsync failed, running cold: {}",
                            job.target,
                            failure.reason
                        );
                        self.shared
                            .metrics
                            .with_target(job.target, |t| t.warm_fallbacks += 1);
                        cold(job, Some(&failure))
                    }
                }
            }
            None => cold(job, None),
        };
        {
            let mut slot = lock(slot);
            slot.running = slot.running.saturating_sub(1);
            (slot.parked, slot.paused_until) =
                after_job(&outcome.disposition, slot.paused_until, Instant::now());
        }
        self.wake();
        outcome
    }

    /// Stops the clients already handed a batch (their process groups killed and reaped):
    /// at shutdown, once the scheduler has journaled the running jobs.
    /// Returns once they are reaped (within [`CANCEL_POLL`] and a kill; 5 s at most).
    pub fn cancel_running(&self) {
        self.shared.cancel.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills and reaps every waiting client and stops the maintainer; later jobs run cold.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Ok(mut guard) = self.wake_tx.lock() {
            guard.take(); // disconnects: the maintainer returns
        }
        let handle = self.maintainer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        stop_doomed(&self.shared);
        for slot in &self.shared.slots {
            let mut slot = lock(slot);
            slot.client = None; // Drop kills and reaps
            let target = slot.target;
            self.shared
                .metrics
                .with_target(target, |t| t.warm_ready = false);
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The maintainer: applies [`maintain`] to every slot, then sleeps until a job ends, the
/// next tick, or the pool is dropped.
fn maintain_loop(shared: &Shared, wake_rx: &Receiver<()>) {
    let tick = TICK.min(shared.policy.idle / 4);
    loop {
        stop_doomed(shared);
        for slot in &shared.slots {
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            maintain_slot(shared, slot);
            stop_doomed(shared);
        }
        match wake_rx.recv_timeout(tick) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Stops (kills and reaps) the clients cold jobs handed over.
fn stop_doomed(shared: &Shared) {
    let doomed = match shared.doomed.lock() {
        Ok(mut doomed) => std::mem::take(&mut *doomed),
        Err(_) => Vec::new(),
    };
    drop(doomed); // Drop kills and reaps, outside the lock
}

fn maintain_slot(shared: &Shared, slot: &Mutex<Slot>) {
    let mut slot = lock(slot);
    let stopping = shared.stopping.load(Ordering::SeqCst);
    let facts = slot.facts(stopping);
    let target = slot.target;
    let action = maintain(&shared.policy, &facts, Instant::now());
    match action {
        Action::Keep => return,
        Action::Kill | Action::Recycle => {
            // Stopped after the slot's lock is freed (SIGTERM can take rsync a while).
            if let (Some(client), Ok(mut doomed)) = (slot.client.take(), shared.doomed.lock()) {
                doomed.push(client);
            }
        }
        Action::Discard => {
            let reason = slot
                .client
                .take()
                .map(|mut c| c.stderr_text())
                .unwrap_or_default();
            log::debug!("{target}: warm rsync exited while waiting: {reason}");
            if is_max_connections(&reason) {
                slot.paused_until = Some(Instant::now() + REFUSED_PAUSE);
            }
            slot.parked = true;
        }
        Action::Start => {}
    }
    if matches!(action, Action::Start | Action::Recycle) {
        match WarmClient::spawn(&shared.binary, &slot.args, slot.has_children) {
            Ok(client) => {
                log::debug!("{target}: warm rsync {} waiting", client.pid());
                slot.client = Some(client);
            }
            Err(err) => {
                log::warn!("{target}: cannot start a warm rsync: {err}");
                slot.parked = true;
            }
        }
    }
    let ready = slot.client.is_some();
    shared.metrics.with_target(target, |t| t.warm_ready = ready);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> WarmPolicy {
        WarmPolicy {
            enabled: true,
            idle: Duration::from_secs(20),
            max_list_bytes: MAX_LIST_BYTES,
        }
    }

    fn facts(client: ClientFacts) -> SlotFacts {
        SlotFacts {
            client,
            parked: false,
            running: 0,
            paused_until: None,
            stopping: false,
        }
    }

    #[test]
    fn maintain_table() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(30);
        let young = ClientFacts::Waiting {
            started: now - Duration::from_secs(5),
        };
        let old = ClientFacts::Waiting { started: t0 };
        let off = WarmPolicy {
            enabled: false,
            ..policy()
        };
        let rows: Vec<(&str, WarmPolicy, SlotFacts, Action)> = vec![
            (
                "empty slot gets a client",
                policy(),
                facts(ClientFacts::Absent),
                Action::Start,
            ),
            ("young client kept", policy(), facts(young), Action::Keep),
            ("old client recycled", policy(), facts(old), Action::Recycle),
            (
                "exited client discarded",
                policy(),
                facts(ClientFacts::Exited),
                Action::Discard,
            ),
            (
                "off: no client",
                off,
                facts(ClientFacts::Absent),
                Action::Keep,
            ),
            ("off: client killed", off, facts(young), Action::Kill),
            (
                "parked (failing): none started",
                policy(),
                SlotFacts {
                    parked: true,
                    ..facts(ClientFacts::Absent)
                },
                Action::Keep,
            ),
            (
                "parked: waiting client killed",
                policy(),
                SlotFacts {
                    parked: true,
                    ..facts(young)
                },
                Action::Kill,
            ),
            (
                "cold job running: none started",
                policy(),
                SlotFacts {
                    running: 1,
                    ..facts(ClientFacts::Absent)
                },
                Action::Keep,
            ),
            (
                "paused for max connections",
                policy(),
                SlotFacts {
                    paused_until: Some(now + Duration::from_secs(1)),
                    ..facts(ClientFacts::Absent)
                },
                Action::Keep,
            ),
            (
                "pause over",
                policy(),
                SlotFacts {
                    paused_until: Some(now),
                    ..facts(ClientFacts::Absent)
                },
                Action::Start,
            ),
            (
                "stopping: killed",
                policy(),
                SlotFacts {
                    stopping: true,
                    ..facts(young)
                },
                Action::Kill,
            ),
            (
                "stopping: exited still reaped",
                policy(),
                SlotFacts {
                    stopping: true,
                    ..facts(ClientFacts::Exited)
                },
                Action::Discard,
            ),
        ];
        for (name, policy, facts, want) in rows {
            assert_eq!(maintain(&policy, &facts, now), want, "{name}");
        }
    }

    #[test]
    fn only_small_lists_go_warm() {
        let off = WarmPolicy {
            enabled: false,
            ..policy()
        };
        for (policy, bytes, want) in [
            (policy(), 0, false),
            (policy(), 1, true),
            (policy(), MAX_LIST_BYTES, true),
            (policy(), MAX_LIST_BYTES + 1, false),
            (off, 10, false),
        ] {
            assert_eq!(use_warm(&policy, bytes), want, "{bytes} bytes, {policy:?}");
        }
    }

    #[test]
    fn job_results_park_and_pause() {
        let now = Instant::now();
        let fail = |reason: &str| {
            Disposition::RemoteDown(PushFailure {
                code: Some(5),
                reason: reason.into(),
            })
        };
        let later = Some(now + Duration::from_secs(3));
        assert_eq!(after_job(&Disposition::Done, None, now), (false, None));
        assert_eq!(after_job(&Disposition::Done, later, now), (false, later));
        assert_eq!(
            after_job(&fail("rsync exited with code 12"), None, now),
            (true, None)
        );
        assert_eq!(
            after_job(
                &fail("@ERROR: max connections (1) reached -- try again later"),
                None,
                now
            ),
            (true, Some(now + REFUSED_PAUSE))
        );
    }

    #[test]
    fn idle_age_stays_under_rsync_timeout() {
        let warm = WarmConfig::default();
        assert_eq!(WarmPolicy::new(warm, None).idle, warm.idle);
        assert_eq!(WarmPolicy::new(warm, Some(0)).idle, warm.idle);
        assert_eq!(WarmPolicy::new(warm, Some(10)).idle, Duration::from_secs(5));
        assert_eq!(
            WarmPolicy::new(warm, Some(1)).idle,
            Duration::from_millis(500)
        );
        let off = WarmConfig {
            start: false,
            ..warm
        };
        assert!(!WarmPolicy::new(off, None).enabled);
    }
}
