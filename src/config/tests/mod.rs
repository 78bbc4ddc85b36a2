//! Unit tests of `parse`: XML text → `Config` or every `Problem`, from string literals.
//! Directories that must exist come from a temp dir substituted for `@DIR@`. This file
//! covers the document, roots and remotes; `sections.rs` rsync, plugins and new elements.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::*;

mod real_world;
mod sections;

const STOCK: &str = include_str!("../../../conf/confxml.sersync-2.5.xml");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("src")).expect("src dir");
        Env { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn text(&self, xml: &str) -> String {
        xml.replace("@DIR@", &self.path().display().to_string())
    }

    fn parse(&self, xml: &str) -> Result<Config, Vec<Problem>> {
        self.parse_with(xml, None)
    }

    fn parse_with(&self, xml: &str, plugin: Option<PluginKind>) -> Result<Config, Vec<Problem>> {
        let options = ParseOptions {
            standalone_plugin: plugin,
        };
        parse_with(self.text(xml).as_bytes(), Path::new("t.xml"), &options)
    }

    fn ok(&self, xml: &str) -> Config {
        match self.parse(xml) {
            Ok(config) => config,
            Err(problems) => panic!("expected a valid config, got {problems:#?}"),
        }
    }

    /// Every problem as `LINE:COL: message`.
    fn errors(&self, xml: &str) -> Vec<String> {
        self.errors_with(xml, None)
    }

    fn errors_with(&self, xml: &str, plugin: Option<PluginKind>) -> Vec<String> {
        match self.parse_with(xml, plugin) {
            Ok(_) => panic!("expected problems"),
            Err(problems) => problems
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.col, p.message))
                .collect(),
        }
    }

    fn secret(&self, name: &str, mode: u32) -> String {
        let path = self.path().join(name);
        fs::write(&path, "secret\n").expect("write secret");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path.display().to_string()
    }
}

/// A minimal valid file: `head` goes right after `<head>` (line 2 on), `extra` into
/// `<sersync>` after the one localpath.
fn file(head: &str, extra: &str) -> String {
    format!(
        "<head>\n{head}<sersync>\n<localpath watch=\"@DIR@/src\">\n<remote ip=\"127.0.0.1\" name=\"m\"/>\n</localpath>\n{extra}</sersync>\n</head>\n"
    )
}

fn assert_has(list: &[String], needle: &str) {
    assert!(
        list.iter().any(|l| l.contains(needle)),
        "no {needle:?} in {list:#?}"
    );
}

#[test]
fn stock_file_keeps_its_meaning() {
    let env = Env::new();
    let config = env.ok(&STOCK.replace("/opt/tongbu", "@DIR@/src"));
    assert_eq!(
        config.host,
        HostConfig {
            ip: "127.0.0.1".into(),
            port: 8008,
            start: false
        }
    );
    assert!(!config.debug && !config.xfs);
    assert!(config.filter.excludes.is_empty(), "filter is off");
    assert_eq!(config.inotify, InotifyToggles::default());
    assert_eq!(config.roots.len(), 1);
    assert_eq!(config.roots[0].path, env.path().join("src"));
    let daemon = Remote::Daemon {
        host: "127.0.0.1".into(),
        module: "tongbu1".into(),
        port: None,
    };
    assert_eq!(config.roots[0].remotes, vec![daemon]);
    assert_eq!(config.rsync.common_params, vec!["-artz"]);
    assert_eq!(config.rsync.auth, None);
    assert_eq!(
        (config.rsync.port, config.rsync.timeout, config.rsync.ssh),
        (None, None, false)
    );
    assert_eq!(config.rsync.binary, Path::new("rsync"));
    assert_eq!(config.fail_log.path, Path::new("/tmp/rsync_fail_log.sh"));
    assert_eq!(config.fail_log.retry_max, Duration::from_secs(3600));
    assert!(config.crontab.is_none() && config.plugins.is_empty());
    let command = config.command.expect("command section");
    assert_eq!(command.prefix.words(), vec!["/bin/sh"]);
    assert!(command.suffix.is_empty() && command.ignore_error && command.include.is_none());
    assert_eq!(
        (command.timeout, command.concurrency),
        (Duration::from_secs(60), 4)
    );
    let socket = config.socket.expect("socket section");
    assert_eq!(
        (socket.host.as_str(), socket.port, socket.lines),
        ("192.168.138.20", 8009, false)
    );
    assert!(config.cdn.is_none(), "its watch dir does not exist");
    assert_has(
        &config.warnings,
        "t.xml:60:13: <localpath watch=\"/data0/htdocs/cms.xoyo.com/site\">: directory does not exist (ignored: plugin refreshCDN is not enabled)",
    );
}

