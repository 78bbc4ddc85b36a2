//! Decoding what `read(2)` returns from a fanotify group made with
//! `FAN_REPORT_DFID_NAME`: pure, over bytes, so that the layout is pinned by tests.
//!
//! Each event is a `fanotify_event_metadata` (24 bytes: `event_len`, `vers`,
//! `metadata_len`, the 64-bit mask, `fd` = `FAN_NOFD`, `pid`) followed by information
//! records, each a 4-byte header (`info_type`, pad, `len` covering the whole record)
//! then the filesystem id (8 bytes), a `struct file_handle` (`handle_bytes`,
//! `handle_type`, the handle) and, for the `*_DFID_NAME` types, the entry's name with its
//! NUL, padded to 4 bytes. An event on a name carries one `DFID_NAME` record (the
//! directory holding it); `FAN_RENAME` carries `OLD_DFID_NAME` and `NEW_DFID_NAME`; a
//! queue overflow carries none.

/// Length of `fanotify_event_metadata`.
const METADATA_LEN: usize = 24;
/// The metadata version this code reads (`FANOTIFY_METADATA_VERSION`).
pub(crate) const METADATA_VERSION: u8 = 3;
/// Header (4) and filesystem id (8) before the `file_handle` in a record.
const FSID_END: usize = 12;
/// `handle_bytes` and `handle_type` before the handle's own bytes.
const HANDLE_HEADER: usize = 8;

/// A directory as the kernel names it: filesystem id then `struct file_handle`
/// (`handle_bytes`, `handle_type`, the handle), as they lie in the record, which is
/// what identifies it on this machine (the resolver's cache key, no copy needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirId<'a> {
    pub(crate) key: &'a [u8],
}

impl<'a> DirId<'a> {
    /// The filesystem id: which mount to open the handle through.
    pub(crate) fn fsid(&self) -> [u8; 8] {
        let mut fsid = [0; 8];
        fsid.copy_from_slice(&self.key[..8]);
        fsid
    }

    /// The `struct file_handle` that `open_by_handle_at` takes.
    pub(crate) fn handle(&self) -> &'a [u8] {
        &self.key[8..]
    }
}

/// A name in a directory (`.` or no name: the directory itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Named<'a> {
    pub(crate) dir: DirId<'a>,
    pub(crate) name: &'a [u8],
}

/// One decoded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// `FAN_Q_OVERFLOW`: events were lost.
    Overflow,
    /// An event on one name (create, delete, close_write, modify, attrib).
    Entry { mask: u64, at: Named<'a> },
    /// `FAN_RENAME`: `from` became `to` in one `rename(2)`.
    Rename {
        mask: u64,
        from: Named<'a>,
        to: Named<'a>,
    },
    /// An event without the records its mask needs (not expected from the kernel;
    /// skipped with a debug log).
    Incomplete { mask: u64 },
}

/// The buffer does not hold what the kernel writes (a truncated or corrupt read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed fanotify event at byte {offset}: {why}")]
pub(crate) struct Malformed {
    pub(crate) offset: usize,
    pub(crate) why: &'static str,
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes every event in `buf` (what one `read` returned), in order.
pub(crate) fn parse(buf: &[u8]) -> Result<Vec<Record<'_>>, Malformed> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let bad = |why| Malformed { offset, why };
        let event_len = u32_at(buf, offset).ok_or(bad("short metadata"))? as usize;
        let version = *buf.get(offset + 4).ok_or(bad("short metadata"))?;
        let metadata_len = u16_at(buf, offset + 6).ok_or(bad("short metadata"))? as usize;
        let mask = u64_at(buf, offset + 8).ok_or(bad("short metadata"))?;
        if version != METADATA_VERSION {
            return Err(bad("unknown metadata version"));
        }
        if event_len < METADATA_LEN
            || metadata_len < METADATA_LEN
            || metadata_len > event_len
            || offset + event_len > buf.len()
        {
            return Err(bad("event length out of bounds"));
        }
        let event = &buf[offset..offset + event_len];
        records
            .push(decode(mask, &event[metadata_len..]).map_err(|why| Malformed { offset, why })?);
        offset += event_len;
    }
    Ok(records)
}

fn decode(mask: u64, mut info: &[u8]) -> Result<Record<'_>, &'static str> {
    if mask & libc::FAN_Q_OVERFLOW != 0 {
        return Ok(Record::Overflow);
    }
    let (mut plain, mut old, mut new) = (None, None, None);
    while !info.is_empty() {
        let kind = *info.first().ok_or("short record header")?;
        let len = u16_at(info, 2).ok_or("short record header")? as usize;
        if len < FSID_END + HANDLE_HEADER || len > info.len() {
            return Err("record length out of bounds");
        }
        let record = &info[..len];
        info = &info[len..];
        let slot = match kind {
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME | libc::FAN_EVENT_INFO_TYPE_DFID => &mut plain,
            libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME => &mut old,
            libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => &mut new,
            _ => continue, // a record type we did not ask for
        };
        *slot = Some(named(record)?);
    }
    Ok(match (plain, old, new) {
        (_, Some(from), Some(to)) if mask & libc::FAN_RENAME != 0 => {
            Record::Rename { mask, from, to }
        }
        (Some(at), _, _) => Record::Entry { mask, at },
        _ => Record::Incomplete { mask },
    })
}

