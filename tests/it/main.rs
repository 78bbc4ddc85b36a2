//! Integration tests: one binary, one module per area.

mod churn;
mod cli;
mod config;
mod engine;
mod service;
mod sync;
mod util;