#[test]
fn names_are_case_insensitive() {
    let env = Env::new();
    let config = env.ok(
        "<HEAD><Debug START=\"true\"/><SerSync><LOCALPATH Watch=\"@DIR@/src/\"><Remote IP=\"h\" NAME=\"m\"/></LOCALPATH></SerSync></HEAD>",
    );
    assert!(config.debug);
    assert_eq!(
        config.roots[0].path,
        env.path().join("src"),
        "trailing slash stripped"
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn true_in_other_spellings_is_false_with_a_warning() {
    let env = Env::new();
    let config = env.ok(&file(
        "<debug start=\"True\"/>\n<fileSystem xfs=\"yes\"/>\n",
        "",
    ));
    assert!(!config.debug && !config.xfs);
    assert_has(
        &config.warnings,
        "t.xml:2:8: <debug start=\"True\">: read as false, only lower-case true turns it on",
    );
    assert_has(
        &config.warnings,
        "t.xml:3:13: <fileSystem xfs=\"yes\">: read as false",
    );
}

#[test]
fn missing_elements_take_defaults() {
    let env = Env::new();
    let config = env.ok(&file("", ""));
    assert_eq!(
        config.host,
        HostConfig {
            ip: "127.0.0.1".into(),
            port: 8008,
            start: false
        }
    );
    assert_eq!(config.inotify, InotifyToggles::default());
    assert_eq!(config.rsync.common_params, vec!["-artz"]);
    assert_eq!(config.fail_log.path, Path::new(DEFAULT_FAIL_LOG));
    assert_eq!(config.fail_log.retry_max, DEFAULT_RETRY_MAX);
    assert!(config.crontab.is_none() && config.command.is_none() && config.cdn.is_none());
    assert_eq!((config.pidfile, config.log), (None, LogConfig::default()));
    let config = env.ok(&file(
        "",
        "<failLog path=\"\" timeToExecute=\"\"/>\n<crontab start=\"true\"/>\n",
    ));
    assert_eq!(config.fail_log.path, Path::new(DEFAULT_FAIL_LOG));
    assert_eq!(config.fail_log.retry_max, DEFAULT_RETRY_MAX);
    assert_eq!(
        config.crontab.expect("on").interval,
        DEFAULT_CRONTAB_INTERVAL
    );
}

#[test]
fn every_localpath_is_used_with_its_own_remotes() {
    let env = Env::new();
    fs::create_dir(env.path().join("two")).unwrap();
    let config = env.ok(&file("", "<localpath watch=\"@DIR@/two\"><remote ip=\"b\" name=\"n\"/><remote path=\"@DIR@/copy\"/></localpath>\n"));
    assert_eq!(config.roots.len(), 2);
    assert_eq!(config.roots[1].path, env.path().join("two"));
    assert_eq!(
        config.roots[1].remotes[1],
        Remote::Local {
            path: env.path().join("copy")
        }
    );
    assert_eq!(config.targets().count(), 3);
}

/// `<remote port>`, an extension: overrides `<userDefinedPort>` for its daemon only.
#[test]
fn remote_port_overrides_user_defined_port_for_its_daemon() {
    let env = Env::new();
    let rsync = "<rsync><userDefinedPort start=\"true\" port=\"874\"/></rsync>\n";
    let remotes = "<localpath watch=\"@DIR@/src2\"><remote ip=\"127.0.0.1\" name=\"m\" port=\"8731\"/><remote ip=\"127.0.0.1\" name=\"m\" port=\" 8732 \"/></localpath>\n";
    fs::create_dir(env.path().join("src2")).unwrap();
    let config = env.ok(&file("", &format!("{rsync}{remotes}")));
    let daemon = |port| Remote::Daemon {
        host: "127.0.0.1".into(),
        module: "m".into(),
        port,
    };
    assert_eq!(config.roots[0].remotes, vec![daemon(None)]);
    assert_eq!(
        config.roots[1].remotes,
        vec![daemon(Some(8731)), daemon(Some(8732))]
    );
    assert_eq!(config.rsync.port, Some(874));

    // (remote element, the one problem at its line:col)
    let table = [
        (
            "<remote ip=\"h\" name=\"m\" port=\"0\"/>",
            "5:25: <remote port=\"0\">: not a whole number from 1 to 65535",
        ),
        (
            "<remote ip=\"h\" name=\"m\" port=\"rsync\"/>",
            "5:25: <remote port=\"rsync\">: not a whole number from 1 to 65535",
        ),
        (
            "<remote ip=\"h\" name=\"m\" port=\"65536\"/>",
            "5:25: <remote port=\"65536\">: not a whole number from 1 to 65535",
        ),
        (
            "<remote ip=\"h\" name=\"m\" port=\" \"/>",
            "5:25: <remote port=\"\">: empty (give the rsync daemon's port, or leave port out for <userDefinedPort>)",
        ),
        (
            "<remote port=\"873\" path=\"@DIR@/copy\"/>",
            "5:9: <remote port>: only for an rsync daemon remote; a local directory has none",
        ),
    ];
    for (remote, problem) in table {
        let xml = format!(
            "<head>\n<sersync>\n<localpath watch=\"@DIR@/src\">\n<remote ip=\"127.0.0.1\" name=\"m\"/>\n{remote}\n</localpath>\n</sersync>\n</head>\n"
        );
        assert_eq!(env.errors(&xml), vec![problem], "{remote}");
    }
    let ssh = "<head>\n<sersync>\n<localpath watch=\"@DIR@/src\">\n<remote ip=\"h\" name=\"/srv\" port=\"22\"/>\n</localpath>\n<rsync><ssh start=\"true\"/></rsync>\n</sersync>\n</head>\n";
    assert_eq!(
        env.errors(ssh),
        vec![
            "4:28: <remote port>: only for an rsync daemon remote; <ssh start=\"true\">: give ssh's port in <commonParams> (-e \"ssh -p PORT\")"
        ]
    );
}

#[test]
fn decimal_minutes() {
    let env = Env::new();
    let xml = file(
        "",
        "<failLog timeToExecute=\"0.1\"/>\n<crontab start=\"true\" schedule=\"0.5\"/>\n",
    );
    let config = env.ok(&xml);
    assert_eq!(config.fail_log.retry_max, Duration::from_secs(6));
    assert_eq!(
        config.crontab.expect("on").interval,
        Duration::from_secs(30)
    );
    for schedule in ["0", "-1"] {
        let config = env.ok(&file(
            "",
            &format!("<crontab start=\"true\" schedule=\"{schedule}\"/>\n"),
        ));
        assert_eq!(
            config.crontab.expect("on").interval,
            DEFAULT_CRONTAB_INTERVAL
        );
    }
}

#[test]
fn malformed_xml_is_one_problem_at_its_position() {
    let env = Env::new();
    assert_eq!(
        env.errors("<head>\n  <debug start=\"true\">\n</head>\n"),
        vec!["3:1: malformed xml: expected 'debug' tag, not 'head'"]
    );
    assert_eq!(
        env.errors("<head>\n<sersync>\n"),
        vec!["3:1: malformed xml: the root node was opened but never closed"]
    );
    assert_eq!(
        env.errors(""),
        vec!["1:1: malformed xml: the document does not have a root node"]
    );
}

#[test]
fn root_must_be_head() {
    let env = Env::new();
    assert_eq!(
        env.errors("<?xml version=\"1.0\"?>\n<config/>"),
        vec!["2:1: root element is <config>, expected <head>"]
    );
}

#[test]
fn all_problems_are_collected_in_file_order() {
    let env = Env::new();
    let xml = "<head>\n<filter start=\"true\"><exclude expression=\"(\"/></filter>\n<sersync>\n<localpath watch=\"rel\"><remote name=\"m\"/></localpath>\n<failLog timeToExecute=\"soon\"/>\n</sersync>\n</head>";
    assert_eq!(
        env.errors(xml),
        vec![
            "2:31: <exclude expression=\"(\">: invalid regex: unclosed group",
            "4:12: <localpath watch=\"rel\">: not an absolute path",
            "4:24: <remote ip=\"?\"> without ip (or path for a local directory)"
                .replace("<remote ip=\"?\"> ", "<remote> ")
                .as_str(),
            "5:10: <failLog timeToExecute=\"soon\">: not a number",
        ]
    );
}

#[test]
fn watch_dir_must_exist_and_be_a_directory() {
    let env = Env::new();
    fs::write(env.path().join("file"), "").unwrap();
    let xml = "<head><sersync>\n<localpath watch=\"@DIR@/nope\"><remote ip=\"h\" name=\"m\"/></localpath>\n<localpath watch=\"@DIR@/file\"><remote ip=\"h\" name=\"m\"/></localpath>\n<localpath/>\n</sersync></head>";
    let errors = env.errors(xml);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with("2:12: ")
            && errors[0].ends_with(&format!(
                "/nope\">: directory does not exist, create it (mkdir -p {}/nope) or correct the path",
                env.path().display()
            ))
    );
    assert!(errors[1].starts_with("3:12: ") && errors[1].ends_with("/file\">: not a directory"));
    assert_eq!(
        errors[2],
        "4:1: <localpath> without watch (the directory to watch)"
    );
    assert_eq!(
        errors[3],
        "4:1: <localpath> has no <remote>: nowhere to push"
    );
}

#[test]
fn sersync_needs_a_localpath_with_remotes() {
    let env = Env::new();
    assert_eq!(
        env.errors("<head/>"),
        vec!["1:1: <head> has no <sersync> section: nothing to watch"]
    );
    assert_eq!(
        env.errors("<head><sersync/></head>"),
        vec!["1:7: <sersync> has no <localpath>: nothing to watch"]
    );
    let errors = env.errors("<head><sersync><localpath watch=\"@DIR@/src\"/></sersync></head>");
    assert!(
        errors[0].starts_with("1:16: <localpath watch=")
            && errors[0].ends_with("has no <remote>: nowhere to push")
    );
    let errors = env.errors("<head><sersync><localpath watch=\"@DIR@/src\"><remote ip=\"h\"/><remote ip=\"-x\" name=\"m\"/></localpath></sersync></head>");
    assert_eq!(errors.len(), 2);
    assert!(errors[0].ends_with("<remote ip=\"h\"> without name (the rsync module)"));
    assert!(errors[1].ends_with("<remote ip=\"-x\">: not a host name"));
}

#[test]
fn local_remote_must_not_loop() {
    let env = Env::new();
    let inside = file("", "").replace(
        "<remote ip=\"127.0.0.1\" name=\"m\"/>",
        "<remote path=\"@DIR@/src/copy\"/>",
    );
    assert_has(&env.errors(&inside), "4:9: <remote path=");
    assert_has(&env.errors(&inside), "inside the watch directory");
    let above = inside.replace("@DIR@/src/copy", "@DIR@");
    assert_has(&env.errors(&above), "contains the watch directory");
    let same = inside.replace("@DIR@/src/copy", "@DIR@/src/");
    assert_has(&env.errors(&same), "inside the watch directory");
    let relative = inside.replace("@DIR@/src/copy", "copy");
    assert_has(
        &env.errors(&relative),
        "<remote path=\"copy\">: not an absolute path",
    );
    let mixed = inside.replace("<remote path", "<remote ip=\"h\" path");
    assert_has(&env.errors(&mixed), "cannot be combined with ip or name");
}

#[test]
fn unknown_elements_and_attributes_are_warnings() {
    let env = Env::new();
    let config = env.ok(&file(
        "<colour value=\"red\"/>\n<debug start=\"false\" loud=\"yes\"/>\n",
        "",
    ));
    assert_has(
        &config.warnings,
        "t.xml:2:1: unknown element <colour> in <head>, ignored",
    );
    assert_has(
        &config.warnings,
        "t.xml:3:22: unknown attribute loud on <debug>, ignored",
    );
}

#[test]
fn filter_regexes_compile_only_when_on() {
    let env = Env::new();
    let on = env.ok(&file("<filter start=\"true\"><exclude expression=\"(.*)\\.gz\"/><other expression=\"^tmp/*\"/></filter>\n", ""));
    assert_eq!(on.filter.excludes.len(), 2);
    assert_has(&on.warnings, "<other> in <filter> is read as <exclude>");
    let off = env.ok(&file(
        "<filter start=\"false\"><exclude expression=\"(?!x)\"/></filter>\n",
        "",
    ));
    assert!(off.filter.excludes.is_empty());
    assert_has(&off.warnings, "invalid regex: look-around");
}

#[test]
fn crontab_filter_globs_are_kept_as_text() {
    let env = Env::new();
    let xml = file(
        "",
        "<crontab start=\"true\" schedule=\"600\"><crontabfilter start=\"true\"><exclude expression=\"*.php\"/><exclude expression=\"info/*\"/></crontabfilter></crontab>\n",
    );
    assert_eq!(
        env.ok(&xml).crontab.expect("on").excludes,
        vec!["*.php", "info/*"]
    );
}

#[test]
fn an_exclude_valid_only_unanchored_is_an_error_at_its_position() {
    let env = Env::new();
    let xml = file(
        "<filter start=\"true\"><exclude expression=\"(?x)cache # tmp\"/></filter>\n",
        "",
    );
    let errors = env.errors(&xml);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].ends_with(
            "<exclude expression=\"(?x)cache # tmp\">: invalid once anchored as ^(?:…)$ to match whole paths: unclosed group"
        ),
        "{errors:#?}"
    );
}

#[test]
fn latin1_files_are_accepted() {
    let env = Env::new();
    let mut bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<!-- caf\xe9 -->\n".to_vec();
    bytes.extend_from_slice(env.text(&file("", "")).as_bytes());
    parse(&bytes, Path::new("t.xml")).expect("latin-1 file parses");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let _ = parse(&bytes, Path::new("t.xml"));
    }

    #[test]
    fn parse_never_panics_on_damaged_stock_file(cut in 0..STOCK.len(), junk in "[<>\"/= a-zA-Z0-9]{0,8}") {
        let mut text = STOCK.to_owned();
        if text.is_char_boundary(cut) {
            text.insert_str(cut, &junk);
        }
        let _ = parse(text.as_bytes(), Path::new("t.xml"));
    }
}
