//! Status and metrics over HTTP: `GET /metrics` (Prometheus text format) and
//! `GET /status` (JSON), served on `<host hostip port start="true">`.
//!
//! One thread, `sersync-status`, answers requests one at a time from a [`Source`]: the
//! daemon's current configuration, journal and figures, swapped on reload. Rendering is
//! pure (`prometheus.rs`, `report.rs`) and reads only atomics, a short-lived lock on the
//! per-remote figures and the journal's in-memory index: a scrape never waits on a push.
//! `client.rs` is `sersync --status`. Everything but the two GETs is a 404.

pub mod client;
pub mod prometheus;
pub mod report;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, HostConfig};
use crate::faillog::FailLog;
use crate::metrics::Metrics;

/// What the status endpoints describe; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct View {
    /// The configuration in effect.
    pub config: Arc<Config>,
    /// The failure journal.
    pub journal: Arc<FailLog>,
    /// Figures, kept across reloads.
    pub metrics: Arc<Metrics>,
}

/// The daemon's identity plus its current [`View`].
#[derive(Debug)]
pub struct Source {
    pid: u32,
    started_unix: u64,
    started: Instant,
    view: RwLock<View>,
}

impl Source {
    /// A source for this process, started now.
    pub fn new(view: View) -> Arc<Source> {
        Arc::new(Source {
            pid: std::process::id(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            started: Instant::now(),
            view: RwLock::new(view),
        })
    }

    /// Replaces the view (after a reload).
    pub fn set(&self, view: View) {
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = view;
    }

    /// A copy of the current view.
    pub fn view(&self) -> View {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Process facts for the renderers.
    pub fn process(&self) -> report::Process {
        report::Process {
            pid: self.pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_unix: self.started_unix,
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }
}

/// Live journal entries per target key, counted in one pass.
pub fn journal_counts(journal: &FailLog) -> std::collections::HashMap<String, u64> {
    let mut counts = std::collections::HashMap::new();
    for entry in journal.pending() {
        *counts.entry(entry.target).or_insert(0) += 1;
    }
    counts
}

/// The socket address `<host>` asks for.
///
/// # Errors
/// When `hostip` is not an IP address (validation normally rules this out).
pub fn address(host: &HostConfig) -> io::Result<SocketAddr> {
    let ip: IpAddr = host.ip.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("<host hostip=\"{}\">: not an ip address", host.ip),
        )
    })?;
    Ok(SocketAddr::new(ip, host.port))
}

/// How long a start waits for its status port while another process holds it: a restart
/// right after a kill can find the port still held by the old process while it is torn
/// down (seen in the reliability suite under load), which must not stop sersync.
const BIND_PATIENCE: Duration = Duration::from_secs(5);

/// Binds `addr`, trying again every 100 ms for up to `patience` while it is in use.
fn bind(addr: SocketAddr, patience: Duration) -> io::Result<tiny_http::Server> {
    let deadline = Instant::now() + patience;
    let mut warned = false;
    loop {
        match tiny_http::Server::http(addr) {
            Ok(server) => return Ok(server),
            Err(err) => {
                let in_use = err
                    .downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::AddrInUse);
                if !in_use || Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "{addr}: cannot serve status and metrics: {err}"
                    )));
                }
                if !warned {
                    log::warn!(
                        "{addr}: in use, waiting up to {}s for it (status and metrics)",
                        patience.as_secs()
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The running HTTP endpoint; stopped and joined by [`Server::stop`] or on drop.
pub struct Server {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Server {
    /// Binds `<host hostip port>` and starts the `sersync-status` thread.
    ///
    /// # Errors
    /// When the address cannot be bound or the thread cannot start.
    pub fn start(host: &HostConfig, source: Arc<Source>) -> io::Result<Server> {
        let addr = address(host)?;
        let server = Arc::new(bind(addr, BIND_PATIENCE)?);
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("sersync-status".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    respond(request, &source);
                }
            })?;
        Ok(Server {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

fn respond(request: tiny_http::Request, source: &Source) {
    let is_get = *request.method() == tiny_http::Method::Get;
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (code, content_type, body) = match (is_get, path.as_str()) {
        (true, "/metrics") => {
            let text = prometheus::render(&source.view(), &source.process());
            (200, "text/plain; version=0.0.4; charset=utf-8", text)
        }
        (true, "/status") => {
            let report = report::build(&source.view(), source.process());
            match serde_json::to_string_pretty(&report) {
                Ok(json) => (200, "application/json", json + "\n"),
                Err(err) => (500, "text/plain; charset=utf-8", format!("{err}\n")),
            }
        }
        _ => (
            404,
            "text/plain; charset=utf-8",
            "not found: try GET /metrics or GET /status\n".to_owned(),
        ),
    };
    let mut response = tiny_http::Response::from_string(body).with_status_code(code);
    if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    if let Err(err) = request.respond(response) {
        log::debug!("status: cannot answer {path}: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_for_a_moment_is_waited_for_and_one_held_on_is_an_error() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr");
        let Err(err) = bind(addr, Duration::from_millis(200)) else {
            panic!("bound a port held all along");
        };
        assert!(
            err.to_string().contains("cannot serve status and metrics"),
            "{err}"
        );
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let server = bind(addr, Duration::from_secs(5)).expect("bound once released");
        assert_eq!(server.server_addr().to_ip(), Some(addr));
        release.join().expect("release");
    }
}
