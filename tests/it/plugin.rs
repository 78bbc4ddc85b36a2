//! The command, socket and http plugins against real processes and listeners.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use sersync::cdn::MemoryJournal;
use sersync::config::{
    CommandConfig, Config, HttpPluginConfig, PluginKind, ProgramWords, SocketConfig,
};
use sersync::job::{Delivered, Op};
use sersync::metrics::Metrics;
use sersync::plugin::{self, PluginStage};

use super::util_http::{
    LIMIT, RecordingServer, answer, bytes_path, config, delivered, run_only, wait_until,
};

struct Running {
    tx: Sender<Delivered>,
    stage: PluginStage,
    metrics: Arc<Metrics>,
}

impl Running {
    fn send(&self, delivered: Delivered) {
        self.tx.send(delivered).expect("stage running");
    }

    /// Disconnects the input and waits until every plugin is done.
    fn stop(self) -> Arc<Metrics> {
        drop(self.tx);
        self.stage.join();
        self.metrics
    }
}

fn start(config: &Config, kind: PluginKind) -> Running {
    let mut config = config.clone();
    run_only(&mut config, kind);
    let (tx, rx) = crossbeam_channel::unbounded();
    let metrics = Arc::new(Metrics::default());
    let stage = plugin::spawn(
        &config,
        rx,
        Arc::new(MemoryJournal::new()),
        Arc::clone(&metrics),
    )
    .expect("spawn plugin");
    Running { tx, stage, metrics }
}

