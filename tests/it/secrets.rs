//! Secrets never reach `Debug`/`Display` output, `--check`, the log or the journal:
//! every config and runtime type holding one is built with a known value and printed,
//! and the real binary runs a CDN purge at debug level while its log is searched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sersync::cdn::chinacache;
use sersync::cdn::provider::{Provider, PurgeItem};
use sersync::config::{CdnApi, Config, Secret};

use crate::service::{BIN, LIMIT, Running, is_alive, signal};
use crate::util::wait_until;
use crate::util_http::{RecordingServer, answer};

const PASSWORD: &str = "pw-S3cr3t-9731";
const TOKEN: &str = "tok-S3cr3t-5518";
const HOOK_TOKEN: &str = "hook-S3cr3t-2044";

fn assert_hidden(what: &str, shown: &str) {
    for secret in [PASSWORD, TOKEN, HOOK_TOKEN] {
        assert!(!shown.contains(secret), "{what} shows {secret}:\n{shown}");
    }
}

/// Files of one run: source root, config, token file, log, journal.
struct Files {
    dir: tempfile::TempDir,
    src: PathBuf,
    config: PathBuf,
    token: PathBuf,
    log: PathBuf,
    journal: PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(&src).expect("src");
        let token = dir.path().join("cf.token");
        fs::write(&token, format!("{TOKEN}\n")).expect("token file");
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).expect("chmod token");
        Files {
            config: dir.path().join("confxml.xml"),
            log: dir.path().join("sersync.log"),
            journal: dir.path().join("faillog"),
            src,
            token,
            dir,
        }
    }

    /// A config mirroring `src` to a local directory, refreshCDN with `cdninfo`.
    fn write_config(&self, cdninfo: &str) {
        let mirror = self.dir.path().join("mirror");
        let text = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<head version=\"2.5\">\n<sersync>\n\
             <localpath watch=\"{src}\"><remote path=\"{mirror}\"/></localpath>\n\
             <failLog path=\"{journal}\" timeToExecute=\"0.05\"/>\n\
             <plugin start=\"true\" name=\"refreshCDN\"/>\n</sersync>\n\
             <plugin name=\"refreshCDN\"><localpath watch=\"{src}\">\n{cdninfo}\n\
             <sendurl base=\"http://pic.example.com/cms\"/>\n</localpath></plugin>\n</head>\n",
            src = self.src.display(),
            mirror = mirror.display(),
            journal = self.journal.display(),
        );
        fs::write(&self.config, text).expect("write config");
    }

    fn chinacache(&self, port: u16) -> String {
        format!(
            "<cdninfo domainname=\"127.0.0.1\" port=\"{port}\" username=\"bob\" passwd=\"{PASSWORD}\"/>"
        )
    }

    fn cloudflare(&self, port: u16) -> String {
        format!(
            "<cdninfo provider=\"cloudflare\" zone=\"zone9\" endpoint=\"http://127.0.0.1:{port}\" tokenfile=\"{}\"/>",
            self.token.display()
        )
    }

    fn webhook(&self, port: u16) -> String {
        format!("<cdninfo provider=\"webhook\" url=\"http://127.0.0.1:{port}/hook/{HOOK_TOKEN}\"/>")
    }

    fn load(&self) -> Config {
        Config::load(&self.config).expect("config loads")
    }

    fn text(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }
}

