//! Helpers for the cdn and plugin tests: a wait-until loop, a loopback HTTP server that
//! records raw requests, a config builder and `Delivered` constructors.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sersync::config::{
    CdnApi, CdnConfig, ChinaCacheAccount, Config, HostPort, Plugin, PluginKind, Remote, RootConfig,
};
use sersync::job::{Delivered, Op};

/// The longest any test waits for one thing.
pub const LIMIT: Duration = Duration::from_secs(10);

pub use crate::util::wait_until;

pub use crate::util::rsyncd::free_port;

/// A path from raw bytes.
pub fn bytes_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// A change of `rel` under root `root`.
pub fn delivered(root: usize, rel: impl AsRef<Path>, op: Op, is_dir: bool) -> Delivered {
    Delivered {
        root,
        rel: rel.as_ref().to_path_buf(),
        op,
        is_dir,
        mask: if is_dir { 0x4000_0100 } else { 8 },
    }
}

/// A config watching `roots` (each with one dummy remote), no plugin section set, and
/// `retry_max` as the CDN retry cap.
pub fn config(roots: &[&Path], retry_max: Duration) -> Config {
    let dummy = || {
        vec![Remote::Local {
            path: PathBuf::from("/nonexistent"),
        }]
    };
    let mut config =
        crate::util::base_config(roots.first().copied().unwrap_or(Path::new("/")), dummy());
    config.roots = roots
        .iter()
        .map(|path| RootConfig {
            path: path.to_path_buf(),
            remotes: dummy(),
        })
        .collect();
    config.fail_log.retry_max = retry_max;
    config
}

/// Sets `config.running` to `kind` alone, from its section in `config`, as validation
/// resolves it (the root index is the position of the section's root in `config.roots`).
#[track_caller]
pub fn run_only(config: &mut Config, kind: PluginKind) {
    let index = |root: &Path| {
        config
            .roots
            .iter()
            .position(|r| r.path == root)
            .expect("the plugin's root is a watched root")
    };
    let plugin = match kind {
        PluginKind::Command => Plugin::Command(config.command.clone().expect("command section")),
        PluginKind::Socket => {
            let section = config.socket.clone().expect("socket section");
            Plugin::Socket {
                root: index(&section.root),
                section,
            }
        }
        PluginKind::Http => {
            let section = config.http.clone().expect("http section");
            Plugin::Http {
                root: index(&section.root),
                section,
            }
        }
        PluginKind::RefreshCdn => {
            let section = config.cdn.clone().expect("refreshCDN section");
            Plugin::RefreshCdn {
                root: index(&section.root),
                section,
            }
        }
    };
    config.plugins = vec![kind];
    config.running = vec![plugin];
}

/// A refreshCDN section for `root` with `base` as `sendurl base`.
pub fn cdn_config(root: &Path, api: CdnApi, base: &str) -> CdnConfig {
    CdnConfig {
        root: root.to_path_buf(),
        api,
        base_url: base.into(),
        url_regex: None,
        batch: 30,
        rate_per_sec: 100.0,
        timeout: Duration::from_secs(5),
    }
}

/// A ChinaCache account on 127.0.0.1:`port`.
pub fn chinacache(port: u16, username: &str, password: &str) -> CdnApi {
    CdnApi::ChinaCache(ChinaCacheAccount {
        endpoint: HostPort {
            host: "127.0.0.1".into(),
            port,
        },
        username: username.into(),
        password: password.into(),
    })
}

/// HTTP `PURGE` sent to 127.0.0.1:`port`.
pub fn purge_to(port: u16) -> CdnApi {
    CdnApi::Purge {
        target: Some(HostPort {
            host: "127.0.0.1".into(),
            port,
        }),
    }
}

/// A webhook posting to `url`.
pub fn webhook(url: String) -> CdnApi {
    CdnApi::Webhook { url: url.into() }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `METHOD TARGET VERSION`, as sent.
    pub request_line: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (by `Content-Length`).
    pub body: Vec<u8>,
    /// When the request was complete.
    pub at: Instant,
}

impl Recorded {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds the raw answer to the `n`-th request (0-based).
pub type Responder = dyn Fn(&Recorded, usize) -> String + Send + Sync;

/// An HTTP/1.x server on 127.0.0.1 that records every request and answers each with
/// the responder's raw text, then closes the connection. Stopped on drop.
pub struct RecordingServer {
    /// The port it listens on.
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingServer {
    /// Listens on a free port.
    pub fn start(responder: impl Fn(&Recorded, usize) -> String + Send + Sync + 'static) -> Self {
        Self::start_on(0, responder)
    }

    /// Listens on `port` (0: any free port).
    pub fn start_on(
        port: u16,
        responder: impl Fn(&Recorded, usize) -> String + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind recording server");
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let responder: Arc<Responder> = Arc::new(responder);
        let thread = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let Some(request) = read_request(&stream) else {
                        continue;
                    };
                    let n = {
                        let mut requests = requests.lock().expect("requests lock");
                        requests.push(request.clone());
                        requests.len() - 1
                    };
                    let answer = responder(&request, n);
                    let mut stream = stream;
                    let _ = stream.write_all(answer.as_bytes());
                    let _ = stream.flush();
                }
            })
        };
        RecordingServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Recorded> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    if request_line.is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        request_line: request_line.trim_end_matches(['\r', '\n']).to_owned(),
        headers,
        body,
        at: Instant::now(),
    })
}

/// A complete HTTP/1.1 answer with `Connection: close`.
pub fn answer(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
