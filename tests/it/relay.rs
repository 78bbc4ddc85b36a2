//! Relay tiers: source → 2 relays → 4 edges on 127.0.0.1 (7 rsync daemons with auth, 3
//! sersync pipelines) under churn. Each relay runs an rsync daemon and a sersync that
//! watches the daemon's module directory and pushes on to its two edges. The receiving
//! daemon writes each file as a temporary `.name.XXXXXX` and renames it; with the exclude
//! rule README gives for relays, a relay never pushes a temporary file (nor its delete)
//! and pushes the final file that the rename makes once. The daemons of a tier differ
//! only in their port: each remote names its own (`<remote port>`), so the configurations
//! are read from XML as an operator writes them.
//!
//! What each relay pushed is read from three places: its socket plugin (`format="lines"`:
//! one line per change delivered to both edges), its edges' transfer logs (every file
//! received and every path deleted) and its metrics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sersync::coalesce::{Journal, MemoryJournal};
use sersync::config::Config;
use sersync::filter::Filter;
use sersync::metrics::Metrics;
use sersync::pipeline::Pipeline;

use crate::util::{RsyncDaemon, SYNC_LIMIT, options, rsyncd, tree, wait_until};

/// README's exclude rule for a relay: rsync's receiving temporary files.
const RSYNC_TEMP: &str = r"(.*/)?\.[^/]+\.[A-Za-z0-9]{6}";

/// README's rsync exclude for a relay's `<commonParams>`: the same names, for the runs
/// that list directories while the daemon writes into them (subtree syncs, directory
/// moves, full syncs), which the `<filter>` rule cannot reach (it sees paths, not
/// what rsync finds when it lists). Without it an edge once kept a
/// `cache/.in7288.chvuSZ` (a CI rehearsal, seed 1578790913).
const RSYNC_TEMP_PARAM: &str =
    "--exclude=.*.[A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9][A-Za-z0-9]";

/// How long the source churns (`SERSYNC_CHURN_SECONDS` overrides).
const CHURN: Duration = Duration::from_secs(8);

/// The churn's fixed seed (`SERSYNC_CHURN_SEED` overrides).
const SEED: u64 = 0x5e1a_7001;

fn start(config: &Config) -> Pipeline {
    let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::default());
    Pipeline::start(config, &options(false), journal).expect("pipeline starts")
}

/// A sersync configuration as an operator writes it: `root` pushed to every daemon of
/// `to`, each named by its own port. A relay's (`deliveries`: the port its socket plugin
/// reports to) excludes rsync's temporary files.
fn config(dir: &Path, root: &Path, to: &[&RsyncDaemon], deliveries: Option<u16>) -> Config {
    let root = root.display();
    let (relay, enabled) = match deliveries {
        Some(port) => (
            format!(
                "<filter start=\"true\"><exclude expression=\"{RSYNC_TEMP}\"/></filter>\n\
                 <plugin name=\"socket\"><localpath watch=\"{root}\">\
                 <deshost ip=\"127.0.0.1\" port=\"{port}\" format=\"lines\"/></localpath></plugin>\n"
            ),
            "<plugin start=\"true\" name=\"socket\"/>\n",
        ),
        None => (String::new(), ""),
    };
    let params = if deliveries.is_some() {
        format!(" {RSYNC_TEMP_PARAM}")
    } else {
        String::new()
    };
    let remotes: String = to
        .iter()
        .map(|d| {
            format!(
                "<remote ip=\"127.0.0.1\" name=\"{}\" port=\"{}\"/>\n",
                rsyncd::MODULE,
                d.port
            )
        })
        .collect();
    let watch_element = crate::util::watch_element();
    let xml = format!(
        "<head version=\"2.5\">\n{watch_element}{relay}<sersync>\n<localpath watch=\"{root}\">\n{remotes}</localpath>\n\
         <rsync><commonParams params=\"-artuz{params}\"/>\
         <auth start=\"true\" users=\"{user}\" passwordfile=\"{password}\"/></rsync>\n\
         <failLog path=\"{dir}/faillog\" timeToExecute=\"0.05\"/>\n{enabled}</sersync>\n</head>\n",
        user = rsyncd::USER,
        password = to[0].password_file.display(),
        dir = dir.display(),
    );
    match sersync::config::parse(xml.as_bytes(), Path::new("relay.xml")) {
        Ok(config) => config,
        Err(problems) => panic!("{xml}\nis not a valid config: {problems:#?}"),
    }
}

/// A daemon that logs one line per file it receives and per path it deletes (a module's
/// `log file`: rsync writes no transfer lines to the daemon's `--log-file`; `%i` makes it
/// log deletions too).
fn logged_daemon(dir: &Path, name: &str) -> (RsyncDaemon, PathBuf) {
    let transfers = dir.join(format!("{name}-transfers.log"));
    let daemon = RsyncDaemon::start_with(
        &dir.join(name),
        &format!(
            "transfer logging = yes\nlog file = {}\nlog format = %o %i %f %l\n",
            transfers.display()
        ),
    );
    (daemon, transfers)
}

