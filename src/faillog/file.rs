//! Opening and creating the journal's files safely: private modes whatever the umask,
//! no symbolic links followed, nothing another user could have written accepted.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{FailLogError, format, io_error, unsafe_path};

/// The directory holding `path` (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The effective uid, from `/proc/self/status` (`geteuid` would need `unsafe`).
pub(super) fn effective_uid() -> Result<u32, FailLogError> {
    let status_path = Path::new("/proc/self/status");
    let status =
        fs::read_to_string(status_path).map_err(|source| io_error(status_path, "read", source))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| {
            io_error(
                status_path,
                "find the effective uid",
                io::Error::from(io::ErrorKind::InvalidData),
            )
        })
}

/// Creates `dir` and its missing parents with mode 0700, fsyncing each new entry.
pub(super) fn create_private_dirs(dir: &Path) -> Result<(), FailLogError> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(current) = cursor {
        if current.as_os_str().is_empty() || fs::symlink_metadata(current).is_ok() {
            break;
        }
        missing.push(current);
        cursor = current.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| io_error(dir, "create directory", source))?;
    // From the outermost down; the umask may have taken bits from 0700.
    for created in missing.iter().rev() {
        fs::set_permissions(created, fs::Permissions::from_mode(0o700))
            .map_err(|source| io_error(created, "set mode 0700 on", source))?;
        fsync_dir(parent_dir(created))?;
    }
    Ok(())
}

/// Refuses a directory where anyone may replace the journal.
pub(super) fn check_dir(dir: &Path) -> Result<(), FailLogError> {
    let meta = fs::metadata(dir).map_err(|source| io_error(dir, "stat", source))?;
    if !meta.is_dir() {
        return Err(unsafe_path(dir, "not a directory".to_owned()));
    }
    let mode = meta.mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(unsafe_path(
            dir,
            format!(
                "directory is writable by everyone and not sticky (mode {:04o}); \
                 put the journal in a private directory such as /var/lib/sersync",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Opens the journal without following a symbolic link, or creates it. True if created.
pub(super) fn open_or_create(path: &Path, euid: u32) -> Result<(File, bool), FailLogError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => check_file(path, &meta, euid)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let mut file = create_private_file(path)?;
            file.write_all(&format::header_block())
                .and_then(|()| file.sync_all())
                // Appends always go to the end; this only moves where reading starts.
                .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
                .map_err(|source| io_error(path, "write and fsync", source))?;
            return Ok((file, true));
        }
        Err(source) => return Err(io_error(path, "stat", source)),
    }
    let file = reopen(path)?;
    // Checked again on the open file, in case the path was replaced in between.
    let meta = file
        .metadata()
        .map_err(|source| io_error(path, "stat", source))?;
    check_file(path, &meta, euid)?;
    if meta.mode() & 0o7777 != 0o600 {
        log::warn!(
            "{}: mode was {:04o}, setting it to 0600",
            path.display(),
            meta.mode() & 0o7777
        );
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|source| io_error(path, "set mode 0600 on", source))?;
    }
    Ok((file, false))
}

/// Opens an existing journal for reading and appending, refusing a symbolic link.
fn reopen(path: &Path) -> Result<File, FailLogError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => unsafe_path(path, "is a symbolic link".to_owned()),
            _ => io_error(path, "open", source),
        })
}

/// Refuses what another user could have written: a link, a non-regular file, a file of
/// another owner than `euid`, or one writable by group or others.
pub(super) fn check_file(path: &Path, meta: &fs::Metadata, euid: u32) -> Result<(), FailLogError> {
    let file_type = meta.file_type();
    let mode = meta.mode() & 0o7777;
    let reason = if file_type.is_symlink() {
        "is a symbolic link; give the real path in <failLog path>".to_owned()
    } else if !file_type.is_file() {
        "is not a regular file".to_owned()
    } else if meta.uid() != euid {
        format!(
            "is owned by uid {}, but sersync runs as uid {euid}; check its contents, then \
             remove it or chown it",
            meta.uid()
        )
    } else if mode & 0o022 != 0 {
        format!(
            "is writable by group or others (mode {mode:04o}); check its contents, then \
             `chmod 600` it or remove it"
        )
    } else {
        return Ok(());
    };
    Err(unsafe_path(path, reason))
}

/// Creates a new file with mode 0600 whatever the umask, never through a symbolic link
/// (`O_CREAT | O_EXCL`), opened for reading and appending.
pub(super) fn create_private_file(path: &Path) -> Result<File, FailLogError> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| io_error(path, "create", source))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|source| io_error(path, "set mode 0600 on", source))?;
    Ok(file)
}

/// Removes `<path>.tmp` left by an interrupted compaction (never following a link).
pub(super) fn remove_leftover(tmp_path: &Path) -> Result<(), FailLogError> {
    match fs::symlink_metadata(tmp_path) {
        Ok(meta) => {
            if meta.is_file() {
                log::warn!(
                    "{}: removing a leftover of an interrupted compaction",
                    tmp_path.display()
                );
            }
            fs::remove_file(tmp_path).map_err(|source| io_error(tmp_path, "remove", source))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error(tmp_path, "stat", source)),
    }
}

/// Makes the directory's entries (a created or renamed file) durable.
pub(super) fn fsync_dir(dir: &Path) -> Result<(), FailLogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io_error(dir, "fsync directory", source))
}
