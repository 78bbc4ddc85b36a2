//! `/metrics` (Prometheus text), `/status` (JSON) and `sersync --status`, checked against
//! a known workload: a journal seeded with N paths for a local remote that drains and a
//! daemon remote that stays down.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use sersync::faillog::{FailLog, Failure};
use sersync::job::Op;

use super::{BIN, LIMIT, Setup, Xml, http, signal, stopped_daemon};
use crate::util::{RsyncDaemon, rsyncd, wait_until};

const N: usize = 25;

/// One sample line of the text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly enough to catch malformed output: HELP and
/// TYPE lines, `name{k="v",…} value` samples of declared families, no duplicate series.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let name_re = regex::Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").expect("re");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(name_re.is_match(name) && !help.is_empty(), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(name_re.is_match(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"), line)),
        };
        assert!(name_re.is_match(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        assert!(seen.insert(series.to_owned()), "duplicate series {series}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut value = String::new();
        loop {
            match chars
                .next()
                .unwrap_or_else(|| panic!("unterminated label in {line}"))
            {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {line}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        assert!(labels.insert(key, value).is_none(), "label twice in {line}");
        match chars.next() {
            None | Some(',') => {}
            Some(c) => panic!("unexpected {c:?} in {line}"),
        }
    }
    labels
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// A local remote and a stopped daemon remote, with N journal entries seeded for each.
struct Workload {
    setup: Setup,
    mirror: PathBuf,
    _daemon: RsyncDaemon,
    local_key: String,
    down_key: String,
}

fn workload() -> Workload {
    let setup = Setup::new();
    let (local, mirror) = setup.local_remote("mirror");
    let daemon = stopped_daemon(&setup.dir.path().join("down"));
    setup.write_config(&Xml {
        remotes: vec![local, Setup::daemon_remote()],
        daemon: Some((daemon.port, daemon.password_file.clone())),
        status: true,
        ..Xml::default()
    });
    // The journal's key text, spelled out (not computed by the code under test): a
    // change here orphans every operator's pending entries.
    let local_key = format!("v2 local {} {}", setup.src.display(), mirror.display());
    let down_key = format!(
        "v2 daemon {} 127.0.0.1::{}",
        setup.src.display(),
        rsyncd::MODULE
    );
    let rels: Vec<PathBuf> = (0..N)
        .map(|i| PathBuf::from(format!("f{i:02}.txt")))
        .collect();
    for rel in &rels {
        setup.write(&rel.display().to_string(), "payload");
    }
    let journal = FailLog::open(&setup.journal).expect("journal");
    for key in [&local_key, &down_key] {
        let failures: Vec<Failure<'_>> = rels
            .iter()
            .map(|rel| Failure {
                target: key,
                rel: rel.as_path(),
                op: Op::Update,
                is_dir: false,
            })
            .collect();
        journal
            .record(&failures, Some(10), "seeded by the test", "")
            .expect("seed");
    }
    Workload {
        setup,
        mirror,
        _daemon: daemon,
        local_key,
        down_key,
    }
}

/// Waits until the local remote drained and the daemon remote is failing.
fn settle(setup: &Setup) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until("local drained, daemon failing", LIMIT, || {
        last = setup.status();
        let remotes = &last["roots"][0]["remotes"];
        remotes[0]["journal_entries"] == 0
            && remotes[0]["state"] == "ok"
            && remotes[1]["state"] == "failing"
    });
    last
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_the_workload() {
    let Workload {
        setup,
        mirror,
        local_key: _,
        down_key: _,
        _daemon,
    } = workload();
    let mut running = setup.start(&["-n", "2"]);
    settle(&setup);
    let (code, text) = setup.get("/metrics");
    assert_eq!(code, 200);
    let samples = parse_prometheus(&text);
    let src = setup.src.display().to_string();
    let local = [
        ("root", src.as_str()),
        ("remote", &*mirror.to_string_lossy()),
    ];
    let down_name = format!("127.0.0.1::{}", rsyncd::MODULE);
    let down = [("root", src.as_str()), ("remote", down_name.as_str())];
    let n = N as f64;
    assert_eq!(
        value(&samples, "sersync_paths_pushed_total", &local),
        Some(n),
        "{text}"
    );
    assert_eq!(
        value(&samples, "sersync_push_latency_seconds_count", &local),
        Some(n)
    );
    let inf = [local[0], local[1], ("le", "+Inf")];
    assert_eq!(
        value(&samples, "sersync_push_latency_seconds_bucket", &inf),
        Some(n)
    );
    let batches = value(&samples, "sersync_batches_total", &local).expect("batches");
    assert!((1.0..=n).contains(&batches), "{batches}");
    assert_eq!(
        value(&samples, "sersync_paths_pushed_total", &down),
        Some(0.0)
    );
    let refused = [down[0], down[1], ("code", "10")];
    assert!(value(&samples, "sersync_rsync_failures_total", &refused).expect("code 10") >= 1.0);
    assert_eq!(value(&samples, "sersync_remote_failing", &down), Some(1.0));
    // A failing remote gets no warm client.
    assert_eq!(
        value(&samples, "sersync_remote_warm_ready", &down),
        Some(0.0)
    );
    assert_eq!(value(&samples, "sersync_journal_entries", &[]), Some(n));
    assert_eq!(
        value(&samples, "sersync_remote_journal_entries", &down),
        Some(n)
    );
    assert_eq!(
        value(&samples, "sersync_remote_journal_entries", &local),
        Some(0.0)
    );
    assert_eq!(value(&samples, "sersync_full_syncs_total", &[]), Some(0.0));
    // The daemon's own CPU (README: nanosecond clock, printed with microseconds): it
    // pushed a workload, so some was spent, and no 10 ms tick rounds it.
    let cpu = value(&samples, "process_cpu_seconds_total", &[]).expect("process CPU");
    assert!(cpu > 0.0 && cpu < 60.0, "{cpu}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("process_cpu_seconds_total ")
                && l.rsplit('.').next().is_some_and(|f| f.len() == 6)),
        "{text}"
    );
    assert!(value(&samples, "sersync_journal_oldest_age_seconds", &[]).is_some());
    // Buckets are cumulative.
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == "sersync_push_latency_seconds_bucket" && s.labels["remote"] == local[1].1
        })
        .map(|s| s.value)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(setup.get("/nope").0, 404);
    let url = format!("http://127.0.0.1:{}/metrics", setup.status_port);
    assert_eq!(http("POST", &url).0, 404);
    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 0);
}

