//! TODO: confxml.xml parser.
use super::{Config, Problem};
use std::path::Path;
/// Parses the bytes of a configuration file.
///
/// # Errors
/// Every problem found, in file order.
pub fn parse(_bytes: &[u8], _path: &Path) -> Result<Config, Vec<Problem>> {
    Err(vec![Problem {
        line: 1,
        col: 1,
        message: "not implemented".into(),
    }])
}
