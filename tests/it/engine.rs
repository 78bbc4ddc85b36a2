//! Scheduler + push pool against a real rsync daemon, driven by injected events (the
//! watcher's own behaviour is tested in `watch.rs`; end-to-end runs in `sync.rs`). Tests
//! about what an injected event does run with a silent watcher
//! ([`env_with_silent_watcher`]), so the live watcher cannot deliver the change for them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sersync::config::{Filter, InotifyToggles, Remote};
use sersync::job::{Change, FsEvent, Op};

use crate::util::{Env, SYNC_LIMIT, options, wait_until};

fn change(rel: impl AsRef<Path>, op: Op, is_dir: bool) -> FsEvent {
    FsEvent::Change(Change {
        root: 0,
        rel: rel.as_ref().to_path_buf(),
        op,
        is_dir,
        mask: 0,
        seen: Instant::now(),
    })
}

/// Names that break shells and naive tools.
pub fn hostile_names() -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = [
        "with space",
        "new\nline",
        "quote'single",
        "quote\"double",
        "back`tick`",
        "$(touch pwned)",
        "-rf",
        "--delete",
        "semi;colon",
        "star*",
        "what?",
        "[bracket]",
        "back\\slash",
        ".hidden",
        "tilde~",
        "ünïcödé",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    names.push(PathBuf::from(OsStr::from_bytes(b"latin1-\xe9\xff")));
    names
}

#[test]
fn startup_full_sync_mirrors_tree_and_deletes_extras() {
    let env = Env::new();
    for name in hostile_names() {
        env.write(Path::new("dir").join(&name), name.as_os_str().as_bytes());
    }
    env.write("a/b/c/deep.txt", b"deep");
    std::os::unix::fs::symlink("a/b", env.src.join("link")).expect("symlink");
    std::fs::create_dir_all(env.mirror().join("stale/sub")).expect("stale");
    std::fs::write(env.mirror().join("stale/sub/x"), b"x").expect("stale file");
    let pipeline = env.start(&options(true));
    env.wait_converged(SYNC_LIMIT);
    assert!(!env.src.join("pwned").exists() && !env.mirror().join("pwned").exists());
    pipeline.shutdown().expect("clean shutdown");
    assert!(env.journal.is_empty());
}

/// An environment whose watcher reports none of the changes these tests make, so an
/// injected event is the only way a change can reach the mirror: every `<inotify>`
/// event is off but `delete` (without it deletions are not pushed at all), and with
/// `createFolder` off a directory made after the start is never watched, so what
/// happens inside it, deletions included, is invisible to the watcher.
fn env_with_silent_watcher() -> Env {
    let mut env = Env::new();
    env.config.inotify = InotifyToggles {
        delete: true,
        ..InotifyToggles::none()
    };
    env
}

/// Waits until `rel` is in the mirror with the source's content.
#[track_caller]
fn wait_mirrored(env: &Env, rel: &str) {
    let want = std::fs::read(env.src.join(rel)).expect("source file");
    wait_until(&format!("{rel} mirrored"), SYNC_LIMIT, || {
        std::fs::read(env.mirror().join(rel)).is_ok_and(|got| got == want)
    });
}

