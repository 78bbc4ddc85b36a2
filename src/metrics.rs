//! Counters and gauges every stage updates, read by `/metrics` and `/status`.
//!
//! Plain atomics behind one `Arc<Metrics>`: updating costs a relaxed add, and no stage
//! waits on the HTTP server. Per-remote figures live in `targets`, indexed like
//! `Config::targets()`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::job::TargetId;

/// Upper bounds (seconds) of the push latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Process-wide figures.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Raw inotify events read.
    pub events_seen: AtomicU64,
    /// Events dropped because a `<filter>` rule excluded the path.
    pub events_filtered: AtomicU64,
    /// Inotify queue overflows seen.
    pub overflows: AtomicU64,
    /// Directories currently watched (inotify), or filesystems marked (fanotify).
    pub watches: AtomicU64,
    /// The watch stage runs on fanotify filesystem marks (`<watch backend="fanotify"/>`
    /// and it could be set up).
    pub fanotify: AtomicBool,
    /// Distinct paths waiting to be pushed, summed over remotes.
    pub queue_depth: AtomicU64,
    /// Paths in rsync runs now, summed over remotes, plus running full syncs.
    pub in_flight: AtomicU64,
    /// Full syncs started.
    pub full_syncs: AtomicU64,
    /// Full syncs that failed.
    pub full_sync_failures: AtomicU64,
    /// Total seconds spent in full syncs, in milliseconds.
    pub full_sync_millis: AtomicU64,
    /// Entries in the failure journal.
    pub journal_entries: AtomicU64,
    /// Unix time (s) of the oldest journal entry's first failure, 0 if none.
    pub journal_oldest_unix: AtomicU64,
    /// CDN purge requests that succeeded.
    pub cdn_purges: AtomicU64,
    /// CDN purge requests that failed.
    pub cdn_failures: AtomicU64,
    /// Plugin invocations that failed.
    pub plugin_failures: AtomicU64,
    /// Configuration reloads (SIGHUP) that took effect.
    pub reloads: AtomicU64,
    /// Configuration reloads rejected (invalid file, journal or restart failure).
    pub reload_failures: AtomicU64,
    /// Roots not watched now (missing, not a directory); looked for again periodically.
    pub roots_missing: AtomicU64,
    /// Indexes (in `Config::roots`) of the roots not watched now.
    pub missing_roots: Mutex<Vec<usize>>,
    /// Directories that could not be watched (EACCES, ENAMETOOLONG, the watch limit)
    /// and are retried; for the watch limit, the count at its last report.
    pub unwatched_dirs: AtomicU64,
    /// Per-remote figures.
    pub targets: Mutex<BTreeMap<TargetId, TargetMetrics>>,
}

/// Figures for one remote of one root.
#[derive(Debug, Default, Clone)]
pub struct TargetMetrics {
    /// Display name of the remote (`host::module`).
    pub name: String,
    /// Batches pushed successfully.
    pub batches: u64,
    /// Paths pushed successfully.
    pub paths: u64,
    /// rsync failures by exit code (-1: not started, killed or timed out).
    pub failures_by_code: BTreeMap<i32, u64>,
    /// Paths waiting for this remote.
    pub pending: u64,
    /// Paths in rsync runs for this remote now, plus one while a full sync runs.
    pub in_flight: u64,
    /// Unix time (s) of the last successful push, 0 if none.
    pub last_success_unix: u64,
    /// Whether the last attempt failed (backing off).
    pub failing: bool,
    /// Histogram counts, one per `LATENCY_BUCKETS` entry plus `+Inf`.
    pub latency_buckets: Vec<u64>,
    /// Sum of latencies in seconds.
    pub latency_sum: f64,
    /// Number of latency samples.
    pub latency_count: u64,
    /// A warm rsync client is waiting for this remote (`push::warm`).
    pub warm_ready: bool,
    /// Batches pushed by a warm client.
    pub warm_pushes: u64,
    /// Warm runs that failed and were run again cold (not counted as failures).
    pub warm_fallbacks: u64,
    /// The shared ssh connection this remote's runs ride is up (`push::share`).
    pub ssh_shared: bool,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `update` on the figures of `target`, creating them on first use.
    pub fn with_target(&self, target: TargetId, update: impl FnOnce(&mut TargetMetrics)) {
        let mut targets = match self.targets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = targets.entry(target).or_insert_with(|| TargetMetrics {
            latency_buckets: vec![0; LATENCY_BUCKETS.len() + 1],
            ..TargetMetrics::default()
        });
        update(entry);
    }

    /// Records a successful push of `paths` paths, with the event-to-remote latency of
    /// each (one sample per path).
    pub fn record_push(&self, target: TargetId, latencies: &[Duration]) {
        self.with_target(target, |t| {
            t.batches += 1;
            t.paths += latencies.len() as u64;
            t.last_success_unix = unix_now();
            t.failing = false;
            for latency in latencies {
                let secs = latency.as_secs_f64();
                let bucket = LATENCY_BUCKETS
                    .iter()
                    .position(|bound| secs <= *bound)
                    .unwrap_or(LATENCY_BUCKETS.len());
                t.latency_buckets[bucket] += 1;
                t.latency_sum += secs;
                t.latency_count += 1;
            }
        });
    }

    /// Records a failed push with rsync's exit code.
    pub fn record_failure(&self, target: TargetId, code: Option<i32>) {
        self.with_target(target, |t| {
            *t.failures_by_code.entry(code.unwrap_or(-1)).or_insert(0) += 1;
            t.failing = true;
        });
    }

    /// Forgets every per-remote figure: after a reload, target ids may name other remotes.
    pub fn clear_targets(&self) {
        match self.targets.lock() {
            Ok(mut guard) => guard.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }

    /// A copy of the per-remote figures.
    pub fn snapshot_targets(&self) -> BTreeMap<TargetId, TargetMetrics> {
        match self.targets.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
