//! The `socket` plugin: tells a TCP listener about each delivered change of its root.
//!
//! Two wire formats, chosen by `<deshost format>`:
//! - default, the original's: for each change a **new connection** to `ip:port`, the
//!   bare absolute path bytes (no newline, no event kind), then close. The connection is
//!   tried up to [`BARE_ATTEMPTS`] times; a change that cannot be sent is logged and
//!   counted in `plugin_failures`.
//! - `lines`: **one persistent connection** carrying `EVENT PATH\n` per change, EVENT
//!   being `update` or `delete`. In PATH, `\` is sent as `\\` and a newline as `\n`
//!   (backslash, `n`); every other byte is sent as it is (non-UTF-8 included). When the
//!   connection drops, lines wait in a buffer of at most [`LINES_BUFFER`] (the oldest is
//!   dropped, and counted as a failure, when full) and the plugin reconnects with a
//!   backoff of 100 ms doubling to 5 s. A peer that closed is noticed before writing,
//!   but lines written just before it vanished can be lost (TCP has no receipt).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use crate::backoff::Backoff;
use crate::config::SocketConfig;
use crate::job::{Delivered, Op};
use crate::metrics::Metrics;
use crate::paths::abs_path;
use crate::plugin::{PluginError, named_thread};

/// Connection attempts per change in the default format (as sersync 2.5).
pub const BARE_ATTEMPTS: u32 = 5;
/// Lines kept while disconnected in `lines` format.
pub const LINES_BUFFER: usize = 10_000;
/// Connect and write timeout.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// One `lines`-format record: `EVENT PATH\n` with `\` and newline escaped.
pub fn line(op: Op, abs: &Path) -> Vec<u8> {
    let path = abs.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(path.len() + 8);
    out.extend_from_slice(op.to_string().as_bytes());
    out.push(b' ');
    for &byte in path {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(byte),
        }
    }
    out.push(b'\n');
    out
}

fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(stream) => {
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(stream);
            }
            Err(err) => last_err = err,
        }
    }
    Err(last_err)
}

