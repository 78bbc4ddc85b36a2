//! `sersync --check -o FILE` on every file in `tests/fixtures/config/`: the exit code and
//! the `FILE:LINE:COL: message` it prints. `@TMP@` in a fixture is replaced by a fresh
//! temp dir holding `src/`, `other/`, a plain `file` and password files `pass600`,
//! `pass640`, `pass644`; `stock*.xml` rows are built from `conf/confxml.sersync-2.5.xml`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// (fixture, exit code, `LINE:COL` of the first expected line, text on that line).
/// Exit 2: the problem line `FILE:LINE:COL: …`. Exit 0 with a `LINE:COL`: the warning
/// `warning: FILE:LINE:COL: …`; exit 0 without: a line of the summary on stdout.
#[rustfmt::skip]
const CASES: &[(&str, i32, &str, &str)] = &[
    // Malformed or not sersync at all.
    ("malformed_unclosed.xml", 2, "4:1", "malformed xml: the root node was opened but never closed"),
    ("malformed_mismatch.xml", 2, "3:1", "malformed xml: expected 'debug' tag, not 'head'"),
    ("malformed_attribute.xml", 2, "2:18", "malformed xml: expected a quote not 'f'"),
    ("not_xml.xml", 2, "1:1", "malformed xml: unknown token"),
    ("empty.xml", 2, "1:1", "malformed xml: the document does not have a root node"),
    ("root_not_head.xml", 2, "2:1", "root element is <sersync>, expected <head>"),
    // Filters.
    ("bad_regex.xml", 2, "4:14", "<exclude expression=\"(.*\\.svn\">: invalid regex: unclosed group"),
    ("lookaround_regex.xml", 2, "4:14", "invalid regex: look-around, including look-ahead and look-behind, is not supported"),
    ("filter_unanchorable.xml", 2, "4:14", "<exclude expression=\"(?x) cache # temporary files\">: invalid once anchored as ^(?:…)$ to match whole paths: unclosed group"),
    // Watch roots and remotes.
    ("watch_relative.xml", 2, "4:16", "<localpath watch=\"var/www\">: not an absolute path"),
    ("watch_missing.xml", 2, "4:16", "<localpath watch=\"/nonexistent/sersync-fixture\">: directory does not exist"),
    ("watch_is_file.xml", 2, "4:16", "/file\">: not a directory"),
    ("watch_empty.xml", 2, "4:5", "<localpath> without watch (the directory to watch)"),
    ("no_sersync.xml", 2, "1:1", "<head> has no <sersync> section: nothing to watch"),
    ("no_localpath.xml", 2, "2:5", "<sersync> has no <localpath>: nothing to watch"),
    ("no_remote.xml", 2, "4:5", "/src\"> has no <remote>: nowhere to push"),
    ("remote_without_ip.xml", 2, "5:9", "<remote> without ip (or path for a local directory)"),
    ("remote_without_name.xml", 2, "5:9", "<remote ip=\"10.0.0.2\"> without name (the rsync module)"),
    ("remote_path_and_ip.xml", 2, "5:9", "<remote>: path (a local directory) cannot be combined with ip or name"),
    ("local_remote_relative.xml", 2, "5:17", "<remote path=\"mirror\">: not an absolute path"),
    ("local_remote_inside_root.xml", 2, "5:17", "/src, it would copy into itself"),
    ("local_remote_contains_root.xml", 2, "5:17", "--delete would remove it"),
    ("duplicate_watch.xml", 2, "7:5", "/src\">: already watched (line 4)"),
    // rsync options.
    ("password_world_readable.xml", 2, "8:41", "/pass644\">: accessible by others (mode 644), run chmod 600 on it"),
    ("password_missing.xml", 2, "8:41", "/nope.pas\">: cannot read: No such file or directory"),
    ("auth_with_ssh.xml", 2, "8:9", "<auth start=\"true\"> cannot be combined with <ssh start=\"true\">"),
    ("port_not_numeric.xml", 2, "8:39", "<userDefinedPort port=\"eight\">: not a whole number from 1 to 65535"),
    ("timeout_not_numeric.xml", 2, "8:31", "<timeout time=\"100s\">: not a whole number"),
    ("warm_idle_zero.xml", 2, "8:28", "<warm idleSeconds=\"0\">: not a whole number from 1 to 3600"),
    ("common_params_unbalanced.xml", 2, "8:23", "unbalanced quotes"),
    ("ssh_share_bad.xml", 2, "8:27", "<ssh shareConnection=\"yes\">: expected true or false"),
    ("ok_ssh_share.xml", 0, "", "ssh: one shared connection per ssh destination (its socket in a private directory made at start"),
    ("ok_ssh_share.xml", 0, "", "/sersync-ssh.XXXXXX/b4455d8328405202 -o ControlMaster=no -p 2222' -- ./PATH backup@127.0.0.1:/srv/mirror/"),
    ("ok_ssh_share_off.xml", 0, "", "ssh: every rsync connects on its own (<ssh shareConnection=\"false\">)"),
    ("ok_ssh_share_off.xml", 0, "", "rsync -artz -e 'ssh -p 2222' --no-recursive --dirs --relative --ignore-times --delete-missing-args"),
    // -u (--update) is dropped unless <update start="true"/> keeps it.
    ("stock.xml", 0, "30:20", "<commonParams params=\"-artuz\">: -u (--update) removed: it keeps a mirror file that is newer"),
    ("stock.xml", 0, "", "full sync: rsync -artz --recursive --delete"),
    ("ok_update_kept.xml", 0, "", "full sync: rsync -artuz --recursive"),
    ("ok_watch_fanotify.xml", 0, "", "watch: fanotify (one mark per filesystem; needs root and Linux 5.17, else inotify)"),
    ("time_to_execute_not_numeric.xml", 2, "7:34", "<failLog timeToExecute=\"hourly\">: not a number"),
    ("schedule_not_numeric.xml", 2, "7:27", "<crontab schedule=\"10h\">: not a number"),
    // Plugins and new elements.
    ("unknown_plugin.xml", 2, "7:26", "<plugin name=\"ftp\">: unknown plugin"),
    ("plugin_without_section.xml", 2, "7:5", "plugin socket is enabled but there is no <plugin name=\"socket\"> section"),
    ("plugin_root_not_watched.xml", 2, "10:16", "/other\">: not a watched <localpath> of <sersync>; plugin socket serves one of them"),
    ("socket_enabled_bad_port.xml", 2, "11:33", "<deshost port=\"99999\">: not a whole number from 1 to 65535"),
    ("cdn_regex_without_group.xml", 2, "13:32", "no capture group, the url needs group 1"),
    ("cdn_webhook_without_url.xml", 2, "11:9", "<cdninfo provider=\"webhook\"> without url"),
    ("cdn_cloudflare_without_zone.xml", 2, "11:9", "<cdninfo provider=\"cloudflare\"> without zone"),
    ("command_empty_prefix.xml", 2, "10:12", "<param prefix=\"\">: empty, there is no command to run"),
    ("bad_log_level.xml", 2, "3:34", "<log level=\"verbose\">: expected error, warn, info, debug or trace"),
    ("bad_watch_backend.xml", 2, "3:8", "<watch backend=\"fanotfy\">: expected inotify or fanotify"),
    ("host_bad_ip_started.xml", 2, "3:7", "<host hostip=\"status.example\">: not an ip address"),
    ("stock_cdn_enabled.xml", 2, "60:13", "<localpath watch=\"/data0/htdocs/cms.xoyo.com/site\">: directory does not exist"),
    // Odd but valid.
    ("stock.xml", 0, "60:13", "directory does not exist (ignored: plugin refreshCDN is not enabled)"),
    ("stock.xml", 0, "", "-> rsync daemon 127.0.0.1, module tongbu1"),
    ("ok_uppercase_tags.xml", 0, "", "rsync -az --recursive --delete --from0"),
    ("ok_true_capitalized.xml", 0, "3:8", "<debug start=\"True\">: read as false, only lower-case true turns it on"),
    ("ok_missing_elements.xml", 0, "", "faillog: /var/lib/sersync/faillog (failed pushes retried at least every 60 min)"),
    ("ok_two_localpaths.xml", 0, "", "-> rsync daemon 10.0.0.3, module other"),
    ("ok_ssh.xml", 0, "", "-> ssh backup@10.0.0.2, path /srv/backup"),
    ("ok_local_remote.xml", 0, "", "/mirror/   (excluded paths on stdin)"),
    ("ok_decimals.xml", 0, "", "crontab: full sync every 30 s"),
    ("ok_decimals.xml", 0, "", "faillog: @TMP@/faillog (failed pushes retried at least every 6 s)"),
    ("ok_unknown_element.xml", 0, "3:1", "unknown element <colour> in <head>, ignored"),
    ("ok_group_readable_password.xml", 0, "8:41", "accessible by its group (mode 640), chmod 600 is safer"),
    ("ok_disabled_plugin_sections.xml", 0, "9:16", "(ignored: plugin socket is not enabled)"),
    ("ok_schedule_zero.xml", 0, "", "crontab: full sync every 600 min, exclude globs: *.php"),
    ("ok_latin1.xml", 0, "", "events: delete createFolder closeWrite moveFrom moveTo"),
    ("ok_warm_off.xml", 0, "", "warm: off"),
    ("ok_warm_idle_under_timeout.xml", 0, "", "replaced after 25 s idle"),
    ("stock.xml", 0, "", "warm: one rsync client waits per remote (one daemon connection and one process each), replaced after 20 s idle"),
    ("many_problems.xml", 2, "8:26", "<plugin name=\"nope\">: unknown plugin"),
    // Configs published by operators.
    ("ok_relative_faillog.xml", 0, "7:14", "<failLog path=\"log/rsync_fail_log.sh\">: relative path, resolved against the working directory to "),
    ("ok_relative_faillog.xml", 0, "", "/log/rsync_fail_log.sh (failed pushes retried at least every 60 min)"),
    ("ok_template_hosts.xml", 0, "5:17", "<remote ip=\"{{ rsync_server_ip }}\">: neither a host name nor an address (a template placeholder left in?)"),
    ("ok_template_hosts.xml", 0, "6:17", "<remote ip=\"{TARGET_HOST}\">: neither a host name nor an address (a template placeholder left in?)"),
    ("ok_template_hosts.xml", 0, "7:17", "<remote ip=\"$remoteAddress\">: neither a host name nor an address (a template placeholder left in?)"),
    ("ok_template_hosts.xml", 0, "8:17", "<remote ip=\"сервер\">: neither a host name nor an address (a template placeholder left in?)"),
    ("host_option.xml", 2, "5:17", "<remote ip=\"-oProxyCommand=touch /tmp/x\">: not a host name"),
    ("ok_module_spaces.xml", 0, "5:31", "<remote name=\" www \">: surrounding spaces removed, using \"www\""),
    ("ok_module_spaces.xml", 0, "", "-> rsync daemon 10.0.0.2, module www"),
    ("ok_filter_with_crontab.xml", 0, "10:5", "<crontab start=\"true\"> with <filter start=\"true\">: sersync 2.5 turned the periodic full sync off here"),
    ("ok_filter_with_crontab.xml", 0, "", "crontab: full sync every 600 min"),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// A temp dir with what the fixtures refer to through `@TMP@`.
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    for dir in ["src", "other"] {
        fs::create_dir(tmp.path().join(dir)).expect("fixture dir");
    }
    fs::write(tmp.path().join("file"), "").expect("fixture file");
    for mode in [0o600, 0o640, 0o644] {
        let path = tmp.path().join(format!("pass{mode:o}"));
        fs::write(&path, "secret\n").expect("password file");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    tmp
}

/// The fixture's bytes with `@TMP@` replaced (byte-wise: some fixtures are not UTF-8).
fn fixture_bytes(name: &str, tmp: &Path) -> Vec<u8> {
    let bytes = match name {
        "stock.xml" | "stock_cdn_enabled.xml" => {
            let stock = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/confxml.sersync-2.5.xml");
            let text = fs::read_to_string(stock)
                .expect("stock file")
                .replace("/opt/tongbu", "@TMP@/src");
            let text = if name == "stock.xml" {
                text
            } else {
                text.replace(
                    "<plugin start=\"false\" name=\"command\"/>",
                    "<plugin start=\"true\" name=\"refreshCDN\"/>",
                )
            };
            text.into_bytes()
        }
        _ => fs::read(fixtures().join(name)).expect("fixture"),
    };
    replace(&bytes, b"@TMP@", tmp.as_os_str().as_encoded_bytes())
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

pub(crate) fn sersync(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_sersync"))
        .args(args)
        .output()
        .expect("run sersync");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(101),
        "sersync {args:?} panicked: {stderr}"
    );
    assert!(
        output.status.code().is_some(),
        "sersync {args:?} was killed: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "sersync {args:?} panicked: {stderr}"
    );
    output
}

#[test]
fn fixture_table() {
    let tmp = scratch();
    let mut failures = Vec::new();
    for &(name, code, line_col, message) in CASES {
        let message = &message.replace("@TMP@", &tmp.path().display().to_string());
        let file = tmp.path().join(name);
        fs::write(&file, fixture_bytes(name, tmp.path())).expect("write fixture");
        let file = file.display().to_string();
        let output = sersync(&["--check", "-o", &file]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        let found = match (code, line_col) {
            (2, _) => stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}:{line_col}: ")) && l.contains(message)),
            (_, "") => stdout.lines().any(|l| l.contains(message)),
            _ => stderr.lines().any(|l| {
                l.starts_with(&format!("warning: {file}:{line_col}: ")) && l.contains(message)
            }),
        };
        if output.status.code() != Some(code) || !found {
            failures.push(format!(
                "{name}: expected exit {code} and {line_col} {message:?}\n  got exit {:?}\n  stdout: {stdout}\n  stderr: {stderr}",
                output.status.code()
            ));
        }
        if code == 2 {
            assert!(
                stdout.is_empty(),
                "{name}: an invalid file prints no summary"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_file_is_in_the_table() {
    let mut names: Vec<String> = fs::read_dir(fixtures())
        .expect("fixtures dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| CASES.iter().all(|c| c.0 != n.as_str()))
        .collect();
    assert!(missing.is_empty(), "fixtures without a row: {missing:?}");
    assert!(names.len() >= 25, "at least 25 fixtures");
}

#[test]
fn all_problems_are_reported_in_one_run() {
    let tmp = scratch();
    let file = tmp.path().join("many.xml");
    fs::write(&file, fixture_bytes("many_problems.xml", tmp.path())).expect("write fixture");
    let file = file.display().to_string();
    let output = sersync(&["--check", "-o", &file]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let positions: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{file}:")))
        .filter_map(|l| l.split(": ").next())
        .collect();
    assert_eq!(
        positions,
        ["2:31", "4:16", "5:9", "7:14", "8:26"],
        "{stderr}"
    );
    assert!(
        stderr.ends_with("many.xml: 5 problems, not started\n"),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(2));
}
