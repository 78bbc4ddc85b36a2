//! `GET /status`: the JSON document, and its rendering for a human (`sersync --status`).
//!
//! One entry per root and remote, in configuration order, with its state, last success,
//! paths waiting and running, and the journal entries under its key
//! ([`crate::journal_key::target_key`]), plus process facts and journal totals.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::View;
use crate::humanize::human_duration;
use crate::journal_key::target_key;
use crate::metrics::TargetMetrics;

/// Facts about the process itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// sersync version.
    pub version: String,
    /// Unix time (s) the daemon started.
    pub started_unix: u64,
    /// Seconds since start.
    pub uptime_seconds: u64,
}

/// The whole `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Process facts.
    #[serde(flatten)]
    pub process: Process,
    /// The configuration file in effect.
    pub config: String,
    /// Reloads that took effect, and that were rejected.
    pub reloads: u64,
    /// Reloads rejected.
    pub reload_failures: u64,
    /// The failure journal.
    pub journal: JournalStatus,
    /// Distinct paths waiting, over every remote.
    pub queue_depth: u64,
    /// Paths in running rsync jobs (plus running full syncs).
    pub in_flight: u64,
    /// Directories watched (inotify), or filesystems marked (fanotify).
    pub watches: u64,
    /// What reports changes: `inotify` or `fanotify`.
    #[serde(default)]
    pub watch_backend: String,
    /// Directories that could not be watched and are retried (EACCES, ENAMETOOLONG,
    /// the inotify watch limit); their changes arrive through rescans.
    #[serde(default)]
    pub unwatched_dirs: u64,
    /// While `unwatched_dirs` counts directories left out by the watch limit: how often
    /// their roots are rescanned, in seconds (the longest delay of a change there).
    #[serde(default)]
    pub unwatched_rescan_seconds: Option<u64>,
    /// Raw events read.
    pub events_seen: u64,
    /// Full syncs done.
    pub full_syncs: u64,
    /// Every root with its remotes.
    pub roots: Vec<RootStatus>,
}

/// The failure journal as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    /// The file.
    pub path: String,
    /// Live entries.
    pub entries: u64,
    /// Unix time (s) of the oldest entry's first failure.
    pub oldest_first_failure_unix: Option<u64>,
}

/// One `<localpath>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootStatus {
    /// The watched directory.
    pub path: String,
    /// The directory is not there (or not a directory) and so not watched; it is looked
    /// for every few seconds and rescanned when back.
    #[serde(default)]
    pub missing: bool,
    /// Its remotes, in configuration order.
    pub remotes: Vec<RemoteStatus>,
}

/// How a remote is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteState {
    /// The last push failed; it is retried with backoff.
    Failing,
    /// Pushing now, or paths waiting.
    Busy,
    /// The last push succeeded and nothing waits.
    Ok,
    /// Nothing pushed yet and nothing waits.
    Idle,
}

impl RemoteState {
    /// The state of a remote from its figures.
    pub fn of(figures: &TargetMetrics) -> RemoteState {
        if figures.failing {
            RemoteState::Failing
        } else if figures.in_flight > 0 || figures.pending > 0 {
            RemoteState::Busy
        } else if figures.last_success_unix > 0 {
            RemoteState::Ok
        } else {
            RemoteState::Idle
        }
    }

    fn name(self) -> &'static str {
        match self {
            RemoteState::Failing => "failing",
            RemoteState::Busy => "busy",
            RemoteState::Ok => "ok",
            RemoteState::Idle => "idle",
        }
    }
}

/// One remote of one root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// `host::module`, `host:path` or a local directory.
    pub remote: String,
    /// The journal key.
    pub key: String,
    /// See [`RemoteState`].
    pub state: RemoteState,
    /// Unix time (s) of the last successful push.
    pub last_success_unix: Option<u64>,
    /// Paths waiting.
    pub pending: u64,
    /// Paths being pushed.
    pub in_flight: u64,
    /// Journal entries under this remote's key.
    pub journal_entries: u64,
    /// Batches pushed.
    pub batches: u64,
    /// Paths pushed.
    pub paths: u64,
    /// rsync runs that failed.
    pub failures: u64,
    /// The remote's warm rsync client.
    #[serde(default)]
    pub warm: WarmStatus,
    /// An ssh remote's shared connection (`push::share`): `up`; `down` (its runs connect
    /// on their own until it is back); `off` (`<ssh shareConnection="false">`, or an
    /// `-e` that is not ssh). Absent for other remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_connection: Option<String>,
}