fn command(script: String, timeout: Duration, ignore_error: bool) -> CommandConfig {
    CommandConfig {
        prefix: ProgramWords::new(vec!["/bin/sh".into(), "-c".into(), script, "sh".into()])
            .expect("a program"),
        suffix: vec!["--tail".into()],
        ignore_error,
        include: None,
        timeout,
        concurrency: 1,
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn command_gets_a_hostile_name_as_one_argument_without_a_shell() {
    let root = tempfile::tempdir().expect("root");
    let out = tempfile::tempdir().expect("out");
    let o = out.path().display();
    let script = format!(
        r#"echo $# > {o}/argc; printf '%s' "$1" > {o}/arg1; printf '%s' "$2" > {o}/arg2;
printf '%s' "$SERSYNC_EVENT" > {o}/event; printf '%s' "$SERSYNC_PATH" > {o}/path; : > {o}/done"#
    );
    let mut config = config(&[root.path()], Duration::from_secs(1));
    config.command = Some(command(script, LIMIT, false));
    let hostile: &[u8] =
        b"-rf $(touch pwned) `touch pwned2`; touch pwned3 | 'q' \"dq\" \\ &\nline2 \xff";
    std::fs::write(root.path().join(bytes_path(hostile)), "x").expect("hostile file");
    let running = start(&config, PluginKind::Command);
    running.send(delivered(0, bytes_path(hostile), Op::Update, false));
    wait_until("the command to run", LIMIT, || {
        out.path().join("done").exists()
    });
    let metrics = running.stop();

    let mut abs = root.path().as_os_str().as_bytes().to_vec();
    abs.push(b'/');
    abs.extend_from_slice(hostile);
    assert_eq!(read(&out.path().join("argc")), b"2\n");
    assert_eq!(read(&out.path().join("arg1")), abs);
    assert_eq!(read(&out.path().join("arg2")), b"--tail");
    assert_eq!(read(&out.path().join("event")), b"update");
    assert_eq!(read(&out.path().join("path")), abs);
    let cwd = std::env::current_dir().expect("cwd");
    for dir in [root.path(), out.path(), cwd.as_path()] {
        for name in ["pwned", "pwned2", "pwned3"] {
            assert!(
                !dir.join(name).exists(),
                "{name} created in {}",
                dir.display()
            );
        }
    }
    assert_eq!(metrics.plugin_failures.load(Ordering::Relaxed), 0);
}

#[test]
fn command_runs_for_every_root_when_the_include_filter_matches() {
    let root_a = tempfile::tempdir().expect("root a");
    let root_b = tempfile::tempdir().expect("root b");
    let out = tempfile::tempdir().expect("out");
    let log = out.path().join("log");
    let script = format!(
        r#"printf '%s %s\n' "$SERSYNC_EVENT" "$1" >> {}"#,
        log.display()
    );
    let mut cmd = command(script, LIMIT, false);
    cmd.include = Some(vec![sersync::filter::Rule::new(r".*\.php").expect("regex")]);
    let mut config = config(&[root_a.path(), root_b.path()], Duration::from_secs(1));
    config.command = Some(cmd);
    let running = start(&config, PluginKind::Command);
    running.send(delivered(0, "a.php", Op::Update, false));
    running.send(delivered(0, "b.txt", Op::Update, false));
    running.send(delivered(1, "sub/c.php", Op::Delete, false));
    running.send(delivered(1, "c.php.bak", Op::Delete, false));
    running.stop();
    let expected = format!(
        "update {}/a.php\ndelete {}/sub/c.php\n",
        root_a.path().display(),
        root_b.path().display()
    );
    assert_eq!(String::from_utf8_lossy(&read(&log)), expected);
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn command_timeout_kills_a_slow_command_and_its_children() {
    let root = tempfile::tempdir().expect("root");
    let out = tempfile::tempdir().expect("out");
    let o = out.path().display();
    // No `exec`: the shell waits for a background child, which must die too.
    let script = format!(
        r#"case "$1" in *slow) echo $$ > {o}/pid; sleep 100 & echo $! > {o}/child; wait;; *) : > {o}/fast;; esac"#
    );
    let mut config = config(&[root.path()], Duration::from_secs(1));
    config.command = Some(command(script, Duration::from_millis(300), false));
    let started = Instant::now();
    let running = start(&config, PluginKind::Command);
    running.send(delivered(0, "slow", Op::Update, false));
    running.send(delivered(0, "fast", Op::Update, false));
    wait_until("the command after the slow one", LIMIT, || {
        out.path().join("fast").exists()
    });
    let metrics = running.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for file in ["pid", "child"] {
        let pid = String::from_utf8_lossy(&read(&out.path().join(file)))
            .trim()
            .to_owned();
        wait_until(&format!("{file} {pid} to be killed"), LIMIT, || {
            is_dead(&pid)
        });
    }
    assert_eq!(metrics.plugin_failures.load(Ordering::Relaxed), 1);
}

#[test]
fn ignore_error_discards_failures() {
    let root = tempfile::tempdir().expect("root");
    let script = "echo to-stdout; echo to-stderr >&2; exit 3".to_owned();
    for (ignore_error, failures) in [(true, 0), (false, 2)] {
        let mut config = config(&[root.path()], Duration::from_secs(1));
        // Keep the test output clean: only stderr is captured (and logged).
        let script = if ignore_error {
            script.clone()
        } else {
            "echo to-stderr >&2; exit 3".to_owned()
        };
        let cmd = command(script, LIMIT, ignore_error);
        config.command = Some(cmd);
        let running = start(&config, PluginKind::Command);
        running.send(delivered(0, "a", Op::Update, false));
        running.send(delivered(0, "b", Op::Delete, false));
        let metrics = running.stop();
        assert_eq!(
            metrics.plugin_failures.load(Ordering::Relaxed),
            failures,
            "ignore_error={ignore_error}"
        );
    }
}

/// Accepts connections on `listener` and keeps the bytes of each, read to EOF.
fn collect_connections(listener: TcpListener) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            sink.lock().expect("lock").push(bytes);
        }
    });
    received
}

