//! The scheduler's state: every target queue, running jobs, delivery tracking, timers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::queue::{Caps, FullRequest, Plan, Taken, TargetQueue};
use super::retry::backoff;
use crate::config::CrontabConfig;
use crate::job::{Delivered, Entry, FsEvent, JobKind, Op, PushJob, PushOutcome, TargetId};
use crate::metrics::Metrics;

/// How long a small backlog waits for a running batch of the same remote.
pub const LINGER: Duration = Duration::from_millis(100);

/// Where failed work is made durable (the failure journal).
pub trait Journal: Send + Sync {
    /// Records failed entries of one target; durable when it returns `Ok`.
    ///
    /// # Errors
    /// A message when the journal could not be written.
    fn record(
        &self,
        key: &str,
        entries: &[Entry],
        code: Option<i32>,
        reason: &str,
        command: &str,
    ) -> Result<(), String>;
    /// Clears entries that were pushed since; durable when it returns `Ok`.
    ///
    /// # Errors
    /// A message when the journal could not be written.
    fn clear(&self, key: &str, rels: &[PathBuf]) -> Result<(), String>;
    /// Every live entry as `(target key, entry)`.
    fn pending(&self) -> Vec<(String, Entry)>;
}

/// What the scheduler needs to know, derived from the configuration.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Root directories, by root index.
    pub roots: Vec<PathBuf>,
    /// Journal key of each remote of each root (`roots[i]` → keys of its remotes).
    pub target_keys: Vec<Vec<String>>,
    /// Worker threads in the pool.
    pub n_workers: usize,
    /// `<inotify><delete>`: deletions are pushed.
    pub delete: bool,
    /// Batch limits.
    pub caps: Caps,
    /// `timeToExecute`: the longest gap between retries.
    pub retry_max: Duration,
    /// Periodic full sync.
    pub crontab: Option<CrontabConfig>,
    /// `-r`: full sync of every target first.
    pub full_sync_first: bool,
    /// How long shutdown waits for running jobs.
    pub shutdown_grace: Duration,
    /// Whether to report delivered changes (plugins or CDN enabled).
    pub track_delivery: bool,
}

struct Running {
    target: TargetId,
    taken: Vec<Taken>,
    full: Option<FullRequest>,
    started: Instant,
}

struct Owed {
    remaining: Vec<usize>,
    op: Op,
    is_dir: bool,
    mask: u32,
}

/// All scheduling state; driven by the `sersync-coalesce` thread.
pub struct Scheduler {
    pub(super) config: SchedulerConfig,
    journal: Arc<dyn Journal>,
    queues: BTreeMap<TargetId, TargetQueue>,
    running: HashMap<u64, Running>,
    idle_workers: usize,
    next_id: u64,
    rotate: usize,
    next_crontab: Option<Instant>,
    owed: BTreeMap<(usize, PathBuf), Owed>,
    metrics: Arc<Metrics>,
}

impl Scheduler {
    /// Builds the queues, replays the journal and, with `-r`, asks for full syncs.
    pub fn new(
        config: SchedulerConfig,
        journal: Arc<dyn Journal>,
        metrics: Arc<Metrics>,
        now: Instant,
    ) -> Scheduler {
        let mut queues = BTreeMap::new();
        let mut by_key = HashMap::new();
        for (root, keys) in config.target_keys.iter().enumerate() {
            for (remote, key) in keys.iter().enumerate() {
                let id = TargetId { root, remote };
                queues.insert(id, TargetQueue::default());
                by_key.insert(key.clone(), id);
            }
        }
        let mut scheduler = Scheduler {
            idle_workers: config.n_workers.max(1),
            next_crontab: config.crontab.as_ref().map(|c| now + c.interval),
            journal,
            queues,
            running: HashMap::new(),
            next_id: 1,
            rotate: 0,
            owed: BTreeMap::new(),
            metrics,
            config,
        };
        let mut replayed = 0usize;
        for (key, entry) in scheduler.journal.pending() {
            let Some(id) = by_key.get(&key).copied() else {
                if key.starts_with(super::CDN_KEY_PREFIX) {
                    continue; // the CDN stage replays its own purges
                }
                log::warn!(
                    "journal entry for unknown remote {key:?} kept; it matches no <localpath>/<remote> now"
                );
                continue;
            };
            let Some(queue) = scheduler.queues.get_mut(&id) else {
                continue;
            };
            if entry.rel.as_os_str().is_empty() {
                queue.request_full(FullRequest {
                    reason: "journal",
                    extra_excludes: Vec::new(),
                });
            } else {
                queue.observe(entry.rel.clone(), entry.op, entry.is_dir, 0, now);
            }
            queue.journaled.insert(entry.rel);
            replayed += 1;
        }
        if replayed > 0 {
            log::info!("journal: {replayed} pending entr(y/ies) replayed");
        }
        if scheduler.config.full_sync_first {
            scheduler.request_full_all(None, "startup", &[]);
        }
        scheduler
    }

