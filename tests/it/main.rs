//! Integration tests: one binary, one module per area.

mod cdn;
mod churn;
mod cli;
mod config;
mod delivery;
mod engine;
mod imports;
mod journal;
mod moves;
mod plugin;
mod relay;
mod reliability;
mod scenarios_push;
mod scenarios_sched;
mod scenarios_watch;
mod secrets;
mod service;
mod share;
mod ssh;
mod sync;
mod util;
mod util_http;
mod util_varnish;
mod warm;
mod watch;