#[test]
fn socket_default_sends_the_bare_path_once_per_connection() {
    let other = tempfile::tempdir().expect("other root");
    let root = tempfile::tempdir().expect("root");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let received = collect_connections(listener);
    let mut config = config(&[other.path(), root.path()], Duration::from_secs(1));
    config.socket = Some(SocketConfig {
        root: root.path().to_path_buf(),
        host: "127.0.0.1".into(),
        port,
        lines: false,
    });
    let running = start(&config, PluginKind::Socket);
    running.send(delivered(0, "not-mine", Op::Update, false));
    running.send(delivered(1, bytes_path(b"a b\n\xff"), Op::Update, false));
    running.send(delivered(1, "dir", Op::Delete, true));
    wait_until("two socket connections", LIMIT, || {
        received.lock().expect("lock").len() == 2
    });
    running.stop();
    let base = root.path().as_os_str().as_bytes();
    let expected = [[base, b"/a b\n\xff"].concat(), [base, b"/dir"].concat()];
    assert_eq!(*received.lock().expect("lock"), expected);
}

/// Accepts one connection within [`LIMIT`], returned in blocking mode with a read timeout.
fn accept_within(listener: &TcpListener) -> std::net::TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let mut accepted = None;
    wait_until("a connection from the socket plugin", LIMIT, || {
        accepted = listener.accept().ok();
        accepted.is_some()
    });
    let (stream, _) = accepted.expect("accepted");
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    stream
}

/// Reads one `\n`-terminated line.
fn read_line(reader: &mut impl BufRead) -> Vec<u8> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).expect("read line");
    line
}

#[test]
fn socket_lines_mode_keeps_one_connection_and_reconnects() {
    let root = tempfile::tempdir().expect("root");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let mut config = config(&[root.path()], Duration::from_secs(1));
    config.socket = Some(SocketConfig {
        root: root.path().to_path_buf(),
        host: "127.0.0.1".into(),
        port,
        lines: true,
    });
    let running = start(&config, PluginKind::Socket);
    let base = root.path().display().to_string();
    running.send(delivered(0, bytes_path(b"a\\b\nc"), Op::Update, false));
    let mut reader = BufReader::new(accept_within(&listener));
    assert_eq!(
        read_line(&mut reader),
        format!("update {base}/a\\\\b\\nc\n").into_bytes()
    );
    running.send(delivered(0, "second", Op::Delete, false));
    assert_eq!(
        read_line(&mut reader),
        format!("delete {base}/second\n").into_bytes()
    );

    // The peer goes away: it stops listening and closes its side of the connection.
    // The next change finds the connection closed (before writing into it), so the
    // plugin drops it, which this end sees as end of file, and buffers the line.
    drop(listener);
    reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .expect("close our side");
    running.send(delivered(0, "while-down", Op::Update, false));
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .expect("the plugin closes the old connection");
    assert!(
        rest.is_empty(),
        "written into a closed connection: {rest:?}"
    );
    // A new listener on the same port: the buffered line comes first, on a new
    // connection, and later lines follow on that same connection.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind the same port");
    let mut reader = BufReader::new(accept_within(&listener));
    assert_eq!(
        read_line(&mut reader),
        format!("update {base}/while-down\n").into_bytes()
    );
    running.send(delivered(0, "after", Op::Update, true));
    assert_eq!(
        read_line(&mut reader),
        format!("update {base}/after\n").into_bytes()
    );
    let metrics = running.stop();
    assert!(
        listener.accept().is_err(),
        "one reconnection, not one connection per line"
    );
    assert_eq!(metrics.plugin_failures.load(Ordering::Relaxed), 0);
}

