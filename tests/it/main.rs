//! Integration tests: one binary, one module per area.

mod churn;
mod engine;
mod sync;
mod util;