#[test]
fn status_json_matches_the_journal_and_status_flag_prints_it() {
    let Workload {
        setup,
        local_key,
        down_key,
        _daemon: _keep_daemon,
        ..
    } = workload();
    let mut running = setup.start(&[]);
    let status = settle(&setup);
    assert_eq!(status["pid"], running.pid());
    assert_eq!(status["config"], setup.config.display().to_string());
    let remotes = &status["roots"][0]["remotes"];
    assert_eq!(
        (remotes[0]["key"].as_str(), remotes[1]["key"].as_str()),
        (Some(&*local_key), Some(&*down_key))
    );

    let output = std::process::Command::new(BIN)
        .args(["--status", "-o"])
        .arg(&setup.config)
        .output()
        .expect("sersync --status");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("pid {}", running.pid())),
        "{stdout}"
    );
    let down_row = stdout
        .lines()
        .find(|l| l.contains("127.0.0.1::"))
        .expect("daemon row");
    assert!(down_row.contains("failing"), "{stdout}");

    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 0);
    let journal = FailLog::open(&setup.journal).expect("journal");
    let last = &status["roots"][0]["remotes"];
    for (idx, key) in [&local_key, &down_key].into_iter().enumerate() {
        assert_eq!(
            last[idx]["journal_entries"],
            journal.pending_for(key).len(),
            "{key}"
        );
    }
    assert_eq!(status["journal"]["entries"], journal.len());
    assert_eq!(journal.len(), N);
    assert_eq!(
        Path::new(status["journal"]["path"].as_str().expect("path")),
        setup.journal
    );

    let output = std::process::Command::new(BIN)
        .args(["--status", "-o"])
        .arg(&setup.config)
        .output()
        .expect("sersync --status");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is the daemon running?"));
}
