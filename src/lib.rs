//! sersync: mirror directory trees to rsync daemons, ssh hosts and local directories in
//! real time; a drop-in successor to the C++ sersync 2.5.
//!
//! The pipeline, in reading order (see `ARCHITECTURE.md`):
//! `watch` (inotify) → `filter` → `coalesce` (per-path merge, scheduling) → `push`
//! (rsync worker pool) → `faillog` (durable journal, retries) → `cdn` / `plugin`.
//! `daemon` and `status` make it a service; `pipeline` wires the stages together.
//! `argv`, `backoff`, `humanize`, `journal_key`, `paths`, `rel`, `secret` and `urlencode` are leaves every stage
//! may import; imports flow one way (`tests/it/imports.rs` fails on a cycle).

pub mod argv;
pub mod backoff;
pub mod cdn;
pub mod child;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod daemon;
pub mod faillog;
pub mod filter;
pub mod humanize;
pub mod job;
pub mod journal_key;
pub mod logger;
pub mod metrics;
pub mod paths;
pub mod pipeline;
pub mod plugin;
pub mod push;
pub mod rel;
pub mod secret;
pub mod status;
pub mod urlencode;
pub mod watch;

pub use config::Config;
pub use pipeline::Pipeline;
