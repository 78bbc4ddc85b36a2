//! The system calls of the fanotify backend that have no safe wrapper in rustix or std:
//! every `unsafe` of the backend is here, each next to why it holds.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `fanotify_init(flags, event_f_flags)`.
pub(super) fn fanotify_init(
    flags: libc::c_uint,
    event_f_flags: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe { libc::fanotify_init(flags, event_f_flags as libc::c_uint) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `fanotify_mark(group, flags, mask, AT_FDCWD, path)`.
pub(super) fn fanotify_mark(
    group: &OwnedFd,
    flags: libc::c_uint,
    mask: u64,
    path: &std::path::Path,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid descriptor and a NUL-terminated path; the result is checked.
    let marked = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            flags,
            mask,
            libc::AT_FDCWD,
            path.as_ptr(),
        )
    };
    if marked < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The filesystem id the kernel reports in events (`statfs`'s `f_fsid`), as bytes.
pub(super) fn fsid_of(fd: &OwnedFd) -> io::Result<[u8; 8]> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` is valid for writing a `struct statfs`; the result is checked.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fstatfs` succeeded, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    // SAFETY: `fsid_t` is two `int`s (its fields are private in libc): 8 plain bytes.
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, [u8; 8]>(st.f_fsid) })
}

/// One `read` of the group into `buffer`: `Ok(None)` when it would block.
pub(super) fn read<'a>(group: &OwnedFd, buffer: &'a mut [u64]) -> io::Result<Option<&'a [u8]>> {
    loop {
        // SAFETY: the buffer is valid for its length in bytes, and u64-aligned as
        // `fanotify_event_metadata` wants.
        let n = unsafe {
            libc::read(
                group.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                std::mem::size_of_val(buffer),
            )
        };
        if let Ok(len) = usize::try_from(n) {
            let len = len.min(std::mem::size_of_val(buffer));
            // SAFETY: u8 has no alignment or validity requirements, and the first
            // `len` bytes were written by the kernel.
            let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), len) };
            return Ok(Some(bytes));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// `open_by_handle_at(mount, handle, O_PATH)`; `handle` is a whole `struct file_handle`.
pub(super) fn open_by_handle(mount: &OwnedFd, handle: &[u8]) -> io::Result<OwnedFd> {
    // `struct file_handle` is `u32`-aligned; the record's bytes need not be.
    let mut aligned = vec![0u32; handle.len().div_ceil(4)];
    for (word, chunk) in aligned.iter_mut().zip(handle.chunks(4)) {
        let mut bytes = [0u8; 4];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_ne_bytes(bytes);
    }
    // SAFETY: `aligned` holds a complete `struct file_handle` (its `handle_bytes` was
    // checked against the record's length when decoding) and outlives the call.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            aligned.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned to us and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `MAX_HANDLE_SZ`.
const MAX_HANDLE_SZ: usize = libc::MAX_HANDLE_SZ as usize;

/// The `struct file_handle` of `path` (not following a final symlink), as bytes, and
/// the id of the mount it was reached through.
pub(super) fn handle_of(path: &std::path::Path) -> io::Result<(Vec<u8>, libc::c_int)> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut last = io::Error::from(io::ErrorKind::InvalidInput);
    // `AT_HANDLE_FID` (Linux 6.5) asks for the handle fanotify reports; older kernels
    // refuse it, and then the plain one is it (on the filesystems that had FIDs then).
    for flags in [libc::AT_HANDLE_FID, 0] {
        // Header (`handle_bytes`, `handle_type`) then the handle, u32-aligned.
        let mut buf = vec![0u32; 2 + MAX_HANDLE_SZ / 4];
        buf[0] = MAX_HANDLE_SZ as u32;
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `buf` is a `struct file_handle` with room for `MAX_HANDLE_SZ` bytes,
        // `path` is NUL-terminated, `mount_id` is writable; the result is checked.
        let done = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                path.as_ptr(),
                buf.as_mut_ptr().cast::<libc::file_handle>(),
                &mut mount_id,
                flags,
            )
        };
        if done == 0 {
            let len = 8 + (buf[0] as usize).min(MAX_HANDLE_SZ);
            let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect();
            return Ok((bytes, mount_id));
        }
        last = io::Error::last_os_error();
    }
    Err(last)
}
