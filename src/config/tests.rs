//! Unit tests of `parse`: XML text → `Config` or every `Problem`, from string literals.
//! Directories that must exist come from a temp dir substituted for `@DIR@`.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::*;

const STOCK: &str = include_str!("../../conf/confxml.sersync-2.5.xml");

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
    };
    assert_eq!(config.roots[0].remotes, vec![daemon]);
    assert_eq!(config.rsync.common_params, vec!["-artuz"]);
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
    assert_eq!(command.prefix, vec!["/bin/sh"]);
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
    assert_eq!(config.rsync.common_params, vec!["-artuz"]);
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
            && errors[0].ends_with("/nope\">: directory does not exist")
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
    let command = "<head><sersync><localpath watch=\"@DIR@/src\"/></sersync><plugin name=\"command\"/></head>";
    let config = env
        .parse_with(command, Some(PluginKind::Command))
        .expect("valid with -m command");
    assert!(config.roots[0].remotes.is_empty());
    assert_eq!(config.command.expect("command").prefix, vec!["/bin/sh"]);
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
fn latin1_files_are_accepted() {
    let env = Env::new();
    let mut bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<!-- caf\xe9 -->\n".to_vec();
    bytes.extend_from_slice(env.text(&file("", "")).as_bytes());
    parse(&bytes, Path::new("t.xml")).expect("latin-1 file parses");
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
        (command.prefix, command.suffix),
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
    assert_eq!(
        (
            cdn.provider,
            cdn.zone.as_deref(),
            cdn.batch,
            cdn.rate_per_sec
        ),
        (CdnProvider::Cloudflare, Some("z"), 5, 2.5)
    );
    assert_eq!(cdn.endpoint, "https://api.cloudflare.com");
    assert!(cdn.url_regex.is_some());
    let no_group = xml.replace("src/(.*)", "src/.*");
    assert_has(
        &env.errors(&no_group),
        "no capture group, the url needs group 1",
    );
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
