//! refreshCDN against real servers on 127.0.0.1: Varnish for `purge`, a recording HTTP
//! server for `chinacache`, `cloudflare` and `webhook`, and a closed port for the journal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::Sender;
use sersync::cdn::{MemoryJournal, PurgeJournal};
use sersync::config::{CdnApi, CdnConfig, Config, PluginKind};
use sersync::job::{Delivered, Op};
use sersync::metrics::Metrics;
use sersync::plugin::{self, PluginStage};

use super::util_http::{
    LIMIT, RecordingServer, answer, cdn_config, chinacache, config, delivered, free_port, purge_to,
    run_only, wait_until, webhook,
};
use super::util_varnish::{Origin, Varnish, wait_for_body};

struct Running {
    tx: Sender<Delivered>,
    stage: PluginStage,
    journal: Arc<MemoryJournal>,
    metrics: Arc<Metrics>,
}

impl Running {
    fn send(&self, delivered: Delivered) {
        self.tx.send(delivered).expect("stage running");
    }

    fn stop(self) -> (Arc<MemoryJournal>, Arc<Metrics>) {
        drop(self.tx);
        self.stage.join();
        (self.journal, self.metrics)
    }
}

/// Starts only refreshCDN with `cdn` on a config whose roots are `roots`.
fn start(
    roots: &[&Path],
    cdn: CdnConfig,
    journal: Arc<MemoryJournal>,
    retry_max: Duration,
) -> Running {
    let mut config: Config = config(roots, retry_max);
    config.cdn = Some(cdn);
    run_only(&mut config, PluginKind::RefreshCdn);
    let (tx, rx) = crossbeam_channel::unbounded();
    let metrics = Arc::new(Metrics::default());
    let stage = plugin::spawn(
        &config,
        rx,
        Arc::clone(&journal) as Arc<dyn PurgeJournal>,
        Arc::clone(&metrics),
    )
    .expect("spawn refreshCDN");
    Running {
        tx,
        stage,
        journal,
        metrics,
    }
}

fn journal_with(root: usize, items: &[(&str, bool)]) -> Arc<MemoryJournal> {
    let journal = Arc::new(MemoryJournal::new());
    let items: Vec<(PathBuf, bool)> = items
        .iter()
        .map(|(rel, dir)| (PathBuf::from(rel), *dir))
        .collect();
    journal.record(root, &items, "from an earlier run");
    journal
}

#[test]
fn purge_provider_refreshes_a_real_varnish_cache() {
    let origin = Origin::start();
    let varnish = Varnish::start(&origin);
    origin.write("page.html", "v1");
    origin.write("a b.txt", "v1");
    wait_for_body(&varnish, "page.html", "v1");
    wait_for_body(&varnish, "a%20b.txt", "v1");
    origin.write("page.html", "v2");
    origin.write("a b.txt", "v2");
    assert_eq!(
        varnish.get("page.html").as_deref(),
        Some("v1"),
        "varnish must cache"
    );
    assert_eq!(
        varnish.get("a%20b.txt").as_deref(),
        Some("v1"),
        "varnish must cache"
    );

    let root = origin.dir.path();
    let cdn = cdn_config(
        root,
        purge_to(varnish.port),
        &format!("http://127.0.0.1:{}", varnish.port),
    );
    let running = start(
        &[root],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_secs(1),
    );
    running.send(delivered(0, "page.html", Op::Update, false));
    running.send(delivered(0, "a b.txt", Op::Update, false));
    wait_for_body(&varnish, "page.html", "v2");
    wait_for_body(&varnish, "a%20b.txt", "v2");
    let (journal, metrics) = running.stop();
    assert_eq!(journal.len(0), 0);
    assert_eq!(metrics.cdn_purges.load(Ordering::Relaxed), 2);
}

