//! A real Varnish on 127.0.0.1 caching a tiny origin server, for the `purge` provider.
//!
//! The origin (tiny_http) serves the files of a temp dir with `Cache-Control:
//! max-age=3600`, so Varnish keeps serving the old bytes until it gets a `PURGE`. The
//! VCL accepts `PURGE` from 127.0.0.1 only (peers.md §3, Varnish row).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::util_http::{free_port, wait_until};

/// Files under a temp dir, served over HTTP with a long `max-age`. Stopped on drop.
pub struct Origin {
    /// The port.
    pub port: u16,
    /// The served directory.
    pub dir: tempfile::TempDir,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts serving an empty temp dir.
    pub fn start() -> Origin {
        let dir = tempfile::tempdir().expect("origin dir");
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("origin server"));
        let port = server.server_addr().to_ip().expect("ip address").port();
        let root = dir.path().to_path_buf();
        let thread = {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let rel = percent_decode(request.url().trim_start_matches('/'));
                    let path = root.join(super::util_http::bytes_path(&rel));
                    let response = match std::fs::read(&path) {
                        Ok(bytes) => tiny_http::Response::from_data(bytes).with_header(
                            "Cache-Control: max-age=3600"
                                .parse::<tiny_http::Header>()
                                .expect("header"),
                        ),
                        Err(_) => tiny_http::Response::from_data(b"not found".to_vec())
                            .with_status_code(404),
                    };
                    let _ = request.respond(response);
                }
            })
        };
        Origin {
            port,
            dir,
            server,
            thread: Some(thread),
        }
    }

    /// Writes a served file.
    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.dir.path().join(rel), text).expect("write origin file");
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let hex = bytes.get(idx + 1..idx + 3).and_then(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        });
        match (bytes[idx], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                idx += 3;
            }
            (byte, _) => {
                out.push(byte);
                idx += 1;
            }
        }
    }
    out
}

/// `varnishd -F` in front of an [`Origin`]. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Varnish {
    /// The port Varnish listens on.
    pub port: u16,
    child: Child,
    _workdir: tempfile::TempDir,
}

impl Varnish {
    /// Starts Varnish with `origin` as its backend and waits until `ready.txt` (written
    /// here) comes back through it. Fails the test when `varnishd` is not installed.
    pub fn start(origin: &Origin) -> Varnish {
        let varnishd = find_varnishd();
        let workdir = tempfile::tempdir().expect("varnish workdir");
        let vcl = workdir.path().join("test.vcl");
        std::fs::write(
            &vcl,
            format!(
                r#"vcl 4.1;
backend default {{ .host = "127.0.0.1"; .port = "{port}"; }}
acl purge {{ "127.0.0.1"; }}
sub vcl_recv {{
    if (req.method == "PURGE") {{
        if (!client.ip ~ purge) {{ return (synth(405, "Not allowed.")); }}
        return (purge);
    }}
}}
"#,
                port = origin.port
            ),
        )
        .expect("write vcl");
        origin.write("ready.txt", "ready");
        let port = free_port();
        // `-j none`: as root, the default `unix` jail would switch to the varnish users,
        // which cannot write into our temp workdir.
        let mut child = Command::new(&varnishd)
            .arg("-F")
            .args(["-j", "none"])
            .args(["-a", &format!("127.0.0.1:{port}")])
            .args(["-T", "127.0.0.1:0"])
            .arg("-f")
            .arg(&vcl)
            .arg("-n")
            .arg(workdir.path().join("n"))
            .args(["-s", "malloc,16m"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start varnishd");
        let url = format!("http://127.0.0.1:{port}/ready.txt");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if get(&url).as_deref() == Some("ready") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                panic!("varnishd exited with {status} before it was ready: {err}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("timed out after 20s waiting for varnishd on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Varnish {
            port,
            child,
            _workdir: workdir,
        }
    }

    /// GETs `path` (already percent-encoded) through Varnish; `None` unless 200.
    pub fn get(&self, path: &str) -> Option<String> {
        get(&format!("http://127.0.0.1:{}/{path}", self.port))
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let stopped = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find_varnishd() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    for dir in candidates {
        let path = dir.join("varnishd");
        if Path::new(&path).is_file() {
            return path;
        }
    }
    panic!("varnishd not found: install it (CI does `apt-get install -y varnish`)");
}

fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    if response.status() != 200 {
        return None;
    }
    response.body_mut().read_to_string().ok()
}

/// Waits until `path` through Varnish returns `text`.
#[track_caller]
pub fn wait_for_body(varnish: &Varnish, path: &str, text: &str) {
    wait_until(
        &format!("GET /{path} through varnish to return {text:?}"),
        super::util_http::LIMIT,
        || varnish.get(path).as_deref() == Some(text),
    );
}
