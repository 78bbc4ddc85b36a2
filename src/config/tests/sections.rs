//! Unit tests of `parse` for `<rsync>`, the plugin sections, `-m` and the new elements.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use super::{Env, assert_has, file};
use crate::config::*;

#[test]
fn ssh_turns_remotes_into_paths_and_refuses_auth() {
    let env = Env::new();
    let config = env.ok(&file(
        "",
        "<rsync><ssh start=\"true\"/><commonParams params='-az -e \"ssh -p 2222\"'/></rsync>\n",
    ));
    let ssh = Remote::Ssh {
        host: "127.0.0.1".into(),
        path: "m".into(),
    };
    assert_eq!(config.roots[0].remotes, vec![ssh]);
    assert_eq!(config.rsync.common_params, vec!["-az", "-e", "ssh -p 2222"]);
    let pass = env.secret("pass", 0o600);
    let xml = file(
        "",
        &format!(
            "<rsync>\n<ssh start=\"true\"/>\n<auth start=\"true\" users=\"u\" passwordfile=\"{pass}\"/>\n</rsync>\n"
        ),
    );
    assert_has(
        &env.errors(&xml),
        "8:1: <auth start=\"true\"> cannot be combined with <ssh start=\"true\">",
    );
}

#[test]
fn password_file_must_be_private() {
    let env = Env::new();
    let auth = |path: &str| {
        file(
            "",
            &format!("<rsync><auth start=\"true\" users=\"u\" passwordfile=\"{path}\"/></rsync>\n"),
        )
    };
    let config = env.ok(&auth(&env.secret("p600", 0o600)));
    assert_eq!(config.rsync.auth.expect("auth").user, "u");
    let config = env.ok(&auth(&env.secret("p640", 0o640)));
    assert_has(&config.warnings, "accessible by its group (mode 640)");
    assert_has(
        &env.errors(&auth(&env.secret("p644", 0o644))),
        "6:37: <auth passwordfile=",
    );
    assert_has(
        &env.errors(&auth(&env.secret("p604", 0o604))),
        "accessible by others (mode 604), run chmod 600 on it",
    );
    assert_has(
        &env.errors(&auth("@DIR@/missing")),
        "cannot read: No such file",
    );
    assert_has(&env.errors(&auth("rel.pas")), "not an absolute path");
    let no_users = file(
        "",
        &format!(
            "<rsync><auth start=\"true\" passwordfile=\"{}\"/></rsync>\n",
            env.secret("p", 0o600)
        ),
    );
    assert_has(
        &env.errors(&no_users),
        "6:8: <auth start=\"true\"> without users",
    );
    let off = file(
        "",
        "<rsync><auth start=\"false\" users=\"u\" passwordfile=\"/nonexistent\"/></rsync>\n",
    );
    assert!(env.ok(&off).rsync.auth.is_none());
}

#[test]
fn numbers_must_be_numbers() {
    let env = Env::new();
    let xml = file(
        "<host port=\"http\"/>\n",
        "<rsync>\n<userDefinedPort start=\"true\" port=\"70000\"/>\n<timeout start=\"true\" time=\"1m\"/>\n</rsync>\n<crontab start=\"true\" schedule=\"daily\"/>\n",
    );
    assert_eq!(
        env.errors(&xml),
        vec![
            "2:7: <host port=\"http\">: not a whole number from 1 to 65535",
            "8:31: <userDefinedPort port=\"70000\">: not a whole number from 1 to 65535",
            "9:23: <timeout time=\"1m\">: not a whole number from 0 to 4294967295",
            "11:23: <crontab schedule=\"daily\">: not a number",
        ]
    );
    let config = env.ok(&file("", "<rsync><userDefinedPort start=\"true\" port=\"874\"/><timeout start=\"true\" time=\"100\"/></rsync>\n"));
    assert_eq!(
        (config.rsync.port, config.rsync.timeout),
        (Some(874), Some(100))
    );
}

#[test]
fn plugins_must_be_known_and_have_a_section() {
    let env = Env::new();
    let xml = file(
        "",
        "<plugin start=\"true\" name=\"ftp\"/>\n<plugin start=\"true\" name=\"socket\"/>\n",
    );
    assert_eq!(
        env.errors(&xml),
        vec![
            "6:22: <plugin name=\"ftp\">: unknown plugin (expected command, socket, http or refreshCDN)",
            "7:1: plugin socket is enabled but there is no <plugin name=\"socket\"> section",
        ]
    );
    assert_eq!(
        env.errors_with(&file("", ""), Some(PluginKind::Http)),
        vec!["1:1: plugin http is selected with -m but there is no <plugin name=\"http\"> section"]
    );
}