/// A remote's warm rsync client (`push::warm`, `<rsync><warm>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmStatus {
    /// `ready`: a client waits (it holds one daemon connection); `none`: none right now
    /// (being started, a cold job of the remote runs, or parked after a failure until a
    /// push succeeds); `off`: `<warm start="false">`.
    pub state: String,
    /// Batches pushed by a warm client.
    pub pushes: u64,
    /// Warm runs that failed and ran again cold (not counted as failures).
    pub fallbacks: u64,
}

/// Builds the report from the current view.
pub fn build(view: &View, process: Process) -> StatusReport {
    let metrics = &view.metrics;
    let figures = metrics.snapshot_targets();
    let journal_counts = super::journal_counts(&view.journal);
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let missing = metrics
        .missing_roots
        .lock()
        .map(|list| list.clone())
        .unwrap_or_default();
    let roots = view
        .config
        .roots
        .iter()
        .enumerate()
        .map(|(root_idx, root)| RootStatus {
            path: root.path.display().to_string(),
            missing: missing.contains(&root_idx),
            remotes: root
                .remotes
                .iter()
                .enumerate()
                .map(|(remote_idx, remote)| {
                    let id = crate::job::TargetId {
                        root: root_idx,
                        remote: remote_idx,
                    };
                    let t = figures.get(&id).cloned().unwrap_or_default();
                    let key = target_key(&root.path, remote);
                    RemoteStatus {
                        remote: remote.to_string(),
                        journal_entries: journal_counts.get(&key).copied().unwrap_or(0),
                        key,
                        state: RemoteState::of(&t),
                        last_success_unix: (t.last_success_unix > 0).then_some(t.last_success_unix),
                        pending: t.pending,
                        in_flight: t.in_flight,
                        batches: t.batches,
                        paths: t.paths,
                        failures: t.failures_by_code.values().sum(),
                        warm: WarmStatus {
                            state: match (view.config.rsync.warm.start, t.warm_ready) {
                                (false, _) => "off",
                                (true, true) => "ready",
                                (true, false) => "none",
                            }
                            .to_owned(),
                            pushes: t.warm_pushes,
                            fallbacks: t.warm_fallbacks,
                        },
                        ssh_connection: matches!(remote, crate::config::Remote::Ssh { .. }).then(
                            || {
                                let rsync = &view.config.rsync;
                                let shared = rsync.share_ssh
                                    && crate::push::share::ssh_words(rsync).is_some();
                                match (shared, t.ssh_shared) {
                                    (false, _) => "off",
                                    (true, true) => "up",
                                    (true, false) => "down",
                                }
                                .to_owned()
                            },
                        ),
                    }
                })
                .collect(),
        })
        .collect();
    StatusReport {
        process,
        config: view.config.path.display().to_string(),
        reloads: load(&metrics.reloads),
        reload_failures: load(&metrics.reload_failures),
        journal: JournalStatus {
            path: view.journal.path().display().to_string(),
            entries: view.journal.len() as u64,
            oldest_first_failure_unix: view.journal.oldest_first_failure(),
        },
        queue_depth: load(&metrics.queue_depth),
        in_flight: load(&metrics.in_flight),
        watches: load(&metrics.watches),
        watch_backend: if metrics.fanotify.load(std::sync::atomic::Ordering::Relaxed) {
            "fanotify"
        } else {
            "inotify"
        }
        .to_owned(),
        unwatched_dirs: load(&metrics.unwatched_dirs),
        unwatched_rescan_seconds: (load(&metrics.unwatched_dirs) > 0)
            .then_some(crate::watch::UNWATCHED_RESCAN.as_secs()),
        events_seen: load(&metrics.events_seen),
        full_syncs: load(&metrics.full_syncs),
        roots,
    }
}

fn ago(unix: Option<u64>, now_unix: u64) -> String {
    unix.map_or_else(
        || "never".to_owned(),
        |t| format!("{} ago", human_duration(now_unix.saturating_sub(t))),
    )
}

