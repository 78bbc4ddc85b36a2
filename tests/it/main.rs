//! Integration tests: one binary, one module per area.

mod churn;
mod cli;
mod config;
mod engine;
mod sync;
mod util;
