//! The journal key of a remote. A leaf (it imports only `config`), so that `status`
//! and `pipeline` can both name it without importing each other.

use std::path::Path;

use crate::config::Remote;

/// The journal key of a remote: stable across restarts and config edits.
pub fn target_key(root: &Path, remote: &Remote) -> String {
    format!("{} -> {remote}", root.display())
}