    fn request_full_all(&mut self, root: Option<usize>, reason: &'static str, excludes: &[String]) {
        for (id, queue) in &mut self.queues {
            if root.is_none_or(|r| r == id.root) {
                queue.request_full(FullRequest {
                    reason,
                    extra_excludes: excludes.to_vec(),
                });
            }
        }
    }

    /// Merges one event into the queue of every remote of its root.
    pub fn observe(&mut self, event: FsEvent, now: Instant) {
        match event {
            FsEvent::Rescan { root } => {
                log::warn!(
                    "root {}: events may have been lost; full sync scheduled",
                    self.root_display(root)
                );
                self.request_full_all(Some(root), "rescan", &[]);
            }
            FsEvent::Change(change) => {
                if change.op == Op::Delete && !self.config.delete {
                    return; // <delete start="false">: remote copies are kept
                }
                let n_remotes = self.config.target_keys.get(change.root).map_or(0, Vec::len);
                for remote in 0..n_remotes {
                    if let Some(queue) = self.queues.get_mut(&TargetId {
                        root: change.root,
                        remote,
                    }) {
                        queue.observe(
                            change.rel.clone(),
                            change.op,
                            change.is_dir,
                            change.mask,
                            change.seen.min(now),
                        );
                    }
                }
                if self.config.track_delivery {
                    if change.op == Op::Delete && change.is_dir {
                        let below: Vec<_> = self
                            .owed
                            .range((change.root, change.rel.clone())..)
                            .skip_while(|((r, p), _)| *r == change.root && *p == change.rel)
                            .take_while(|((r, p), _)| {
                                *r == change.root && p.starts_with(&change.rel)
                            })
                            .map(|(k, _)| k.clone())
                            .collect();
                        for key in below {
                            self.owed.remove(&key);
                        }
                    }
                    let owed = Owed {
                        remaining: (0..n_remotes).collect(),
                        op: change.op,
                        is_dir: change.is_dir,
                        mask: change.mask,
                    };
                    self.owed.insert((change.root, change.rel), owed);
                }
            }
        }
    }

    /// Advances timers: held paths, retry times, crontab.
    pub fn tick(&mut self, now: Instant) {
        for queue in self.queues.values_mut() {
            queue.tick(now);
        }
        if let (Some(due), Some(crontab)) = (self.next_crontab, self.config.crontab.clone()) {
            if due <= now {
                log::info!("crontab: full sync of every root");
                self.request_full_all(None, "crontab", &crontab.excludes);
                self.next_crontab = Some(now + crontab.interval);
            }
        }
    }

