//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Every family has `# HELP` and `# TYPE`; per-remote series carry `root` and `remote`
//! labels (escaped: `\\`, `\"`, `\n`). Remotes are listed from the configuration, so a
//! remote with no activity yet still shows zeros.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use super::View;
use super::report::Process;
use crate::job::TargetId;
use crate::journal_key::target_key;
use crate::metrics::{LATENCY_BUCKETS, TargetMetrics, unix_now};

/// Renders every family.
pub fn render(view: &View, process: &Process) -> String {
    let mut out = Out::default();
    let m = &view.metrics;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    out.family(
        "sersync_build_info",
        "gauge",
        "Version of the running sersync.",
    );
    out.sample("sersync_build_info", &[("version", &process.version)], 1);
    out.single(
        "process_cpu_seconds_total",
        "counter",
        "CPU time of the sersync process: every thread, living or ended; rsync and other children are not counted.",
        process_cpu_seconds(),
    );
    out.single(
        "sersync_start_time_seconds",
        "gauge",
        "Unix time the daemon started.",
        process.started_unix,
    );
    out.single(
        "sersync_events_total",
        "counter",
        "Raw inotify events read.",
        load(&m.events_seen),
    );
    out.single(
        "sersync_events_filtered_total",
        "counter",
        "Events dropped because a filter rule excluded the path.",
        load(&m.events_filtered),
    );
    out.single(
        "sersync_overflows_total",
        "counter",
        "Inotify queue overflows (each becomes a full sync).",
        load(&m.overflows),
    );
    out.single(
        "sersync_watches",
        "gauge",
        "Directories watched.",
        load(&m.watches),
    );
    out.single(
        "sersync_unwatched_directories",
        "gauge",
        "Directories that could not be watched and are retried (EACCES, ENAMETOOLONG, watch limit).",
        load(&m.unwatched_dirs),
    );
    out.single(
        "sersync_roots_missing",
        "gauge",
        "Roots that are not there (or not directories) and are looked for again.",
        load(&m.roots_missing),
    );
    out.single(
        "sersync_queue_depth",
        "gauge",
        "Distinct paths waiting to be pushed, over every remote.",
        load(&m.queue_depth),
    );
    out.single(
        "sersync_in_flight",
        "gauge",
        "Paths in running rsync jobs, plus running full syncs.",
        load(&m.in_flight),
    );
    out.single(
        "sersync_full_syncs_total",
        "counter",
        "Full syncs that succeeded.",
        load(&m.full_syncs),
    );
    out.single(
        "sersync_full_sync_failures_total",
        "counter",
        "Full syncs that failed.",
        load(&m.full_sync_failures),
    );
    let full_secs = load(&m.full_sync_millis) as f64 / 1000.0;
    out.single(
        "sersync_full_sync_seconds_total",
        "counter",
        "Time spent in successful full syncs.",
        full_secs,
    );
    out.single(
        "sersync_cdn_purges_total",
        "counter",
        "CDN purge requests that succeeded.",
        load(&m.cdn_purges),
    );
    out.single(
        "sersync_cdn_purge_failures_total",
        "counter",
        "CDN purge requests that failed.",
        load(&m.cdn_failures),
    );
    out.single(
        "sersync_plugin_failures_total",
        "counter",
        "Plugin invocations that failed.",
        load(&m.plugin_failures),
    );
    out.single(
        "sersync_reloads_total",
        "counter",
        "Configuration reloads that took effect.",
        load(&m.reloads),
    );
    out.single(
        "sersync_reload_failures_total",
        "counter",
        "Configuration reloads rejected.",
        load(&m.reload_failures),
    );
    out.single(
        "sersync_journal_entries",
        "gauge",
        "Live entries in the failure journal.",
        view.journal.len(),
    );
    let oldest_age = view
        .journal
        .oldest_first_failure()
        .map_or(0, |t| unix_now().saturating_sub(t));
    out.single(
        "sersync_journal_oldest_age_seconds",
        "gauge",
        "Age of the oldest journal entry's first failure (0 when empty).",
        oldest_age,
    );
    remotes(&mut out, view);
    out.0
}

/// One remote's labels and figures.
struct Row {
    root: String,
    remote: String,
    key: String,
    figures: TargetMetrics,
    /// An ssh remote whose runs share a connection (`<ssh shareConnection>`).
    shares_ssh: bool,
}

impl Row {
    /// `root` and `remote` labels, plus `extra` ones.
    fn labels<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut labels = vec![
            ("root", self.root.as_str()),
            ("remote", self.remote.as_str()),
        ];
        labels.extend_from_slice(extra);
        labels
    }
}

/// A per-remote gauge or counter read straight from the figures.
struct Simple {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&TargetMetrics) -> u64,
}

const SIMPLE: [Simple; 9] = [
    Simple {
        name: "sersync_batches_total",
        kind: "counter",
        help: "rsync batches pushed successfully.",
        value: |t| t.batches,
    },
    Simple {
        name: "sersync_paths_pushed_total",
        kind: "counter",
        help: "Paths pushed successfully.",
        value: |t| t.paths,
    },
    Simple {
        name: "sersync_remote_pending",
        kind: "gauge",
        help: "Paths waiting for this remote.",
        value: |t| t.pending,
    },
    Simple {
        name: "sersync_remote_in_flight",
        kind: "gauge",
        help: "Paths being pushed to this remote, plus one while a full sync runs.",
        value: |t| t.in_flight,
    },
    Simple {
        name: "sersync_remote_failing",
        kind: "gauge",
        help: "1 while the last push to this remote failed.",
        value: |t| u64::from(t.failing),
    },
    Simple {
        name: "sersync_remote_last_success_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the last successful push (0: never).",
        value: |t| t.last_success_unix,
    },
    Simple {
        name: "sersync_remote_warm_ready",
        kind: "gauge",
        help: "1 while a warm rsync client waits for this remote (one daemon connection).",
        value: |t| u64::from(t.warm_ready),
    },
    Simple {
        name: "sersync_warm_pushes_total",
        kind: "counter",
        help: "Batches pushed by a warm rsync client.",
        value: |t| t.warm_pushes,
    },
    Simple {
        name: "sersync_warm_fallbacks_total",
        kind: "counter",
        help: "Warm runs that failed and ran again cold (not counted as failures).",
        value: |t| t.warm_fallbacks,
    },
];

