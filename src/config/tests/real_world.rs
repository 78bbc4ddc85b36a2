//! Unit tests of `parse` on what configs published by operators contain: relative
//! fail-log paths, template placeholders for hosts, padded module names, `<filter>` with
//! `<crontab>`.

#![allow(clippy::unwrap_used)]

use super::{Env, assert_has, file};

#[test]
fn relative_fail_log_is_resolved_against_the_start_directory() {
    let env = Env::new();
    let config = env.ok(&file(
        "",
        "<failLog path=\"log/rsync_fail_log.sh\" timeToExecute=\"60\"/>\n",
    ));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(config.fail_log.path, cwd.join("log/rsync_fail_log.sh"));
    assert_has(
        &config.warnings,
        &format!(
            "t.xml:6:10: <failLog path=\"log/rsync_fail_log.sh\">: relative path, resolved against the working directory to {}/log/rsync_fail_log.sh",
            cwd.display()
        ),
    );
}

#[test]
fn every_host_that_is_not_a_name_draws_the_same_warning() {
    let env = Env::new();
    for host in [
        "{{ rsync_server_ip }}",
        "{TARGET_HOST}",
        "$remoteAddress",
        "sérveur.example",
        "a..b",
    ] {
        let xml = file("", "").replace("ip=\"127.0.0.1\"", &format!("ip=\"{host}\""));
        let config = env.ok(&xml);
        assert_has(
            &config.warnings,
            &format!(
                "t.xml:4:9: <remote ip=\"{host}\">: neither a host name nor an address (a template placeholder left in?)"
            ),
        );
        let remote = &config.roots[0].remotes[0];
        assert_eq!(remote.to_string(), format!("{host}::m"));
    }
    for host in [
        "10.0.0.2",
        "backup@10.0.0.2",
        "[::1]",
        "::1",
        "mirror-1.example.com",
        "db_2.lan.",
        "localhost",
    ] {
        let xml = file("", "").replace("ip=\"127.0.0.1\"", &format!("ip=\"{host}\""));
        let config = env.ok(&xml);
        assert!(config.warnings.is_empty(), "{host}: {:?}", config.warnings);
    }
}

#[test]
fn a_host_read_as_an_option_is_an_error_everywhere() {
    let env = Env::new();
    let remote = file("", "").replace("ip=\"127.0.0.1\"", "ip=\"-oProxyCommand=x\"");
    assert_has(
        &env.errors(&remote),
        "4:9: <remote ip=\"-oProxyCommand=x\">: not a host name",
    );
    let socket = file("", "<plugin start=\"true\" name=\"socket\"/>\n") + "";
    let socket = socket.replace(
        "</head>",
        "<plugin name=\"socket\"><localpath watch=\"@DIR@/src\"><deshost ip=\"-x\" port=\"9\"/></localpath></plugin>\n</head>",
    );
    assert_has(&env.errors(&socket), "<deshost ip=\"-x\">: not a host name");
    let templated = socket.replace("ip=\"-x\"", "ip=\"{TARGET_HOST}\"");
    assert_has(
        &env.ok(&templated).warnings,
        "<deshost ip=\"{TARGET_HOST}\">: neither a host name nor an address",
    );
}

#[test]
fn module_name_with_surrounding_spaces_is_trimmed_with_a_warning() {
    let env = Env::new();
    let xml = file("", "").replace("name=\"m\"", "name=\" m \"");
    let config = env.ok(&xml);
    assert_eq!(config.roots[0].remotes[0].to_string(), "127.0.0.1::m");
    assert_has(
        &config.warnings,
        "t.xml:4:24: <remote name=\" m \">: surrounding spaces removed, using \"m\"",
    );
}

#[test]
fn crontab_kept_on_with_filter_draws_one_warning() {
    let env = Env::new();
    let filter = "<filter start=\"true\"><exclude expression=\"(.*)\\.swp\"/></filter>\n";
    let crontab = "<crontab start=\"true\" schedule=\"600\"/>\n";
    let config = env.ok(&file(filter, crontab));
    assert!(config.crontab.is_some(), "crontab stays on");
    let warned: Vec<_> = config
        .warnings
        .iter()
        .filter(|w| w.contains("sersync 2.5 turned the periodic full sync off"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", config.warnings);
    assert!(
        warned[0].starts_with("t.xml:7:1: <crontab start=\"true\"> with <filter start=\"true\">")
    );
    // Not when 2.5 kept it on too (globs in <crontabfilter>), nor with the filter off.
    let globs = "<crontab start=\"true\"><crontabfilter start=\"true\"><exclude expression=\"*.swp\"/></crontabfilter></crontab>\n";
    assert!(env.ok(&file(filter, globs)).warnings.is_empty());
    let off = filter.replace("\"true\"", "\"false\"");
    assert!(env.ok(&file(&off, crontab)).warnings.is_empty());
}
