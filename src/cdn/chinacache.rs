//! The legacy ChinaCache purge message, byte-compatible with sersync 2.5.
//!
//! ```text
//! HEAD /index.jsp?user=U&pswd=P&ok=ok&urls=URL1%0D%0AURL2 HTTP/1.0\r\n
//! Host: DOMAIN\r\n
//! \r\n
//! ```
//! sent over a fresh TCP connection to `domainname:port`; directories use `&dirs=` (one
//! request never mixes the two). Several URLs are joined by an encoded CRLF, as the API
//! documents. Since the server decodes the query, characters that would change its
//! meaning (`%`, `&`, `+`, `#`, space, controls, non-ASCII) are percent-encoded inside
//! each value; for ordinary URLs and credentials the message is the original's.
//!
//! Success: when the answer has a `whatsup` line, it decides (`whatsup: content="succeed"`
//! means done, anything else is a refusal, e.g. a quota); without one, an HTTP 2xx status
//! line counts as success. A 429 status asks for a delayed retry.
//!
//! The password is never logged: requests are logged through [`masked`].

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::cdn::provider::{PurgeError, PurgeItem, parse_retry_after, snippet};
use crate::config::ChinaCacheAccount;
use crate::urlencode::percent_encode_into;

/// The largest answer read; the status line and headers are all that matter.
const MAX_RESPONSE: usize = 16 * 1024;

/// Encodes one query value: printable ASCII stays, except the bytes the server would
/// read as syntax.
fn encode_value(out: &mut String, value: &[u8]) {
    percent_encode_into(out, value, |byte| {
        byte.is_ascii_graphic() && !matches!(byte, b'%' | b'&' | b'+' | b'#')
    });
}

/// The full request for one batch (all files or all directories).
pub fn message(account: &ChinaCacheAccount, batch: &[PurgeItem]) -> String {
    let mut msg = String::from("HEAD /index.jsp?user=");
    encode_value(&mut msg, account.username.as_bytes());
    msg.push_str("&pswd=");
    encode_value(&mut msg, account.password.expose().as_bytes());
    msg.push_str("&ok=ok");
    msg.push_str(if batch.first().is_some_and(|item| item.is_dir) {
        "&dirs="
    } else {
        "&urls="
    });
    for (idx, item) in batch.iter().enumerate() {
        if idx > 0 {
            msg.push_str("%0D%0A");
        }
        encode_value(&mut msg, item.url.as_bytes());
    }
    msg.push_str(" HTTP/1.0\r\nHost: ");
    msg.push_str(&account.endpoint.host);
    msg.push_str("\r\n\r\n");
    msg
}

/// `message` with the password value replaced by `***`, fit for a log line.
pub fn masked(message: &str) -> String {
    let Some(start) = message.find("&pswd=").map(|at| at + "&pswd=".len()) else {
        return message.to_owned();
    };
    let end = message[start..]
        .find(['&', ' '])
        .map_or(message.len(), |len| start + len);
    format!("{}***{}", &message[..start], &message[end..])
}

/// Reads the server's verdict from its raw answer.
///
/// # Errors
/// [`PurgeError::RateLimited`] on 429, [`PurgeError::Refused`] when `whatsup` is not
/// `succeed` (or a quota line is present), [`PurgeError::Status`] for a non-2xx status
/// without `whatsup`, [`PurgeError::Io`] for an empty or unreadable answer.
pub fn judge(endpoint: &str, response: &[u8]) -> Result<(), PurgeError> {
    let text = String::from_utf8_lossy(response);
    let mut lines = text.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: Option<u16> = status_line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok());
    let Some(status) = status else {
        return Err(PurgeError::Io {
            endpoint: endpoint.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP answer: {:?}", snippet(&text, 80)),
            ),
        });
    };
    let header = |name: &str| {
        text.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    };
    if status == 429 {
        return Err(PurgeError::RateLimited {
            endpoint: endpoint.to_owned(),
            retry_after: header("retry-after").and_then(parse_retry_after),
        });
    }
    if let Some(quota) = lines.clone().find(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("urlexceed") || lower.starts_with("direxceed")
    }) {
        return Err(PurgeError::Refused {
            endpoint: endpoint.to_owned(),
            reason: snippet(quota, 200),
        });
    }
    match lines.find(|line| line.to_ascii_lowercase().contains("whatsup")) {
        Some(line) if line.contains("succeed") => Ok(()),
        Some(line) => Err(PurgeError::Refused {
            endpoint: endpoint.to_owned(),
            reason: snippet(line, 200),
        }),
        None if (200..300).contains(&status) => Ok(()),
        None => Err(PurgeError::Status {
            endpoint: endpoint.to_owned(),
            status,
            body: snippet(status_line, 200),
        }),
    }
}

