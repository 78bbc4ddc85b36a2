//! Plugins and CDN purges fire only after a change reached every remote (whole pipeline).

use std::path::Path;
use std::time::Duration;

use sersync::config::{PluginKind, Remote};

use crate::util::{Env, SYNC_LIMIT, options, wait_until};
use crate::util_http::{RecordingServer, answer, cdn_config, purge_to, run_only, webhook};
use crate::util_varnish::{Origin, Varnish, wait_for_body};

#[test]
fn changed_file_is_mirrored_then_purged_from_a_real_varnish() {
    let origin = Origin::start();
    let varnish = Varnish::start(&origin);
    let mut env = Env::new();
    // The origin serves the mirror: sersync pushes into its document root.
    env.config.roots[0].remotes = vec![Remote::Local {
        path: origin.dir.path().to_path_buf(),
    }];
    let cdn = cdn_config(
        &env.src,
        purge_to(varnish.port),
        &format!("http://127.0.0.1:{}", varnish.port),
    );
    env.config.cdn = Some(cdn);
    run_only(&mut env.config, PluginKind::RefreshCdn);
    env.write("page.html", b"v1");
    env.write("dir/a b.txt", b"v1");
    let pipeline = env.start(&options(true));
    // Varnish caches a 404 too: ask only once the startup sync has put the files there.
    wait_until("startup sync into the origin", SYNC_LIMIT, || {
        crate::util::tree::diff(&env.src, origin.dir.path()).is_none()
    });
    wait_for_body(&varnish, "page.html", "v1");
    wait_for_body(&varnish, "dir/a%20b.txt", "v1");
    env.write("page.html", b"v2");
    env.write("dir/a b.txt", b"v2");
    wait_until("mirror updated", SYNC_LIMIT, || {
        std::fs::read(origin.dir.path().join("page.html")).is_ok_and(|b| b == b"v2")
    });
    wait_for_body(&varnish, "page.html", "v2");
    wait_for_body(&varnish, "dir/a%20b.txt", "v2");
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn webhook_waits_until_every_remote_has_the_change() {
    let hook = RecordingServer::start(|_, _| answer("200 OK", "", "{}"));
    let mut env = Env::new();
    let local = env.dir.path().join("second");
    env.config.roots[0].remotes.push(Remote::Local {
        path: local.clone(),
    });
    env.config.fail_log.retry_max = Duration::from_secs(2);
    let cdn = cdn_config(&env.src, webhook(hook.url()), "http://cdn.example");
    env.config.cdn = Some(cdn);
    run_only(&mut env.config, PluginKind::RefreshCdn);
    env.daemon.stop();
    let pipeline = env.start(&options(false));
    env.write("news.html", b"breaking");
    wait_until("local remote has the file", SYNC_LIMIT, || {
        local.join("news.html").exists()
    });
    wait_until("daemon push failed and was journaled", SYNC_LIMIT, || {
        !env.journal.is_empty()
    });
    assert!(
        hook.requests().is_empty(),
        "purged before the daemon remote had the change"
    );
    env.daemon.restart();
    wait_until("webhook called", SYNC_LIMIT, || !hook.requests().is_empty());
    let body = hook.requests()[0].body_text();
    assert!(body.contains("http://cdn.example/news.html"), "{body}");
    assert!(Path::new(&env.mirror().join("news.html")).exists());
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn purges_for_a_down_endpoint_wait_in_the_journal_file_and_drain_when_it_returns() {
    use std::sync::Arc;

    use sersync::coalesce::Journal;
    use sersync::faillog::FailLog;
    use sersync::pipeline::Pipeline;

    let port = crate::util_http::free_port();
    let mut env = Env::new();
    env.config.fail_log.retry_max = Duration::from_secs(2);
    let mut cdn = cdn_config(
        &env.src,
        webhook(format!("http://127.0.0.1:{port}/purge")),
        "http://cdn.example",
    );
    cdn.timeout = Duration::from_secs(2);
    env.config.cdn = Some(cdn);
    run_only(&mut env.config, PluginKind::RefreshCdn);
    let journal_path = env.dir.path().join("faillog");
    let journal = Arc::new(FailLog::open(&journal_path).expect("journal"));
    let dyn_journal: Arc<dyn Journal> = journal.clone();
    let pipeline = Pipeline::start(&env.config, &options(false), dyn_journal).expect("pipeline");
    env.write("promo.html", b"sale");
    env.wait_converged(SYNC_LIMIT);
    wait_until(
        "failed purge journaled under the cdn key",
        SYNC_LIMIT,
        || {
            journal.pending().iter().any(|e| {
                e.target == format!("v2 cdn {}", env.src.display())
                    && e.rel == Path::new("promo.html")
            })
        },
    );
    let hook = RecordingServer::start_on(port, |_, _| answer("200 OK", "", "{}"));
    wait_until(
        "purge delivered once the endpoint is back",
        SYNC_LIMIT,
        || {
            hook.requests()
                .iter()
                .any(|r| r.body_text().contains("http://cdn.example/promo.html"))
        },
    );
    wait_until("journal drained", SYNC_LIMIT, || journal.is_empty());
    pipeline.shutdown().expect("clean shutdown");
}
