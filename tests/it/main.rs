//! Integration tests: one binary, one module per area.

mod cdn;
mod churn;
mod cli;
mod config;
mod delivery;
mod engine;
mod journal;
mod plugin;
mod reliability;
mod scenarios_sched;
mod service;
mod sync;
mod util;
mod util_http;
mod util_varnish;
mod watch;