/// Sends one batch and waits for the verdict, all within `timeout` (connect, write
/// and read share that one budget, fresh for every request).
///
/// # Errors
/// See [`judge`]; [`PurgeError::Io`] when the endpoint is unreachable or slow.
pub fn send(
    account: &ChinaCacheAccount,
    timeout: Duration,
    batch: &[PurgeItem],
) -> Result<(), PurgeError> {
    let endpoint = account.endpoint.to_string();
    let request = message(account, batch);
    log::debug!("{endpoint}: {}", masked(&request).trim_end());
    let io_err = |source| PurgeError::Io {
        endpoint: endpoint.clone(),
        source,
    };
    let response = exchange(
        &account.endpoint.host,
        account.endpoint.port,
        request.as_bytes(),
        timeout,
    )
    .map_err(io_err)?;
    judge(&endpoint, &response)
}

/// Connects, writes `request`, and reads until the end of the headers or EOF.
fn exchange(host: &str, port: u16, request: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    };
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, remaining()?) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(err) => last_err = err,
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    stream.set_write_timeout(Some(remaining()?))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        stream.set_read_timeout(Some(remaining()?))?;
        let n = stream.read(&mut buf).map_err(|err| match err.kind() {
            // A read timeout shows as EAGAIN on Linux; say what it is.
            io::ErrorKind::WouldBlock => {
                io::Error::new(io::ErrorKind::TimedOut, "no answer in time")
            }
            _ => err,
        })?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.len() >= MAX_RESPONSE || response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    if response.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed without an answer",
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::HostPort;

    fn cdn() -> ChinaCacheAccount {
        ChinaCacheAccount {
            endpoint: HostPort {
                host: "ccms.chinacache.com".into(),
                port: 80,
            },
            username: "bob".into(),
            password: "s3cr&t".into(),
        }
    }

    fn item(url: &str, is_dir: bool) -> PurgeItem {
        PurgeItem {
            rel: PathBuf::new(),
            is_dir,
            url: url.into(),
        }
    }

    #[test]
    fn one_file_is_the_original_message() {
        let mut cdn = cdn();
        cdn.password = "pw".into();
        assert_eq!(
            message(&cdn, &[item("http://x/a.jpg", false)]),
            "HEAD /index.jsp?user=bob&pswd=pw&ok=ok&urls=http://x/a.jpg HTTP/1.0\r\n\
             Host: ccms.chinacache.com\r\n\r\n"
        );
    }

    #[test]
    fn several_dirs_are_joined_by_encoded_crlf_and_escaped() {
        let msg = message(
            &cdn(),
            &[item("http://x/a/", true), item("http://x/b%20c/", true)],
        );
        assert!(msg.starts_with(
            "HEAD /index.jsp?user=bob&pswd=s3cr%26t&ok=ok&dirs=http://x/a/%0D%0Ahttp://x/b%2520c/ HTTP/1.0\r\n"
        ));
    }

    #[test]
    fn masking_hides_the_password() {
        let msg = message(&cdn(), &[item("http://x/a.jpg", false)]);
        let shown = masked(&msg);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("user=bob&pswd=***&ok=ok&urls=http://x/a.jpg"));
    }

    #[test]
    fn whatsup_decides_then_status() {
        let ok = b"HTTP/1.1 200 OK\r\nwhatsup: content=\"succeed\"\r\n\r\n";
        assert!(judge("e", ok).is_ok());
        let refused = b"HTTP/1.1 200 OK\r\nwhatsup: content=\"failed\"\r\n\r\n";
        assert!(matches!(
            judge("e", refused),
            Err(PurgeError::Refused { .. })
        ));
        let quota = b"HTTP/1.1 200 OK\r\nurlexceed: 3000\r\nwhatsup: content=\"succeed\"\r\n\r\n";
        assert!(matches!(judge("e", quota), Err(PurgeError::Refused { .. })));
        assert!(judge("e", b"HTTP/1.0 200 OK\r\n\r\n").is_ok());
        assert!(matches!(
            judge("e", b"HTTP/1.0 403 Forbidden\r\n\r\n"),
            Err(PurgeError::Status { status: 403, .. })
        ));
        assert!(matches!(
            judge("e", b"HTTP/1.0 429 Too Many\r\nRetry-After: 2\r\n\r\n"),
            Err(PurgeError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(2)
        ));
        assert!(matches!(judge("e", b"garbage"), Err(PurgeError::Io { .. })));
    }
}
