//! What could not be watched is tried again, on a bounded schedule, until it is:
//!
//! - a root that is missing (deleted, moved away, unmounted, not there at start) is
//!   looked for every [`RETRY_INTERVAL`]; when a directory is back under its name it is
//!   walked (watches added) and gets a [`FsEvent::Rescan`];
//! - a directory whose watch failed for another reason than the watch limit (EACCES,
//!   ENAMETOOLONG, ...) is tried again every [`RETRY_INTERVAL`]; once watched it is
//!   scanned (its content pushed) like a new directory; one that is gone is dropped;
//! - the watch limit (ENOSPC): the first directory left unwatched is probed every
//!   [`RETRY_INTERVAL`]; as soon as a watch can be added again the roots concerned are
//!   walked again (what still does not fit stays on the list) and rescanned. Meanwhile
//!   those roots get a `Rescan` every [`UNWATCHED_RESCAN`], so changes in the unwatched
//!   part still arrive, that late at most.
//!
//! Missing roots and the unwatched count are published in
//! [`Metrics`](crate::metrics::Metrics) for `/status` and `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::event::State;
use super::outlet::Flow;
use super::scan::{self, is_gone, is_out_of_watches};
use crate::job::FsEvent;

/// How often missing roots and unwatched directories are tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// How often a root with directories left unwatched by the watch limit is rescanned.
pub const UNWATCHED_RESCAN: Duration = Duration::from_secs(30);

impl State {
    /// A root is not watched any more (or could not be at start): look for it again.
    pub(crate) fn mark_missing(&mut self, root: usize) {
        if !self.missing[root] {
            self.missing[root] = true;
            self.schedule_retry(Instant::now());
        }
        self.publish_faults();
    }

    /// Records a directory that could not be watched (not the watch limit).
    pub(crate) fn add_unwatched(&mut self, root: usize, rel: PathBuf, errno: i32) {
        self.unwatched.insert((root, rel), errno);
        self.schedule_retry(Instant::now());
        self.publish_faults();
    }

    /// A directory just got its watch: it is off the list if it was on it.
    pub(crate) fn watched_again(&mut self, root: usize, rel: &Path) {
        if !self.vanished.is_empty() {
            self.vanished.remove(&(root, rel.to_path_buf()));
        }
        if !self.unwatched.is_empty() && self.unwatched.remove(&(root, rel.to_path_buf())).is_some()
        {
            log::info!(
                "{}: watched now",
                self.shared.roots[root].join(rel).display()
            );
            self.publish_faults();
        }
    }

    fn schedule_retry(&mut self, now: Instant) {
        if self.next_retry.is_none() {
            self.next_retry = Some(now + RETRY_INTERVAL);
        }
    }

    /// Whether some directory is left unwatched by the watch limit.
    fn out_of_watches_roots(&self) -> Vec<usize> {
        let mut roots: Vec<usize> = self
            .unwatched
            .iter()
            .filter(|(_, errno)| **errno == libc::ENOSPC)
            .map(|((root, _), _)| *root)
            .collect();
        roots.dedup();
        roots
    }

    /// Retries and periodic rescans that are due.
    pub(crate) fn retry_due(&mut self, now: Instant) -> Flow {
        if self.next_unwatched_rescan.is_some_and(|due| due <= now) {
            let roots = self.out_of_watches_roots();
            self.next_unwatched_rescan = (!roots.is_empty()).then(|| now + UNWATCHED_RESCAN);
            for root in roots {
                log::info!(
                    "{}: rescanning, directories are left unwatched (out of inotify watches)",
                    self.shared.roots[root].display()
                );
                self.send(FsEvent::Rescan { root })?;
            }
        }
        if self.next_retry.is_none_or(|due| due > now) {
            return Ok(());
        }
        self.next_retry = None;
        self.retry_missing_roots()?;
        self.retry_out_of_watches()?;
        self.retry_unwatched(now)?;
        let pending = self.missing.iter().any(|m| *m) || !self.unwatched.is_empty();
        if pending {
            self.schedule_retry(now);
        }
        self.publish_faults();
        self.send_due_rescans()
    }

    fn retry_missing_roots(&mut self) -> Flow {
        let missing: Vec<usize> = (0..self.missing.len())
            .filter(|root| self.missing[*root])
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let walk = self.walk_some(&missing);
        let failed: Vec<usize> = walk.failed_roots.iter().map(|(root, _)| *root).collect();
        self.merge_walk(walk);
        for root in missing {
            if failed.contains(&root) {
                continue;
            }
            self.missing[root] = false;
            log::warn!(
                "{}: root is back; watching it again and rescanning it",
                self.shared.roots[root].display()
            );
            self.send(FsEvent::Rescan { root })?;
        }
        Ok(())
    }

