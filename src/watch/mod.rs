//! Stand-in for the inotify stage (being written on its own branch); same signatures.
#![allow(missing_docs, clippy::needless_pass_by_value)]

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::config::InotifyToggles;
use crate::filter::Filter;
use crate::job::FsEvent;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch stub")]
    Stub,
}

pub struct WatchOptions {
    pub toggles: InotifyToggles,
    pub debug: bool,
}

pub struct Watcher {
    _event_tx: Sender<FsEvent>,
}

pub fn spawn(
    _roots: Vec<PathBuf>,
    _options: WatchOptions,
    _filter: Arc<Filter>,
    event_tx: Sender<FsEvent>,
    _metrics: Arc<Metrics>,
) -> Result<Watcher, WatchError> {
    Ok(Watcher {
        _event_tx: event_tx,
    })
}

impl Watcher {
    pub fn stop(self) -> Result<(), WatchError> {
        Ok(())
    }
    pub fn watch_count(&self) -> usize {
        0
    }
}