#[test]
fn config_and_runtime_types_print_no_secret() {
    let files = Files::new();
    let secret = Secret::from(PASSWORD);
    assert_hidden("Secret {:?}", &format!("{secret:?}"));
    assert_hidden("Secret {}", &format!("{secret}"));
    for cdninfo in [files.chinacache(9), files.cloudflare(9), files.webhook(9)] {
        files.write_config(&cdninfo);
        let config = files.load();
        let cdn = config.cdn.clone().expect("refreshCDN section");
        assert_hidden("Config {:?}", &format!("{config:?}"));
        assert_hidden("Config {:#?}", &format!("{config:#?}"));
        assert_hidden("CdnConfig {:?}", &format!("{cdn:?}"));
        for remote in config.roots.iter().flat_map(|r| &r.remotes) {
            assert_hidden("Remote {}", &format!("{remote} {remote:?}"));
        }
        let provider = Provider::from_config(&cdn).expect("provider");
        assert_hidden("Provider {:?}", &format!("{provider:?}"));
        // --check prints the whole configuration.
        let output = Command::new(BIN)
            .arg("-o")
            .arg(&files.config)
            .arg("--check")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run --check");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{printed}");
        assert!(printed.contains("refreshCDN"), "{printed}");
        assert_hidden("--check", &printed);
        if let CdnApi::ChinaCache(account) = &cdn.api {
            // The one place the password is put into a message: the masked form for logs.
            let item = PurgeItem {
                rel: PathBuf::from("a.jpg"),
                is_dir: false,
                url: "http://pic.example.com/cms/a.jpg".into(),
            };
            let message = chinacache::message(account, &[item]);
            assert!(message.contains(PASSWORD), "the request carries it");
            assert_hidden("masked message", &chinacache::masked(&message));
        }
    }
}

#[test]
fn a_debug_level_run_through_cdn_purges_logs_no_secret() {
    let chinacache = |_: &_, n: usize| {
        // The first answer refuses, so the failure path (warning, journal) runs too.
        let verdict = if n == 0 { "failed" } else { "succeed" };
        format!("HTTP/1.0 200 OK\r\nwhatsup: content=\"{verdict}\"\r\n\r\n")
    };
    let json = |_: &_, n: usize| {
        if n == 0 {
            answer("503 Service Unavailable", "", "{\"success\":false}")
        } else {
            answer(
                "200 OK",
                "Content-Type: application/json\r\n",
                "{\"success\":true}",
            )
        }
    };
    let servers = [
        ("chinacache", RecordingServer::start(chinacache), PASSWORD),
        ("cloudflare", RecordingServer::start(json), TOKEN),
        ("webhook", RecordingServer::start(json), HOOK_TOKEN),
    ];
    for (name, server, secret) in &servers {
        let files = Files::new();
        let cdninfo = match *name {
            "chinacache" => files.chinacache(server.port),
            "cloudflare" => files.cloudflare(server.port),
            _ => files.webhook(server.port),
        };
        files.write_config(&cdninfo);
        let stderr = files.dir.path().join("err.txt");
        let mut child = Running(
            Command::new(BIN)
                .arg("-o")
                .arg(&files.config)
                .arg("--logfile")
                .arg(&files.log)
                .env("RUST_LOG", "debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&stderr).expect("err.txt"))
                .spawn()
                .expect("spawn sersync"),
        );
        wait_until(&format!("{name}: sersync running"), LIMIT, || {
            Files::text(&files.log).contains(" running (pid ")
        });
        fs::write(files.src.join("a.jpg"), "a").expect("write a.jpg");
        wait_until(&format!("{name}: refused purge then resent"), LIMIT, || {
            server.requests().len() >= 2
        });
        wait_until(&format!("{name}: journal drained"), LIMIT, || {
            !Files::text(&files.journal).contains("a.jpg")
        });
        let sent = format!("{:?}", server.requests());
        assert!(
            sent.contains(secret),
            "{name}: the request carries the secret: {sent}"
        );
        signal(child.pid(), "TERM");
        assert_eq!(child.wait_exit(), 0, "{name}: {}", Files::text(&stderr));
        assert!(!is_alive(child.pid()));
        let log = format!("{}{}", Files::text(&files.log), Files::text(&stderr));
        assert!(
            log.contains("DEBUG"),
            "{name}: not a debug-level log:\n{log}"
        );
        assert!(
            log.contains("refreshCDN"),
            "{name}: no CDN activity logged:\n{log}"
        );
        assert_hidden(&format!("{name} log"), &log);
        assert_hidden(&format!("{name} journal"), &Files::text(&files.journal));
    }
}
