//! sersync: mirror directory trees to rsync daemons, ssh hosts and local directories in
//! real time; a drop-in successor to the C++ sersync 2.5.
//!
//! The pipeline, in reading order (see `ARCHITECTURE.md`):
//! `watch` (inotify) → `filter` → `coalesce` (per-path merge, scheduling) → `push`
//! (rsync worker pool) → `faillog` (durable journal, retries) → `cdn` / `plugin`.
//! `daemon` and `status` make it a service; `pipeline` wires the stages together.

pub mod cdn;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod daemon;
pub mod faillog;
pub mod filter;
pub mod job;
pub mod journal_key;
pub mod logger;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod push;
pub mod status;
pub mod watch;

pub use config::Config;
pub use pipeline::Pipeline;
