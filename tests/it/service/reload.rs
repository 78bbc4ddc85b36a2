//! SIGHUP: a valid file replaces the running configuration, an invalid one is rejected
//! and the old one keeps running.

use std::fs;

use super::{LIMIT, Setup, Xml, is_alive, signal};
use crate::util::{tree, wait_until};

#[test]
fn reload_adds_a_remote_and_a_bad_file_keeps_the_old_configuration() {
    let setup = Setup::new();
    let (first, mirror1) = setup.local_remote("mirror1");
    let (second, mirror2) = setup.local_remote("mirror2");
    for i in 0..10 {
        setup.write(&format!("dir/f{i}"), &format!("{i}"));
    }
    // A crontab full sync every 0.6 s keeps pushing whatever the watcher does.
    let mut xml = Xml {
        remotes: vec![first],
        status: true,
        crontab: Some("0.01"),
        ..Xml::default()
    };
    setup.write_config(&xml);
    let mut running = setup.start(&["-r"]);
    let pid = running.pid();
    wait_until("first mirror", LIMIT, || {
        tree::diff(&setup.src, &mirror1).is_none()
    });
    assert!(!mirror2.exists());

    xml.remotes.push(second);
    setup.write_config(&xml);
    signal(pid, "HUP");
    setup.wait_log(
        "reloaded: 1 root(s) (was 1), 2 remote(s) (was 1), 1 added, 0 removed",
        1,
    );
    wait_until("the added remote gets a full sync", LIMIT, || {
        tree::diff(&setup.src, &mirror2).is_none()
    });
    let status = setup.status();
    assert_eq!(status["reloads"], 1);
    assert_eq!(
        status["roots"][0]["remotes"].as_array().map(Vec::len),
        Some(2)
    );

    let good = fs::read_to_string(&setup.config).expect("config");
    fs::write(
        &setup.config,
        good.replace("<remote path=", "<remote paht="),
    )
    .expect("bad config");
    signal(pid, "HUP");
    setup.wait_log(
        "reload rejected, the previous configuration keeps running",
        1,
    );
    let log = setup.log();
    let problems = log
        .lines()
        .filter(|l| l.contains(" ERROR ") && l.contains("<remote> without ip"))
        .count();
    assert_eq!(problems, 2, "every problem is logged at error: {log}");
    assert!(is_alive(pid));
    let status = setup.status();
    assert_eq!(
        (status["reloads"].clone(), status["reload_failures"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(
        status["roots"][0]["remotes"].as_array().map(Vec::len),
        Some(2)
    );

    // The old configuration still mirrors to both remotes.
    setup.write("after/bad-reload.txt", "still served");
    wait_until("both mirrors get the new file", LIMIT, || {
        tree::diff(&setup.src, &mirror1).is_none() && tree::diff(&setup.src, &mirror2).is_none()
    });
    signal(pid, "TERM");
    assert_eq!(running.wait_exit(), 0, "{}", setup.log());
}

#[test]
fn reload_moves_the_status_server_when_host_changes() {
    let mut setup = Setup::new();
    let (remote, _) = setup.local_remote("mirror");
    let xml = Xml {
        remotes: vec![remote],
        status: true,
        ..Xml::default()
    };
    setup.write_config(&xml);
    let mut running = setup.start(&[]);
    assert_eq!(setup.get("/status").0, 200);
    let old_port = setup.status_port;
    setup.status_port = super::free_port();
    setup.write_config(&xml);
    signal(running.pid(), "HUP");
    setup.wait_log("reloaded:", 1);
    wait_until("status on the new port", LIMIT, || {
        std::net::TcpStream::connect(("127.0.0.1", setup.status_port)).is_ok()
    });
    assert_eq!(setup.status()["reloads"], 1);
    assert!(std::net::TcpStream::connect(("127.0.0.1", old_port)).is_err());
    signal(running.pid(), "TERM");
    assert_eq!(running.wait_exit(), 0);
}
