//! Shared ssh connections (`push::share`) against a real `sshd` on 127.0.0.1: every rsync
//! rides one connection (sshd's `Accepted publickey` lines count connections), a killed
//! master comes back while pushes connect on their own, shutdown and reload reap it and
//! remove its directory, sharing off connects once per run, and an operator's `--rsh` with
//! a quoted key path works. Each ends byte-exact with an empty journal.
//!
//! A master is found in `/proc` by its argument vector: `ControlMaster=yes` and this
//! test's sshd port.

use std::path::{Path, PathBuf};

use sersync::pipeline::Pipeline;

use crate::ssh::SshEnv;
use crate::util::{SYNC_LIMIT, tree, wait_until};
use crate::warm::{group_members, kill, processes};

/// The mirror equals the source byte-exact, nothing is queued or running, and the
/// journal is empty.
#[track_caller]
fn settle(env: &SshEnv, pipeline: &Pipeline) {
    wait_until("mirrored, idle, empty journal", SYNC_LIMIT, || {
        tree::diff(&env.src, &env.mirror).is_none() && pipeline.is_idle() && env.journal.is_empty()
    });
    assert_eq!(tree::diff(&env.src, &env.mirror), None);
}

/// Pids of the masters connecting to this test's sshd.
fn masters(env: &SshEnv) -> Vec<u32> {
    let port = env.sshd.port.to_string();
    processes()
        .into_iter()
        .filter(|(_, dir)| {
            let args = cmdline(dir);
            args.iter().any(|a| a == "ControlMaster=yes")
                && args.windows(2).any(|w| w[0] == "-p" && w[1] == port)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits until the one remote says its shared connection is up and one master runs;
/// returns the master's pid.
#[track_caller]
fn wait_up(env: &SshEnv, pipeline: &Pipeline) -> u32 {
    wait_until("the shared connection up", SYNC_LIMIT, || {
        shared_up(pipeline) && masters(env).len() == 1
    });
    masters(env)[0]
}
/// A process's arguments.
fn cmdline(proc_dir: &Path) -> Vec<String> {
    let bytes = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The directory of a master's socket (`-o ControlPath=DIR/NAME`).
fn socket_dir(master: u32) -> PathBuf {
    let args = cmdline(Path::new(&format!("/proc/{master}")));
    let path = args
        .iter()
        .find_map(|a| a.strip_prefix("ControlPath="))
        .expect("the master's ControlPath");
    Path::new(path).parent().expect("socket dir").to_path_buf()
}

fn shared_up(pipeline: &Pipeline) -> bool {
    let targets = pipeline.metrics().snapshot_targets();
    !targets.is_empty() && targets.values().all(|t| t.ssh_shared)
}

/// The master and everything of its group are gone (reaped), and so is its directory.
#[track_caller]
fn assert_reaped(master: u32, dir: &Path) {
    assert!(
        !Path::new(&format!("/proc/{master}")).exists(),
        "ssh master {master} is still there (or not reaped)"
    );
    assert_eq!(
        group_members(master),
        Vec::<u32>::new(),
        "group of {master}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn pushes_moves_and_deletes_ride_one_connection() {
    let Some(env) = SshEnv::new() else { return };
    env.write("tree/a.txt", b"a");
    env.write("tree/sub/b.txt", b"b");
    let pipeline = env.start(true);
    settle(&env, &pipeline);
    let master = wait_up(&env, &pipeline);
    let socket = socket_dir(master);
    assert!(
        socket.as_os_str().len() < 60,
        "short socket path: {}",
        socket.display()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket)
            .expect("socket dir")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "private socket directory");
    let logins = env.sshd.logins();
    for i in 0..5 {
        env.write(format!("f{i}.txt"), format!("push {i}").as_bytes());
        settle(&env, &pipeline);
    }
    // A directory move (hard-linking run, then the old name's delete), a file move and a
    // delete: each of them is at least one more rsync run.
    std::fs::rename(env.src.join("tree"), env.src.join("moved")).expect("rename dir");
    settle(&env, &pipeline);
    std::fs::rename(env.src.join("f0.txt"), env.src.join("moved/f0.txt")).expect("rename");
    settle(&env, &pipeline);
    std::fs::remove_file(env.src.join("f1.txt")).expect("delete");
    settle(&env, &pipeline);
    assert_eq!(
        env.sshd.logins(),
        logins,
        "every run after the master was up rode its connection\n{}",
        env.sshd.log()
    );
    assert_eq!(masters(&env), vec![master], "the same master throughout");
    pipeline.shutdown().expect("clean shutdown");
    assert_reaped(master, &socket);
}

#[test]
fn a_killed_master_comes_back_and_pushes_connect_on_their_own_meanwhile() {
    let Some(env) = SshEnv::new() else { return };
    let pipeline = env.start(false);
    env.write("before.txt", b"before");
    settle(&env, &pipeline);
    let first = wait_up(&env, &pipeline);
    let socket = socket_dir(first);
    // SIGKILL: its socket stays behind, dead; runs must connect on their own, and the
    // next master must not find the name taken.
    kill(first);
    wait_until("the master reaped", SYNC_LIMIT, || {
        !Path::new(&format!("/proc/{first}")).exists()
    });
    env.write("while-down.txt", b"pushed without the master");
    settle(&env, &pipeline);
    let second = wait_up(&env, &pipeline);
    assert_ne!(first, second, "a new master");
    let logins = env.sshd.logins();
    env.write("after.txt", b"on the new master");
    settle(&env, &pipeline);
    assert_eq!(env.sshd.logins(), logins, "rode the new master");
    pipeline.shutdown().expect("clean shutdown");
    assert_reaped(second, &socket);
}

#[test]
fn reload_and_shutdown_reap_the_master_and_remove_its_directory() {
    let Some(env) = SshEnv::new() else { return };
    // What SIGHUP does (`daemon::service`): the old pipeline stops, a new one starts on
    // the same journal.
    let old = env.start(false);
    env.write("old.txt", b"old pipeline");
    settle(&env, &old);
    let first = wait_up(&env, &old);
    let first_dir = socket_dir(first);
    old.shutdown().expect("clean shutdown");
    assert_reaped(first, &first_dir);
    assert_eq!(masters(&env), Vec::<u32>::new());

    let new = env.start(false);
    let second = wait_up(&env, &new);
    let second_dir = socket_dir(second);
    env.write("new.txt", b"new pipeline");
    settle(&env, &new);
    new.shutdown().expect("clean shutdown");
    assert_reaped(second, &second_dir);
    assert_eq!(masters(&env), Vec::<u32>::new());
}

#[test]
fn sharing_off_connects_once_per_run() {
    let Some(mut env) = SshEnv::new() else {
        return;
    };
    env.config.rsync.share_ssh = false;
    env.config.rsync.warm.start = false;
    let pipeline = env.start(false);
    env.write("first.txt", b"first");
    settle(&env, &pipeline);
    let logins = env.sshd.logins();
    for i in 0..3 {
        env.write(format!("f{i}.txt"), b"x");
        settle(&env, &pipeline);
    }
    assert!(
        env.sshd.logins() >= logins + 3,
        "one connection per run: {} then {}",
        logins,
        env.sshd.logins()
    );
    assert_eq!(masters(&env), Vec::<u32>::new(), "no master");
    assert!(
        pipeline
            .metrics()
            .snapshot_targets()
            .values()
            .all(|t| !t.ssh_shared)
    );
    pipeline.shutdown().expect("clean shutdown");
}

#[test]
fn an_operator_rsh_with_a_quoted_key_path_is_shared() {
    let Some(mut env) = SshEnv::new() else {
        return;
    };
    // The key in a directory whose name has a space: rsync's own split of -e must keep
    // it one word, in the runs' -e and in the master's arguments alike.
    let keys = env.src.parent().expect("temp dir").join("my keys");
    std::fs::create_dir_all(&keys).expect("key dir");
    let key = keys.join("user_key");
    std::fs::copy(env.sshd.user_key(), &key).expect("copy key");
    let rsh = env.sshd.rsh_with_key(&format!("'{}'", key.display()));
    env.config.rsync.common_params = vec!["-artz".into(), format!("--rsh={rsh}")];
    env.write("a b/c.txt", b"quoted");
    let pipeline = env.start(true);
    settle(&env, &pipeline);
    let master = wait_up(&env, &pipeline);
    let args = cmdline(Path::new(&format!("/proc/{master}")));
    assert!(
        args.iter().any(|a| *a == key.display().to_string()),
        "{args:?}"
    );
    let logins = env.sshd.logins();
    env.write("a b/d.txt", b"more");
    settle(&env, &pipeline);
    assert_eq!(env.sshd.logins(), logins, "rode the master");
    let socket = socket_dir(master);
    pipeline.shutdown().expect("clean shutdown");
    assert_reaped(master, &socket);
}

/// The binary with an XML config over ssh: SIGHUP replaces its master (the old one reaped,
/// its directory removed), and a SIGKILLed sersync leaves no master holding a connection
/// (it gets SIGTERM when its thread ends: `PR_SET_PDEATHSIG`).
#[test]
fn the_binary_replaces_its_master_on_reload_and_leaves_none_when_killed() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Some(env) = SshEnv::new() else { return };
    let work = env.src.parent().expect("temp dir").to_path_buf();
    let xml = work.join("sersync.xml");
    let watch_element = crate::util::watch_element();
    std::fs::write(
        &xml,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<head version="2.5">
{watch_element}<inotify>
    <delete start="true"/>
    <createFolder start="true"/>
    <closeWrite start="true"/>
    <moveFrom start="true"/>
    <moveTo start="true"/>
</inotify>
<sersync>
    <localpath watch="{src}">
        <remote ip="127.0.0.1" name="{mirror}"/>
    </localpath>
    <rsync>
        <commonParams params="-artz -e '{rsh}'"/>
        <ssh start="true"/>
    </rsync>
    <failLog path="{work}/faillog" timeToExecute="1"/>
</sersync>
</head>
"#,
            src = env.src.display(),
            mirror = env.mirror.display(),
            rsh = env.sshd.rsh(),
            work = work.display(),
        ),
    )
    .expect("config");
    let log = std::fs::File::create(work.join("sersync.log")).expect("log");
    let mut sersync = Command::new(env!("CARGO_BIN_EXE_sersync"))
        .args(["-n", "2", "-o"])
        .arg(&xml)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn sersync");
    let signal = |name: &str, pid: u32| {
        let sent = Command::new("kill")
            .arg(name)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {name} {pid}");
    };
    let one_master = |what: &str, not: Option<u32>| {
        let mut found = 0;
        wait_until(what, SYNC_LIMIT, || {
            let now = masters(&env);
            found = now.first().copied().unwrap_or(0);
            now.len() == 1 && Some(found) != not
        });
        found
    };
    let converged = |what: &str| {
        let deadline = std::time::Instant::now() + SYNC_LIMIT;
        while tree::diff(&env.src, &env.mirror).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not mirrored within {SYNC_LIMIT:?}; sersync's log:\n{}",
                std::fs::read_to_string(work.join("sersync.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // Written before the watches exist, a.txt would be seen by no one (no -r).
    wait_until("sersync running", SYNC_LIMIT, || {
        std::fs::read_to_string(work.join("sersync.log"))
            .unwrap_or_default()
            .contains(" running (pid ")
    });
    let first = one_master("the first master", None);
    let first_dir = socket_dir(first);
    env.write("a.txt", b"before the reload");
    converged("a.txt mirrored");
    signal("-HUP", sersync.id());
    let second = one_master("the master of the reloaded pipeline", Some(first));
    assert_reaped(first, &first_dir);
    env.write("b.txt", b"after the reload");
    converged("b.txt mirrored");
    let second_dir = socket_dir(second);
    signal("-KILL", sersync.id());
    let _ = sersync.wait();
    wait_until("no master left", SYNC_LIMIT, || masters(&env).is_empty());
    // Killed, sersync could not remove its directory (ssh removed its socket).
    let _ = std::fs::remove_dir_all(&second_dir);
}
