//! Writing the journal: appending records with fsync, and compaction.

use std::fs;
use std::io::Write;
use std::sync::Arc;

use super::file::parent_dir;
use super::{COMPACT_MIN_DEAD, FailLog, FailLogError, State, describe, file, format, io_error};

impl FailLog {
    /// Appends `buf` (complete lines) and fsyncs. On error the file is cut back to its
    /// previous length, so that no partial line is left for the next record to join.
    pub(super) fn append(&self, state: &mut State, buf: &[u8]) -> Result<(), FailLogError> {
        if state.damaged {
            self.compact(state)?;
        }
        let written = state
            .file
            .write_all(buf)
            .and_then(|()| state.file.sync_data());
        match written {
            Ok(()) => {
                state.file_len += u64::try_from(buf.len()).unwrap_or(u64::MAX);
                Ok(())
            }
            Err(source) => {
                if let Err(err) = state.file.set_len(state.file_len) {
                    log::error!(
                        "{}: cannot cut off a failed write: {err}; will rewrite the journal",
                        self.path.display()
                    );
                    state.damaged = true;
                }
                Err(io_error(&self.path, "write and fsync", source))
            }
        }
    }

    /// Compacts if dead records outnumber live ones (by [`COMPACT_MIN_DEAD`] at least) or
    /// none is live. A failure only delays compaction: the journal is still correct.
    pub(super) fn maybe_compact(&self, state: &mut State) {
        let live = state.entries.len();
        let dead = state.records.saturating_sub(live);
        let due = (dead > live && dead >= COMPACT_MIN_DEAD) || (live == 0 && dead > 0);
        if !due || state.records < state.compact_retry_at {
            return;
        }
        if let Err(err) = self.compact(state) {
            log::warn!("{}; compaction postponed", describe(&err));
            state.compact_retry_at = state.records + COMPACT_MIN_DEAD;
        }
    }

    /// Rewrites the journal with only its live entries: `<path>.tmp` (0600), fsync,
    /// rename over the journal, fsync the directory; then appends go to the new file.
    pub(super) fn compact(&self, state: &mut State) -> Result<(), FailLogError> {
        let mut buf = format::header_block();
        let mut current_command: Option<Arc<str>> = None;
        for entry in state.entries.snapshot(None) {
            if current_command.as_deref() != Some(&*entry.command) {
                if entry.command.is_empty() {
                    buf.extend_from_slice(format::NO_COMMAND.as_bytes());
                    buf.push(b'\n');
                } else {
                    format::write_command(&mut buf, &entry.command);
                }
                current_command = Some(Arc::clone(&entry.command));
            }
            format::write_failed(&mut buf, &entry);
        }

        file::remove_leftover(&self.tmp_path)?;
        let mut tmp = file::create_private_file(&self.tmp_path)?;
        if let Err(source) = tmp.write_all(&buf).and_then(|()| tmp.sync_all()) {
            let _ = fs::remove_file(&self.tmp_path);
            return Err(io_error(&self.tmp_path, "write and fsync", source));
        }
        if let Err(source) = fs::rename(&self.tmp_path, &self.path) {
            let _ = fs::remove_file(&self.tmp_path);
            return Err(io_error(
                &self.path,
                "replace by its compacted copy",
                source,
            ));
        }
        // The old handle now refers to the replaced file: switch before anything else
        // can fail.
        let before = state.file_len;
        state.file = tmp;
        state.file_len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        state.records = state.entries.len();
        state.damaged = false;
        state.compact_retry_at = 0;
        log::debug!(
            "{}: compacted from {before} to {} bytes, {} entries",
            self.path.display(),
            state.file_len,
            state.entries.len()
        );
        if let Err(err) = file::fsync_dir(parent_dir(&self.path)) {
            // Either file is a valid journal with the same live entries, so the rename
            // may be lost in a crash without harm.
            log::warn!("{}", describe(&err));
        }
        Ok(())
    }
}
