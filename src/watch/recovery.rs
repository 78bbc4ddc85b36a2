//! Recovery when inotify cannot keep up: queue overflow and the watch limit.
//!
//! `IN_Q_OVERFLOW` means events were lost: the map is rebuilt by walking every root again
//! (watching what is new, dropping what is gone) and every root gets a
//! [`FsEvent::Rescan`], never a restart (lsyncd restarts and can loop, its issue #315).
//! ENOSPC from `inotify_add_watch` means the user's watch limit is reached: one clear
//! error names `fs.inotify.max_user_watches`, its value, how many directories the
//! trees need and how many are left unwatched; the root gets a `Rescan` at once and
//! then periodically until watches free up (`rewatch.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use super::event::State;
use super::outlet::Flow;
use super::rewatch::{RETRY_INTERVAL, UNWATCHED_RESCAN};
use super::scan::{self, Walk};
use crate::filter::Filter;
use crate::job::FsEvent;
use crate::metrics::Metrics;

/// Where the kernel publishes the per-user watch limit.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";
/// The same limit as seen by the current user namespace (Linux 5.11+).
const MAX_INOTIFY_WATCHES_NS: &str = "/proc/sys/user/max_inotify_watches";

impl State {
    /// Replaces the map with what a walk found. After an overflow (`rebuild`), watches
    /// of directories the walk did not find any more are removed from the kernel.
    /// Returns the roots that could not be watched at all.
    pub(crate) fn apply_walk(&mut self, walk: Walk, rebuild: bool) -> Vec<(usize, std::io::Error)> {
        let stale = std::mem::replace(&mut self.tree, walk.tree);
        if rebuild {
            for (wd, handle) in stale.into_watches() {
                if !self.tree.contains_wd(wd) {
                    self.rm_watch(handle);
                }
            }
        }
        if walk.out_of_watches.is_empty() {
            self.out_of_watches = false;
            self.rescan_queued
                .iter_mut()
                .for_each(|queued| *queued = false);
        }
        self.unwatched.clear();
        self.vanished.clear(); // the walk saw the trees as they are now
        for (root, rel, errno) in walk.unwatched {
            self.add_unwatched(root, rel, errno);
        }
        for (root, rel) in &walk.out_of_watches {
            self.report_out_of_watches(*root, rel);
        }
        for (root, _) in &walk.failed_roots {
            self.mark_missing(*root);
        }
        self.update_count();
        self.publish_faults();
        walk.failed_roots
    }

    /// `IN_Q_OVERFLOW`: events were lost. Rebuild the map (watch what is new, drop what
    /// is gone), then ask for a full sync of every root. Never a restart (lsyncd's
    /// restart loop, its issue #315).
    pub(super) fn overflow(&mut self) -> Flow {
        Metrics::incr(&self.shared.metrics.overflows);
        if self.is_stopping() {
            // No time for a rebuild: the full syncs cover it.
            for root in 0..self.shared.roots.len() {
                self.rescan_on_stop(root)?;
            }
            return Ok(());
        }
        log::warn!(
            "inotify queue overflowed, events were lost (see fs.inotify.max_queued_events); \
             rebuilding {} watches and rescanning every root",
            self.tree.len()
        );
        let shared = &self.shared;
        let walk = scan::walk(
            &shared.roots,
            &shared.watches,
            shared.mask,
            &shared.filter,
            shared.log_level,
        );
        for (root, err) in self.apply_walk(walk, true) {
            log::error!(
                "{}: cannot watch root: {err}",
                self.shared.roots[root].display()
            );
        }
        self.rescans_due.clear();
        for root in 0..self.shared.roots.len() {
            self.send(FsEvent::Rescan { root })?;
        }
        Ok(())
    }

