//! Backoff between retries of a failing remote: the crate's one rule, in
//! [`crate::backoff`].

pub use crate::backoff::{backoff, backoff_with, unit_random};
