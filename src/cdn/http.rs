//! The HTTP purge providers, on `ureq`: `purge` (Varnish, nginx, Fastly), `cloudflare`
//! and `webhook`. Building a request is pure and unit-tested; [`HttpProvider::send`]
//! runs it with the configured timeout.
//!
//! - `purge`: `PURGE /path` sent to `domainname:port` with `Host:` set to the URL's
//!   host, so a cache in front of several sites finds the object. ureq keeps a `Host`
//!   header the request already has, so no hand-written HTTP is needed. An empty
//!   `domainname` sends the `PURGE` to the URL itself, the Fastly way. 2xx, 404 and 412
//!   (nginx cache_purge: "was not cached") count as success.
//! - `cloudflare`: `POST {endpoint}/client/v4/zones/{zone}/purge_cache` with
//!   `Authorization: Bearer <token>` and `{"files":[URL…]}`; directories become
//!   `{"prefixes":["host/dir"]}` (no scheme, no trailing `/`, as the API wants). The
//!   answer must be 2xx with `"success": true`.
//! - `webhook`: `POST url` with `{"urls":[…],"dirs":[…]}`; 2xx is success.
//!
//! A 429 answer becomes [`PurgeError::RateLimited`] with its `Retry-After`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ureq::Agent;
use ureq::http::{self as h, Response};

use crate::cdn::CdnError;
use crate::cdn::provider::{PurgeError, PurgeItem, parse_retry_after, snippet};
use crate::config::HostPort;
use crate::secret::Secret;

enum Kind {
    Purge { target: Option<String> },
    Cloudflare { url: String, token: Secret<String> },
    Webhook { url: Secret<String> },
}

/// A configured HTTP purge API. Its `Debug` output holds no token and no URL path.
pub struct HttpProvider {
    kind: Kind,
    agent: Agent,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Purge { target } => f.debug_struct("Purge").field("target", target).finish(),
            Kind::Cloudflare { url, token } => f
                .debug_struct("Cloudflare")
                .field("url", url)
                .field("token", token)
                .finish(),
            Kind::Webhook { url } => f
                .debug_struct("Webhook")
                .field("url", &redact(url.expose()))
                .finish(),
        }
    }
}

impl HttpProvider {
    /// HTTP `PURGE` per URL, to `target` or else to the URL's own host.
    pub fn purge(target: Option<&HostPort>, timeout: Duration) -> HttpProvider {
        HttpProvider::new(
            Kind::Purge {
                target: target.map(ToString::to_string),
            },
            timeout,
        )
    }

    /// A JSON POST to `url`.
    pub fn webhook(url: &Secret<String>, timeout: Duration) -> HttpProvider {
        HttpProvider::new(Kind::Webhook { url: url.clone() }, timeout)
    }

    /// Cloudflare's `purge_cache` of `zone` under `endpoint`, with the bearer token read
    /// from `token_file` (whitespace trimmed).
    ///
    /// # Errors
    /// [`CdnError`] when the token file cannot be read or holds no token.
    pub fn cloudflare(
        zone: &str,
        token_file: &Path,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<HttpProvider, CdnError> {
        let token = std::fs::read_to_string(token_file)
            .map_err(|source| CdnError::TokenFile {
                path: token_file.to_path_buf(),
                source,
            })?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(CdnError::EmptyToken(token_file.to_path_buf()));
        }
        let endpoint = endpoint.trim_end_matches('/');
        Ok(HttpProvider::new(
            Kind::Cloudflare {
                url: format!("{endpoint}/client/v4/zones/{zone}/purge_cache"),
                token: Secret::new(token),
            },
            timeout,
        ))
    }