    /// Logs the watch limit once per episode, queues a full sync of the root, and puts
    /// the directory on the retry list (`rewatch.rs`: probed until watches free up, the
    /// root rescanned every `UNWATCHED_RESCAN` meanwhile).
    pub(super) fn report_out_of_watches(&mut self, root: usize, rel: &Path) {
        let dir = self.shared.roots[root].join(rel);
        if self.out_of_watches {
            log::debug!("{}: not watched, out of inotify watches", dir.display());
        } else {
            self.out_of_watches = true;
            let needed = count_dirs(&self.shared.roots, &self.shared.filter);
            self.enospc_unwatched = needed.saturating_sub(self.tree.len());
            log::error!("{}", out_of_watches_message(&dir, self.tree.len(), needed));
        }
        let first_of_root = !self
            .unwatched
            .iter()
            .any(|((r, _), errno)| *r == root && *errno == libc::ENOSPC);
        if first_of_root {
            self.add_unwatched(root, rel.to_path_buf(), libc::ENOSPC);
        }
        if self.next_unwatched_rescan.is_none() {
            self.next_unwatched_rescan = Some(std::time::Instant::now() + UNWATCHED_RESCAN);
        }
        if !self.rescan_queued[root] {
            self.rescan_queued[root] = true;
            self.rescans_due.push(root);
        }
    }

    pub(super) fn send_due_rescans(&mut self) -> Flow {
        for root in std::mem::take(&mut self.rescans_due) {
            self.send(FsEvent::Rescan { root })?;
        }
        Ok(())
    }
}

/// Counts the directories that watching every root needs (excluded subtrees left out),
/// for the ENOSPC message.
pub(crate) fn count_dirs(roots: &[PathBuf], filter: &Filter) -> usize {
    let mut count = 0;
    for root in roots {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let Ok(entries) = fs::read_dir(root.join(&rel)) else {
                continue;
            };
            count += 1;
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let child = rel.join(entry.file_name());
                    if !filter.is_excluded(&child, true) {
                        stack.push(child);
                    }
                }
            }
        }
    }
    count
}

/// The one error logged when the watch limit is hit: names the sysctl, its value, how
/// many directories the trees need and what happens meanwhile. Never writes `/proc/sys`.
pub(crate) fn out_of_watches_message(dir: &Path, watched: usize, needed: usize) -> String {
    let global = read_number(MAX_USER_WATCHES);
    // Inside a user namespace (a container) the namespace's own limit may be lower.
    let namespace = read_number(MAX_INOTIFY_WATCHES_NS).filter(|ns| Some(*ns) != global);
    let mut limit_text = global.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    if let Some(ns) = namespace {
        limit_text.push_str(&format!(
            " (user.max_inotify_watches of this user namespace: {ns})"
        ));
    }
    let effective = match (global, namespace) {
        (Some(g), Some(ns)) => g.min(ns),
        (limit, None) | (None, limit) => limit.unwrap_or(0),
    };
    // Room for growth; the limit is per user and shared with its other processes.
    let needed = needed as u64;
    let suggest = needed
        .saturating_mul(2)
        .max(effective.saturating_add(needed));
    format!(
        "{}: cannot watch, out of inotify watches: fs.inotify.max_user_watches is {limit_text}, \
         per user and shared by all its processes; this process watches {watched} directories and \
         the trees need {needed}, so {unwatched} are not watched; raise it, e.g. \
         `sysctl -w fs.inotify.max_user_watches={suggest}` (and in /etc/sysctl.d/ to persist); \
         meanwhile the watched part is served as usual, roots with unwatched directories are \
         rescanned every {rescan} s, and the missing watches are added as soon as watches free \
         up (checked every {retry} s)",
        dir.display(),
        unwatched = needed.saturating_sub(watched as u64),
        rescan = UNWATCHED_RESCAN.as_secs(),
        retry = RETRY_INTERVAL.as_secs(),
    )
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_sysctl_and_counts() {
        let msg = out_of_watches_message(Path::new("/srv/www/a"), 8190, 12000);
        assert!(msg.starts_with("/srv/www/a: cannot watch"), "{msg}");
        assert!(msg.contains("fs.inotify.max_user_watches is "), "{msg}");
        assert!(msg.contains("watches 8190 directories"), "{msg}");
        assert!(msg.contains("need 12000, so 3810 are not watched"), "{msg}");
        assert!(msg.contains("rescanned every 30 s"), "{msg}");
    }

    #[test]
    fn count_dirs_skips_excluded_and_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["a/b", "a/c", "skip/x"] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).expect("symlink");
        fs::write(dir.path().join("a/f"), "x").expect("write");
        let filter = Filter::from_patterns(&["skip"]).expect("regex");
        // root, a, a/b, a/c
        assert_eq!(count_dirs(&[dir.path().to_path_buf()], &filter), 4);
        assert_eq!(
            count_dirs(&[dir.path().to_path_buf()], &Filter::default()),
            6
        );
    }
}
