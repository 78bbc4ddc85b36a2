//! The purge APIs behind one interface: what a batch may hold, and how it is sent.
//!
//! | provider | request | batch |
//! | --- | --- | --- |
//! | `chinacache` | raw `HEAD /index.jsp?user=…&pswd=…&ok=ok&urls=…` over TCP ([`super::chinacache`]) | `batch` URLs, files and dirs apart |
//! | `purge` | HTTP `PURGE <path>` with the URL's `Host:` ([`super::http`]) | one URL |
//! | `cloudflare` | `POST …/zones/{zone}/purge_cache` `{"files"}` / `{"prefixes"}` | `batch` URLs, files and dirs apart |
//! | `webhook` | `POST {"urls":[…],"dirs":[…]}` | `batch` URLs, mixed |
//!
//! Every request has the configured timeout, starts from a fresh budget (the original's
//! decaying `select()` timeout, bug B15, cannot happen) and never logs a credential.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::cdn::CdnError;
use crate::cdn::chinacache;
use crate::cdn::http::HttpProvider;
use crate::config::{CdnApi, CdnConfig, ChinaCacheAccount};

/// One purge: the path it came from and the URL to invalidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeItem {
    /// Path relative to the CDN root (the journal key).
    pub rel: PathBuf,
    /// Whether it is a directory (purged as a prefix, URL ends in `/`).
    pub is_dir: bool,
    /// The public URL, percent-encoded.
    pub url: String,
}

/// Why one purge request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// The API answered 429; wait `retry_after` (from `Retry-After`) and try again.
    #[error("{endpoint}: rate limited (HTTP 429)")]
    RateLimited {
        /// Where the request went (no credentials).
        endpoint: String,
        /// The `Retry-After` delay, when the answer had one in seconds.
        retry_after: Option<Duration>,
    },
    /// The endpoint could not be reached or did not answer in time.
    #[error("{endpoint}: {source}")]
    Io {
        /// Where the request went (no credentials).
        endpoint: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP client failed (connection refused, timeout, bad response).
    #[error("{endpoint}: {source}")]
    Http {
        /// Where the request went (no credentials).
        endpoint: String,
        /// Why.
        #[source]
        source: ureq::Error,
    },
    /// The endpoint answered with an unexpected HTTP status.
    #[error("{endpoint}: HTTP status {status}: {body}")]
    Status {
        /// Where the request went (no credentials).
        endpoint: String,
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The endpoint answered but refused the purge (ChinaCache `whatsup` other than
    /// `succeed`, Cloudflare `"success": false`).
    #[error("{endpoint}: purge refused: {reason}")]
    Refused {
        /// Where the request went (no credentials).
        endpoint: String,
        /// What the endpoint said.
        reason: String,
    },
}

impl PurgeError {
    /// True when the endpoint itself looks unavailable (network, timeout, 5xx): new
    /// purges then wait in the journal until the next retry instead of being tried one
    /// by one. False when only this batch was refused; the others go on.
    pub fn is_endpoint_down(&self) -> bool {
        match self {
            PurgeError::Io { .. } | PurgeError::Http { .. } | PurgeError::RateLimited { .. } => {
                true
            }
            PurgeError::Status { status, .. } => *status >= 500,
            PurgeError::Refused { .. } => false,
        }
    }
}

/// A configured purge API, ready to send batches. Its `Debug` output holds no secret.
pub enum Provider {
    /// The legacy ChinaCache message, with the per-request timeout.
    ChinaCache(ChinaCacheAccount, Duration),
    /// `purge`, `cloudflare` or `webhook` over HTTP.
    Http(HttpProvider),
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::ChinaCache(account, _) => f
                .debug_struct("ChinaCache")
                .field("endpoint", &account.endpoint)
                .field("username", &account.username)
                .finish_non_exhaustive(),
            Provider::Http(http) => http.fmt(f),
        }
    }
}