fn named(record: &[u8]) -> Result<Named<'_>, &'static str> {
    let handle_bytes = u32_at(record, FSID_END).ok_or("short file handle")? as usize;
    let handle_end = FSID_END + HANDLE_HEADER + handle_bytes;
    let key = record
        .get(4..handle_end)
        .ok_or("file handle longer than its record")?;
    let rest = &record[handle_end..];
    let name = match rest.iter().position(|&b| b == 0) {
        Some(nul) => &rest[..nul],
        None if rest.is_empty() => &rest[..0],
        None => return Err("name without its NUL"),
    };
    Ok(Named {
        dir: DirId { key },
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One information record as the kernel lays it out.
    fn record(kind: u8, fsid: [u8; 8], handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&fsid);
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes()); // handle_type
        body.extend_from_slice(handle);
        if let Some(name) = name {
            body.extend_from_slice(name);
            body.push(0);
        }
        while (body.len() + 4) % 4 != 0 {
            body.push(0);
        }
        let mut out = vec![kind, 0];
        out.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn event(mask: u64, records: &[Vec<u8>]) -> Vec<u8> {
        let info: Vec<u8> = records.concat();
        let mut out = Vec::new();
        out.extend_from_slice(&((METADATA_LEN + info.len()) as u32).to_ne_bytes());
        out.push(METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&libc::FAN_NOFD.to_ne_bytes());
        out.extend_from_slice(&42i32.to_ne_bytes());
        out.extend_from_slice(&info);
        out
    }

    const FSID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    /// The key of a directory: the filesystem id, then its `struct file_handle`.
    fn key_of(bytes: &[u8]) -> Vec<u8> {
        let mut h = FSID.to_vec();
        h.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
        h.extend_from_slice(&1i32.to_ne_bytes());
        h.extend_from_slice(bytes);
        h
    }

    #[test]
    fn events_decode_in_order_with_their_directory_and_name() {
        let create = event(
            libc::FAN_CREATE | libc::FAN_ONDIR,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                FSID,
                b"dirA1234",
                Some(b"new dir"),
            )],
        );
        let rename = event(
            libc::FAN_RENAME,
            &[
                record(
                    libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
                    FSID,
                    b"dirA1234",
                    Some(b"a"),
                ),
                record(
                    libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
                    FSID,
                    b"dirB",
                    Some(b"b\xff"),
                ),
            ],
        );
        let overflow = event(libc::FAN_Q_OVERFLOW, &[]);
        let buf = [create, rename, overflow].concat();
        let a = key_of(b"dirA1234");
        let b = key_of(b"dirB");
        let dir_a = DirId { key: &a };
        let dir_b = DirId { key: &b };
        assert_eq!(
            parse(&buf),
            Ok(vec![
                Record::Entry {
                    mask: libc::FAN_CREATE | libc::FAN_ONDIR,
                    at: Named {
                        dir: dir_a,
                        name: b"new dir"
                    },
                },
                Record::Rename {
                    mask: libc::FAN_RENAME,
                    from: Named {
                        dir: dir_a,
                        name: b"a"
                    },
                    to: Named {
                        dir: dir_b,
                        name: b"b\xff"
                    },
                },
                Record::Overflow,
            ])
        );
        assert_eq!(dir_a.fsid(), FSID);
        assert_eq!(
            dir_a.handle(),
            &a[8..],
            "handle_bytes, handle_type, the handle"
        );
        assert_eq!(dir_b.handle().len(), 4 + 4 + 4);
    }

    #[test]
    fn a_record_without_a_name_is_the_directory_itself_and_unknown_records_are_skipped() {
        let buf = event(
            libc::FAN_ATTRIB | libc::FAN_ONDIR,
            &[
                record(libc::FAN_EVENT_INFO_TYPE_FID, FSID, b"self", None),
                record(libc::FAN_EVENT_INFO_TYPE_DFID, FSID, b"self", None),
            ],
        );
        let h = key_of(b"self");
        assert_eq!(
            parse(&buf),
            Ok(vec![Record::Entry {
                mask: libc::FAN_ATTRIB | libc::FAN_ONDIR,
                at: Named {
                    dir: DirId { key: &h },
                    name: b""
                },
            }])
        );
        // A rename missing its new half is reported, not guessed at.
        let half = event(
            libc::FAN_RENAME,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
                FSID,
                b"d",
                Some(b"x"),
            )],
        );
        assert_eq!(
            parse(&half),
            Ok(vec![Record::Incomplete {
                mask: libc::FAN_RENAME
            }])
        );
    }

    #[test]
    fn truncated_or_corrupt_buffers_are_errors_not_panics() {
        let good = event(
            libc::FAN_CLOSE_WRITE,
            &[record(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                FSID,
                b"dir",
                Some(b"f"),
            )],
        );
        for cut in 1..good.len() {
            assert!(parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_version = good.clone();
        wrong_version[4] = 2;
        assert!(parse(&wrong_version).is_err());
        let mut long_handle = good.clone();
        // handle_bytes of the first record: metadata, header and fsid before it.
        long_handle[METADATA_LEN + FSID_END..METADATA_LEN + FSID_END + 4]
            .copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse(&long_handle).is_err());
        let mut no_nul = good.clone();
        let end = no_nul.len();
        for b in &mut no_nul[end - 4..] {
            *b = b'x';
        }
        assert!(parse(&no_nul).is_err());
        assert_eq!(parse(&[]), Ok(vec![]));
    }
}
