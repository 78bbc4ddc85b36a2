use super::*;

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn take_rsh_table() {
    #[rustfmt::skip]
    let cases: &[(&[&str], &[&str], Option<&str>)] = &[
        (&["-artz"], &["-artz"], None),
        (&["-artz", "-e", "ssh -p 22"], &["-artz"], Some("ssh -p 22")),
        (&["-artz", "-essh -p 22"], &["-artz"], Some("ssh -p 22")),
        (&["--rsh=ssh -p 2", "-a"], &["-a"], Some("ssh -p 2")),
        (&["--rsh", "ssh -p 2", "-a"], &["-a"], Some("ssh -p 2")),
        // A cluster ending in e: the option goes, the rest of the cluster stays.
        (&["-avze", "ssh -p 3"], &["-avz"], Some("ssh -p 3")),
        (&["-avzessh"], &["-avz"], Some("ssh")),
        // The last one wins, as in rsync.
        (&["-e", "ssh -p 1", "-e", "ssh -p 2"], &[], Some("ssh -p 2")),
        // Another option's argument is not an -e.
        (&["-T", "-e", "-a"], &["-T", "-e", "-a"], None),
        (&["-aT/tmp/e"], &["-aT/tmp/e"], None),
        (&["--exclude=-e"], &["--exclude=-e"], None),
    ];
    for (params, rest, rsh) in cases {
        let (got_rest, got_rsh) = take_rsh(&words(params));
        assert_eq!(got_rest, words(rest), "{params:?}");
        assert_eq!(got_rsh.as_deref(), *rsh, "{params:?}");
    }
}

#[test]
fn split_rsh_as_rsync_does() {
    #[rustfmt::skip]
    let cases: &[(&str, &[&str])] = &[
        ("ssh", &["ssh"]),
        ("  ssh   -p  22 ", &["ssh", "-p", "22"]),
        ("ssh -i '/k ey' -o \"A=b c\"", &["ssh", "-i", "/k ey", "-o", "A=b c"]),
        ("ssh -o 'it''s'", &["ssh", "-o", "it's"]),
        ("ssh -o \"say \"\"hi\"\"\"", &["ssh", "-o", "say \"hi\""]),
        ("ssh a'b c'd", &["ssh", "ab cd"]),
        ("ssh back\\slash", &["ssh", "back\\slash"]),
        ("ssh ''", &["ssh", ""]),
        // Tabs are not separators for rsync.
        ("ssh\t-p", &["ssh\t-p"]),
    ];
    for (command, expected) in cases {
        assert_eq!(
            split_rsh(command).as_deref(),
            Ok(words(expected).as_slice()),
            "{command}"
        );
    }
    assert!(split_rsh("ssh -i 'open").is_err());
}

#[test]
fn join_then_split_is_identity() {
    for list in [
        &["ssh"][..],
        &["ssh", "-i", "/k ey", "-o", "it's", "\"", ""],
        &[
            "/usr/bin/ssh",
            "-F",
            "/dev/null",
            "-o",
            "ProxyCommand=nc %h %p",
        ],
    ] {
        let joined = join_rsh(&words(list));
        assert_eq!(split_rsh(&joined), Ok(words(list)), "{joined}");
    }
}

#[test]
fn ssh_words_only_for_ssh() {
    let mut rsync = crate::push::rsync_config(&["-artz"]);
    assert_eq!(ssh_words(&rsync), Some(words(&["ssh"])));
    rsync.common_params = words(&["-a", "-e", "/usr/bin/ssh -p 2"]);
    assert_eq!(ssh_words(&rsync), Some(words(&["/usr/bin/ssh", "-p", "2"])));
    rsync.common_params = words(&["-a", "-e", "sshpass -f /k ssh"]);
    assert_eq!(ssh_words(&rsync), None);
    rsync.common_params = words(&["-a", "-e", "ssh -i 'x"]);
    assert_eq!(ssh_words(&rsync), None);
}

