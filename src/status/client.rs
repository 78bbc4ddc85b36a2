//! `sersync --status [-o FILE]`: ask the running daemon for `/status` and print it for a
//! human. The address comes from the file's `<host>`; when the file does not validate
//! (a watch directory gone, say), `<host>` alone is read from it.

use std::path::Path;
use std::time::Duration;

use crate::cli::{Cli, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{Config, ConfigError, HostConfig};
use crate::metrics::unix_now;

use super::report::{StatusReport, render_human};

/// How long the daemon may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `--status`; returns the exit code (0 shown, 1 unreachable or off, 2 bad file).
pub fn run(cli: &Cli) -> u8 {
    let host = match Config::load_with(&cli.config_path, &cli.parse_options()) {
        Ok(config) => config.host,
        Err(err @ ConfigError::Read { .. }) => {
            eprintln!("sersync: {err}");
            return EXIT_USAGE;
        }
        Err(ConfigError::Invalid { .. }) => match host_only(&cli.config_path) {
            Some(host) => host,
            None => {
                eprintln!(
                    "sersync: {}: not a valid configuration (see sersync --check -o {})",
                    cli.config_path.display(),
                    cli.config_path.display()
                );
                return EXIT_USAGE;
            }
        },
    };
    if !host.start {
        eprintln!(
            "sersync: {}: status is off; set <host hostip=\"127.0.0.1\" port=\"8008\" start=\"true\"/> and reload",
            cli.config_path.display()
        );
        return EXIT_FAILURE;
    }
    let url = status_url(&host);
    match fetch(&url) {
        Ok(report) => {
            print!("{}", render_human(&report, unix_now()));
            EXIT_OK
        }
        Err(err) => {
            eprintln!("sersync: {url}: {err} (is the daemon running?)");
            EXIT_FAILURE
        }
    }
}

/// `http://IP:PORT/status`; an unspecified listen address is asked on loopback.
pub fn status_url(host: &HostConfig) -> String {
    let ip = match host.ip.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        ip => ip,
    };
    if ip.contains(':') {
        format!("http://[{ip}]:{}/status", host.port)
    } else {
        format!("http://{ip}:{}/status", host.port)
    }
}

fn fetch(url: &str) -> Result<StatusReport, String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build(),
    );
    let mut response = agent.get(url).call().map_err(|err| err.to_string())?;
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|err| err.to_string())?;
    serde_json::from_str(&body).map_err(|err| format!("not a sersync status: {err}"))
}

/// `<host>` read on its own, with the same defaults as the full parser.
fn host_only(path: &Path) -> Option<HostConfig> {
    let text = std::fs::read_to_string(path).ok()?;
    let root = crate::config::tree::parse(&text).ok()?;
    let mut host = HostConfig {
        ip: "127.0.0.1".into(),
        port: 8008,
        start: false,
    };
    let node = root
        .node()
        .children()
        .find(|n| n.name().eq_ignore_ascii_case("host"))?;
    for attr in node.attributes() {
        match attr.name().to_ascii_lowercase().as_str() {
            "hostip" if attr.value().eq_ignore_ascii_case("localhost") => {
                host.ip = "127.0.0.1".into();
            }
            "hostip" => host.ip = attr.value().to_owned(),
            "port" => host.port = attr.value().trim().parse().ok()?,
            "start" => host.start = attr.value() == "true",
            _ => {}
        }
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_use_loopback_for_unspecified_addresses() {
        let host = |ip: &str| HostConfig {
            ip: ip.into(),
            port: 8008,
            start: true,
        };
        assert_eq!(
            status_url(&host("127.0.0.1")),
            "http://127.0.0.1:8008/status"
        );
        assert_eq!(status_url(&host("0.0.0.0")), "http://127.0.0.1:8008/status");
        assert_eq!(status_url(&host("::")), "http://[::1]:8008/status");
        assert_eq!(status_url(&host("10.0.0.1")), "http://10.0.0.1:8008/status");
    }

    #[test]
    fn host_is_read_from_an_invalid_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.xml");
        std::fs::write(
            &path,
            "<head><host hostip=\"localhost\" port=\"9100\" start=\"true\"/><sersync/></head>",
        )
        .expect("write");
        let host = host_only(&path).expect("host");
        assert_eq!(
            (host.ip.as_str(), host.port, host.start),
            ("127.0.0.1", 9100, true)
        );
    }
}
