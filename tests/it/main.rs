//! Integration tests: one binary, one module per area.
mod cdn;
mod plugin;
mod util_http;
mod util_varnish;
