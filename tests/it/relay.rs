//! Relay tiers: source → relay → edge. The relay runs an rsync daemon and a sersync that
//! watches the daemon's module directory and pushes on to the edge. The receiving daemon
//! writes each file as a temporary `.name.XXXXXX` and renames it; with the exclude rule
//! README gives for relays, the relay never pushes a temporary file and pushes the final
//! file that the rename makes.
//!
//! One chain (source → relay → edge, 2 daemons, 2 pipelines): a tier of several relays
//! from one source needs a daemon per relay, and in one config every daemon remote
//! shares `<userDefinedPort>`, so on 127.0.0.1 alone they cannot all listen on it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sersync::coalesce::{Journal, MemoryJournal};
use sersync::filter::Filter;
use sersync::metrics::Metrics;
use sersync::pipeline::{Options, Pipeline};

use crate::util::{RsyncDaemon, SYNC_LIMIT, daemon_config, options, tree};

/// README's exclude rule for a relay: rsync's receiving temporary files.
const RSYNC_TEMP: &str = r"(.*/)?\.[^/]+\.[A-Za-z0-9]{6}";

fn start(config: &sersync::config::Config, options: &Options) -> Pipeline {
    let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::default());
    Pipeline::start(config, options, journal).expect("pipeline starts")
}

/// The names the edge daemon received, from its transfer log (the default format:
/// `recv HOST [ADDR] MODULE (USER) NAME LENGTH`; the test's names have no spaces).
fn received(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("] recv "))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len().checked_sub(2).map(|i| fields[i].to_owned())
        })
        .collect()
}

fn is_rsync_temp(name: &str) -> bool {
    Filter::from_patterns(&[RSYNC_TEMP])
        .expect("rule compiles")
        .matches(Path::new(name.trim_end_matches('/')), false)
}

fn filtered(metrics: &Metrics) -> u64 {
    metrics
        .events_filtered
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Paths pushed over every target of a pipeline.
fn pushed_paths(metrics: &Metrics) -> u64 {
    metrics
        .targets
        .lock()
        .map(|targets| targets.values().map(|t| t.paths).sum())
        .unwrap_or(0)
}

#[test]
fn relay_pushes_final_files_never_rsync_temporaries() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    let relay = RsyncDaemon::start(&dir.path().join("relay"));
    // One log line per file the edge receives (a module's `log file`: rsync writes no
    // transfer lines to the daemon's `--log-file`).
    let transfers = dir.path().join("edge-transfers.log");
    let edge = RsyncDaemon::start_with(
        &dir.path().join("edge"),
        &format!(
            "transfer logging = yes\nlog file = {}\n",
            transfers.display()
        ),
    );
    let source = start(&daemon_config(&src, &relay), &options(false));
    let mut relay_config = daemon_config(&relay.module_root, &edge);
    relay_config.filter = Filter::from_patterns(&[RSYNC_TEMP]).expect("rule compiles");
    let relay_sersync = start(&relay_config, &options(false));
    let relay_metrics = relay_sersync.metrics();

    // Churn, paced so that the relay's daemon receives many small pushes: new files in
    // new directories, rewrites, renames and deletes.
    for round in 0..5 {
        for d in 0..8 {
            let sub = src.join(format!("d{d}"));
            std::fs::create_dir_all(&sub).expect("mkdir");
            for f in 0..10 {
                let body = format!("round {round} dir {d} file {f}\n").repeat(f + 1);
                std::fs::write(sub.join(format!("f{f}.txt")), body).expect("write");
            }
        }
        std::fs::rename(
            src.join("d0/f0.txt"),
            src.join(format!("d1/moved{round}.txt")),
        )
        .expect("rename");
        let _ = std::fs::remove_file(src.join("d2/f9.txt"));
        std::thread::sleep(Duration::from_millis(30)); // pacing of the writer, not a wait
    }

    let deadline = Instant::now() + SYNC_LIMIT * 2;
    let mut last = String::new();
    loop {
        let relay_done = tree::diff(&src, &relay.module_root).is_none();
        match tree::diff(&src, &edge.module_root) {
            None if relay_done && source.is_idle() && relay_sersync.is_idle() => break,
            None => {}
            Some(d) => last = d,
        }
        assert!(
            Instant::now() < deadline,
            "edge did not converge within {:?}: {last}",
            SYNC_LIMIT * 2
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let source_paths = pushed_paths(&source.metrics());
    let relay_paths = pushed_paths(&relay_metrics);
    eprintln!("paths pushed: source {source_paths}, relay {relay_paths}");
    // Without the rule the relay also pushes a delete of every temporary name: about
    // twice the source's paths. Slack for a new directory's scan racing the events of
    // the files in it.
    assert!(
        relay_paths <= source_paths + source_paths / 10,
        "relay pushed {relay_paths} paths for the source's {source_paths}"
    );

    // Latency per hop, for README (printed, not a timed assertion).
    for i in 0..5 {
        let rel = format!("probe{i}");
        let written = Instant::now();
        std::fs::write(src.join(&rel), format!("probe {i}\n")).expect("probe");
        let mut at_relay = None;
        loop {
            if at_relay.is_none() && relay.module_root.join(&rel).exists() {
                at_relay = Some(written.elapsed());
            }
            if edge.module_root.join(&rel).exists() {
                break;
            }
            assert!(
                written.elapsed() < SYNC_LIMIT,
                "probe {rel} never reached the edge"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let at_edge = written.elapsed();
        let at_relay = at_relay.unwrap_or(at_edge);
        eprintln!("probe {i}: relay after {at_relay:?}, edge after {at_edge:?}");
    }
    source.shutdown().expect("shutdown");
    relay_sersync.shutdown().expect("shutdown");

    let names = received(&transfers);
    assert!(
        !names.is_empty(),
        "edge transfer log is empty: {}",
        edge.log()
    );
    let temporaries: Vec<&String> = names.iter().filter(|n| is_rsync_temp(n)).collect();
    assert!(
        temporaries.is_empty(),
        "the relay pushed rsync's temporary files: {temporaries:?}"
    );
    assert!(
        filtered(&relay_metrics) > 0,
        "the relay saw no temporary file: the test did not exercise the rule"
    );
    assert!(
        tree::diff(&src, &edge.module_root).is_none(),
        "edge differs after shutdown"
    );
}