#[test]
fn chinacache_sends_the_legacy_message_in_batches() {
    let server = RecordingServer::start(|_, _| {
        "HTTP/1.0 200 OK\r\nwhatsup: content=\"succeed\"\r\n\r\n".to_owned()
    });
    let root = tempfile::tempdir().expect("root");
    let mut cdn = cdn_config(
        root.path(),
        chinacache(server.port, "bob", "hunter2"),
        "http://pic.example.com/cms/",
    );
    cdn.batch = 2;
    // Queued before the thread starts, so the batching is deterministic.
    let journal = journal_with(
        0,
        &[
            ("a.jpg", false),
            ("img/d", true),
            ("b c.jpg", false),
            ("é.png", false),
        ],
    );
    let running = start(&[root.path()], cdn, journal, Duration::from_secs(1));
    wait_until("3 chinacache requests", LIMIT, || {
        server.requests().len() == 3
    });
    wait_until("journal drained", LIMIT, || running.journal.len(0) == 0);
    let lines: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.request_line.clone())
        .collect();
    assert_eq!(
        lines,
        [
            "HEAD /index.jsp?user=bob&pswd=hunter2&ok=ok&urls=http://pic.example.com/cms/a.jpg%0D%0Ahttp://pic.example.com/cms/b%2520c.jpg HTTP/1.0",
            "HEAD /index.jsp?user=bob&pswd=hunter2&ok=ok&dirs=http://pic.example.com/cms/img/d/ HTTP/1.0",
            "HEAD /index.jsp?user=bob&pswd=hunter2&ok=ok&urls=http://pic.example.com/cms/%25C3%25A9.png HTTP/1.0",
        ]
    );
    for request in server.requests() {
        assert_eq!(
            request.headers,
            [("host".to_owned(), "127.0.0.1".to_owned())]
        );
    }
    let (_, metrics) = running.stop();
    assert_eq!(metrics.cdn_purges.load(Ordering::Relaxed), 3);
}

#[test]
fn chinacache_refusal_is_journaled_without_the_password() {
    let server = RecordingServer::start(|_, _| {
        "HTTP/1.0 200 OK\r\nwhatsup: content=\"failed\"\r\n\r\n".to_owned()
    });
    let root = tempfile::tempdir().expect("root");
    let cdn = cdn_config(
        root.path(),
        chinacache(server.port, "bob", "hunter2"),
        "http://x",
    );
    let running = start(
        &[root.path()],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_secs(60),
    );
    running.send(delivered(0, "a.jpg", Op::Delete, false));
    wait_until("refused purge journaled", LIMIT, || {
        running.journal.len(0) == 1
    });
    let reason = running
        .journal
        .reason(0, Path::new("a.jpg"))
        .expect("reason");
    assert!(reason.contains("failed"), "{reason}");
    assert!(!reason.contains("hunter2"), "password leaked: {reason}");
    let (journal, metrics) = running.stop();
    assert_eq!(journal.len(0), 1);
    assert_eq!(metrics.cdn_failures.load(Ordering::Relaxed), 1);
}

#[test]
fn each_request_gets_a_fresh_timeout() {
    // The first connection is accepted and never answered; later ones are. sersync 2.5
    // shared one decaying select() timeout (B15), so after a slow answer every later
    // request failed at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            if n == 0 {
                held.push(stream); // silent
                continue;
            }
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let ok = b"HTTP/1.0 200 OK\r\nwhatsup: content=\"succeed\"\r\n\r\n";
            let _ = std::io::Write::write_all(&mut stream, ok);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let root = tempfile::tempdir().expect("root");
    let mut cdn = cdn_config(root.path(), chinacache(port, "", ""), "http://x");
    cdn.timeout = Duration::from_millis(300);
    cdn.batch = 1;
    let running = start(
        &[root.path()],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_millis(300),
    );
    running.send(delivered(0, "slow", Op::Update, false));
    wait_until("the unanswered purge journaled", LIMIT, || {
        running.journal.len(0) == 1
    });
    let reason = running
        .journal
        .reason(0, Path::new("slow"))
        .expect("reason");
    assert!(reason.contains("no answer in time"), "{reason}");
    for rel in ["a", "b", "c"] {
        running.send(delivered(0, rel, Op::Update, false));
    }
    wait_until("every purge confirmed", LIMIT, || {
        answered.load(Ordering::SeqCst) >= 4 && running.journal.len(0) == 0
    });
    running.stop();
}

#[test]
fn slow_endpoint_never_blocks_the_sender_and_duplicates_merge() {
    let server = RecordingServer::start(|_, n| {
        if n == 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        answer("200 OK", "", "")
    });
    let root = tempfile::tempdir().expect("root");
    let cdn = cdn_config(root.path(), webhook(server.url()), "http://x");
    let running = start(
        &[root.path()],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_secs(1),
    );
    running.send(delivered(0, "first", Op::Update, false));
    wait_until("the first request in flight", LIMIT, || {
        server.requests().len() == 1
    });
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        running.send(delivered(0, "hot", Op::Update, false));
    }
    let sending = started.elapsed();
    assert!(
        sending < Duration::from_millis(400),
        "sending blocked for {sending:?}"
    );
    wait_until("the merged second request", LIMIT, || {
        server.requests().len() == 2
    });
    running.stop();
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "duplicates were not merged");
    assert_eq!(
        requests[1].body_text(),
        r#"{"urls":["http://x/hot"],"dirs":[]}"#
    );
}

