//! The `http` plugin: POSTs each delivered change of its root as a form, in the format
//! sersync 2.0–2.1 had (2.5 compiled it out):
//!
//! ```text
//! POST <deshost url>
//! Content-Type: application/x-www-form-urlencoded
//!
//! watchroot=<root>&isdir=0|1&inotifyPath=<absolute path>&mask=<decimal inotify mask>
//! ```
//! Values are form-encoded (space as `+`, other bytes outside `A-Za-z0-9*-._` as `%XX`,
//! so non-UTF-8 paths survive). One request per change, in order, on the `sersync-http`
//! thread, each with a [`TIMEOUT`]; a failed request (network error or non-2xx status)
//! is logged at `warn` and counted in `plugin_failures`, not retried.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use ureq::Agent;

use crate::config::HttpPluginConfig;
use crate::job::Delivered;
use crate::metrics::Metrics;
use crate::paths::abs_path;
use crate::plugin::{PluginError, named_thread};
use crate::urlencode::form_encode;

/// Per-request timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The form body for one change.
pub fn body(root: &Path, abs: &Path, is_dir: bool, mask: u32) -> String {
    format!(
        "watchroot={}&isdir={}&inotifyPath={}&mask={mask}",
        form_encode(root.as_os_str().as_bytes()),
        u8::from(is_dir),
        form_encode(abs.as_os_str().as_bytes()),
    )
}

/// POSTs one form; `Err` carries a message for the log.
fn post(agent: &Agent, url: &str, body: &str) -> Result<(), String> {
    let response = agent
        .post(url)
        .content_type("application/x-www-form-urlencoded")
        .send(body)
        .map_err(|err| err.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP status {}", status.as_u16()))
    }
}

/// Starts the `sersync-http` thread for root `root` (at `root_path`).
///
/// # Errors
/// [`PluginError::Thread`] when the thread cannot start.
pub fn spawn(
    config: &HttpPluginConfig,
    root: usize,
    root_path: PathBuf,
    delivered_rx: Receiver<Delivered>,
    metrics: &Arc<Metrics>,
) -> Result<JoinHandle<()>, PluginError> {
    let url = config.url.clone();
    let watchroot = config.root.clone();
    let metrics = Arc::clone(metrics);
    let agent_config = Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .user_agent(concat!("sersync/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = Agent::new_with_config(agent_config);
    named_thread("sersync-http", move || {
        for delivered in delivered_rx {
            if delivered.root != root {
                continue;
            }
            let abs = abs_path(&root_path, &delivered.rel);
            let form = body(&watchroot, &abs, delivered.is_dir, delivered.mask);
            log::debug!("{}: http plugin POST", abs.display());
            if let Err(err) = post(&agent, &url, &form) {
                Metrics::incr(&metrics.plugin_failures);
                log::warn!("{}: http plugin: {err}", abs.display());
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_original_form_encoded() {
        let abs = Path::new(std::ffi::OsStr::from_bytes(b"/srv/www/a b&c=\xff"));
        assert_eq!(
            body(Path::new("/srv/www"), abs, false, 8),
            "watchroot=%2Fsrv%2Fwww&isdir=0&inotifyPath=%2Fsrv%2Fwww%2Fa+b%26c%3D%FF&mask=8"
        );
        assert!(body(Path::new("/r"), Path::new("/r/d"), true, 1_073_742_080).contains("isdir=1"));
    }
}