    /// The earliest instant a timer needs the thread awake.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let now = Instant::now();
        self.queues
            .values()
            .filter_map(|q| {
                let linger = q.lingering(now, LINGER, self.config.caps.max_paths);
                match (q.next_wakeup(), linger) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .chain(self.next_crontab)
            .min()
    }

    /// Jobs handed out and not yet reported back.
    pub fn jobs_in_flight(&self) -> usize {
        self.running.len()
    }

    /// The next job, if a worker is idle and some target has work that may go now.
    pub fn next_job(&mut self, now: Instant) -> Option<PushJob> {
        if self.idle_workers == 0 {
            return None;
        }
        let ids: Vec<TargetId> = self.queues.keys().copied().collect();
        for offset in 0..ids.len() {
            let id = ids[(self.rotate + offset) % ids.len()];
            let root = self
                .config
                .roots
                .get(id.root)
                .map_or(Path::new(""), PathBuf::as_path);
            let Some(queue) = self.queues.get_mut(&id) else {
                continue;
            };
            if queue
                .lingering(now, LINGER, self.config.caps.max_paths)
                .is_some()
            {
                continue;
            }
            let size_of =
                |rel: &Path| std::fs::symlink_metadata(root.join(rel)).map_or(0, |m| m.len());
            let Some(plan) = queue.next_plan(now, self.config.caps, size_of) else {
                continue;
            };
            self.rotate = (self.rotate + offset + 1) % ids.len();
            self.idle_workers -= 1;
            let id_num = self.next_id;
            self.next_id += 1;
            let (kind, taken, full) = match plan {
                Plan::Batch(taken) => {
                    let entries = taken.iter().map(|t| t.entry.clone()).collect();
                    (JobKind::Batch { entries }, taken, None)
                }
                Plan::Full(request, covered) => {
                    let kind = JobKind::Full {
                        reason: request.reason,
                        extra_excludes: request.extra_excludes.clone(),
                    };
                    (kind, covered, Some(request))
                }
            };
            self.running.insert(
                id_num,
                Running {
                    target: id,
                    taken,
                    full,
                    started: now,
                },
            );
            return Some(PushJob {
                id: id_num,
                target: id,
                kind,
            });
        }
        None
    }

    /// Takes a job's outcome; returns the changes that have now reached every remote.
    pub fn complete(&mut self, outcome: PushOutcome, now: Instant) -> Vec<Delivered> {
        self.idle_workers += 1;
        let Some(Running {
            target,
            taken,
            full,
            started,
        }) = self.running.remove(&outcome.job.id)
        else {
            log::error!("outcome for unknown job {}", outcome.job.id);
            return Vec::new();
        };
        let key = self.key(target);
        let Some(queue) = self.queues.get_mut(&target) else {
            return Vec::new();
        };
        match outcome.result {
            Ok(()) => {
                let is_full = full.is_some();
                let mut cleared: Vec<PathBuf> = Vec::new();
                if is_full {
                    // Entries still pending go out in a batch next; they stay journaled
                    // until that succeeds.
                    let (pending, done): (std::collections::BTreeSet<PathBuf>, _) =
                        std::mem::take(&mut queue.journaled)
                            .into_iter()
                            .partition(|rel| !rel.as_os_str().is_empty() && queue.is_pending(rel));
                    queue.journaled = pending;
                    cleared.extend(done);
                    log::info!(
                        "{key}: full sync ({}) done in {:.1}s",
                        full.as_ref().map_or("", |f| f.reason),
                        (now - started).as_secs_f64()
                    );
                } else {
                    for t in &taken {
                        if queue.journaled.remove(&t.entry.rel) {
                            cleared.push(t.entry.rel.clone());
                        }
                        if t.entry.op == Op::Delete && t.entry.is_dir {
                            for below in queue.journaled_below(&t.entry.rel) {
                                queue.journaled.remove(&below);
                                cleared.push(below);
                            }
                        }
                    }
                }
                queue.succeeded(&taken, is_full);
                let latencies: Vec<Duration> = taken
                    .iter()
                    .map(|t| now.saturating_duration_since(t.pending.seen))
                    .collect();
                self.metrics.record_push(target, &latencies);
                if is_full {
                    Metrics::incr(&self.metrics.full_syncs);
                    let millis = u64::try_from(now.saturating_duration_since(started).as_millis())
                        .unwrap_or(u64::MAX);
                    self.metrics
                        .full_sync_millis
                        .fetch_add(millis, Ordering::Relaxed);
                }
                if !cleared.is_empty() {
                    if let Err(err) = self.journal.clear(&key, &cleared) {
                        log::error!(
                            "{key}: cannot clear {} journal entr(y/ies): {err}",
                            cleared.len()
                        );
                    }
                }
                log::debug!(
                    "{key}: pushed {} path(s) in {:.3}s",
                    taken.len(),
                    (now - started).as_secs_f64()
                );
                self.deliver(target, &taken)
            }
            Err(failure) => {
                let mut entries: Vec<Entry> = taken.iter().map(|t| t.entry.clone()).collect();
                if full.is_some() {
                    entries.push(Entry {
                        rel: PathBuf::new(),
                        op: Op::Update,
                        is_dir: true,
                    });
                }
                match self.journal.record(
                    &key,
                    &entries,
                    failure.code,
                    &failure.reason,
                    &outcome.command,
                ) {
                    Ok(()) => queue
                        .journaled
                        .extend(entries.iter().map(|e| e.rel.clone())),
                    Err(err) => log::error!(
                        "{key}: cannot write the journal ({err}); {} path(s) kept in memory only",
                        entries.len()
                    ),
                }
                self.metrics.record_failure(target, failure.code);
                if full.is_some() {
                    Metrics::incr(&self.metrics.full_sync_failures);
                }
                let config_error = !failure.retryable;
                let remote_down = config_error || failure.code != Some(23);
                let delay = backoff(queue.failures + 1, self.config.retry_max, config_error);
                if config_error {
                    log::error!(
                        "{key}: {}; configuration error, {} path(s) kept in the journal, next try in {:.0}s",
                        failure.reason,
                        entries.len(),
                        delay.as_secs_f64()
                    );
                } else {
                    log::warn!(
                        "{key}: {}; {} path(s) journaled, retry in {:.1}s",
                        failure.reason,
                        entries.len(),
                        delay.as_secs_f64()
                    );
                }
                queue.failed(taken, full, remote_down, delay, now);
                Vec::new()
            }
        }
    }

    fn deliver(&mut self, target: TargetId, taken: &[Taken]) -> Vec<Delivered> {
        if !self.config.track_delivery {
            return Vec::new();
        }
        let mut out = Vec::new();
        for t in taken {
            let key = (target.root, t.entry.rel.clone());
            // A newer change of the path still waits for this remote: not delivered yet.
            if self
                .queues
                .get(&target)
                .is_some_and(|q| q.is_pending(&t.entry.rel))
            {
                continue;
            }
            let Some(owed) = self.owed.get_mut(&key) else {
                continue;
            };
            owed.remaining.retain(|r| *r != target.remote);
            if owed.remaining.is_empty() {
                if let Some(owed) = self.owed.remove(&key) {
                    out.push(Delivered {
                        root: target.root,
                        rel: key.1,
                        op: owed.op,
                        is_dir: owed.is_dir,
                        mask: owed.mask,
                    });
                }
            }
        }
        out
    }

    /// Writes everything not yet pushed into the journal (shutdown).
    pub fn persist_all(&mut self, reason: &str) {
        let mut by_target: BTreeMap<TargetId, Vec<Entry>> = BTreeMap::new();
        for running in std::mem::take(&mut self.running).into_values() {
            let list = by_target.entry(running.target).or_default();
            list.extend(running.taken.into_iter().map(|t| t.entry));
            if running.full.is_some() {
                list.push(Entry {
                    rel: PathBuf::new(),
                    op: Op::Update,
                    is_dir: true,
                });
            }
        }
        for (id, queue) in &mut self.queues {
            let list = by_target.entry(*id).or_default();
            if queue.full.take().is_some() {
                list.push(Entry {
                    rel: PathBuf::new(),
                    op: Op::Update,
                    is_dir: true,
                });
            }
            list.extend(queue.drain().into_iter().map(|t| t.entry));
        }
        for (id, entries) in by_target {
            if entries.is_empty() {
                continue;
            }
            let key = self.key(id);
            match self.journal.record(&key, &entries, None, reason, "") {
                Ok(()) => log::info!(
                    "{key}: {} unpushed path(s) saved to the journal",
                    entries.len()
                ),
                Err(err) => log::error!(
                    "{key}: cannot save {} unpushed path(s) to the journal: {err}",
                    entries.len()
                ),
            }
        }
    }

    /// Publishes queue figures.
    pub fn publish(&self, metrics: &Metrics) {
        let mut depth = 0u64;
        let mut in_flight = 0u64;
        for (id, queue) in &self.queues {
            depth += queue.pending_len() as u64 + u64::from(queue.full.is_some());
            in_flight += queue.in_flight_len() as u64 + u64::from(queue.full_in_flight);
            let pending = queue.pending_len() as u64;
            let running = queue.in_flight_len() as u64 + u64::from(queue.full_in_flight);
            let failing = queue.failures > 0;
            metrics.with_target(*id, |t| {
                t.pending = pending;
                t.in_flight = running;
                t.failing = failing;
            });
        }
        metrics.queue_depth.store(depth, Ordering::Relaxed);
        metrics.in_flight.store(in_flight, Ordering::Relaxed);
    }

    /// Whether nothing is waiting or running anywhere.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.queues.values().all(TargetQueue::is_idle)
    }

    fn key(&self, id: TargetId) -> String {
        self.config
            .target_keys
            .get(id.root)
            .and_then(|k| k.get(id.remote))
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn root_display(&self, root: usize) -> String {
        self.config
            .roots
            .get(root)
            .map_or_else(|| root.to_string(), |p| p.display().to_string())
    }
}