    fn new(kind: Kind, timeout: Duration) -> HttpProvider {
        let config = Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .max_redirects(0)
            .user_agent(concat!("sersync/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpProvider {
            kind,
            agent: Agent::new_with_config(config),
        }
    }

    /// True for `purge`: one URL per request.
    pub fn is_single_url(&self) -> bool {
        matches!(self.kind, Kind::Purge { .. })
    }

    /// True for `webhook`: files and directories share a request.
    pub fn mixes_dirs(&self) -> bool {
        matches!(self.kind, Kind::Webhook { .. })
    }

    /// Sends one batch.
    ///
    /// # Errors
    /// [`PurgeError`] when the purge is not confirmed.
    pub fn send(&self, batch: &[PurgeItem]) -> Result<(), PurgeError> {
        match &self.kind {
            Kind::Purge { target } => {
                for item in batch {
                    let request = purge_request(target.as_deref(), &item.url);
                    let endpoint = format!("PURGE {}", item.url);
                    let request = request.map_err(|reason| PurgeError::Refused {
                        endpoint: endpoint.clone(),
                        reason,
                    })?;
                    log::debug!("{}: {endpoint}", request.uri());
                    let response = self.run(&endpoint, Ok(request))?;
                    check(&endpoint, response, |status, _| {
                        (200..300).contains(&status) || status == 404 || status == 412
                    })?;
                }
                Ok(())
            }
            Kind::Cloudflare { url, token } => {
                let endpoint = redact(url);
                let request = h::Request::post(url.as_str())
                    .header("authorization", format!("Bearer {}", token.expose()))
                    .header("content-type", "application/json")
                    .body(cloudflare_body(batch));
                log::debug!("{endpoint}: purge {} url(s)", batch.len());
                let response = self.run(&endpoint, request)?;
                check(&endpoint, response, |status, body| {
                    (200..300).contains(&status) && !body.contains("\"success\":false")
                })
            }
            Kind::Webhook { url } => {
                let endpoint = redact(url.expose());
                let request = h::Request::post(url.expose().as_str())
                    .header("content-type", "application/json")
                    .body(webhook_body(batch));
                log::debug!("{endpoint}: purge {} url(s)", batch.len());
                let response = self.run(&endpoint, request)?;
                check(&endpoint, response, |status, _| {
                    (200..300).contains(&status)
                })
            }
        }
    }

    fn run<B: ureq::AsSendBody>(
        &self,
        endpoint: &str,
        request: Result<h::Request<B>, h::Error>,
    ) -> Result<Response<ureq::Body>, PurgeError> {
        let request = request.map_err(|err| PurgeError::Refused {
            endpoint: endpoint.to_owned(),
            reason: format!("cannot build request: {err}"),
        })?;
        self.agent.run(request).map_err(|source| PurgeError::Http {
            endpoint: endpoint.to_owned(),
            source,
        })
    }
}

/// Turns an answer into the verdict; `ok(status, body)` says what success is.
fn check(
    endpoint: &str,
    mut response: Response<ureq::Body>,
    ok: impl Fn(u16, &str) -> bool,
) -> Result<(), PurgeError> {
    let status = response.status().as_u16();
    if status == 429 {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        return Err(PurgeError::RateLimited {
            endpoint: endpoint.to_owned(),
            retry_after,
        });
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    if ok(status, &compact) {
        Ok(())
    } else if (200..300).contains(&status) {
        Err(PurgeError::Refused {
            endpoint: endpoint.to_owned(),
            reason: snippet(&body, 200),
        })
    } else {
        Err(PurgeError::Status {
            endpoint: endpoint.to_owned(),
            status,
            body: snippet(&body, 200),
        })
    }
}

/// `(scheme, authority without userinfo, path and query)` of an absolute URL.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!authority.is_empty()).then_some((scheme, authority, path))
}

/// `scheme://host/…`: enough to say where a request went, without paths or userinfo
/// that may carry a token.
pub fn redact(url: &str) -> String {
    match split_url(url) {
        Some((scheme, authority, "/")) => format!("{scheme}://{authority}/"),
        Some((scheme, authority, _)) => format!("{scheme}://{authority}/…"),
        None => "(invalid url)".to_owned(),
    }
}

/// The `PURGE` request for `url`: to `target` (`host:port`) with the URL's host in
/// `Host:`, or to the URL itself when there is no target.
///
/// # Errors
/// A message when `url` is not an absolute URL.
pub fn purge_request(target: Option<&str>, url: &str) -> Result<h::Request<()>, String> {
    let (_, host, path) = split_url(url).ok_or_else(|| format!("not an absolute url: {url}"))?;
    let purge = h::Method::from_bytes(b"PURGE").map_err(|err| err.to_string())?;
    let request = match target {
        Some(target) => h::Request::builder()
            .method(purge)
            .uri(format!("http://{target}{path}"))
            .header("host", host)
            .body(()),
        None => h::Request::builder().method(purge).uri(url).body(()),
    };
    request.map_err(|err| format!("cannot build request for {url}: {err}"))
}

/// `{"files":[…]}` for files, `{"prefixes":[…]}` for directories (never mixed).
pub fn cloudflare_body(batch: &[PurgeItem]) -> String {
    if batch.first().is_some_and(|item| item.is_dir) {
        let prefixes: Vec<String> = batch
            .iter()
            .map(|item| {
                let without_scheme = item.url.split_once("://").map_or(&*item.url, |(_, r)| r);
                without_scheme.trim_end_matches('/').to_owned()
            })
            .collect();
        serde_json::json!({ "prefixes": prefixes }).to_string()
    } else {
        let files: Vec<&str> = batch.iter().map(|item| item.url.as_str()).collect();
        serde_json::json!({ "files": files }).to_string()
    }
}

/// `{"urls":[…],"dirs":[…]}`.
pub fn webhook_body(batch: &[PurgeItem]) -> String {
    let pick = |dirs: bool| -> Vec<&str> {
        batch
            .iter()
            .filter(|item| item.is_dir == dirs)
            .map(|item| item.url.as_str())
            .collect()
    };
    // Built by hand to keep the documented key order (serde_json sorts map keys).
    format!(
        r#"{{"urls":{},"dirs":{}}}"#,
        serde_json::Value::from(pick(false)),
        serde_json::Value::from(pick(true))
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn item(url: &str, is_dir: bool) -> PurgeItem {
        PurgeItem {
            rel: PathBuf::new(),
            is_dir,
            url: url.into(),
        }
    }

    #[test]
    fn purge_goes_to_the_target_with_the_url_host() {
        let request = purge_request(
            Some("10.0.0.5:6081"),
            "https://www.example.com:8443/a%20b/c.jpg",
        )
        .expect("valid");
        assert_eq!(request.method().as_str(), "PURGE");
        assert_eq!(
            request.uri().to_string(),
            "http://10.0.0.5:6081/a%20b/c.jpg"
        );
        assert_eq!(request.headers()["host"], "www.example.com:8443");
        let direct = purge_request(None, "http://u:p@cdn.example.com/x/").expect("valid");
        assert_eq!(direct.uri().to_string(), "http://u:p@cdn.example.com/x/");
        assert!(direct.headers().get("host").is_none());
        assert!(purge_request(None, "relative/path").is_err());
    }

    #[test]
    fn purge_accepts_every_byte_the_url_mapping_keeps() {
        let url = format!(
            "http://x/{}",
            crate::urlencode::encode_path(b"!$&'()*+,;=:@ \xff%")
        );
        assert!(purge_request(Some("h:1"), &url).is_ok());
    }

    #[test]
    fn cloudflare_files_and_prefixes() {
        let files = cloudflare_body(&[
            item("https://x.com/a.jpg", false),
            item("https://x.com/b", false),
        ]);
        assert_eq!(
            files,
            r#"{"files":["https://x.com/a.jpg","https://x.com/b"]}"#
        );
        let dirs = cloudflare_body(&[item("https://x.com/d/", true), item("https://x.com/", true)]);
        assert_eq!(dirs, r#"{"prefixes":["x.com/d","x.com"]}"#);
    }

    #[test]
    fn webhook_splits_urls_and_dirs() {
        let body = webhook_body(&[item("http://x/a", false), item("http://x/d/", true)]);
        assert_eq!(body, r#"{"urls":["http://x/a"],"dirs":["http://x/d/"]}"#);
    }

    #[test]
    fn redaction_keeps_only_scheme_and_host() {
        assert_eq!(
            redact("https://user:tok@hooks.example.com/T0KEN?x=1"),
            "https://hooks.example.com/…"
        );
        assert_eq!(redact("http://h:1"), "http://h:1/");
    }
}