#[test]
fn cloudflare_batches_authenticates_and_honours_retry_after() {
    let server = RecordingServer::start(|_, n| {
        if n == 0 {
            answer(
                "429 Too Many Requests",
                "Retry-After: 1\r\n",
                "{\"success\":false}",
            )
        } else {
            answer(
                "200 OK",
                "Content-Type: application/json\r\n",
                "{\"success\":true}",
            )
        }
    });
    let root = tempfile::tempdir().expect("root");
    let token = root.path().join("token");
    std::fs::write(&token, "  tok-123\n").expect("token file");
    let mut cdn = cdn_config(
        root.path(),
        CdnApi::Cloudflare {
            zone: "zone9".into(),
            token_file: token,
            endpoint: format!("{}/", server.url()),
        },
        "https://www.example.com",
    );
    cdn.batch = 3;
    let files = ["f1", "f2", "f3", "f4", "f5", "f6", "f7"];
    let mut items: Vec<(&str, bool)> = files.iter().map(|f| (*f, false)).collect();
    items.push(("dir", true));
    let running = start(
        &[root.path()],
        cdn,
        journal_with(0, &items),
        Duration::from_secs(30),
    );
    wait_until("cloudflare journal drained", LIMIT, || {
        running.journal.len(0) == 0
    });
    let (_, metrics) = running.stop();

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        5,
        "429 + 3 file batches + 1 prefix batch: {requests:#?}"
    );
    assert!(
        requests[1].at - requests[0].at >= Duration::from_millis(900),
        "Retry-After ignored"
    );
    let mut purged_files = Vec::new();
    let mut purged_prefixes = Vec::new();
    for (n, request) in requests.iter().enumerate() {
        assert_eq!(
            request.request_line,
            "POST /client/v4/zones/zone9/purge_cache HTTP/1.1"
        );
        assert_eq!(request.header("authorization"), Some("Bearer tok-123"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json body");
        if let Some(files) = body["files"].as_array() {
            assert!(files.len() <= 3, "batch too big: {files:?}");
            if n > 0 {
                purged_files.extend(files.iter().map(|f| f.as_str().expect("string").to_owned()));
            }
        } else {
            let prefixes = body["prefixes"].as_array().expect("files or prefixes");
            purged_prefixes.extend(
                prefixes
                    .iter()
                    .map(|p| p.as_str().expect("string").to_owned()),
            );
        }
    }
    let expected: Vec<String> = files
        .iter()
        .map(|f| format!("https://www.example.com/{f}"))
        .collect();
    purged_files.sort();
    assert_eq!(purged_files, expected, "each file purged exactly once");
    assert_eq!(purged_prefixes, ["www.example.com/dir"]);
    assert_eq!(metrics.cdn_purges.load(Ordering::Relaxed), 4);
}

#[test]
fn webhook_posts_urls_and_dirs_of_its_root_only() {
    let server = RecordingServer::start(|_, _| answer("204 No Content", "", ""));
    let other = tempfile::tempdir().expect("other root");
    let root = tempfile::tempdir().expect("root");
    let cdn = cdn_config(
        root.path(),
        webhook(format!("{}/hook", server.url())),
        "http://cdn.example.com",
    );
    let running = start(
        &[other.path(), root.path()],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_secs(1),
    );
    running.send(delivered(0, "not-mine.txt", Op::Update, false));
    running.send(delivered(1, "gone.txt", Op::Delete, false));
    wait_until("first webhook call", LIMIT, || server.requests().len() == 1);
    running.send(delivered(1, "new dir", Op::Update, true));
    wait_until("second webhook call", LIMIT, || {
        server.requests().len() == 2
    });
    running.stop();
    let bodies: Vec<String> = server.requests().iter().map(|r| r.body_text()).collect();
    assert_eq!(
        bodies,
        [
            r#"{"urls":["http://cdn.example.com/gone.txt"],"dirs":[]}"#,
            r#"{"urls":[],"dirs":["http://cdn.example.com/new%20dir/"]}"#,
        ]
    );
    assert_eq!(server.requests()[0].request_line, "POST /hook HTTP/1.1");
}

#[test]
fn rate_limit_spaces_requests() {
    let server = RecordingServer::start(|_, _| answer("200 OK", "", "Purged"));
    let root = tempfile::tempdir().expect("root");
    let mut cdn = cdn_config(root.path(), purge_to(server.port), "http://site.example");
    cdn.rate_per_sec = 4.0;
    let items: Vec<(&str, bool)> = ["1", "2", "3", "4", "5", "6", "7", "8"]
        .iter()
        .map(|f| (*f, false))
        .collect();
    let running = start(
        &[root.path()],
        cdn,
        journal_with(0, &items),
        Duration::from_secs(1),
    );
    wait_until("8 PURGE requests", LIMIT, || server.requests().len() == 8);
    running.stop();
    let requests = server.requests();
    // A burst of 4, then one every 250 ms.
    let spread = requests[7].at - requests[0].at;
    assert!(
        spread >= Duration::from_millis(900),
        "not rate limited: {spread:?}"
    );
    assert_eq!(requests[0].request_line, "PURGE /1 HTTP/1.1");
    assert_eq!(requests[0].header("host"), Some("site.example"));
}

#[test]
fn refused_batch_does_not_hold_back_the_others() {
    let server = RecordingServer::start(|request, _| {
        if request.body_text().contains("bad") {
            answer("400 Bad Request", "", "no")
        } else {
            answer("200 OK", "", "")
        }
    });
    let root = tempfile::tempdir().expect("root");
    let mut cdn = cdn_config(root.path(), webhook(server.url()), "http://x");
    cdn.batch = 1;
    let running = start(
        &[root.path()],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_millis(200),
    );
    running.send(delivered(0, "bad", Op::Update, false));
    running.send(delivered(0, "good1", Op::Update, false));
    running.send(delivered(0, "good2", Op::Update, false));
    wait_until(
        "the good purges and two tries of the bad one",
        LIMIT,
        || {
            let bodies: Vec<String> = server.requests().iter().map(|r| r.body_text()).collect();
            bodies.iter().filter(|b| b.contains("good")).count() == 2
                && bodies.iter().filter(|b| b.contains("bad")).count() >= 2
        },
    );
    let (journal, _) = running.stop();
    assert_eq!(journal.pending(0), [(PathBuf::from("bad"), false)]);
}

#[test]
fn purge_endpoint_down_fills_the_journal_and_drains_when_back() {
    let port = free_port();
    let root = tempfile::tempdir().expect("root");
    let cdn = cdn_config(root.path(), purge_to(port), "http://site.example");
    let running = start(
        &[root.path()],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_millis(500),
    );
    for rel in ["a", "b", "c"] {
        running.send(delivered(0, rel, Op::Update, false));
    }
    wait_until("3 failed purges in the journal", LIMIT, || {
        running.journal.len(0) == 3
    });
    assert!(running.metrics.cdn_failures.load(Ordering::Relaxed) >= 1);
    let server = RecordingServer::start_on(port, |_, _| answer("200 OK", "", ""));
    wait_until("journal drained once the endpoint is back", LIMIT, || {
        running.journal.len(0) == 0
    });
    let (_, metrics) = running.stop();
    let mut lines: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.request_line.clone())
        .collect();
    lines.sort();
    lines.dedup();
    assert_eq!(
        lines,
        [
            "PURGE /a HTTP/1.1",
            "PURGE /b HTTP/1.1",
            "PURGE /c HTTP/1.1"
        ]
    );
    assert!(metrics.cdn_purges.load(Ordering::Relaxed) >= 3);
}

