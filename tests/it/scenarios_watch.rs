//! Operator patterns the watcher must get right, run through the real binary against
//! both remote kinds (a local directory and a real `rsync --daemon` with auth): log
//! rotation, moving a name back and re-creating it, `renameat2(RENAME_EXCHANGE)`, a
//! watched root deleted and re-created, SIGTERM during a scan and right after writes,
//! SIGHUP during writes, `<modify>` coalescing. Each waits until `/status` says idle
//! (nothing queued, running or journaled) and the mirror is byte-exact (content, type,
//! link target, mode), with a deadline. The unwatchable-directory cases use the watch
//! stage directly (its retry list and `Metrics`).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sersync::config::InotifyToggles;
use sersync::job::{FsEvent, Op};
use sersync::metrics::Metrics;
use sersync::watch::{self, WatchOptions};

use crate::service::{BIN, free_port, http};
use crate::util::{RsyncDaemon, rsyncd, tree, wait_until};
use crate::watch::exchange;

/// Deadline for convergence and for the binary to start or stop.
const LIMIT: Duration = Duration::from_secs(60);
/// How long idle and equal must hold to count.
const QUIET: Duration = Duration::from_millis(600);

/// Where the mirror lives.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Local,
    Daemon,
}

/// A source tree, a remote of `Kind`, a config with `/status` on, and the binary.
struct Scene {
    dir: tempfile::TempDir,
    src: PathBuf,
    mirror: PathBuf,
    _daemon: Option<RsyncDaemon>,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Scene {
    fn new(kind: Kind, modify: bool) -> Scene {
        Scene::with_params(kind, modify, "-artuz")
    }

    /// With `<commonParams params>` other than the stock `-artuz`.
    fn with_params(kind: Kind, modify: bool, params: &str) -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).expect("src");
        let (mirror, daemon, remote, auth) = match kind {
            Kind::Local => {
                let mirror = dir.path().join("mirror");
                let remote = format!("<remote path=\"{}\"/>", mirror.display());
                (mirror, None, remote, String::new())
            }
            Kind::Daemon => {
                let daemon = RsyncDaemon::start(&dir.path().join("mirror"));
                let remote = format!("<remote ip=\"127.0.0.1\" name=\"{}\"/>", rsyncd::MODULE);
                let auth = format!(
                    "<auth start=\"true\" users=\"{}\" passwordfile=\"{}\"/>\n\
                     <userDefinedPort start=\"true\" port=\"{}\"/>",
                    rsyncd::USER,
                    daemon.password_file.display(),
                    daemon.port
                );
                (daemon.module_root.clone(), Some(daemon), remote, auth)
            }
        };
        let port = free_port();
        let config = dir.path().join("sersync.xml");
        let watch_element = crate::util::watch_element();
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
{watch_element}    <host hostip="127.0.0.1" port="{port}" start="true"/>
{inotify}
    <sersync>
        <localpath watch="{src}">
            {remote}
        </localpath>
        <rsync>
            <commonParams params="{params}"/>
            {auth}
            <timeout start="true" time="100"/>
        </rsync>
        <failLog path="{journal}" timeToExecute="0.05"/>
    </sersync>
</head>
"#,
            inotify = crate::reliability::inotify_section(modify),
            src = src.display(),
            journal = dir.path().join("state/faillog").display(),
        );
        fs::write(&config, xml).expect("config");
        let log = dir.path().join("sersync.log");
        Scene {
            src,
            mirror,
            _daemon: daemon,
            config,
            log,
            port,
            child: None,
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.src.join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir -p");
        fs::write(path, content).expect("write");
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the binary (`extra` arguments) and waits for its "running" line.
    fn start(&mut self, extra: &[&str]) {
        let before = self.log_text().matches(" running (pid ").count();
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("out.txt"))
            .expect("out.txt");
        let err = out.try_clone().expect("out.txt");
        let child = Command::new(BIN)
            .args(["-n", "4", "-o"])
            .arg(&self.config)
            .arg("--logfile")
            .arg(&self.log)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn sersync");
        self.child = Some(child);
        wait_until("sersync running", LIMIT, || {
            assert!(
                self.alive(),
                "sersync exited at start:\n{}",
                self.log_text()
            );
            self.log_text().matches(" running (pid ").count() > before
        });
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -s {name}");
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "exit {status:?}:\n{}", self.log_text());
                return;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = http("GET", &format!("http://127.0.0.1:{}/status", self.port));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// Rsync runs that succeeded for the one remote.
    fn batches(&self) -> u64 {
        self.status()["roots"][0]["remotes"][0]["batches"]
            .as_u64()
            .unwrap_or(0)
    }

    fn is_idle(&self) -> bool {
        let status = self.status();
        status["queue_depth"] == 0 && status["in_flight"] == 0 && status["journal"]["entries"] == 0
    }

    /// Waits until `/status` is idle and the mirror is byte-exact, both for [`QUIET`].
    #[track_caller]
    fn converge(&mut self, what: &str) {
        let deadline = Instant::now() + LIMIT;
        let mut since: Option<Instant> = None;
        loop {
            assert!(self.alive(), "{what}: sersync died:\n{}", self.log_text());
            if self.is_idle() && tree::diff(&self.src, &self.mirror).is_none() {
                if since.get_or_insert_with(Instant::now).elapsed() >= QUIET {
                    return;
                }
            } else {
                since = None;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not converged after {LIMIT:?}: {}\nstatus: {}\nlog:\n{}",
                tree::diff(&self.src, &self.mirror).unwrap_or_else(|| "equal".into()),
                self.status(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One test per remote kind.
macro_rules! both_kinds {
    ($scenario:ident: $($kind:ident => $name:ident),+) => {
        $(
            #[test]
            fn $name() {
                $scenario(Kind::$kind);
            }
        )+
    };
}

/// A started scene with `rels` written and mirrored.
fn converged_with(kind: Kind, rels: &[&str]) -> Scene {
    let mut scene = Scene::new(kind, false);
    for rel in rels {
        scene.write(rel, rel);
    }
    scene.start(&["-r"]);
    scene.converge("initial -r");
    scene
}

fn log_rotation(kind: Kind) {
    let mut scene = converged_with(kind, &["logs/x.log", "logs/y.log"]);
    fs::rename(scene.path("logs"), scene.path("logs.old")).expect("mv logs logs.old");
    fs::create_dir(scene.path("logs")).expect("mkdir logs");
    scene.write("logs/new.log", "n");
    scene.converge("log rotation");
    // And its relative: the old directory leaves the tree, a new one takes the name.
    let outside = scene.dir.path().join("outside");
    fs::create_dir(&outside).expect("mkdir outside");
    fs::rename(scene.path("logs"), outside.join("logs")).expect("mv logs out/");
    fs::create_dir(scene.path("logs")).expect("mkdir logs");
    scene.converge("mv d out/; mkdir d");
    scene.stop();
}
#[test]
fn log_rotation_local() {
    log_rotation(Kind::Local);
}

#[test]
fn log_rotation_daemon() {
    log_rotation(Kind::Daemon);
}

fn move_back_then_mkdir(kind: Kind) {
    let mut scene = converged_with(kind, &["A/one", "A/sub/two", "keep"]);
    fs::rename(scene.path("A"), scene.path("B")).expect("mv A B");
    fs::rename(scene.path("B"), scene.path("A")).expect("mv B A");
    fs::create_dir(scene.path("B")).expect("mkdir B");
    scene.converge("mv A B; mv B A; mkdir B");
    // The same with files, and with a pause so the first move is pushed on its own.
    fs::rename(scene.path("keep"), scene.path("moved")).expect("mv keep moved");
    scene.converge("mv keep moved");
    fs::rename(scene.path("moved"), scene.path("keep")).expect("mv moved keep");
    scene.write("moved", "new content");
    scene.converge("mv moved keep; echo > moved");
    scene.stop();
}
both_kinds!(move_back_then_mkdir: Local => move_back_then_mkdir_local, Daemon => move_back_then_mkdir_daemon);

fn rename_exchange(kind: Kind) {
    let mut scene = converged_with(kind, &["a/x", "a/deep/x2", "b/y", "d/in", "f"]);
    exchange(&scene.path("a"), &scene.path("b"));
    scene.converge("exchange of two directories");
    exchange(&scene.path("d"), &scene.path("f"));
    scene.converge("exchange of a directory and a file");
    exchange(&scene.path("d"), &scene.path("f"));
    scene.converge("and back");
    scene.stop();
}
both_kinds!(rename_exchange: Local => rename_exchange_local, Daemon => rename_exchange_daemon);

/// Two files exchanged: each name then holds content with the other's (older) mtime.
/// With `-u` in the params rsync skips a name whose remote copy is newer (issue 10,
/// item 2, fixed on the push side); the watcher's part is checked without it here.
fn rename_exchange_of_files(kind: Kind, params: &str) {
    let mut scene = Scene::with_params(kind, false, params);
    scene.write("f", "f");
    scene.write("g", "g");
    scene.start(&["-r"]);
    scene.converge("initial -r");
    // A later, longer g: the exchange gives g an older mtime than its mirror copy.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime second, not a wait
    fs::write(scene.path("g"), "a longer content for g").expect("write");
    scene.converge("g rewritten");
    exchange(&scene.path("f"), &scene.path("g"));
    scene.converge("exchange of two files");
    scene.stop();
}

#[test]
fn rename_exchange_of_files_local() {
    rename_exchange_of_files(Kind::Local, "-artz");
}

#[test]
fn rename_exchange_of_files_daemon() {
    rename_exchange_of_files(Kind::Daemon, "-artz");
}

#[test]
fn rename_exchange_of_files_with_stock_params() {
    rename_exchange_of_files(Kind::Daemon, "-artuz");
}

fn root_deleted_and_recreated(kind: Kind) {
    let mut scene = converged_with(kind, &["a/one", "two"]);
    fs::remove_dir_all(&scene.src).expect("rm -rf root");
    wait_until("/status says the root is missing", LIMIT, || {
        scene.status()["roots"][0]["missing"] == true
    });
    fs::create_dir(&scene.src).expect("mkdir root");
    scene.write("b/three", "3");
    scene.write("two", "two again");
    wait_until("/status says the root is back", LIMIT, || {
        scene.status()["roots"][0]["missing"] == false
    });
    scene.converge("root re-created");
    // Watched again: a change after the return is pushed as usual.
    scene.write("b/four", "4");
    scene.converge("change in the re-created root");
    scene.stop();
}
both_kinds!(root_deleted_and_recreated: Local => root_deleted_and_recreated_local, Daemon => root_deleted_and_recreated_daemon);

fn sigterm_during_scan(kind: Kind) {
    const FILES: usize = 20_000;
    let mut scene = converged_with(kind, &["old"]);
    let staging = scene.dir.path().join("staging");
    for i in 0..FILES {
        let dir = staging.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).expect("mkdir");
        }
        fs::write(dir.join(format!("f{i}")), i.to_string()).expect("write");
    }
    fs::rename(&staging, scene.path("tree")).expect("move the tree in");
    // Fault timing, not a completion wait: the scan of 20,000 files is under way.
    std::thread::sleep(Duration::from_millis(50));
    scene.stop();
    // Without -r: only the journal brings what the watcher saw.
    scene.start(&[]);
    scene.converge("restart after SIGTERM during a scan");
    scene.stop();
}
both_kinds!(sigterm_during_scan: Local => sigterm_during_scan_local, Daemon => sigterm_during_scan_daemon);

fn sigterm_right_after_writes(kind: Kind) {
    const FILES: usize = 3_000;
    let mut scene = converged_with(kind, &["old"]);
    for i in 0..FILES {
        scene.write(&format!("w/{}/f{i}", i % 10), &i.to_string());
    }
    scene.stop();
    scene.start(&[]);
    scene.converge("restart after SIGTERM right after writes");
    scene.stop();
}
both_kinds!(sigterm_right_after_writes: Local => sigterm_right_after_writes_local, Daemon => sigterm_right_after_writes_daemon);

fn sighup_during_writes(kind: Kind) {
    const FILES: usize = 1_500;
    const DIRS: usize = 3_000;
    // Many directories: the new watcher's walk takes a while, and writes land in
    // directories not watched yet.
    let mut scene = Scene::new(kind, false);
    for d in 0..DIRS {
        fs::create_dir_all(scene.path(&format!("h/{}/d{d}", d % 30))).expect("mkdir");
    }
    scene.start(&["-r"]);
    scene.converge("initial -r");
    // Without -r from here on: with it, every reload runs a full sync anyway.
    scene.stop();
    scene.start(&[]);
    let src = scene.src.clone();
    let reloads_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // At least 1,500 files, and on until all three reloads are through.
    let writer = {
        let reloads_done = Arc::clone(&reloads_done);
        std::thread::spawn(move || {
            let mut i = 0;
            while i < FILES || !reloads_done.load(Ordering::Relaxed) {
                let d = (i * 7919) % DIRS;
                let dir = src.join(format!("h/{}/d{d}", d % 30));
                fs::write(dir.join(format!("f{i}")), i.to_string()).expect("write");
                i += 1;
                if i >= FILES {
                    // Past the first 1,500, at a walking pace until the reloads are
                    // through: a reload waits for its full sync, and a writer at full
                    // speed made hundreds of thousands of files (30 s full syncs) on a
                    // loaded machine.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            i
        })
    };
    for reload in 1..=3 {
        scene.signal("HUP");
        // One at a time: a SIGHUP that comes while a reload runs is merged with the next.
        wait_until("the reload", LIMIT, || scene.status()["reloads"] == reload);
    }
    reloads_done.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    eprintln!("{kind:?}: {written} files written through 3 reloads");
    scene.converge("3 SIGHUPs during the writes");
    scene.stop();
}
both_kinds!(sighup_during_writes: Local => sighup_during_writes_local, Daemon => sighup_during_writes_daemon);

/// Rsync runs for `n` files, each written in 8 `write(2)`s and closed, one at a time
/// (each pushed before the next is written).
fn runs_for_ordinary_writes(kind: Kind, modify: bool, n: usize) -> u64 {
    use std::io::Write;
    let mut scene = Scene::new(kind, modify);
    scene.start(&[]);
    let before = scene.batches();
    for i in 0..n {
        let mut file = fs::File::create(scene.path(&format!("f{i}"))).expect("create");
        for chunk in 0..8 {
            file.write_all(format!("chunk {chunk} of {i}\n").as_bytes())
                .expect("write");
            file.flush().expect("flush");
        }
        drop(file);
        scene.converge("one ordinary write");
    }
    let runs = scene.batches() - before;
    scene.stop();
    runs
}

fn modify_costs_no_more_runs_than_close_write(kind: Kind) {
    const N: usize = 10;
    let off = runs_for_ordinary_writes(kind, false, N);
    let on = runs_for_ordinary_writes(kind, true, N);
    eprintln!(
        "{kind:?}: {N} ordinary writes: {off} rsync runs with closeWrite, {on} with modify on"
    );
    assert!(on <= off, "modify on: {on} runs, closeWrite alone: {off}");
}
both_kinds!(modify_costs_no_more_runs_than_close_write: Local => modify_runs_local, Daemon => modify_runs_daemon);

fn truncate_by_path_is_mirrored_with_modify(kind: Kind) {
    let mut scene = Scene::new(kind, true);
    scene.write("t", "some content to cut");
    scene.start(&["-r"]);
    scene.converge("initial");
    // truncate(2) by path raises IN_MODIFY only: no close follows.
    let path = CString::new(scene.path("t").as_os_str().as_bytes()).expect("path");
    #[allow(unsafe_code)]
    // SAFETY: a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::truncate(path.as_ptr(), 4) };
    assert_eq!(rc, 0, "truncate: {}", std::io::Error::last_os_error());
    scene.converge("truncate(2) with modify on");
    scene.stop();
}
both_kinds!(truncate_by_path_is_mirrored_with_modify: Local => truncate_local, Daemon => truncate_daemon);

// ---------------------------------------------------------------------------------------
// Directories that cannot be watched: the watch stage's retry list, seen in `Metrics`.

fn watcher(
    roots: Vec<PathBuf>,
    metrics: &Arc<Metrics>,
) -> (watch::Watcher, crossbeam_channel::Receiver<FsEvent>) {
    let _ = env_logger::builder().is_test(true).try_init();
    let (event_tx, event_rx) = crossbeam_channel::bounded(4096);
    let options = WatchOptions {
        toggles: InotifyToggles::default(),
        debug: false,
        backend: crate::util::watch_backend(),
    };
    let watcher = watch::spawn(
        roots,
        options,
        Arc::default(),
        event_tx,
        Arc::clone(metrics),
    )
    .expect("spawn watcher");
    (watcher, event_rx)
}

/// Makes `levels` nested directories of 255-byte names below `base` with `mkdirat`, so
/// that the deepest absolute paths exceed `PATH_MAX`; returns the first level's name.
#[allow(unsafe_code)]
fn deep_dirs(base: &Path, levels: usize) -> String {
    let name = |i: usize| format!("{i:02}{}", "n".repeat(253));
    let mut fd = {
        let path = CString::new(base.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path; the fd is closed below.
        unsafe { libc::open(path.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY) }
    };
    assert!(fd >= 0, "open {}", base.display());
    for i in 0..levels {
        let c = CString::new(name(i)).expect("name");
        // SAFETY: `fd` is an open directory and `c` a valid name; fds are closed.
        unsafe {
            assert_eq!(libc::mkdirat(fd, c.as_ptr(), 0o755), 0, "mkdirat level {i}");
            let next = libc::openat(fd, c.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
            libc::close(fd);
            assert!(next >= 0, "openat level {i}");
            fd = next;
        }
    }
    // SAFETY: the last directory fd, closed once.
    unsafe { libc::close(fd) };
    name(0)
}

/// A directory too deep to be watched (ENAMETOOLONG) is counted and retried; once it is
/// reachable under a shorter path (its ancestor renamed) it is watched and its changes
/// arrive.
#[test]
fn unwatchable_directory_is_counted_and_retried_until_watched() {
    if crate::util::inotify_only("a directory too deep to watch") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    fs::create_dir(&root).expect("root");
    let levels = (4096 - root.as_os_str().len()) / 256 + 1;
    let first = deep_dirs(&root, levels);
    let metrics = Arc::new(Metrics::default());
    let (watcher, event_rx) = watcher(vec![root.clone()], &metrics);
    assert_eq!(
        metrics.unwatched_dirs.load(Ordering::Relaxed),
        1,
        "the directory past PATH_MAX is counted"
    );
    assert_eq!(
        watcher.watch_count(),
        levels,
        "root and every level but the last"
    );
    fs::rename(root.join(&first), root.join("s")).expect("shorten the path");
    wait_until("the deep directory is watched", LIMIT, || {
        metrics.unwatched_dirs.load(Ordering::Relaxed) == 0 && watcher.watch_count() == levels + 1
    });
    // The deepest level, reached through the short name.
    let mut deepest = root.join("s");
    for i in 1..levels {
        deepest.push(format!("{i:02}{}", "n".repeat(253)));
    }
    fs::write(deepest.join("probe"), "x").expect("write");
    let deadline = Instant::now() + LIMIT;
    loop {
        match event_rx.recv_deadline(deadline) {
            Ok(FsEvent::Change(c)) if c.rel.ends_with("probe") && c.op == Op::Update => break,
            Ok(_) => {}
            Err(_) => panic!("no event from the directory once watched"),
        }
    }
    watcher.stop().expect("stop");
}

/// Runs itself in a user namespace whose watch limit (`user.max_inotify_watches`) is
/// 5, then raises it: the unwatched directories are counted, their root is rescanned
/// meanwhile, and they are watched as soon as watches free up.
#[test]
fn out_of_watches_picks_up_directories_when_watches_free_up() {
    if crate::util::inotify_only("the inotify watch limit") {
        return;
    }
    const CHILD: &str = "SERSYNC_TEST_WATCHES_FREE_UP_CHILD";
    if std::env::var_os(CHILD).is_some() {
        watches_free_up_child();
        return;
    }
    let Some(text) = crate::util::run_in_user_namespace(
        "scenarios_watch::out_of_watches_picks_up_directories_when_watches_free_up",
        CHILD,
        "sersync=warn",
    ) else {
        return;
    };
    let report = text
        .lines()
        .find(|l| l.contains("out of inotify watches"))
        .unwrap_or_else(|| panic!("no watch-limit error:\n{text}"));
    assert!(report.contains("so 26 are not watched"), "{report}");
    assert!(
        report.contains("rescanned every 30 s"),
        "the delay is stated: {report}"
    );
}

fn watches_free_up_child() {
    const LIMIT_FILE: &str = "/proc/sys/user/max_inotify_watches";
    fs::write(LIMIT_FILE, "5").expect("lower the limit in the namespace");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    for i in 0..30 {
        fs::create_dir_all(root.join(format!("d{i:02}"))).expect("mkdir");
    }
    let metrics = Arc::new(Metrics::default());
    let (watcher, event_rx) = watcher(vec![root.clone()], &metrics);
    assert_eq!(watcher.watch_count(), 5);
    assert!(metrics.unwatched_dirs.load(Ordering::Relaxed) > 0);
    let first = event_rx.recv_timeout(LIMIT).expect("an event");
    assert_eq!(
        first,
        FsEvent::Rescan { root: 0 },
        "the root is rescanned at once"
    );
    fs::write(LIMIT_FILE, "1000").expect("raise the limit");
    let deadline = Instant::now() + LIMIT;
    let mut rescans = 0;
    while watcher.watch_count() < 31 || metrics.unwatched_dirs.load(Ordering::Relaxed) > 0 {
        assert!(
            Instant::now() < deadline,
            "directories not picked up: {} watched",
            watcher.watch_count()
        );
        if let Ok(FsEvent::Rescan { .. }) = event_rx.recv_timeout(Duration::from_millis(50)) {
            rescans += 1;
        }
    }
    // Changes made while unwatched are covered by the rescan that follows the pickup.
    let deadline = Instant::now() + LIMIT;
    while rescans == 0 {
        match event_rx.recv_deadline(deadline) {
            Ok(FsEvent::Rescan { root: 0 }) => rescans += 1,
            Ok(_) => {}
            Err(_) => panic!("no rescan after the pickup"),
        }
    }
    fs::write(root.join("d29/probe"), "x").expect("write");
    let deadline = Instant::now() + LIMIT;
    loop {
        match event_rx.recv_deadline(deadline) {
            Ok(FsEvent::Change(c)) if c.rel == Path::new("d29/probe") => break,
            Ok(_) => {}
            Err(_) => panic!("no event from a directory watched late"),
        }
    }
    watcher.stop().expect("stop");
}

/// Waits for events until `done` holds for everything received.
fn events_until(
    event_rx: &crossbeam_channel::Receiver<FsEvent>,
    what: &str,
    mut done: impl FnMut(&[FsEvent]) -> bool,
) -> Vec<FsEvent> {
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    while !done(&seen) {
        match event_rx.recv_deadline(deadline) {
            Ok(event) => seen.push(event),
            Err(_) => panic!("{what}: not seen in {LIMIT:?}: {seen:#?}"),
        }
    }
    seen
}

/// Where `rel` gets `op` (as a directory) in `seen`, from `from` on.
fn position_of(seen: &[FsEvent], from: usize, rel: &str, op: Op) -> Option<usize> {
    seen.iter()
        .enumerate()
        .skip(from)
        .position(|(_, e)| {
            crate::watch::expand(e)
                .iter()
                .any(|c| c.rel == Path::new(rel) && c.op == op && c.is_dir)
        })
        .map(|p| p + from)
}

/// The watcher's side of `mv A B; mv B A; mkdir B` and of a directory exchange: the
/// name whose directory was replaced reaches the scheduler as a delete of the old one
/// followed by an update of the new one, in that order, so that a scheduler that syncs
/// a re-created directory with `--delete` converges.
#[test]
fn replaced_directory_is_a_delete_then_an_update() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    for dir in ["A/sub", "a/x", "b/y"] {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    let metrics = Arc::new(Metrics::default());
    let (watcher, event_rx) = watcher(vec![root.clone()], &metrics);

    fs::rename(root.join("A"), root.join("B")).expect("mv A B");
    fs::rename(root.join("B"), root.join("A")).expect("mv B A");
    fs::create_dir(root.join("B")).expect("mkdir B");
    fs::write(root.join("marker1"), "m").expect("marker");
    let seen = events_until(&event_rx, "marker1", |seen| {
        seen.iter()
            .any(|e| matches!(e, FsEvent::Change(c) if c.rel == Path::new("marker1")))
    });
    // B: whatever it held before (A's content, if the first move was pushed on its own)
    // must be deleted before the new, empty B is pushed: the last delete of B comes
    // after every earlier update of B and is followed by an update. (When both moves are
    // read at once, the delete of B can come first.)
    let mut delete = None;
    let mut from = 0;
    while let Some(at) = position_of(&seen, from, "B", Op::Delete) {
        delete = Some(at);
        from = at + 1;
    }
    let delete = delete.unwrap_or_else(|| panic!("no delete of B: {seen:#?}"));
    assert!(
        position_of(&seen, delete, "B", Op::Update).is_some(),
        "no update of the new B after its last delete: {seen:#?}"
    );
    assert!(
        position_of(&seen, 0, "A", Op::Update).is_some(),
        "A pushed again"
    );

    exchange(&root.join("a"), &root.join("b"));
    fs::write(root.join("marker2"), "m").expect("marker");
    let seen = events_until(&event_rx, "marker2", |seen| {
        seen.iter()
            .any(|e| matches!(e, FsEvent::Change(c) if c.rel == Path::new("marker2")))
    });
    for name in ["a", "b"] {
        let delete = position_of(&seen, 0, name, Op::Delete)
            .unwrap_or_else(|| panic!("{name}: no delete: {seen:#?}"));
        assert!(
            position_of(&seen, delete, name, Op::Update).is_some(),
            "{name}: no update after the delete: {seen:#?}"
        );
    }
    // Both subtrees stay watched under their new names.
    assert_eq!(
        watcher.watch_count(),
        crate::util::watches(8),
        "root, A, A/sub, B, a, a/y, b, b/x"
    );
    fs::write(root.join("a/y/new"), "x").expect("write");
    events_until(&event_rx, "a/y/new", |seen| {
        seen.iter()
            .any(|e| matches!(e, FsEvent::Change(c) if c.rel == Path::new("a/y/new")))
    });
    watcher.stop().expect("stop");
}

/// Stop right after changes: the events still in the inotify fd, the held move out and
/// the held writes (`<modify>`) are all handed over before the sender drops.
#[test]
fn stop_hands_over_unread_events_and_held_ones() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(root.join("d")).expect("mkdir");
    fs::create_dir(&outside).expect("mkdir");
    fs::write(root.join("gone"), "x").expect("write");
    let _ = env_logger::builder().is_test(true).try_init();
    let (event_tx, event_rx) = crossbeam_channel::bounded(16);
    let options = WatchOptions {
        toggles: InotifyToggles {
            modify: true,
            ..InotifyToggles::default()
        },
        debug: false,
        backend: crate::util::watch_backend(),
    };
    let watcher = watch::spawn(
        vec![root.clone()],
        options,
        Arc::default(),
        event_tx,
        Arc::default(),
    )
    .expect("spawn");
    for i in 0..300 {
        fs::write(root.join(format!("d/f{i}")), "x").expect("write");
    }
    let mut open = fs::File::create(root.join("open")).expect("create");
    open.write_all(b"written, not closed").expect("write");
    fs::rename(root.join("gone"), outside.join("gone")).expect("mv out");
    // The reader is at most 16 events in; the rest is in the fd when stop comes.
    let stopper = std::thread::spawn(move || watcher.stop());
    let mut seen = std::collections::BTreeSet::new();
    for event in event_rx.iter() {
        if let FsEvent::Change(c) = event {
            seen.insert((c.rel, c.op));
        }
    }
    stopper.join().expect("stopper").expect("clean stop");
    drop(open);
    let missing: Vec<usize> = (0..300)
        .filter(|i| !seen.contains(&(PathBuf::from(format!("d/f{i}")), Op::Update)))
        .collect();
    assert!(missing.is_empty(), "writes not handed over: {missing:?}");
    assert!(
        seen.contains(&(PathBuf::from("gone"), Op::Delete)),
        "move out: {seen:?}"
    );
    assert!(
        seen.contains(&(PathBuf::from("open"), Op::Update)),
        "held write: {seen:?}"
    );
}
