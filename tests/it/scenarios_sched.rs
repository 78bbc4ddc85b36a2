//! Operator patterns that reuse a name (issue 10 items 1 and 6): a directory deleted and
//! re-created, a parent that stopped being a directory, dir ⇄ file ⇄ symlink flips. Real
//! inotify, a real rsync daemon with auth and a local-directory remote on the same root,
//! byte-exact comparison of content, type, link target and mode once the engine is idle,
//! and an empty journal at the end.
//!
//! The configs use `-artz`, without the stock `-u`: `--update` makes rsync keep a
//! receiver-side file that is newer, which can mask (or cause) staleness unrelated to
//! what these tests check.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sersync::coalesce::Journal;
use sersync::config::Remote;
use sersync::faillog::FailLog;
use sersync::pipeline::Pipeline;

use crate::util::{Env, SYNC_LIMIT, options, tree, wait_until};

/// How long a scenario may take to converge: generous, the machine is shared (a
/// converged scene is left as soon as it is seen, so this only bounds a failure).
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);

/// A root mirrored to a daemon (with auth) and to a local directory.
struct Scene {
    env: Env,
    local: PathBuf,
    journal: Arc<FailLog>,
    pipeline: Option<Pipeline>,
    /// Sentinels written so far (each has a fresh name).
    sentinels: std::cell::Cell<u32>,
}

impl Scene {
    fn new() -> Scene {
        let mut env = Env::new();
        env.config.rsync.common_params = vec!["-artz".into()];
        env.config.fail_log.retry_max = Duration::from_secs(2);
        // The scenes stop the daemon to hold changes in the queue; a warm client's
        // connection, forked before the stop, would still take a batch (as a real daemon's
        // open connections outlive a listener restart). Warm clients have tests of their own.
        env.config.rsync.warm.start = false;
        let local = env.dir.path().join("local");
        env.config.roots[0].remotes.push(Remote::Local {
            path: local.clone(),
        });
        let journal = Arc::new(FailLog::open(&env.dir.path().join("faillog")).expect("journal"));
        Scene {
            env,
            local,
            journal,
            pipeline: None,
            sentinels: std::cell::Cell::new(0),
        }
    }

    fn start(&mut self) {
        let journal: Arc<dyn Journal> = self.journal.clone();
        let pipeline =
            Pipeline::start(&self.env.config, &options(false), journal).expect("pipeline");
        self.pipeline = Some(pipeline);
    }

    fn src(&self, rel: &str) -> PathBuf {
        self.env.src.join(rel)
    }

    fn write(&self, rel: &str, content: &[u8]) {
        self.env.write(rel, content);
    }

    /// Writes a sentinel last (so every earlier event has been read once it arrives), then
    /// waits until the engine is idle, both mirrors equal the source byte-exact and the
    /// journal is empty.
    #[track_caller]
    fn converge(&self, what: &str) {
        self.converge_except(what, &[]);
    }

    /// As [`Scene::converge`], where exactly `excluded` (excluded by `<filter>`) are
    /// missing from the mirrors.
    #[track_caller]
    fn converge_except(&self, what: &str, excluded: &[&str]) {
        let excluded: Vec<PathBuf> = excluded.iter().map(PathBuf::from).collect();
        let round = self.sentinels.get() + 1;
        self.sentinels.set(round);
        let sentinel = format!("sentinel-{round}");
        self.write(&sentinel, what.as_bytes());
        let mirrors = [self.env.mirror().to_path_buf(), self.local.clone()];
        wait_until(
            &format!("{what}: sentinel on both mirrors"),
            CONVERGE_LIMIT,
            || mirrors.iter().all(|m| m.join(&sentinel).exists()),
        );
        std::fs::remove_file(self.src(&sentinel)).expect("rm sentinel");
        let deadline = Instant::now() + CONVERGE_LIMIT;
        loop {
            let idle = self.pipeline.as_ref().is_some_and(Pipeline::is_idle);
            let diffs: Vec<String> = mirrors
                .iter()
                .filter_map(|m| {
                    let found = tree::differences(&self.env.src, m);
                    (found != excluded).then(|| format!("{}: {found:?}", m.display()))
                })
                .collect();
            if idle && diffs.is_empty() && self.journal.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not converged within {CONVERGE_LIMIT:?}: idle {idle}, journal {:?}, {diffs:?}",
                self.journal.pending()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until `rel` failed to reach the (stopped) daemon and is in the journal.
    #[track_caller]
    fn wait_journaled(&self, rel: &str) {
        wait_until(&format!("{rel} journaled"), CONVERGE_LIMIT, || {
            self.journal
                .pending()
                .iter()
                .any(|e| e.rel == Path::new(rel))
        });
    }

    fn stop(mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.shutdown().expect("clean shutdown");
        }
        assert!(
            self.journal.is_empty(),
            "journal after a clean stop: {:?}",
            self.journal.pending()
        );
    }
}

fn rm_rf(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).expect("rm -rf"),
        Ok(_) => std::fs::remove_file(path).expect("rm"),
        Err(_) => {}
    }
}