/// `(operation, name)` of each line of a transfer log: `recv` (a file or directory
/// received; a directory ends in `/`) or `del.` (deleted). The line is `DATE TIME [PID]
/// OP ITEMIZE NAME LENGTH`; the churn's names have no spaces.
fn transfers(log: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let op = *fields.get(3)?;
            let name = fields.len().checked_sub(2).and_then(|i| fields.get(i))?;
            matches!(op, "recv" | "del.").then(|| (op.to_owned(), (*name).to_owned()))
        })
        .collect()
}

/// How often each file (not directory) was received.
fn files_received(log: &[(String, String)]) -> BTreeMap<&str, u64> {
    let mut names = BTreeMap::new();
    for (op, name) in log {
        if op == "recv" && !name.ends_with('/') {
            *names.entry(name.as_str()).or_insert(0) += 1;
        }
    }
    names
}

fn is_rsync_temp(name: &str) -> bool {
    Filter::from_patterns(&[RSYNC_TEMP])
        .expect("rule compiles")
        .matches(Path::new(name.trim_end_matches('/')), false)
}

/// Paths pushed per remote of a pipeline, on average.
fn pushed_paths_per_remote(metrics: &Metrics) -> u64 {
    metrics
        .targets
        .lock()
        .map(|targets| targets.values().map(|t| t.paths).sum::<u64>() / targets.len().max(1) as u64)
        .unwrap_or(0)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A listener for a relay's socket plugin in `lines` format: `update PATH` or
/// `delete PATH` for each change the relay delivered to every edge.
struct Deliveries {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Deliveries {
    fn listen() -> Deliveries {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lines, accepted, closed, stop) = (
                Arc::clone(&lines),
                Arc::clone(&accepted),
                Arc::clone(&closed),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        if let Ok(mut lines) = lines.lock() {
                            lines.push(line);
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Deliveries {
            port,
            lines,
            accepted,
            closed,
            stop,
            thread,
        }
    }

    /// Every line, once the plugin (stopped with its pipeline) has closed its connection.
    fn finish(self) -> Vec<String> {
        wait_until("the relay's socket plugin closes", SYNC_LIMIT, || {
            let accepted = self.accepted.load(Ordering::SeqCst);
            accepted > 0 && self.closed.load(Ordering::SeqCst) == accepted
        });
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept
        self.thread.join().expect("listener thread");
        let lines = self.lines.lock().map(|l| l.clone());
        lines.unwrap_or_default()
    }
}

/// One relay: its daemon (fed by the source), its two edges, what it reports.
struct Relay {
    daemon: RsyncDaemon,
    transfers: PathBuf,
    edges: Vec<(RsyncDaemon, PathBuf)>,
    deliveries: Deliveries,
}

#[test]
fn source_two_relays_four_edges_converge_under_churn() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let outside = dir.path().join("outside");
    for d in [&src, &outside] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let relays: Vec<Relay> = (0..2)
        .map(|r| {
            let (daemon, transfers) = logged_daemon(dir.path(), &format!("relay{r}"));
            let edges = (0..2)
                .map(|e| logged_daemon(dir.path(), &format!("edge{r}{e}")))
                .collect();
            Relay {
                daemon,
                transfers,
                edges,
                deliveries: Deliveries::listen(),
            }
        })
        .collect();
    // Relays first, so that each watches its module before the source pushes into it.
    let relay_pipelines: Vec<Pipeline> = relays
        .iter()
        .enumerate()
        .map(|(r, relay)| {
            let edges: Vec<&RsyncDaemon> = relay.edges.iter().map(|(d, _)| d).collect();
            let state = dir.path().join(format!("relay{r}-state"));
            std::fs::create_dir_all(&state).expect("state dir");
            let root = &relay.daemon.module_root;
            start(&config(&state, root, &edges, Some(relay.deliveries.port)))
        })
        .collect();
    let source = {
        let to: Vec<&RsyncDaemon> = relays.iter().map(|r| &r.daemon).collect();
        start(&config(dir.path(), &src, &to, None))
    };
    let relay_roots: Vec<&Path> = relays
        .iter()
        .map(|r| r.daemon.module_root.as_path())
        .collect();
    let edge_roots: Vec<&Path> = relays
        .iter()
        .flat_map(|r| r.edges.iter().map(|(d, _)| d.module_root.as_path()))
        .collect();
    let mirrors: Vec<&Path> = relay_roots.iter().chain(&edge_roots).copied().collect();

    let seed = env_or("SERSYNC_CHURN_SEED", SEED);
    let churn = Duration::from_secs(env_or("SERSYNC_CHURN_SECONDS", CHURN.as_secs()));
    eprintln!("relay churn seed {seed} ({churn:?}); repeat with SERSYNC_CHURN_SEED={seed}");
    crate::churn::run(&src, &outside, seed, churn);
    let churn_end = Instant::now();

    let limit = SYNC_LIMIT * 6;
    let deadline = Instant::now() + limit;
    let all_idle = || source.is_idle() && relay_pipelines.iter().all(Pipeline::is_idle);
    loop {
        let differs = mirrors
            .iter()
            .find_map(|m| tree::diff(&src, m).map(|d| format!("{}: {d}", m.display())));
        let done = differs.is_none() && all_idle();
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: not converged within {limit:?}: {}",
            differs.unwrap_or_else(|| "pipelines not idle".to_owned())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "all six mirrors byte-exact {:?} after the churn stopped",
        churn_end.elapsed()
    );

    // Latency per hop, for README (printed, not a timed assertion): a probe file's time
    // until it is on both relays and on all four edges.
    let mut hops = Vec::new();
    for i in 0..9 {
        let rel = format!("probe{i}");
        let written = Instant::now();
        std::fs::write(src.join(&rel), format!("probe {i}\n")).expect("probe");
        let on = |roots: &[&Path]| roots.iter().all(|root| root.join(&rel).exists());
        let mut at_relays = None;
        while !on(&edge_roots) {
            if at_relays.is_none() && on(&relay_roots) {
                at_relays = Some(written.elapsed());
            }
            assert!(
                written.elapsed() < SYNC_LIMIT,
                "probe {rel} never reached every edge"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let at_edges = written.elapsed();
        let at_relays = at_relays.unwrap_or(at_edges);
        hops.push((at_relays, at_edges));
        eprintln!("probe {i}: on both relays after {at_relays:?}, on all edges after {at_edges:?}");
    }
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let relay_hop = median(hops.iter().map(|h| h.0).collect());
    let edge_hop = median(hops.iter().map(|h| h.1).collect());
    eprintln!("median probe: on the relays after {relay_hop:?}, on the edges after {edge_hop:?}");

    let source_paths = pushed_paths_per_remote(&source.metrics());
    let relay_metrics: Vec<Arc<Metrics>> = relay_pipelines.iter().map(Pipeline::metrics).collect();
    source.shutdown().expect("shutdown");
    for pipeline in relay_pipelines {
        pipeline.shutdown().expect("shutdown");
    }
    for mirror in &mirrors {
        assert!(
            tree::diff(&src, mirror).is_none(),
            "{} differs after shutdown",
            mirror.display()
        );
    }

    for (r, (relay, metrics)) in relays.into_iter().zip(relay_metrics).enumerate() {
        let root = relay.daemon.module_root.clone();
        let delivered: Vec<(String, String)> = relay
            .deliveries
            .finish()
            .into_iter()
            .filter_map(|line| {
                let (op, path) = line.split_once(' ')?;
                let rel = Path::new(path).strip_prefix(&root).ok()?;
                Some((op.to_owned(), rel.to_string_lossy().into_owned()))
            })
            .collect();
        let written = transfers(&relay.transfers);
        let finals = files_received(&written);
        let final_count: u64 = finals.values().sum();
        let filtered = metrics.events_filtered.load(Ordering::Relaxed);
        eprintln!(
            "relay{r}: its daemon wrote {final_count} files; it delivered {} changes, \
             pushed {} paths per edge (the source {source_paths} per relay), filtered {filtered} events",
            delivered.len(),
            pushed_paths_per_remote(&metrics),
        );
        assert!(
            final_count > 0 && !delivered.is_empty(),
            "relay{r} received or delivered nothing: {}",
            relay.daemon.log()
        );
        assert!(
            filtered > 0,
            "relay{r} saw no temporary file: the test did not exercise the rule"
        );
        let temporaries: Vec<&(String, String)> =
            delivered.iter().filter(|(_, p)| is_rsync_temp(p)).collect();
        assert!(
            temporaries.is_empty(),
            "relay{r} pushed rsync's temporary files: {temporaries:?}"
        );
        // One push per final file: the relay delivers a file's update at most as often as
        // its daemon renamed a final file into place under that name (a change pushed in
        // one batch to both edges, never once for the temporary and again for the
        // rename). Slack for a new directory's scan racing the events of its files.
        let updates: u64 = delivered
            .iter()
            .filter(|(op, p)| op == "update" && finals.contains_key(p.as_str()))
            .count() as u64;
        eprintln!("relay{r}: {updates} file updates delivered for {final_count} final files");
        assert!(
            updates <= final_count + final_count / 20 + 5,
            "relay{r} delivered {updates} file updates for {final_count} final files"
        );
        for (e, (_, log)) in relay.edges.iter().enumerate() {
            let received = transfers(log);
            let temporaries: Vec<&(String, String)> =
                received.iter().filter(|(_, n)| is_rsync_temp(n)).collect();
            assert!(
                temporaries.is_empty(),
                "edge{r}{e} received or deleted rsync's temporary files: {temporaries:?}"
            );
            let files: u64 = files_received(&received).values().sum();
            eprintln!("edge{r}{e}: received {files} files");
            assert!(
                files <= final_count + final_count / 20 + 5,
                "relay{r} pushed {files} files to edge{r}{e} for {final_count} final files"
            );
        }
    }
}