    /// Probes the first directory the watch limit left out; when it can be watched, the
    /// roots concerned are walked again.
    fn retry_out_of_watches(&mut self) -> Flow {
        let Some(((root, rel), _)) = self
            .unwatched
            .iter()
            .find(|(_, errno)| **errno == libc::ENOSPC)
        else {
            return Ok(());
        };
        let abs = self.shared.roots[*root].join(rel);
        match self.shared.watches.add(abs.as_path(), self.shared.mask) {
            Err(err) if is_out_of_watches(&err) => return Ok(()),
            _ => {}
        }
        let roots = self.out_of_watches_roots();
        self.unwatched.retain(|_, errno| *errno != libc::ENOSPC);
        // Still the same episode while the walk comes short again: no second report.
        let walk = self.walk_some(&roots);
        let still_short = !walk.out_of_watches.is_empty();
        self.merge_walk(walk);
        if !still_short {
            log::warn!("inotify watches available again: every directory is watched");
            self.out_of_watches = false;
            self.rescan_queued
                .iter_mut()
                .for_each(|queued| *queued = false);
            self.next_unwatched_rescan = None;
            self.enospc_unwatched = 0;
        } else {
            let needed = super::recovery::count_dirs(&self.shared.roots, &self.shared.filter);
            self.enospc_unwatched = needed.saturating_sub(self.tree.len());
        }
        for root in roots {
            self.send(FsEvent::Rescan { root })?;
        }
        Ok(())
    }

    fn retry_unwatched(&mut self, now: Instant) -> Flow {
        let others: Vec<(usize, PathBuf)> = self
            .unwatched
            .iter()
            .filter(|(_, errno)| **errno != libc::ENOSPC)
            .map(|(key, _)| key.clone())
            .collect();
        for (root, rel) in others {
            // Its parent renamed, deleted or unwatched: the parent's own events (and the
            // scan of its new name) decide again, under the new path.
            let parent = rel.parent().unwrap_or(Path::new(""));
            if self.tree.wd_of(root, parent).is_none() {
                self.unwatched.remove(&(root, rel));
                continue;
            }
            let abs = self.shared.roots[root].join(&rel);
            match self.shared.watches.add(abs.as_path(), self.shared.mask) {
                Ok(_) => {
                    // Watched and scanned like a new directory: its content is pushed.
                    self.watched_again(root, &rel);
                    self.watch_and_scan(root, rel, true, 0, now)?;
                }
                Err(err) if is_gone(&err) => {
                    log::debug!("{}: gone, no longer retried", abs.display());
                    self.unwatched.remove(&(root, rel));
                }
                Err(err) if is_out_of_watches(&err) => break,
                Err(err) => {
                    log::debug!("{}: still cannot watch: {err}", abs.display());
                }
            }
        }
        Ok(())
    }

    fn walk_some(&self, roots: &[usize]) -> scan::Walk {
        let shared = &self.shared;
        scan::walk_roots(
            &shared.roots,
            roots,
            &shared.watches,
            shared.mask,
            &shared.filter,
            shared.log_level,
        )
    }

    /// Adds what a walk of some roots found to the map (the others are untouched).
    pub(crate) fn merge_walk(&mut self, walk: scan::Walk) {
        let mut displaced = Vec::new();
        let tree = &mut self.tree;
        walk.tree.for_each_dir(|wd, dir| {
            displaced.extend(tree.insert(wd, dir.handle, dir.root, dir.rel));
        });
        for dir in displaced {
            self.rm_watch(dir.handle);
        }
        for (root, rel, errno) in walk.unwatched {
            self.unwatched.insert((root, rel), errno);
        }
        for (root, rel) in &walk.out_of_watches {
            self.report_out_of_watches(*root, rel);
        }
        self.update_count();
    }

    /// Publishes missing roots and the unwatched count.
    pub(crate) fn publish_faults(&self) {
        let metrics = &self.shared.metrics;
        let missing: Vec<usize> = (0..self.missing.len())
            .filter(|root| self.missing[*root])
            .collect();
        metrics
            .roots_missing
            .store(missing.len() as u64, Ordering::Relaxed);
        if let Ok(mut list) = metrics.missing_roots.lock() {
            *list = missing;
        }
        let others = self
            .unwatched
            .values()
            .filter(|errno| **errno != libc::ENOSPC)
            .count();
        let enospc = if self.out_of_watches_roots().is_empty() {
            0
        } else {
            self.enospc_unwatched.max(1)
        };
        metrics
            .unwatched_dirs
            .store((others + enospc) as u64, Ordering::Relaxed);
    }
}