#[test]
fn log_rotation_leaves_no_old_content_on_the_mirrors() {
    let mut scene = Scene::new();
    scene.start();
    scene.write("logs/x.log", b"x");
    scene.write("logs/y.log", b"y");
    scene.write("logs/sub/z.log", b"z");
    scene.converge("logs written");
    for round in 0..3 {
        let old = format!("logs.{round}");
        std::fs::rename(scene.src("logs"), scene.src(&old)).expect("mv logs");
        std::fs::create_dir(scene.src("logs")).expect("mkdir logs");
        scene.write("logs/new.log", format!("n{round}").as_bytes());
        scene.converge(&format!("rotation {round}"));
    }
    scene.stop();
}

#[test]
fn a_directory_moved_out_and_made_again_is_mirrored_exactly() {
    let mut scene = Scene::new();
    let outside = scene.env.dir.path().join("out");
    std::fs::create_dir(&outside).expect("out");
    scene.start();
    scene.write("d/a", b"a");
    scene.write("d/deep/b", b"b");
    scene.converge("d written");
    std::fs::rename(scene.src("d"), outside.join("d")).expect("mv d out/");
    std::fs::create_dir(scene.src("d")).expect("mkdir d");
    scene.write("d/fresh", b"fresh");
    scene.converge("d moved out and made again");
    // The same name again, emptied this time, while the previous subtree sync may run.
    std::fs::rename(scene.src("d"), outside.join("d2")).expect("mv d out/ again");
    std::fs::create_dir(scene.src("d")).expect("mkdir d again");
    scene.converge("d made again, empty");
    scene.stop();
}

#[test]
fn a_parent_that_became_a_file_is_gone_not_failed_and_drags_nothing() {
    let mut scene = Scene::new();
    scene.start();
    scene.write("keep/a", b"a");
    scene.converge("start");
    // The daemon is down while p/child and its companions are queued, so that they are
    // still to push when p stops being a directory.
    scene.env.daemon.stop();
    scene.write("p/child", b"child");
    for i in 0..20 {
        scene.write(&format!("companion{i}"), b"c");
    }
    scene.wait_journaled("p/child");
    rm_rf(&scene.src("p"));
    scene.write("p", b"now a file");
    scene.env.daemon.restart();
    scene.converge("rm -rf p; echo > p with p/child queued");
    scene.stop();
}

#[test]
fn a_directory_replaced_by_a_symlink_loop_converges() {
    let mut scene = Scene::new();
    scene.start();
    scene.write("d/child", b"child");
    scene.converge("start");
    scene.env.daemon.stop();
    scene.write("d/child", b"changed while the daemon is down");
    scene.wait_journaled("d/child");
    rm_rf(&scene.src("d"));
    symlink("d", scene.src("d")).expect("ln -s d d");
    scene.env.daemon.restart();
    scene.converge("d replaced by a symlink loop");
    scene.stop();
}

#[test]
fn dir_file_symlink_dir_flips_converge() {
    let mut scene = Scene::new();
    scene.start();
    for round in 0..2 {
        scene.write("f/inner/a", b"dir content");
        scene.write("f/b", b"b");
        scene.converge(&format!("{round}: f is a directory"));
        rm_rf(&scene.src("f"));
        scene.write("f", b"f is a file");
        scene.converge(&format!("{round}: f is a file"));
        rm_rf(&scene.src("f"));
        symlink("target/elsewhere", scene.src("f")).expect("ln -s");
        scene.converge(&format!("{round}: f is a symlink"));
        rm_rf(&scene.src("f"));
        scene.write("f/only", b"a directory again");
        scene.converge(&format!("{round}: f is a directory again"));
        rm_rf(&scene.src("f"));
        scene.converge(&format!("{round}: f is gone"));
    }
    scene.stop();
}

#[test]
fn git_checkout_like_swaps_converge() {
    let mut scene = Scene::new();
    scene.start();
    // Branch A: `d` is a directory, `e` a file.
    scene.write("d/x.rs", b"x");
    scene.write("d/y/z.rs", b"z");
    scene.write("e", b"e file");
    scene.converge("branch A");
    for round in 0..3 {
        // Branch B: `d` a file, `e` a directory; swapped back in the next round.
        rm_rf(&scene.src("d"));
        rm_rf(&scene.src("e"));
        scene.write("d", format!("d file {round}").as_bytes());
        scene.write("e/m.rs", b"m");
        scene.write("e/n/o.rs", b"o");
        scene.converge(&format!("{round}: branch B"));
        rm_rf(&scene.src("d"));
        rm_rf(&scene.src("e"));
        scene.write("d/x.rs", format!("x{round}").as_bytes());
        scene.write("e", b"e file");
        scene.converge(&format!("{round}: branch A again"));
    }
    scene.stop();
}

