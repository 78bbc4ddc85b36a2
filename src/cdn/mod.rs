//! CDN refresh: purges the public URLs of changes that reached every remote.
//!
//! Input: `Receiver<Delivered>` (from the plugin stage). Output: purge requests to the
//! configured provider ([`provider`]), and [`PurgeJournal`] entries for purges that
//! failed. One thread, `sersync-cdn`; it never blocks syncing: its input is unbounded
//! and is drained into a queue that merges duplicate paths while a request is in flight.
//! Ends when the input is disconnected, after one last attempt at what is queued (within
//! [`SHUTDOWN_BUDGET`]); whatever is left goes to the journal.
//!
//! Only changes of the root whose path equals the plugin's `localpath watch`
//! ([`crate::config::CdnConfig::root`]) are purged; the plugin no longer replaces the
//! watch root (bug B13).
//!
//! Sending: batches of up to `batch` URLs where the API allows it, at most `rate`
//! requests per second (token bucket), 429 + `Retry-After` waits and resends the same
//! batch (up to [`MAX_RATE_LIMITED`] times in a row, then it counts as a failure).
//!
//! Failures: the batch goes to the journal. When the endpoint looks down (network,
//! timeout, 5xx), queued and new purges also go to the journal until the retry. Retries
//! reload `journal.pending(root)`: at start, then [`RETRY_INITIAL`] after a failure,
//! doubling up to `<failLog timeToExecute>` (`Config::fail_log.retry_max`), like pushes.
//! A success clears the journal entries it covered.

pub mod chinacache;
pub mod http;
mod journal;
pub mod provider;
mod purges;
pub(crate) mod queue;
pub mod url;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

pub use journal::{MemoryJournal, PurgeJournal};
pub use purges::JournalPurges;

use crate::backoff::Backoff;
use crate::cdn::provider::{Provider, PurgeError, PurgeItem};
use crate::cdn::queue::{Pending, Queued, TokenBucket};
use crate::config::CdnConfig;
use crate::job::Delivered;
use crate::metrics::Metrics;

/// First retry of failed purges, after the first failure.
pub const RETRY_INITIAL: Duration = Duration::from_secs(5);
/// 429 answers in a row for one batch before it counts as a failure.
pub const MAX_RATE_LIMITED: u32 = 5;
/// Time allowed at shutdown to send what is still queued.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(10);

/// Why the CDN stage cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    /// The Cloudflare token file cannot be read.
    #[error("{}: cannot read token file: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Cloudflare token file is empty.
    #[error("{}: token file is empty", .0.display())]
    EmptyToken(PathBuf),
    /// The thread could not be started.
    #[error("cannot start the sersync-cdn thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Starts the `sersync-cdn` thread for `cdn`, whose root is `root` (its index, as
/// validation resolved it); failed purges wait at most `retry_max` between retries.
///
/// # Errors
/// [`CdnError`] when a setting the provider needs is missing, the token file cannot be
/// read, or the thread cannot start.
pub fn spawn(
    cdn: &CdnConfig,
    root: usize,
    retry_max: Duration,
    delivered_rx: Receiver<Delivered>,
    journal: Arc<dyn PurgeJournal>,
    metrics: Arc<Metrics>,
) -> Result<JoinHandle<()>, CdnError> {
    let cdn = cdn.clone();
    let provider = Provider::from_config(&cdn)?;
    let now = Instant::now();
    let stage = CdnStage {
        root,
        bucket: TokenBucket::new(cdn.rate_per_sec, now),
        backoff: Backoff::new(RETRY_INITIAL, retry_max),
        cdn,
        provider,
        journal,
        metrics,
        pending: Pending::default(),
        retry_at: None,
        down: false,
        not_before: now,
        rate_limited: 0,
    };
    std::thread::Builder::new()
        .name("sersync-cdn".into())
        .spawn(move || stage.run(&delivered_rx))
        .map_err(CdnError::Thread)
}

struct CdnStage {
    root: usize,
    cdn: CdnConfig,
    provider: Provider,
    journal: Arc<dyn PurgeJournal>,
    metrics: Arc<Metrics>,
    pending: Pending,
    bucket: TokenBucket,
    backoff: Backoff,
    /// When to reload the journal; `None` when no failure is waiting for a retry.
    retry_at: Option<Instant>,
    /// The endpoint looks down: new purges go straight to the journal until `retry_at`.
    down: bool,
    /// Not before this (a 429's `Retry-After`).
    not_before: Instant,
    /// 429 answers in a row.
    rate_limited: u32,
}

impl CdnStage {
    fn run(mut self, delivered_rx: &Receiver<Delivered>) {
        log::info!(
            "{}: refreshCDN ({:?}) started for {}",
            self.cdn.root.display(),
            self.cdn.api.provider(),
            self.cdn.base_url
        );
        self.load_journal();
        loop {
            let timeout = match self.next_wake(Instant::now()) {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(delivered_rx) -> delivered => match delivered {
                    Ok(delivered) => {
                        self.accept(&delivered);
                        for delivered in delivered_rx.try_iter() {
                            self.accept(&delivered);
                        }
                    }
                    Err(_) => break,
                },
                recv(timeout) -> _ => {}
            }
            self.step(Instant::now());
        }
        self.shutdown();
    }

    /// When something is due: the retry, or the next request.
    fn next_wake(&mut self, now: Instant) -> Option<Instant> {
        let send_at = (!self.pending.is_empty() && !self.down)
            .then(|| self.bucket.ready_at(now).max(self.not_before));
        match (send_at, self.retry_at) {
            (Some(send), Some(retry)) => Some(send.min(retry)),
            (send, retry) => send.or(retry),
        }
    }