#[test]
fn http_plugin_posts_the_original_form() {
    let server = RecordingServer::start(|_, _| answer("200 OK", "", "ok"));
    let root = tempfile::tempdir().expect("root");
    let mut config = config(&[root.path()], Duration::from_secs(1));
    config.http = Some(HttpPluginConfig {
        root: root.path().to_path_buf(),
        url: format!("{}/notify", server.url()),
    });
    let running = start(&config, PluginKind::Http);
    let mut change = delivered(0, "d/a b&c.txt", Op::Update, false);
    change.mask = 0x0000_0008;
    running.send(change);
    running.send(delivered(0, "new", Op::Update, true));
    wait_until("two POSTs", LIMIT, || server.requests().len() == 2);
    let metrics = running.stop();
    let requests = server.requests();
    let enc_root = root.path().display().to_string().replace('/', "%2F");
    assert_eq!(requests[0].request_line, "POST /notify HTTP/1.1");
    assert_eq!(
        requests[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        requests[0].body_text(),
        format!("watchroot={enc_root}&isdir=0&inotifyPath={enc_root}%2Fd%2Fa+b%26c.txt&mask=8")
    );
    assert_eq!(
        requests[1].body_text(),
        format!("watchroot={enc_root}&isdir=1&inotifyPath={enc_root}%2Fnew&mask=1073742080")
    );
    assert_eq!(metrics.plugin_failures.load(Ordering::Relaxed), 0);
}

/// A missing section, an unwatched root or an empty command cannot reach the plugin
/// stage (validation resolves `Config::running` and refuses an empty `prefix`; see
/// `plugin_without_section.xml`, `plugin_root_not_watched.xml` and the empty-prefix
/// fixture row; `ProgramWords` cannot be empty): no plugin at all is fine.
#[test]
fn no_plugin_is_fine() {
    let root = tempfile::tempdir().expect("root");
    let mut config = config(&[root.path()], Duration::from_secs(1));
    // The input is drained and join returns.
    config.running.clear();
    let (tx, rx) = crossbeam_channel::unbounded();
    let stage = plugin::spawn(&config, rx, Arc::new(MemoryJournal::new()), Arc::default())
        .expect("no plugins");
    tx.send(delivered(0, "x", Op::Update, false)).expect("send");
    drop(tx);
    stage.join();
}

/// `-m socket` end to end: a file read with `-m` resolves the socket plugin (root index
/// 0) although `<sersync>` watches another directory, and the pipeline watches the
/// plugin's own `localpath` and sends its changes.
#[test]
fn standalone_socket_plugin_watches_its_own_localpath() {
    let dir = tempfile::tempdir().expect("dir");
    let (watched, other) = (dir.path().join("watched"), dir.path().join("other"));
    std::fs::create_dir_all(&watched).expect("mkdir watched");
    std::fs::create_dir_all(&other).expect("mkdir other");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let xml = format!(
        "<head><sersync><localpath watch=\"{}\"><remote ip=\"h\" name=\"m\"/></localpath></sersync>\
         <plugin name=\"socket\"><localpath watch=\"{}\"><deshost ip=\"127.0.0.1\" port=\"{port}\" format=\"lines\"/></localpath></plugin></head>",
        other.display(),
        watched.display()
    );
    let options = sersync::config::ParseOptions {
        standalone_plugin: Some(PluginKind::Socket),
    };
    let config = sersync::config::parse_with(xml.as_bytes(), Path::new("t.xml"), &options)
        .expect("valid with -m socket");
    assert_eq!(config.running.len(), 1);
    assert!(matches!(
        config.running[0],
        sersync::config::Plugin::Socket { root: 0, .. }
    ));
    let pipeline = sersync::Pipeline::start(
        &config,
        &sersync::pipeline::Options {
            standalone_plugin: Some(PluginKind::Socket),
            ..sersync::pipeline::Options::default()
        },
        Arc::new(sersync::coalesce::MemoryJournal::default()),
    )
    .expect("standalone pipeline");
    std::fs::write(other.join("not-mine.txt"), "x").expect("write other");
    std::fs::write(watched.join("mine.txt"), "x").expect("write watched");
    let mut reader = BufReader::new(accept_within(&listener));
    assert_eq!(
        read_line(&mut reader),
        format!("update {}/mine.txt\n", watched.display()).into_bytes()
    );
    pipeline.shutdown().expect("clean shutdown");
}