#[test]
fn plugin_sections_are_strict_only_when_enabled() {
    let env = Env::new();
    let socket = "<plugin name=\"socket\"><localpath watch=\"/nonexistent\"><deshost ip=\"h\" port=\"x\"/></localpath></plugin>\n";
    let config = env.ok(&format!(
        "{}{socket}</head>",
        file("", "").trim_end().trim_end_matches("</head>")
    ));
    assert!(config.socket.is_none());
    assert_has(&config.warnings, "(ignored: plugin socket is not enabled)");
    let enabled = format!(
        "{}{socket}</head>",
        file("", "<plugin start=\"true\" name=\"Socket\"/>\n")
            .trim_end()
            .trim_end_matches("</head>")
    );
    let errors = env.errors(&enabled);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_has(
        &errors,
        "<localpath watch=\"/nonexistent\">: directory does not exist",
    );
    assert_has(
        &errors,
        "<deshost port=\"x\">: not a whole number from 1 to 65535",
    );
}

#[test]
fn standalone_plugin_needs_no_remotes_and_ignores_sersync() {
    let env = Env::new();
    let socket = "<plugin name=\"socket\"><localpath watch=\"@DIR@/src\"><deshost ip=\"h\" port=\"9\" format=\"lines\"/></localpath></plugin>";
    let xml =
        format!("<head><sersync><localpath watch=\"/nonexistent\"/></sersync>{socket}</head>");
    let config = env
        .parse_with(&xml, Some(PluginKind::Socket))
        .expect("valid with -m socket");
    assert!(config.roots.is_empty());
    assert!(config.socket.expect("socket").lines);
    assert_has(
        &config.warnings,
        "(ignored: -m socket runs the plugin alone)",
    );
    let alone = format!("<head>{socket}</head>");
    let config = env
        .parse_with(&alone, Some(PluginKind::Socket))
        .expect("no <sersync> needed");
    assert!(
        config.roots.is_empty() && config.warnings.is_empty(),
        "{:?}",
        config.warnings
    );
    assert_eq!(
        env.errors_with(&alone, Some(PluginKind::Command)),
        vec![
            "1:1: <head> has no <sersync> section: nothing to watch",
            "1:1: plugin command is selected with -m but there is no <plugin name=\"command\"> section"
        ]
    );
    let command = "<head><sersync><localpath watch=\"@DIR@/src\"/></sersync><plugin name=\"command\"/></head>";
    let config = env
        .parse_with(command, Some(PluginKind::Command))
        .expect("valid with -m command");
    assert!(config.roots[0].remotes.is_empty());
    assert_eq!(
        config.command.expect("command").prefix.words(),
        vec!["/bin/sh"]
    );
}

#[test]
fn new_elements_are_checked() {
    let env = Env::new();
    let config = env.ok(&file("<pidfile path=\"/run/sersync.pid\"/>\n<log path=\"/var/log/sersync.log\" level=\"DEBUG\"/>\n", ""));
    assert_eq!(
        config.pidfile.as_deref(),
        Some(Path::new("/run/sersync.pid"))
    );
    assert_eq!(config.log.level.as_deref(), Some("debug"));
    let xml = file(
        "<pidfile path=\"run.pid\"/>\n<log level=\"loud\"/>\n<host hostip=\"my-box\" start=\"true\"/>\n",
        "<rsync><binary path=\"bin/rsync\"/></rsync>\n",
    );
    assert_eq!(
        env.errors(&xml),
        vec![
            "2:10: <pidfile path=\"run.pid\">: not an absolute path",
            "3:6: <log level=\"loud\">: expected error, warn, info, debug or trace",
            "4:7: <host hostip=\"my-box\">: not an ip address",
            "9:16: <binary path=\"bin/rsync\">: neither a bare name nor an absolute path",
        ]
    );
}