#[test]
fn control_name_is_a_short_hash() {
    let ssh = words(&["ssh", "-p", "22"]);
    let a = control_name(&ssh, "backup@web-01.example.com");
    assert_eq!(a.len(), 16);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(a, control_name(&ssh, "backup@web-01.example.com"));
    assert_ne!(a, control_name(&ssh, "backup@web-02.example.com"));
    assert_ne!(
        a,
        control_name(&words(&["ssh", "-p", "23"]), "backup@web-01.example.com")
    );
}

#[test]
fn our_options_come_first_and_ssh_options_of_the_operator_stay() {
    let ssh = words(&["ssh", "-p", "2222", "-o", "ControlPath=/mine"]);
    let socket = Path::new("/tmp/sersync-ssh.abc/0123456789abcdef");
    assert_eq!(
        client_rsh(&ssh, socket),
        "ssh -o ControlPath=/tmp/sersync-ssh.abc/0123456789abcdef -o ControlMaster=no -p 2222 -o ControlPath=/mine"
    );
    let (program, args) = master_argv(&ssh, socket, "backup@10.0.0.2");
    assert_eq!(program, "ssh");
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        [
            "-o",
            "ControlPath=/tmp/sersync-ssh.abc/0123456789abcdef",
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=no",
            "-o",
            "BatchMode=yes",
            "-p",
            "2222",
            "-o",
            "ControlPath=/mine",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            "-N",
            "backup@10.0.0.2",
        ]
    );
    // A path with a space survives rsync's split.
    let spaced = client_rsh(&words(&["ssh", "-i", "/my keys/id"]), socket);
    assert_eq!(
        split_rsh(&spaced),
        Ok(words(&[
            "ssh",
            "-o",
            "ControlPath=/tmp/sersync-ssh.abc/0123456789abcdef",
            "-o",
            "ControlMaster=no",
            "-i",
            "/my keys/id"
        ]))
    );
}

#[test]
fn rsh_for_ssh_remotes_with_a_control_dir() {
    let mut rsync = crate::push::rsync_config(&["-artz", "-e", "ssh -p 2"]);
    let ssh = Remote::Ssh {
        host: "h".into(),
        path: "/srv".into(),
    };
    let local = Remote::Local {
        path: PathBuf::from("/m"),
    };
    assert_eq!(rsh_for(&rsync, &ssh), None, "no masters started");
    rsync.ssh_control_dir = Some(PathBuf::from("/tmp/d"));
    let name = control_name(&words(&["ssh", "-p", "2"]), "h");
    assert_eq!(
        rsh_for(&rsync, &ssh),
        Some(format!(
            "ssh -o ControlPath=/tmp/d/{name} -o ControlMaster=no -p 2"
        ))
    );
    assert_eq!(rsh_for(&rsync, &local), None);
}

#[test]
fn outage_logs_once_and_backs_off() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut outage = Outage::default();
    // Never came up: each start fails, the delay doubles, one log line.
    assert_eq!(
        outage.exited(t0),
        AfterExit {
            log: true,
            retry_in: s(1)
        }
    );
    assert_eq!(
        outage.exited(t0 + s(1)),
        AfterExit {
            log: false,
            retry_in: s(2)
        }
    );
    assert_eq!(
        outage.exited(t0 + s(3)),
        AfterExit {
            log: false,
            retry_in: s(4)
        }
    );
    // Up again: the end of the outage is logged once.
    assert!(outage.up(t0 + s(7)));
    assert!(!outage.up(t0 + s(8)));
    // Down after a short time: a new outage, the delay keeps growing.
    assert_eq!(
        outage.exited(t0 + s(9)),
        AfterExit {
            log: true,
            retry_in: s(8)
        }
    );
    for _ in 0..10 {
        outage.exited(t0 + s(10));
    }
    assert_eq!(outage.exited(t0 + s(10)).retry_in, RESTART_MAX);
    // Up for long enough: the next outage starts over.
    assert!(outage.up(t0 + s(20)));
    assert_eq!(
        outage.exited(t0 + s(20) + STABLE_AFTER),
        AfterExit {
            log: true,
            retry_in: s(1)
        }
    );
}