/// The per-remote families.
fn remotes(out: &mut Out, view: &View) {
    let figures = view.metrics.snapshot_targets();
    let mut rows = Vec::new();
    for (root_idx, root) in view.config.roots.iter().enumerate() {
        for (remote_idx, remote) in root.remotes.iter().enumerate() {
            let id = TargetId {
                root: root_idx,
                remote: remote_idx,
            };
            rows.push(Row {
                root: root.path.display().to_string(),
                remote: remote.to_string(),
                key: target_key(&root.path, remote),
                figures: figures.get(&id).cloned().unwrap_or_default(),
                shares_ssh: view.config.rsync.share_ssh
                    && matches!(remote, crate::config::Remote::Ssh { .. }),
            });
        }
    }
    for simple in &SIMPLE {
        out.family(simple.name, simple.kind, simple.help);
        for row in &rows {
            out.sample(simple.name, &row.labels(&[]), (simple.value)(&row.figures));
        }
    }
    let name = "sersync_remote_journal_entries";
    out.family(name, "gauge", "Failure journal entries of this remote.");
    let journal_counts = super::journal_counts(&view.journal);
    for row in &rows {
        let n = journal_counts.get(&row.key).copied().unwrap_or(0);
        out.sample(name, &row.labels(&[]), n);
    }
    let name = "sersync_remote_ssh_shared_up";
    out.family(
        name,
        "gauge",
        "1 while the shared ssh connection of this ssh remote is up (0: its runs connect on their own).",
    );
    for row in rows.iter().filter(|row| row.shares_ssh) {
        out.sample(name, &row.labels(&[]), u64::from(row.figures.ssh_shared));
    }
    let name = "sersync_rsync_failures_total";
    out.family(
        name,
        "counter",
        "Failed rsync runs by exit code (-1: not started, killed or timed out).",
    );
    for row in &rows {
        for (code, n) in &row.figures.failures_by_code {
            let code = code.to_string();
            out.sample(name, &row.labels(&[("code", &code)]), n);
        }
    }
    let name = "sersync_push_latency_seconds";
    let (bucket, sum, count) = (
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    );
    out.family(
        name,
        "histogram",
        "Time from the event to the path being on the remote.",
    );
    for row in &rows {
        let t = &row.figures;
        let mut cumulative = 0u64;
        for (idx, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += t.latency_buckets.get(idx).copied().unwrap_or(0);
            let le = bound.to_string();
            out.sample(&bucket, &row.labels(&[("le", &le)]), cumulative);
        }
        out.sample(&bucket, &row.labels(&[("le", "+Inf")]), t.latency_count);
        out.sample(&sum, &row.labels(&[]), t.latency_sum);
        out.sample(&count, &row.labels(&[]), t.latency_count);
    }
}

/// The process's CPU time with nanosecond resolution (`CLOCK_PROCESS_CPUTIME_ID`), where
/// `/proc/PID/stat` counts 10 ms clock ticks: a burst's share of a few ticks is not a
/// figure. Printed with microseconds.
fn process_cpu_seconds() -> String {
    let (sec, nsec) = cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID);
    format!("{sec}.{:06}", nsec / 1000)
}

/// `clock_gettime` of `clock` through libc. rustix's own vDSO lookup reads the auxiliary
/// vector in a way that crashes under valgrind (measured: SIGSEGV in
/// `rustix::backend::param::auxv::check_elf_base`), and valgrind is how the bench's memory
/// figures are profiled.
#[allow(unsafe_code)]
fn cpu_clock(clock: libc::clockid_t) -> (i64, i64) {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the duration of the call, and the
    // CPU-time clocks exist on every Linux this runs on; on failure `t` stays zero.
    let _ = unsafe { libc::clock_gettime(clock, &mut t) };
    // `time_t` and `c_long` are 32 bits on 32-bit targets, 64 here.
    #[allow(clippy::useless_conversion)]
    (i64::from(t.tv_sec), i64::from(t.tv_nsec))
}

#[derive(Default)]
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (idx, (key, val)) in labels.iter().enumerate() {
                if idx > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Escapes a label value.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let mut out = Out::default();
        out.sample("x", &[("root", "/a \"b\""), ("le", "+Inf")], 3);
        assert_eq!(out.0, "x{root=\"/a \\\"b\\\"\",le=\"+Inf\"} 3\n");
    }
    #[test]
    fn process_cpu_time_counts_this_process_in_microseconds() {
        let parse = |text: String| -> f64 { text.parse().expect("a number") };
        let before = parse(process_cpu_seconds());
        // Spin for 30 ms of this thread's own CPU time (wall time would depend on load).
        let thread = || {
            let (sec, nsec) = cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID);
            sec as f64 + nsec as f64 / 1e9
        };
        let start = thread();
        let mut x = 0u64;
        while thread() - start < 0.030 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = process_cpu_seconds();
        assert_eq!(after.split('.').nth(1).map(str::len), Some(6), "{after}");
        let spent = parse(after) - before;
        assert!(
            spent >= 0.0299,
            "30 ms of this thread's CPU counted as {spent} s"
        );
    }
}
