//! sersync: mirror directory trees to rsync daemons, ssh hosts and local directories in
//! real time; a drop-in successor to the C++ sersync 2.5.
//!
//! The pipeline, in reading order (see `ARCHITECTURE.md`):
//! `watch` (inotify) → `filter` → `coalesce` (per-path merge, scheduling) → `push`
//! (rsync worker pool) → `faillog` (durable journal, retries) → `cdn` / `plugin`.
//! `daemon` and `status` make it a service; `pipeline` wires the stages together.

pub mod cli;
pub mod config;
pub mod job;
pub mod filter;
pub mod watch;
pub mod coalesce;
pub mod push;
pub mod faillog;
pub mod cdn;
pub mod plugin;
pub mod metrics;
pub mod status;
pub mod daemon;
pub mod pipeline;

pub use config::Config;
pub use pipeline::Pipeline;
