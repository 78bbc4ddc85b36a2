//! The `sersync` binary: see the library crate.
fn main() {}