#[test]
fn shutdown_keeps_unsent_purges_in_the_journal() {
    let root = tempfile::tempdir().expect("root");
    let cdn = cdn_config(root.path(), purge_to(free_port()), "http://site.example");
    let running = start(
        &[root.path()],
        cdn,
        Arc::new(MemoryJournal::new()),
        Duration::from_secs(60),
    );
    for rel in ["a", "b", "c"] {
        running.send(delivered(0, rel, Op::Update, false));
    }
    let (journal, _) = running.stop();
    assert_eq!(journal.len(0), 3);
}

/// What validation cannot see: a token file that went away after the configuration was
/// read. (A provider setting cannot be missing: `CdnApi` holds what each provider needs,
/// and a section without them is a config error, see `cdn_webhook_without_url.xml`,
/// `cdn_cloudflare_without_zone.xml`, `plugin_without_section.xml` and
/// `plugin_root_not_watched.xml`.)
#[test]
fn a_token_file_gone_since_the_check_fails_at_spawn() {
    let root = tempfile::tempdir().expect("root");
    let mut config = config(&[root.path()], Duration::from_secs(1));
    let journal: Arc<dyn PurgeJournal> = Arc::new(MemoryJournal::new());
    let mut spawn = |cdn: &CdnConfig| {
        config.cdn = Some(cdn.clone());
        run_only(&mut config, PluginKind::RefreshCdn);
        let (_tx, rx) = crossbeam_channel::unbounded::<Delivered>();
        plugin::spawn(&config, rx, Arc::clone(&journal), Arc::default())
            .map(|stage| stage.join())
            .map_err(|err| err.to_string())
    };
    let cdn = cdn_config(
        root.path(),
        CdnApi::Cloudflare {
            zone: "z".into(),
            token_file: root.path().join("missing-token"),
            endpoint: "https://api.cloudflare.com".into(),
        },
        "http://x",
    );
    assert!(
        spawn(&cdn)
            .expect_err("no token")
            .contains("cannot read token file")
    );
}