impl Provider {
    /// The provider of `cdn`, with its secrets read (the Cloudflare token file: it can
    /// change or vanish between `--check` and the start). Every setting a provider needs
    /// is there by construction ([`CdnApi`]).
    ///
    /// # Errors
    /// [`CdnError`] when the token file cannot be read or is empty.
    pub fn from_config(cdn: &CdnConfig) -> Result<Provider, CdnError> {
        match &cdn.api {
            CdnApi::ChinaCache(account) => Ok(Provider::ChinaCache(account.clone(), cdn.timeout)),
            CdnApi::Purge { target } => Ok(Provider::Http(HttpProvider::purge(
                target.as_ref(),
                cdn.timeout,
            ))),
            CdnApi::Webhook { url } => Ok(Provider::Http(HttpProvider::webhook(url, cdn.timeout))),
            CdnApi::Cloudflare {
                zone,
                token_file,
                endpoint,
            } => Ok(Provider::Http(HttpProvider::cloudflare(
                zone,
                token_file,
                endpoint,
                cdn.timeout,
            )?)),
        }
    }

    /// The most URLs one request may carry.
    pub fn batch_limit(&self, cdn: &CdnConfig) -> usize {
        match self {
            Provider::Http(http) if http.is_single_url() => 1,
            _ => cdn.batch.max(1),
        }
    }

    /// Whether files and directories may share a request.
    pub fn mixes_dirs(&self) -> bool {
        matches!(self, Provider::Http(http) if http.mixes_dirs())
    }

    /// Sends one batch (never empty, within [`Provider::batch_limit`]).
    ///
    /// # Errors
    /// [`PurgeError`] when the purge is not confirmed.
    pub fn send(&self, batch: &[PurgeItem]) -> Result<(), PurgeError> {
        match self {
            Provider::ChinaCache(account, timeout) => chinacache::send(account, *timeout, batch),
            Provider::Http(http) => http.send(batch),
        }
    }
}

/// The `Retry-After` delay when it is a number of seconds (the HTTP-date form is not
/// used by purge APIs and is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// At most `max` characters of `text`, on one line, for error messages.
pub fn snippet(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    one_line.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn endpoint_down_classification() {
        let refused = PurgeError::Refused {
            endpoint: "x".into(),
            reason: "urlexceed".into(),
        };
        assert!(!refused.is_endpoint_down());
        let status = |status| PurgeError::Status {
            endpoint: "x".into(),
            status,
            body: String::new(),
        };
        assert!(status(503).is_endpoint_down());
        assert!(!status(400).is_endpoint_down());
    }

    #[test]
    fn debug_output_has_no_secret() {
        use crate::config::{CdnApi, HostPort};
        let token = tempfile::NamedTempFile::new().expect("token file");
        std::fs::write(token.path(), "tok-secret\n").expect("write token");
        let apis = [
            CdnApi::ChinaCache(ChinaCacheAccount {
                endpoint: HostPort {
                    host: "ccms.chinacache.com".into(),
                    port: 80,
                },
                username: "bob".into(),
                password: "hunter2".into(),
            }),
            CdnApi::Webhook {
                url: "https://hooks.example.com/T0KEN".into(),
            },
            CdnApi::Cloudflare {
                zone: "z".into(),
                token_file: token.path().to_path_buf(),
                endpoint: "https://api.cloudflare.com".into(),
            },
        ];
        for api in apis {
            let cdn = crate::config::CdnConfig {
                root: PathBuf::from("/srv"),
                api,
                base_url: "http://x".into(),
                url_regex: None,
                batch: 30,
                rate_per_sec: 10.0,
                timeout: Duration::from_secs(1),
            };
            for shown in [
                format!("{cdn:?}"),
                format!("{:?}", Provider::from_config(&cdn).expect("provider")),
            ] {
                for secret in ["hunter2", "T0KEN", "tok-secret"] {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
            }
        }
    }

    #[test]
    fn snippet_is_one_short_line() {
        assert_eq!(snippet("a\r\nb c", 4), "a  b");
    }
}