#[test]
fn injected_changes_are_pushed_and_deleted() {
    let env = env_with_silent_watcher();
    let pipeline = env.start(&options(false));
    // `w` is made after the start: never watched.
    env.write("w/unannounced.txt", b"only the watcher could tell");
    env.write("w/top.txt", b"1");
    env.write("w/d/e/f.txt", b"2");
    for event in [
        change("w", Op::Update, true),
        change("w/top.txt", Op::Update, false),
        change("w/d", Op::Update, true),
        change("w/d/e", Op::Update, true),
        change("w/d/e/f.txt", Op::Update, false),
    ] {
        pipeline.inject(event);
    }
    wait_mirrored(&env, "w/top.txt");
    wait_mirrored(&env, "w/d/e/f.txt");
    wait_until("idle", SYNC_LIMIT, || pipeline.is_idle());
    // Written before the injected files and never injected: had the watcher reported
    // changes, it would be there too.
    assert!(
        !env.mirror().join("w/unannounced.txt").exists(),
        "the watcher is not silent: this test would not test injection"
    );
    std::fs::remove_file(env.src.join("w/unannounced.txt")).expect("rm unannounced");
    env.wait_converged(SYNC_LIMIT);
    std::fs::remove_dir_all(env.src.join("w/d")).expect("rm d");
    std::fs::remove_file(env.src.join("w/top.txt")).expect("rm top");
    wait_until("idle after the removals", SYNC_LIMIT, || pipeline.is_idle());
    assert!(
        env.mirror().join("w/top.txt").exists() && env.mirror().join("w/d").exists(),
        "the watcher reported a deletion: this test would not test injection"
    );
    pipeline.inject(change("w/d/e/f.txt", Op::Delete, false));
    pipeline.inject(change("w/d", Op::Delete, true));
    pipeline.inject(change("w/top.txt", Op::Delete, false));
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn same_size_rewrite_within_one_second_is_pushed() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    for round in 0..5u8 {
        env.write("f", &[b'a' + round; 8]);
        pipeline.inject(change("f", Op::Update, false));
        env.wait_converged(SYNC_LIMIT);
    }
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn rescan_event_runs_a_full_sync() {
    let env = env_with_silent_watcher();
    let pipeline = env.start(&options(false));
    env.write("x/y/z", b"never announced");
    env.write("top.txt", b"never announced either");
    // The pipeline is idle and the tree is not mirrored: nothing but the rescan will
    // push it.
    wait_until("idle", SYNC_LIMIT, || pipeline.is_idle());
    assert!(!env.mirror().join("x").exists() && !env.mirror().join("top.txt").exists());
    pipeline.inject(FsEvent::Rescan { root: 0 });
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn excluded_paths_never_reach_the_mirror() {
    let mut env = Env::new();
    env.config.filter = Filter::from_patterns(&[r"(.*)\.gz", r"^cache/*"]).expect("re");
    env.write("keep.txt", b"k");
    env.write("skip.gz", b"s");
    env.write("cache/inner.txt", b"c");
    env.write("sub/a[1]*.gz", b"wild");
    let pipeline = env.start(&options(true));
    wait_until("keep.txt mirrored", SYNC_LIMIT, || {
        env.mirror().join("keep.txt").exists()
    });
    wait_until("idle", SYNC_LIMIT, || pipeline.is_idle());
    assert!(!env.mirror().join("skip.gz").exists());
    assert!(!env.mirror().join("cache").exists());
    assert!(!env.mirror().join("sub/a[1]*.gz").exists());
    assert!(env.mirror().join("sub").is_dir());
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn two_remotes_both_converge() {
    let mut env = Env::new();
    let local = env.dir.path().join("local-mirror/deep");
    env.config.roots[0].remotes.push(Remote::Local {
        path: local.clone(),
    });
    let pipeline = env.start(&options(false));
    env.write("one/two.txt", b"both");
    pipeline.inject(change("one", Op::Update, true));
    pipeline.inject(change("one/two.txt", Op::Update, false));
    env.wait_converged(SYNC_LIMIT);
    wait_until("local mirror", SYNC_LIMIT, || {
        crate::util::tree::diff(&env.src, &local).is_none()
    });
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn daemon_down_then_back_converges_and_journal_empties() {
    let mut env = Env::new();
    env.daemon.stop();
    env.config.fail_log.retry_max = Duration::from_secs(2);
    let pipeline = env.start(&options(false));
    env.write("while-down.txt", b"queued");
    pipeline.inject(change("while-down.txt", Op::Update, false));
    wait_until("journal holds the failed path", SYNC_LIMIT, || {
        !env.journal.is_empty()
    });
    let back = Instant::now();
    env.daemon.restart();
    env.wait_converged(SYNC_LIMIT);
    wait_until("journal empty", SYNC_LIMIT, || env.journal.is_empty());
    eprintln!(
        "converged {:.2}s after the daemon came back",
        back.elapsed().as_secs_f64()
    );
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn shutdown_journals_unpushed_changes() {
    let mut env = Env::new();
    env.daemon.stop();
    env.config.fail_log.retry_max = Duration::from_secs(3600);
    let pipeline = env.start(&options(false));
    env.write("a.txt", b"a");
    pipeline.inject(change("a.txt", Op::Update, false));
    wait_until("first failure journaled", SYNC_LIMIT, || {
        !env.journal.is_empty()
    });
    env.write("b.txt", b"b");
    pipeline.inject(change("b.txt", Op::Update, false));
    pipeline.shutdown().expect("clean shutdown");
    let rels: Vec<PathBuf> = sersync::coalesce::Journal::pending(env.journal.as_ref())
        .into_iter()
        .map(|(_, w)| w.scope().storage_rel().to_path_buf())
        .collect();
    assert!(
        rels.contains(&PathBuf::from("a.txt")) && rels.contains(&PathBuf::from("b.txt")),
        "{rels:?}"
    );
    // A restart replays the journal.
    env.daemon.restart();
    let pipeline = env.start(&options(false));
    env.wait_converged(SYNC_LIMIT);
    wait_until("journal empty after replay", SYNC_LIMIT, || {
        env.journal.is_empty()
    });
    pipeline.shutdown().expect("clean shutdown");
}