    fn accept(&mut self, delivered: &Delivered) {
        if delivered.root != self.root {
            return;
        }
        let Some(item) = self.item(delivered.rel.clone(), delivered.is_dir) else {
            return;
        };
        if self.down {
            let entry = [(item.rel, item.is_dir)];
            self.journal
                .record(self.root, &entry, "deferred: purge endpoint down");
        } else {
            self.pending.push(item, false);
        }
    }

    fn item(&self, rel: PathBuf, is_dir: bool) -> Option<PurgeItem> {
        let Some(url) = url::purge_url(&self.cdn, &self.cdn.root, &rel, is_dir) else {
            log::debug!("{}: no match for regexurl, not purged", rel.display());
            return None;
        };
        Some(PurgeItem { rel, is_dir, url })
    }

    /// Queues every journaled purge of our root.
    fn load_journal(&mut self) {
        let entries = self.journal.pending(self.root);
        if !entries.is_empty() {
            log::info!("refreshCDN: retrying {} journaled purge(s)", entries.len());
        }
        for (rel, is_dir) in entries {
            match self.item(rel.clone(), is_dir) {
                Some(item) => self.pending.push(item, true),
                // The mapping changed since it was recorded: nothing to purge any more.
                None => self.journal.clear(self.root, &[rel]),
            }
        }
    }

    /// Retries when due, then sends at most one batch when allowed.
    fn step(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.down = false;
            self.load_journal();
        }
        if self.pending.is_empty() || self.down || now < self.not_before {
            return;
        }
        if self.bucket.ready_at(now) > now {
            return;
        }
        self.bucket.take(now);
        let batch = self.pending.next_batch(
            self.provider.batch_limit(&self.cdn),
            self.provider.mixes_dirs(),
        );
        self.send(batch);
    }

    fn send(&mut self, batch: Vec<Queued>) {
        let items: Vec<PurgeItem> = batch.iter().map(|q| q.item.clone()).collect();
        let result = self.provider.send(&items);
        // Delays count from the answer: the request itself may have taken the timeout.
        let now = Instant::now();
        match result {
            Ok(()) => {
                Metrics::incr(&self.metrics.cdn_purges);
                self.rate_limited = 0;
                log::debug!("refreshCDN: purged {} url(s)", items.len());
                // Clear every path: one may have been journaled by an earlier failure
                // while a newer change of it was queued here without the flag.
                let rels: Vec<PathBuf> = items.iter().map(|item| item.rel.clone()).collect();
                self.journal.clear(self.root, &rels);
                if batch.iter().any(|q| q.journaled) && self.journal.pending(self.root).is_empty() {
                    self.backoff.reset();
                }
            }
            Err(PurgeError::RateLimited {
                endpoint,
                retry_after,
            }) if self.rate_limited < MAX_RATE_LIMITED => {
                Metrics::incr(&self.metrics.cdn_failures);
                self.rate_limited += 1;
                let wait = retry_after
                    .unwrap_or(Duration::from_secs(1))
                    .min(self.backoff.max());
                log::warn!("{endpoint}: rate limited (HTTP 429), resending in {wait:?}");
                self.not_before = now + wait;
                self.pending.push_front(batch);
            }
            Err(err) => {
                Metrics::incr(&self.metrics.cdn_failures);
                self.rate_limited = 0;
                self.fail(&batch, &err, now);
            }
        }
    }

    /// Journals a failed batch (and, when the endpoint is down, everything queued) and
    /// schedules the retry.
    fn fail(&mut self, batch: &[Queued], err: &PurgeError, now: Instant) {
        let reason = err.to_string();
        let entries: Vec<(PathBuf, bool)> = batch
            .iter()
            .map(|q| (q.item.rel.clone(), q.item.is_dir))
            .collect();
        self.journal.record(self.root, &entries, &reason);
        if err.is_endpoint_down() {
            self.down = true;
            self.journal_pending("deferred: purge endpoint down");
        }
        let delay = self.backoff.next_delay();
        let at = now + delay;
        self.retry_at = Some(self.retry_at.map_or(at, |old| old.min(at)));
        log::warn!(
            "refreshCDN: purge of {} url(s) failed: {reason}; retry in {delay:?}",
            entries.len()
        );
    }

    /// Last attempt at what is queued; the rest goes to the journal.
    fn shutdown(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_BUDGET;
        while !self.pending.is_empty() && !self.down {
            // No journal reload while stopping: the journal keeps those for next time.
            self.retry_at = None;
            let now = Instant::now();
            let wake = self.next_wake(now).unwrap_or(now);
            if wake > deadline {
                break;
            }
            std::thread::sleep(wake.saturating_duration_since(now));
            self.step(Instant::now());
        }
        let left = self.journal_pending("not purged before shutdown");
        if left > 0 {
            log::info!("refreshCDN: {left} purge(s) left in the journal");
        }
        log::debug!("refreshCDN: stopped");
    }

    /// Moves everything queued into the journal with `reason`; returns how many.
    fn journal_pending(&mut self, reason: &str) -> usize {
        let rest: Vec<(PathBuf, bool)> = self
            .pending
            .drain()
            .into_iter()
            .map(|q| (q.item.rel, q.item.is_dir))
            .collect();
        if !rest.is_empty() {
            self.journal.record(self.root, &rest, reason);
        }
        rest.len()
    }
}
