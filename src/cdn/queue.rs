//! The pure parts of the CDN stage: the merged queue of purges, the token bucket that
//! spaces requests. Time is passed in, so they are tested
//! without threads or sleeps.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cdn::provider::PurgeItem;

/// A purge waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// What to purge.
    pub item: PurgeItem,
    /// Whether the journal holds it (it must be cleared after success).
    pub journaled: bool,
}

/// Purges waiting to be sent, oldest first, each `(rel, is_dir)` at most once.
#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<Queued>,
    /// `(rel, is_dir)` → whether it came from the journal, for everything in `queue`.
    index: HashMap<(PathBuf, bool), bool>,
}

impl Pending {
    /// Adds an item; a duplicate is merged into the one already waiting.
    pub fn push(&mut self, item: PurgeItem, journaled: bool) {
        let key = (item.rel.clone(), item.is_dir);
        if let Some(seen) = self.index.get_mut(&key) {
            if journaled && !*seen {
                *seen = true;
                if let Some(queued) = self.queue.iter_mut().find(|q| q.item == item) {
                    queued.journaled = true;
                }
            }
            return;
        }
        self.index.insert(key, journaled);
        self.queue.push_back(Queued { item, journaled });
    }

    /// Puts a batch back at the front, in its order (after a 429).
    pub fn push_front(&mut self, batch: Vec<Queued>) {
        for queued in batch.into_iter().rev() {
            let key = (queued.item.rel.clone(), queued.item.is_dir);
            if self.index.insert(key, queued.journaled).is_none() {
                self.queue.push_front(queued);
            }
        }
    }

    /// Takes the next batch: up to `limit` items, all files or all directories like
    /// the oldest one unless `mix` allows both.
    pub fn next_batch(&mut self, limit: usize, mix: bool) -> Vec<Queued> {
        let Some(first_is_dir) = self.queue.front().map(|q| q.item.is_dir) else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(queued) = self.queue.pop_front() {
            if batch.len() < limit.max(1) && (mix || queued.item.is_dir == first_is_dir) {
                self.index
                    .remove(&(queued.item.rel.clone(), queued.item.is_dir));
                batch.push(queued);
            } else {
                kept.push_back(queued);
            }
            if batch.len() >= limit.max(1) {
                break;
            }
        }
        kept.append(&mut self.queue);
        self.queue = kept;
        batch
    }

    /// Takes everything.
    pub fn drain(&mut self) -> Vec<Queued> {
        self.index.clear();
        self.queue.drain(..).collect()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A token bucket: `rate` requests per second on average, bursts of up to
/// `max(1, rate)`. A rate of 0 or less means no limit.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, now: Instant) -> TokenBucket {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
    }

    /// When the next request may go.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return now;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// Spends one token (call when [`TokenBucket::ready_at`] is not in the future).
    pub fn take(&mut self, now: Instant) {
        if self.rate.is_finite() && self.rate > 0.0 {
            self.refill(now);
            self.tokens -= 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(rel: &str, is_dir: bool) -> PurgeItem {
        PurgeItem {
            rel: PathBuf::from(rel),
            is_dir,
            url: format!("http://x/{rel}"),
        }
    }

    fn rels(batch: &[Queued]) -> Vec<&str> {
        batch
            .iter()
            .map(|q| q.item.rel.to_str().expect("utf-8"))
            .collect()
    }

    #[test]
    fn duplicates_merge_and_keep_the_journal_flag() {
        let mut pending = Pending::default();
        pending.push(item("a", false), false);
        pending.push(item("a", false), true);
        pending.push(item("a", true), false);
        let batch = pending.next_batch(10, true);
        assert_eq!(rels(&batch), ["a", "a"]);
        assert!(batch[0].journaled);
        assert!(!batch[1].journaled);
    }

    #[test]
    fn batches_respect_the_limit_and_do_not_mix_kinds() {
        let mut pending = Pending::default();
        for rel in ["f1", "f2", "f3"] {
            pending.push(item(rel, false), false);
        }
        pending.push(item("d1", true), false);
        pending.push(item("f4", false), false);
        assert_eq!(rels(&pending.next_batch(2, false)), ["f1", "f2"]);
        assert_eq!(rels(&pending.next_batch(2, false)), ["f3", "f4"]);
        assert_eq!(rels(&pending.next_batch(2, false)), ["d1"]);
        assert!(pending.is_empty());
    }

    #[test]
    fn push_front_restores_order() {
        let mut pending = Pending::default();
        for rel in ["a", "b", "c"] {
            pending.push(item(rel, false), false);
        }
        let batch = pending.next_batch(2, false);
        pending.push_front(batch);
        assert_eq!(rels(&pending.drain()), ["a", "b", "c"]);
    }

    #[test]
    fn token_bucket_spaces_requests() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, start);
        bucket.take(start);
        bucket.take(start);
        let ready = bucket.ready_at(start);
        assert_eq!(ready - start, Duration::from_millis(500));
        assert_eq!(bucket.ready_at(ready), ready);
        let mut unlimited = TokenBucket::new(0.0, start);
        for _ in 0..100 {
            unlimited.take(start);
        }
        assert_eq!(unlimited.ready_at(start), start);
    }
}