#[test]
fn command_and_cdn_sections() {
    let env = Env::new();
    let plugins = "<plugin name=\"command\"><param prefix=\"/bin/echo 'a b'\" suffix=\"--x\" timeout=\"1.5\" concurrency=\"2\"/><filter start=\"true\"><include expression=\".*\\.php\"/></filter></plugin>\n<plugin name=\"refreshCDN\"><localpath watch=\"@DIR@/src\"><cdninfo provider=\"Cloudflare\" tokenfile=\"@DIR@/token\" zone=\"z\" batch=\"5\" rate=\"2.5\"/><sendurl base=\"https://cdn.example\"/><regexurl regex=\"true\" match=\"src/(.*)\"/></localpath></plugin>\n";
    env.secret("token", 0o600);
    let enabled =
        "<plugin start=\"true\" name=\"command\"/><plugin start=\"true\" name=\"refreshCDN\"/>\n";
    let xml = file("", enabled).replace("</head>", plugins) + "</head>";
    let config = env.ok(&xml);
    assert_eq!(
        config.plugins,
        vec![PluginKind::Command, PluginKind::RefreshCdn]
    );
    let command = config.command.expect("command");
    assert_eq!(
        (command.prefix.words().to_vec(), command.suffix),
        (
            vec!["/bin/echo".to_owned(), "a b".to_owned()],
            vec!["--x".to_owned()]
        )
    );
    assert_eq!(
        (command.timeout, command.concurrency),
        (Duration::from_millis(1500), 2)
    );
    let include = &command.include.expect("on")[0];
    assert!(
        include.is_match(b"/x/a.php") && !include.is_match(b"/x/a.php.bak"),
        "anchored"
    );
    let cdn = config.cdn.expect("cdn");
    assert_eq!((cdn.batch, cdn.rate_per_sec), (5, 2.5));
    let CdnApi::Cloudflare { zone, endpoint, .. } = &cdn.api else {
        panic!("cloudflare: {:?}", cdn.api)
    };
    assert_eq!(
        (zone.as_str(), endpoint.as_str()),
        ("z", "https://api.cloudflare.com")
    );
    assert!(cdn.url_regex.is_some());
    let no_group = xml.replace("src/(.*)", "src/.*");
    assert_has(
        &env.errors(&no_group),
        "no capture group, the url needs group 1",
    );
}

#[test]
fn update_is_stripped_from_common_params_unless_kept() {
    #[rustfmt::skip]
    let table: &[(&[&str], &[&str], bool)] = &[
        (&["-artuz"], &["-artz"], true),
        (&["-u"], &[], true),
        (&["--update", "-az"], &["-az"], true),
        (&["-auvz", "-u"], &["-avz"], true),
        (&["-az", "-e", "ssh -u"], &["-az", "-e", "ssh -u"], false),
        (&["-aze", "ssh -u"], &["-aze", "ssh -u"], false),
        (&["-azessh"], &["-azessh"], false),
        (&["-aT/tmp/u", "-u"], &["-aT/tmp/u"], true),
        (&["-a", "--exclude=u", "-"], &["-a", "--exclude=u", "-"], false),
        (&["-artz"], &["-artz"], false),
    ];
    for &(before, after, removed) in table {
        let mut params: Vec<String> = before.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            crate::config::rsync::strip_update(&mut params),
            removed,
            "{before:?}"
        );
        assert_eq!(params, after, "{before:?}");
    }
}

#[test]
fn update_opt_in_keeps_u_and_the_default_warns() {
    let env = Env::new();
    let config = env.ok(&file(
        "",
        "<rsync>\n<commonParams params=\"-artuz\"/>\n</rsync>\n",
    ));
    assert_eq!(config.rsync.common_params, vec!["-artz"]);
    assert_has(
        &config.warnings,
        "7:15: <commonParams params=\"-artuz\">: -u (--update) removed",
    );
    let config = env.ok(&file(
        "",
        "<rsync>\n<commonParams params=\"-artuz\"/>\n<update start=\"true\"/>\n</rsync>\n",
    ));
    assert_eq!(config.rsync.common_params, vec!["-artuz"]);
    assert!(
        !config.warnings.iter().any(|w| w.contains("--update")),
        "{:?}",
        config.warnings
    );
    // No <rsync> at all: sersync's default -artuz, without -u, silently.
    let config = env.ok(&file("", ""));
    assert_eq!(config.rsync.common_params, vec!["-artz"]);
}

#[test]
fn warm_clients_default_on_and_can_be_turned_off() {
    let env = Env::new();
    assert_eq!(env.ok(&file("", "")).rsync.warm, WarmConfig::default());
    assert!(env.ok(&file("", "")).rsync.warm.start);
    let off = env.ok(&file("", "<rsync><warm start=\"false\"/></rsync>\n"));
    assert!(!off.rsync.warm.start);
    let idle = env.ok(&file("", "<rsync><warm idleSeconds=\"7\"/></rsync>\n"));
    assert_eq!(
        idle.rsync.warm,
        WarmConfig {
            start: true,
            idle: Duration::from_secs(7)
        }
    );
    assert_has(
        &env.errors(&file("", "<rsync><warm idleSeconds=\"9999\"/></rsync>\n")),
        "<warm idleSeconds=\"9999\">: not a whole number from 1 to 3600",
    );
}