/// The report as a few lines and a table, for a terminal.
pub fn render_human(report: &StatusReport, now_unix: u64) -> String {
    let mut out = String::new();
    let p = &report.process;
    let _ = writeln!(
        out,
        "sersync {}, pid {}, up {}, config {}",
        p.version,
        p.pid,
        human_duration(p.uptime_seconds),
        report.config
    );
    let j = &report.journal;
    let oldest = j
        .oldest_first_failure_unix
        .map(|t| format!(", oldest failed {}", ago(Some(t), now_unix)))
        .unwrap_or_default();
    let _ = writeln!(out, "journal {}: {} entries{oldest}", j.path, j.entries);
    let watches = if report.watch_backend == "fanotify" {
        format!("fanotify marks on {} filesystem(s)", report.watches)
    } else {
        format!("{} watches", report.watches)
    };
    let _ = writeln!(
        out,
        "queue: {} waiting, {} running; {watches}; {} events; {} full syncs; {} reloads ({} rejected)",
        report.queue_depth,
        report.in_flight,
        report.events_seen,
        report.full_syncs,
        report.reloads,
        report.reload_failures
    );
    let width = report
        .roots
        .iter()
        .flat_map(|r| r.remotes.iter().map(|m| m.remote.chars().count() + 5))
        .chain(std::iter::once(14))
        .max()
        .unwrap_or(14);
    let _ = writeln!(
        out,
        "\n{:<width$} {:<8} {:>14} {:>8} {:>8} {:>8} {:>10}",
        "ROOT / REMOTE", "STATE", "LAST SUCCESS", "PENDING", "RUNNING", "JOURNAL", "PUSHED"
    );
    if report.unwatched_dirs > 0 {
        let rescan = report
            .unwatched_rescan_seconds
            .map(|s| format!("; their roots are rescanned every {s}s"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} directories not watched (retried){rescan}",
            report.unwatched_dirs
        );
    }
    for root in &report.roots {
        let missing = if root.missing {
            "  (missing: not watched, looked for again every few seconds)"
        } else {
            ""
        };
        let _ = writeln!(out, "{}{missing}", root.path);
        for r in &root.remotes {
            let _ = writeln!(
                out,
                "{:<width$} {:<8} {:>14} {:>8} {:>8} {:>8} {:>10}",
                format!("  -> {}", r.remote),
                r.state.name(),
                ago(r.last_success_unix, now_unix),
                r.pending,
                r.in_flight,
                r.journal_entries,
                r.paths
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_prefers_failing_then_busy_then_ok() {
        let mut t = TargetMetrics::default();
        assert_eq!(RemoteState::of(&t), RemoteState::Idle);
        t.last_success_unix = 5;
        assert_eq!(RemoteState::of(&t), RemoteState::Ok);
        t.pending = 1;
        assert_eq!(RemoteState::of(&t), RemoteState::Busy);
        t.failing = true;
        assert_eq!(RemoteState::of(&t), RemoteState::Failing);
    }

    #[test]
    fn human_rendering_has_one_row_per_remote() {
        let report = StatusReport {
            process: Process {
                pid: 42,
                version: "9.9.9".into(),
                started_unix: 1000,
                uptime_seconds: 65,
            },
            config: "/etc/sersync/confxml.xml".into(),
            reloads: 1,
            reload_failures: 0,
            journal: JournalStatus {
                path: "/var/lib/sersync/faillog".into(),
                entries: 3,
                oldest_first_failure_unix: Some(1000),
            },
            queue_depth: 0,
            in_flight: 0,
            watches: 7,
            watch_backend: "inotify".to_owned(),
            unwatched_dirs: 0,
            unwatched_rescan_seconds: None,
            events_seen: 9,
            full_syncs: 1,
            roots: vec![RootStatus {
                path: "/srv/www".into(),
                missing: false,
                remotes: vec![RemoteStatus {
                    remote: "10.0.0.2::www".into(),
                    key: "/srv/www -> 10.0.0.2::www".into(),
                    state: RemoteState::Failing,
                    last_success_unix: None,
                    pending: 3,
                    in_flight: 0,
                    journal_entries: 3,
                    batches: 0,
                    paths: 0,
                    failures: 2,
                    warm: WarmStatus::default(),
                    ssh_connection: None,
                }],
            }],
        };
        let text = render_human(&report, 1065);
        assert!(
            text.starts_with("sersync 9.9.9, pid 42, up 1m05s"),
            "{text}"
        );
        assert!(
            text.contains("3 entries, oldest failed 1m05s ago"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.contains("10.0.0.2::www"))
            .expect("row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "->",
                "10.0.0.2::www",
                "failing",
                "never",
                "3",
                "0",
                "3",
                "0"
            ]
        );
    }
}