/// The default format: one connection, the bare bytes, close.
fn send_bare(host: &str, port: u16, payload: &[u8]) -> io::Result<()> {
    let mut attempt = 1;
    loop {
        let sent = connect(host, port).and_then(|mut stream| {
            stream.write_all(payload)?;
            stream.shutdown(Shutdown::Write)
        });
        match sent {
            Ok(()) => return Ok(()),
            Err(err) if attempt >= BARE_ATTEMPTS => return Err(err),
            Err(_) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Whether a connected stream is still open: reads (and discards) whatever the peer
/// sent without blocking; EOF or an error means it is gone.
fn is_open(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let open = loop {
        match stream.read(&mut buf) {
            Ok(0) => break false,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break true,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    open && stream.set_nonblocking(false).is_ok()
}

/// The `lines` format's connection and buffer.
struct Lines {
    host: String,
    port: u16,
    stream: Option<TcpStream>,
    buffer: VecDeque<Vec<u8>>,
    backoff: Backoff,
    next_attempt: Instant,
    metrics: Arc<Metrics>,
}

impl Lines {
    fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn push(&mut self, line: Vec<u8>) {
        if self.buffer.len() >= LINES_BUFFER {
            self.buffer.pop_front();
            Metrics::incr(&self.metrics.plugin_failures);
            log::warn!(
                "{}: socket buffer full, oldest event dropped",
                self.endpoint()
            );
        }
        self.buffer.push_back(line);
    }

    /// When to try again, if something waits and there is no connection.
    fn wake_at(&self) -> Option<Instant> {
        (!self.buffer.is_empty()).then_some(self.next_attempt)
    }

    /// Writes buffered lines, (re)connecting when due.
    fn flush(&mut self, now: Instant) {
        // Checked once per flush, before the first write: a peer that went away since
        // the last flush is noticed without losing a line into a dead socket.
        let mut checked = false;
        while !self.buffer.is_empty() {
            if !checked && !self.stream.as_mut().is_some_and(is_open) {
                self.stream = None;
            }
            checked = true;
            if self.stream.is_none() {
                if now < self.next_attempt {
                    return;
                }
                match connect(&self.host, self.port) {
                    Ok(stream) => {
                        log::info!("{}: socket plugin connected", self.endpoint());
                        self.backoff.reset();
                        self.stream = Some(stream);
                    }
                    Err(err) => {
                        let delay = self.backoff.next_delay();
                        self.next_attempt = Instant::now() + delay;
                        log::warn!(
                            "{}: cannot connect: {err}; retry in {delay:?}",
                            self.endpoint()
                        );
                        return;
                    }
                }
            }
            let (Some(stream), Some(line)) = (self.stream.as_mut(), self.buffer.front()) else {
                return;
            };
            if let Err(err) = stream.write_all(line) {
                let delay = self.backoff.next_delay();
                self.next_attempt = Instant::now() + delay;
                log::warn!(
                    "{}: write failed: {err}; reconnecting in {delay:?}",
                    self.endpoint()
                );
                self.stream = None;
                return;
            }
            self.buffer.pop_front();
        }
    }
}

/// Starts the `sersync-socket` thread for root `root` (at `root_path`).
///
/// # Errors
/// [`PluginError::Thread`] when the thread cannot start.
pub fn spawn(
    config: &SocketConfig,
    root: usize,
    root_path: PathBuf,
    delivered_rx: Receiver<Delivered>,
    metrics: &Arc<Metrics>,
) -> Result<JoinHandle<()>, PluginError> {
    let config = config.clone();
    let metrics = Arc::clone(metrics);
    named_thread("sersync-socket", move || {
        let mine = |delivered: &Delivered| {
            (delivered.root == root).then(|| abs_path(&root_path, &delivered.rel))
        };
        if !config.lines {
            for delivered in delivered_rx {
                let Some(abs) = mine(&delivered) else {
                    continue;
                };
                if let Err(err) = send_bare(&config.host, config.port, abs.as_os_str().as_bytes()) {
                    Metrics::incr(&metrics.plugin_failures);
                    log::warn!(
                        "{}: socket {}:{}: {err}",
                        abs.display(),
                        config.host,
                        config.port
                    );
                }
            }
            return;
        }
        let mut lines = Lines {
            host: config.host.clone(),
            port: config.port,
            stream: None,
            buffer: VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            next_attempt: Instant::now(),
            metrics: Arc::clone(&metrics),
        };
        loop {
            let timeout = lines
                .wake_at()
                .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
            select! {
                recv(delivered_rx) -> delivered => match delivered {
                    Ok(delivered) => {
                        for delivered in std::iter::once(delivered).chain(delivered_rx.try_iter()) {
                            if let Some(abs) = mine(&delivered) {
                                lines.push(line(delivered.op, &abs));
                            }
                        }
                    }
                    Err(_) => break,
                },
                recv(timeout) -> _ => {}
            }
            lines.flush(Instant::now());
        }
        lines.next_attempt = Instant::now();
        lines.flush(Instant::now());
        if !lines.buffer.is_empty() {
            log::warn!(
                "{}: {} event(s) not sent before shutdown",
                lines.endpoint(),
                lines.buffer.len()
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_buffer_drops_the_oldest_when_full() {
        let metrics = Arc::new(Metrics::default());
        let mut lines = Lines {
            host: "127.0.0.1".into(),
            port: 1,
            stream: None,
            buffer: VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            next_attempt: Instant::now(),
            metrics: Arc::clone(&metrics),
        };
        for idx in 0..=LINES_BUFFER {
            lines.push(idx.to_string().into_bytes());
        }
        assert_eq!(lines.buffer.len(), LINES_BUFFER);
        assert_eq!(lines.buffer.front().map(Vec::as_slice), Some(&b"1"[..]));
        assert_eq!(
            metrics
                .plugin_failures
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn lines_escape_backslash_and_newline_only() {
        let abs = Path::new(std::ffi::OsStr::from_bytes(b"/srv/a\\b\nc d\xff"));
        assert_eq!(line(Op::Delete, abs), b"delete /srv/a\\\\b\\nc d\xff\n");
        assert_eq!(line(Op::Update, Path::new("/x")), b"update /x\n");
    }
}
