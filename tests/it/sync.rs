//! End to end: real inotify on a temp dir, the real engine, a real rsync daemon.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sersync::config::{Filter, Remote};

use crate::engine::hostile_names;
use crate::util::{Env, SYNC_LIMIT, options, tree, wait_until};

#[test]
fn create_modify_delete_files_and_directories() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    env.write("a.txt", b"one");
    env.write("dir/sub/b.txt", b"two");
    env.wait_converged(SYNC_LIMIT);
    env.write("a.txt", b"one, longer now");
    std::fs::write(env.src.join("dir/sub/b.txt"), b"TWO").expect("rewrite");
    env.wait_converged(SYNC_LIMIT);
    std::fs::remove_file(env.src.join("a.txt")).expect("rm");
    std::fs::remove_dir_all(env.src.join("dir")).expect("rm -r");
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn renames_inside_the_tree() {
    let env = Env::new();
    env.write("old/deep/f.txt", b"content");
    env.write("file.txt", b"file");
    let pipeline = env.start(&options(true));
    env.wait_converged(SYNC_LIMIT);
    std::fs::rename(env.src.join("file.txt"), env.src.join("renamed.txt")).expect("mv file");
    std::fs::rename(env.src.join("old"), env.src.join("new")).expect("mv dir");
    env.wait_converged(SYNC_LIMIT);
    env.write("new/deep/later.txt", b"written after the rename");
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn moves_into_and_out_of_the_tree() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("incoming/x")).expect("outside");
    std::fs::write(outside.join("incoming/x/y.txt"), b"moved in").expect("write");
    env.write("leaving/z.txt", b"moving out");
    let pipeline = env.start(&options(true));
    env.wait_converged(SYNC_LIMIT);
    std::fs::rename(outside.join("incoming"), env.src.join("incoming")).expect("mv in");
    std::fs::rename(env.src.join("leaving"), outside.join("leaving")).expect("mv out");
    env.wait_converged(SYNC_LIMIT);
    // The moved-in tree is watched; the moved-out one is not.
    env.write("incoming/x/new.txt", b"new");
    std::fs::write(outside.join("leaving/ignored.txt"), b"x").expect("write outside");
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn mkdir_p_race_never_loses_a_file() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    for i in 0..50 {
        let dir = env.src.join(format!("r{i}/a/b/c/d"));
        std::fs::create_dir_all(&dir).expect("mkdir -p");
        std::fs::write(dir.join("f"), format!("{i}")).expect("write");
    }
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn hostile_names_are_mirrored_byte_exact() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    for name in hostile_names() {
        env.write(&name, name.as_os_str().as_bytes());
        std::fs::create_dir_all(env.src.join("d").join(&name)).expect("dir");
        env.write(Path::new("d").join(&name).join(&name), b"inner");
    }
    // A path of about 4 KiB (the Linux PATH_MAX), made of 200-byte components.
    let mut long = PathBuf::new();
    for i in 0..19 {
        long.push(format!("{i:02}{}", "x".repeat(198)));
    }
    env.write(long.join("end"), b"long path");
    env.wait_converged(SYNC_LIMIT);
    assert!(!env.src.join("pwned").exists() && !env.mirror().join("pwned").exists());
    std::fs::remove_dir_all(env.src.join("d")).expect("rm");
    for name in hostile_names() {
        std::fs::remove_file(env.src.join(&name)).expect("rm hostile");
    }
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn excluded_files_get_no_push_even_inside_new_directories() {
    let mut env = Env::new();
    env.config.filter = Filter::from_patterns(&[r"(.*)\.tmp", r"^logs/*"]).expect("re");
    let pipeline = env.start(&options(false));
    env.write("new/keep.txt", b"k");
    env.write("new/skip.tmp", b"s");
    env.write("logs/app.log", b"l");
    // Written after the excluded files, in the same directories: once they are mirrored
    // the watcher has read every earlier event, so the idle check below covers them
    // (`is_idle` alone cannot see events still unread in the kernel queue).
    env.write("new/sentinel.txt", b"after new/skip.tmp");
    env.write("sentinel.txt", b"after logs/app.log");
    for sentinel in ["new/keep.txt", "new/sentinel.txt", "sentinel.txt"] {
        wait_until(&format!("{sentinel} mirrored"), SYNC_LIMIT, || {
            env.mirror().join(sentinel).exists()
        });
    }
    wait_until("idle", SYNC_LIMIT, || pipeline.is_idle());
    assert!(!env.mirror().join("new/skip.tmp").exists());
    assert!(!env.mirror().join("logs").exists());
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn two_remotes_daemon_and_local_directory() {
    let mut env = Env::new();
    let local = env.dir.path().join("second");
    env.config.roots[0].remotes.push(Remote::Local {
        path: local.clone(),
    });
    let pipeline = env.start(&options(false));
    env.write("x/y.txt", b"to both");
    env.write("z.txt", b"z");
    env.wait_converged(SYNC_LIMIT);
    wait_until("local mirror equal", SYNC_LIMIT, || {
        tree::diff(&env.src, &local).is_none()
    });
    std::fs::remove_file(env.src.join("z.txt")).expect("rm");
    env.wait_converged(SYNC_LIMIT);
    wait_until("local mirror equal after delete", SYNC_LIMIT, || {
        tree::diff(&env.src, &local).is_none()
    });
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn full_sync_without_delete_keeps_remote_extras() {
    let mut env = Env::new();
    env.config.inotify.delete = false;
    env.write("a.txt", b"a");
    std::fs::write(env.mirror().join("extra.txt"), b"only remote").expect("extra");
    let pipeline = env.start(&options(true));
    wait_until("a.txt mirrored", SYNC_LIMIT, || {
        env.mirror().join("a.txt").exists()
    });
    wait_until("idle", SYNC_LIMIT, || pipeline.is_idle());
    assert!(
        env.mirror().join("extra.txt").exists(),
        "no --delete without <delete start=true>"
    );
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn symlinks_and_dotfiles_are_mirrored() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    env.write(".htaccess", b"deny");
    env.write("backup~", b"old");
    std::os::unix::fs::symlink("target/that/does/not/exist", env.src.join("dangling"))
        .expect("symlink");
    std::os::unix::fs::symlink(".htaccess", env.src.join("link")).expect("symlink");
    env.wait_converged(SYNC_LIMIT);
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn burst_of_ten_thousand_files_converges() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    let started = Instant::now();
    for d in 0..100 {
        let dir = env.src.join(format!("d{d:03}"));
        std::fs::create_dir(&dir).expect("mkdir");
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f:03}")), [b'x'; 1024]).expect("write");
        }
    }
    env.wait_converged(Duration::from_secs(120));
    eprintln!(
        "10,000-file burst converged in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn single_file_latency() {
    let env = Env::new();
    let pipeline = env.start(&options(false));
    let mut samples = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        env.write(format!("probe{i}"), &[b'p'; 4096]);
        wait_until("probe mirrored", SYNC_LIMIT, || {
            std::fs::metadata(env.mirror().join(format!("probe{i}"))).is_ok_and(|m| m.len() == 4096)
        });
        samples.push(started.elapsed());
    }
    samples.sort();
    eprintln!(
        "single-file latency p50 {:?} p90 {:?}",
        samples[10], samples[18]
    );
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn seeded_churn_leaves_no_difference() {
    let seed = std::env::var("SERSYNC_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            if std::env::var_os("SERSYNC_LONG").is_some() {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            } else {
                // CI's fixed seed: the one that found a file push racing a push below
                // its name once it became a directory (leftover rsync temp files).
                1_796_128_829_722_638_771
            }
        });
    let seconds = std::env::var("SERSYNC_CHURN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("churn seed {seed} ({seconds}s); repeat with SERSYNC_CHURN_SEED={seed}");
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let pipeline = env.start(&options(false));
    crate::churn::run(&env.src, &outside, seed, Duration::from_secs(seconds));
    let mut last = String::new();
    // A deadline, not a wait: on a loaded CI machine the last batches of 20 s of churn
    // can take more than a minute.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        match tree::diff(&env.src, env.mirror()) {
            None if pipeline.is_idle() => break,
            None => {}
            Some(d) => last = d,
        }
        assert!(
            Instant::now() < deadline,
            "churn seed {seed}: mirror differs: {last} (pipeline idle: {})",
            pipeline.is_idle()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pipeline.shutdown().expect("clean shutdown");
    let _ = OsStr::new("");
}
