//! Plugins: what runs after a change reached every remote of its root.
//!
//! Input: `Receiver<Delivered>` from the engine (or, with `-m NAME`, built directly from
//! watch events). Output: the enabled plugins' side effects. Threads:
//! - `sersync-plugin` reads the input and hands a copy to each enabled plugin through an
//!   unbounded queue, so a slow plugin never backs up into the engine;
//! - `sersync-command-{i}` × `concurrency` ([`command`]): every root, include-filtered;
//! - `sersync-socket` ([`socket`]) and `sersync-http` ([`http`]): the root equal to
//!   their `localpath watch`;
//! - `sersync-cdn` ([`crate::cdn`]): the root equal to the refreshCDN `localpath`.
//!
//! Everything ends when the input is disconnected and each plugin has handled what it
//! had queued; [`PluginStage::join`] waits for that.
//!
//! Unlike sersync 2.5 each plugin has its own state on its own threads (no shared
//! object called from every worker, bug B16), and a plugin's `localpath` selects a
//! root instead of replacing the watch root (bug B13).

pub mod command;
pub mod http;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::cdn::{self, CdnError, PurgeJournal};
use crate::config::{Config, Plugin};
use crate::job::Delivered;
use crate::metrics::Metrics;

/// Queue length at which (and at each multiple of which) a lagging plugin is reported.
pub const BACKLOG_WARNING: usize = 10_000;

/// Why the plugin stage cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The refreshCDN stage cannot start.
    #[error(transparent)]
    Cdn(#[from] CdnError),
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The running plugins. Ends by disconnection of the input; see [`PluginStage::join`].
#[derive(Debug)]
pub struct PluginStage {
    /// Dispatcher first, then the plugins: the order in which they finish.
    threads: Vec<JoinHandle<()>>,
}

impl PluginStage {
    /// Waits until the input is disconnected and every plugin has handled (or
    /// journaled) what it had. A plugin thread that panicked is logged.
    pub fn join(self) {
        for thread in self.threads {
            let name = thread.thread().name().unwrap_or("plugin").to_owned();
            if thread.join().is_err() {
                log::error!("{name}: thread panicked");
            }
        }
    }
}

/// Starts `config.running` (the plugins validation resolved, each with its section and
/// root) on the events of `delivered_rx`. Failed purges go to `journal`.
///
/// # Errors
/// [`PluginError`] when the command prefix is empty, the CDN provider cannot start (a
/// token file it cannot read), or a thread cannot start. Nothing keeps running then:
/// threads already started end as their queues are dropped.
pub fn spawn(
    config: &Config,
    delivered_rx: Receiver<Delivered>,
    journal: Arc<dyn PurgeJournal>,
    metrics: Arc<Metrics>,
) -> Result<PluginStage, PluginError> {
    let roots: Vec<PathBuf> = config.roots.iter().map(|root| root.path.clone()).collect();
    let mut sinks: Vec<(&'static str, Sender<Delivered>)> = Vec::new();
    let mut threads = Vec::new();
    for plugin in &config.running {
        let (tx, rx) = crossbeam_channel::unbounded();
        match plugin {
            Plugin::Command(section) => {
                threads.extend(command::spawn(section, roots.clone(), &rx, &metrics)?);
            }
            Plugin::Socket { root, section } => {
                let path = section.root.clone();
                threads.push(socket::spawn(section, *root, path, rx, &metrics)?);
            }
            Plugin::Http { root, section } => {
                let path = section.root.clone();
                threads.push(http::spawn(section, *root, path, rx, &metrics)?);
            }
            Plugin::RefreshCdn { root, section } => {
                threads.push(cdn::spawn(
                    section,
                    *root,
                    config.fail_log.retry_max,
                    rx,
                    Arc::clone(&journal),
                    Arc::clone(&metrics),
                )?);
            }
        }
        sinks.push((plugin.kind().name(), tx));
    }
    let dispatcher = named_thread("sersync-plugin", move || dispatch(&delivered_rx, &sinks))?;
    threads.insert(0, dispatcher);
    Ok(PluginStage { threads })
}

/// Copies every input event to every plugin queue.
fn dispatch(delivered_rx: &Receiver<Delivered>, sinks: &[(&'static str, Sender<Delivered>)]) {
    for delivered in delivered_rx {
        for (name, sink) in sinks {
            if sink.send(delivered.clone()).is_err() {
                log::error!("{name}: plugin stopped, event dropped");
                continue;
            }
            let backlog = sink.len();
            if backlog > 0 && backlog % BACKLOG_WARNING == 0 {
                log::warn!("{name}: {backlog} events waiting, the plugin is falling behind");
            }
        }
    }
}

/// Starts a named thread.
pub(crate) fn named_thread(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, PluginError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|source| PluginError::Thread {
            name: name.to_owned(),
            source,
        })
}