#[test]
fn a_subtree_sync_never_carries_what_filter_excludes() {
    let mut scene = Scene::new();
    scene.env.config.filter.excludes =
        vec![sersync::filter::Rule::new(r"(.*)\.gz").expect("regex")];
    scene.start();
    scene.write("logs/x.log", b"x");
    scene.converge_except("logs written", &[]);
    // The new directory is made outside and moved in, so that the excluded file is there
    // when the subtree sync runs.
    let staged = scene.env.dir.path().join("staged");
    std::fs::create_dir(&staged).expect("staged");
    std::fs::write(staged.join("new.log"), b"n").expect("new.log");
    std::fs::write(staged.join("secret.gz"), b"excluded").expect("secret.gz");
    std::fs::rename(scene.src("logs"), scene.src("logs.old")).expect("mv logs");
    std::fs::rename(&staged, scene.src("logs")).expect("mv staged logs");
    scene.converge_except("rotation with an excluded file", &["logs/secret.gz"]);
    scene.stop();
}

/// One batch through the real push worker and rsync: a path below what became a file,
/// one below a symlink loop, and companions that are fine. The worker reports the bad
/// ones gone and the companions done: one bad path fails nobody else.
#[test]
fn the_push_worker_reports_per_path_fates_after_a_partial_transfer() {
    use sersync::job::{Disposition, Entry, JobKind, Op, PathFate, PushJob, TargetId};
    use sersync::push::{PushContext, run_job};

    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(&src).expect("src");
    std::fs::write(src.join("p"), b"p is a file now").expect("p");
    symlink("loop", src.join("loop")).expect("loop");
    std::fs::write(src.join("ok1"), b"1").expect("ok1");
    std::fs::write(src.join("ok2"), b"2").expect("ok2");
    let config = crate::util::base_config(
        &src,
        vec![Remote::Local {
            path: mirror.clone(),
        }],
    );
    let context = PushContext {
        roots: vec![(src.clone(), config.roots[0].remotes.clone())],
        rsync: config.rsync.clone(),
        filter: Arc::new(sersync::filter::Filter::new(Vec::new())),
        delete: true,
        batch_limit: Some(SYNC_LIMIT),
        cancel: sersync::child::Cancel::default(),
        seconds_only: std::sync::Mutex::default(),
        plain_moves: std::sync::Mutex::default(),
        temp_cleanups: std::sync::Mutex::default(),
        warm: None,
        max_batch_bytes: 1 << 30,
    };
    let entry = |rel: &str| Entry {
        rel: PathBuf::from(rel).into(),
        op: Op::Update,
        is_dir: false,
    };
    let entries = vec![
        entry("p/child"),
        entry("ok1"),
        entry("loop/x"),
        entry("ok2"),
    ];
    let job = PushJob {
        id: 1,
        target: TargetId { root: 0, remote: 0 },
        kind: JobKind::Batch { entries },
    };
    let outcome = run_job(&context, job);
    let Disposition::Partial { failure, fates } = &outcome.disposition else {
        panic!("a partial transfer expected: {:?}", outcome.disposition)
    };
    assert_eq!(failure.code, Some(23), "{}", failure.reason);
    assert_eq!(
        fates,
        &[
            PathFate::Gone,
            PathFate::Done,
            PathFate::Gone,
            PathFate::Done
        ]
    );
    for ok in ["ok1", "ok2"] {
        assert!(mirror.join(ok).is_file(), "{ok} arrived");
    }
    // The journal's command line is the batch as it ran (the worker hands its argument
    // vector to rsync and writes it again only on failure): `loop/x` went as `loop`.
    let words = shell_words::split(&outcome.command).expect("a shell line");
    for sent in ["./p/child", "./ok1", "./loop", "./ok2"] {
        assert!(
            words.iter().any(|w| w == sent),
            "{sent}: {}",
            outcome.command
        );
    }
    assert!(
        !words.iter().any(|w| w == "./loop/x"),
        "{}",
        outcome.command
    );
    // A subtree sync of a directory whose parent became a file is moot, not retried.
    let job = PushJob {
        id: 2,
        target: TargetId { root: 0, remote: 0 },
        kind: JobKind::Subtree {
            rel: PathBuf::from("p/dir"),
        },
    };
    assert_eq!(run_job(&context, job).disposition, Disposition::Done);
}

#[test]
fn a_directory_that_became_a_file_and_a_directory_again_while_the_daemon_was_down() {
    let mut scene = Scene::new();
    scene.start();
    scene.write("d/old/a", b"old");
    scene.write("d/b", b"old");
    scene.converge("start");
    scene.env.daemon.stop();
    rm_rf(&scene.src("d"));
    scene.write("d", b"briefly a file");
    // Wait until the watcher has seen the file (the local remote has it), so that the
    // daemon's queue holds dir delete, file, directory in that order.
    wait_until("d is a file on the local mirror", SYNC_LIMIT, || {
        std::fs::symlink_metadata(scene.local.join("d")).is_ok_and(|m| m.is_file())
    });
    rm_rf(&scene.src("d"));
    scene.write("d/new", b"new");
    scene.env.daemon.restart();
    scene.converge("d: dir, file, dir again before the daemon got any of it");
    scene.stop();
}
