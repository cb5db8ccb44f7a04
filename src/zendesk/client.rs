//! The one way to Zendesk's API (docs/ARCHITECTURE.md, "Requests and retries"): every request,
//! a reader's GET or a write, goes out with the credentials, under the shared rate budgets and
//! stats, and is sent again only as its method allows.
//!
//! Every request draws from the rate budgets before it is sent, so that a run stays inside
//! Zendesk's limits instead of discovering them through 429s: the account budget for every
//! request and, for incremental exports, also the export budget, each starting from the
//! configured number and then following what Zendesk's headers announce ([`super::budget`]).
//! Retries are driven by [`Error::is_retryable`], which depends on the request's method
//! ([`super::request`]); a 429 waits what `Retry-After` says (fractional seconds allowed),
//! everything else backs off exponentially with jitter. Redirects are never followed and
//! pagination URLs are only followed on the configured origin, so credentials go nowhere else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::Value;
use tracing::{debug, warn};
use url::Url;

use super::budget::{Budgets, Grant};
use super::request::{Method, Request, Retry};
use super::{Error, Result};
use crate::config::{Auth, ZendeskSettings};
use crate::json::repair_text;

/// Request counters of one stream's run.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Time requests waited for the rate budgets before they were sent, in µs (retry
    /// back-offs not included).
    pub waited: AtomicU64,
}

impl RequestStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    /// Time requests waited for the rate budgets.
    pub fn waited(&self) -> Duration {
        Duration::from_micros(self.waited.load(Ordering::Relaxed))
    }
}

/// A Zendesk API client, cheap to clone and shared by every stream of a run.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    budgets: Arc<Budgets>,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("auth", &"***")
            .finish()
    }
}

impl Client {
    pub fn try_new(settings: &ZendeskSettings) -> Result<Client, String> {
        let mut auth = match &settings.auth {
            Auth::ApiToken { email, token } => {
                let raw = format!("{email}/token:{}", token.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                HeaderValue::from_str(&format!("Basic {encoded}"))
            }
            Auth::OAuth { token } => HeaderValue::from_str(&format!("Bearer {}", token.expose())),
        }
        .map_err(|_| {
            "the credentials contain characters not allowed in an HTTP header".to_string()
        })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("zendesk-lake/", env!("CARGO_PKG_VERSION")))
            .gzip(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: settings.base_url.clone(),
            auth,
            budgets: Arc::new(Budgets::new(
                settings.account_requests_per_minute,
                settings.incremental_requests_per_minute,
                settings.rate_window,
            )),
            max_attempts: settings.max_attempts,
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
        })
    }

    /// The rate budgets every clone of this client shares.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The configured origin, e.g. `https://acme.zendesk.com/`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// An absolute URL for an API path (`/api/v2/...`) on the configured origin.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    /// Parse a pagination URL Zendesk returned, refusing any other origin than the configured one.
    pub fn pinned(&self, stream: &str, url: &str) -> Result<Url> {
        let foreign = || Error::ForeignHost {
            stream: stream.to_owned(),
            url: url.split('?').next().unwrap_or(url).to_owned(),
            expected: self.base.origin().ascii_serialization(),
        };
        let parsed = Url::parse(url).map_err(|_| foreign())?;
        if parsed.origin() != self.base.origin() {
            return Err(foreign());
        }
        Ok(parsed)
    }

    /// Check the credentials with one cheap request (`/api/v2/users/me.json`): wrong ones fail
    /// here, clearly, before anything is read or written. Returns the authenticated user.
    pub async fn me(&self, stats: &RequestStats) -> Result<Value> {
        let request = Request::get(self.endpoint("/api/v2/users/me.json"));
        let mut me = self.send("account", &request, stats).await?;
        Ok(me.get_mut("user").map(Value::take).unwrap_or(Value::Null))
    }

    /// Send `request` for `stream` and read its answer as JSON (a 204's empty body is `null`),
    /// under its rate budget, sending it again when its method allows
    /// ([`Error::is_retryable`]). A write that Zendesk may have applied comes back as
    /// [`Error::Ambiguous`], never sent twice.
    pub async fn send(
        &self,
        stream: &str,
        request: &Request,
        stats: &RequestStats,
    ) -> Result<Value> {
        self.send_parsed(stream, request, stats, |text| serde_json::from_slice(text))
            .await
    }

    /// [`Client::send`], with the answer read by `parse`: a body `parse` refuses is retried as
    /// a body that is not JSON is (a GET's; a write's is [`Error::Ambiguous`]). The statuses the
    /// request's caller handles ([`Request::with_handled`]) come back at once, unretried.
    pub async fn send_parsed<T>(
        &self,
        stream: &str,
        request: &Request,
        stats: &RequestStats,
        parse: impl Fn(&Bytes) -> serde_json::Result<T>,
    ) -> Result<T> {
        let url = request.url();
        // Never send the credentials anywhere else, whoever built the URL.
        if url.origin() != self.base.origin() {
            return Err(Error::ForeignHost {
                stream: stream.to_owned(),
                url: format!("{}{}", url.origin().ascii_serialization(), url.path()),
                expected: self.base.origin().ascii_serialization(),
            });
        }
        let method = request.method();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = tokio::time::Instant::now();
            let grant = self.budgets.acquire(url.path(), request.class()).await;
            let waited = started.elapsed().as_micros();
            stats
                .waited
                .fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Ordering::Relaxed);
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let err = match self.try_once(stream, request, grant, &parse).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_retryable() || err.status().is_some_and(|s| request.handled().contains(&s)) {
                return Err(err);
            }
            if attempt >= self.max_attempts {
                return Err(Error::GaveUp {
                    attempts: attempt,
                    source: Box::new(err),
                });
            }
            let wait = err
                .retry_after()
                .unwrap_or_else(|| self.backoff(attempt))
                .min(self.retry_max);
            warn!(%stream, %method, attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying");
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// Send `request` once under `grant`, which the answer's rate headers settle (a request
    /// that got no answer gives it back on drop).
    async fn try_once<T>(
        &self,
        stream: &str,
        request: &Request,
        grant: Grant,
        parse: &impl Fn(&Bytes) -> serde_json::Result<T>,
    ) -> Result<T> {
        let method = request.method();
        let url = request.url();
        let endpoint = endpoint_of(url);
        let mut http = self
            .http
            .request(method.to_http(), url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = request.body() {
            http = http
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = http
            .send()
            .await
            .map_err(|e| unanswered(stream, method, &endpoint, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        self.budgets.settle(grant, url.path(), &headers);
        let wrong = |detail: String| {
            answered_wrong(stream, method, &endpoint, status.as_u16(), &headers, detail)
        };
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Err(wrong(format!(
                    "reading the body failed: {}",
                    transport_detail(&e)
                )))
            }
        };
        if !status.is_success() {
            return Err(Error::Status {
                stream: stream.to_owned(),
                method,
                endpoint,
                status: status.as_u16(),
                snippet: snippet(&body),
                retry_after: retry_after(&headers),
            });
        }
        // No Content (a DELETE's answer) reads as `null`.
        let body = if status == StatusCode::NO_CONTENT && body.is_empty() {
            Bytes::from_static(b"null")
        } else {
            body
        };
        debug!(%stream, %method, %endpoint, bytes = body.len(), "answer");
        match parse(&body) {
            Ok(value) => Ok(value),
            Err(e) => match repair_text(&body).and_then(|text| parse(&Bytes::from(text)).ok()) {
                Some(value) => {
                    warn!(%stream, %endpoint, error = %e, "the answer held invalid UTF-8 or lone surrogate escapes; they were replaced by U+FFFD");
                    Ok(value)
                }
                None => Err(wrong(format!(
                    "not JSON ({e}); starts with: {}",
                    snippet(&body)
                ))),
            },
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        exp.mul_f64(jitter)
    }
}

/// `Retry-After` in seconds, fractional or whole; `None` when missing or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs = value.trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The error of a request that got no answer. A write that may have been sent (anything but a
/// failed connection) is [`Error::Ambiguous`]: Zendesk may have applied it.
fn unanswered(stream: &str, method: Method, endpoint: &str, e: &reqwest::Error) -> Error {
    match refused_certificate(e) {
        Some(detail) => Error::Certificate {
            stream: stream.to_owned(),
            method,
            endpoint: endpoint.to_owned(),
            detail,
        },
        None => no_answer(
            stream,
            method,
            endpoint,
            e.is_connect(),
            e.is_timeout(),
            transport_detail(e),
        ),
    }
}

/// [`unanswered`] once the cause is known: `connect` when the connection failed, so that
/// nothing was sent.
fn no_answer(
    stream: &str,
    method: Method,
    endpoint: &str,
    connect: bool,
    timeout: bool,
    detail: String,
) -> Error {
    match method.retry() {
        Retry::Unapplied if !connect => Error::Ambiguous {
            stream: stream.to_owned(),
            method,
            endpoint: endpoint.to_owned(),
            detail,
        },
        _ => Error::Transport {
            stream: stream.to_owned(),
            method,
            endpoint: endpoint.to_owned(),
            detail,
            timeout,
            connect,
        },
    }
}

/// The error of an answer whose body could not be read or parsed. A GET's is
/// [`Error::Body`] (retried); a write's keeps its status when Zendesk refused it, and is
/// [`Error::Ambiguous`] when Zendesk accepted it: it was applied, and what it answered is lost.
fn answered_wrong(
    stream: &str,
    method: Method,
    endpoint: &str,
    status: u16,
    headers: &HeaderMap,
    detail: String,
) -> Error {
    match method.retry() {
        Retry::Idempotent => Error::Body {
            stream: stream.to_owned(),
            method,
            endpoint: endpoint.to_owned(),
            detail,
        },
        Retry::Unapplied if (200..300).contains(&status) => Error::Ambiguous {
            stream: stream.to_owned(),
            method,
            endpoint: endpoint.to_owned(),
            detail: format!("answered HTTP {status}, but {detail}"),
        },
        Retry::Unapplied => Error::Status {
            stream: stream.to_owned(),
            method,
            endpoint: endpoint.to_owned(),
            status,
            snippet: detail,
            retry_after: retry_after(headers),
        },
    }
}

/// Path and query of a URL: what errors and logs show of it.
pub fn endpoint_of(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

type Cause<'e> = &'e (dyn std::error::Error + 'static);

/// The causes of a request error, outermost first.
fn causes(e: &reqwest::Error) -> impl Iterator<Item = Cause<'_>> {
    use std::error::Error as _;
    std::iter::successors(e.source(), |&cause| cause.source())
}

/// The certificate error that failed the TLS handshake, if that is what happened. rustls's error
/// sits inside `io::Error`s, whose `source()` skips the error they wrap, so those are opened too.
fn refused_certificate(e: &reqwest::Error) -> Option<String> {
    fn opened<'e>(cause: Cause<'e>) -> Option<Cause<'e>> {
        let wrapped = cause.downcast_ref::<std::io::Error>()?.get_ref()?;
        Some(wrapped as Cause<'e>)
    }
    causes(e)
        .flat_map(|cause| std::iter::successors(Some(cause), |&level| opened(level)))
        .find_map(|level| match level.downcast_ref::<rustls::Error>() {
            Some(
                error @ (rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented),
            ) => Some(error.to_string()),
            _ => None,
        })
}

fn transport_detail(e: &reqwest::Error) -> String {
    // reqwest's own Display names the URL; the endpoint is already in our message.
    let mut detail = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    for cause in causes(e) {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
    }
    detail
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(base: &str) -> ZendeskSettings {
        ZendeskSettings {
            base_url: Url::parse(base).unwrap(),
            auth: Auth::ApiToken {
                email: "a@b.c".into(),
                token: Secret::new("s3cr3t"),
            },
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            retry_base: Duration::from_millis(1),
            retry_max: Duration::from_secs(1),
            account_requests_per_minute: 1000,
            incremental_requests_per_minute: 1000,
            rate_window: Duration::from_secs(60),
        }
    }

    #[test]
    fn pinned_refuses_other_origins() {
        let client = Client::try_new(&settings("https://acme.zendesk.com/")).unwrap();
        assert!(client
            .pinned("tickets", "https://acme.zendesk.com/api/v2/x.json?cursor=a")
            .is_ok());
        for bad in [
            "https://evil.example.com/api/v2/x.json",
            "http://acme.zendesk.com/api/v2/x.json",
            "https://acme.zendesk.com:8443/api/v2/x.json",
            "not a url",
        ] {
            let err = client.pinned("tickets", bad).unwrap_err();
            assert!(matches!(err, Error::ForeignHost { .. }), "{bad}");
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let client = Client::try_new(&settings("https://acme.zendesk.com/")).unwrap();
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("Basic"),
            "{shown}"
        );
    }

    #[test]
    fn retry_after_parses_fractions_and_ignores_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("0.25"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    const WRITES: [Method; 3] = [Method::Post, Method::Put, Method::Delete];
    const METHODS: [Method; 4] = [Method::Get, Method::Post, Method::Put, Method::Delete];

    fn status(method: Method, status: u16, retry_after: Option<Duration>) -> Error {
        Error::Status {
            stream: "t".into(),
            method,
            endpoint: "/".into(),
            status,
            snippet: String::new(),
            retry_after,
        }
    }

    #[test]
    fn a_get_retries_rate_limits_conflicts_and_server_errors() {
        for retry_after in [None, Some(Duration::from_secs(1))] {
            for s in [408, 409, 429, 500, 502, 503, 504] {
                let err = status(Method::Get, s, retry_after);
                assert!(err.is_retryable(), "{s}");
                assert!(!err.may_have_applied(), "{s}");
            }
            for s in [400, 401, 403, 404, 422, 501] {
                assert!(!status(Method::Get, s, retry_after).is_retryable(), "{s}");
            }
        }
    }

    #[test]
    fn a_write_retries_only_what_zendesk_refused_unread() {
        let wait = Some(Duration::from_secs(1));
        for method in WRITES {
            assert!(status(method, 429, None).is_retryable(), "{method}");
            assert!(status(method, 429, wait).is_retryable(), "{method}");
            assert!(status(method, 503, wait).is_retryable(), "{method}");
            assert!(!status(method, 503, wait).may_have_applied(), "{method}");
            // A 503 without Retry-After may come from a proxy once Zendesk had the request.
            assert!(!status(method, 503, None).is_retryable(), "{method}");
            assert!(status(method, 503, None).may_have_applied(), "{method}");
            for s in [500, 502, 504] {
                for retry_after in [None, wait] {
                    let err = status(method, s, retry_after);
                    assert!(!err.is_retryable(), "{method} {s}");
                    assert!(err.may_have_applied(), "{method} {s}");
                }
            }
            for s in [400, 401, 403, 404, 408, 409, 422, 501] {
                let err = status(method, s, None);
                assert!(!err.is_retryable(), "{method} {s}");
                assert!(!err.may_have_applied(), "{method} {s}");
            }
        }
    }

    #[test]
    fn a_write_without_an_answer_is_retried_only_when_nothing_was_sent() {
        for timeout in [false, true] {
            let get = no_answer("t", Method::Get, "/", false, timeout, "reset".into());
            assert!(matches!(get, Error::Transport { .. }) && get.is_retryable());
            assert!(!get.may_have_applied());
            let get = no_answer("t", Method::Get, "/", true, timeout, "refused".into());
            assert!(matches!(get, Error::Transport { .. }) && get.is_retryable());
            for method in WRITES {
                // The connection failed (refused, or timed out while connecting): nothing sent.
                let refused = no_answer("t", method, "/", true, timeout, "refused".into());
                assert!(matches!(refused, Error::Transport { .. }), "{method}");
                assert!(refused.is_retryable(), "{method}");
                assert!(!refused.may_have_applied(), "{method}");
                // Sent, then a timeout or a reset: Zendesk may have applied it.
                let sent = no_answer("t", method, "/x", false, timeout, "reset".into());
                assert!(matches!(sent, Error::Ambiguous { .. }), "{method}");
                assert!(!sent.is_retryable(), "{method}");
                assert!(sent.may_have_applied(), "{method}");
                assert!(
                    sent.to_string()
                        .starts_with(&format!("t: {method} /x: reset;")),
                    "{sent}"
                );
            }
        }
    }

    #[test]
    fn a_write_whose_answer_is_unreadable_keeps_its_status_or_is_ambiguous() {
        let headers = |wait: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(wait) = wait {
                headers.insert("retry-after", HeaderValue::from_static(wait));
            }
            headers
        };
        for s in [200, 201, 404, 429, 500, 503] {
            let get = answered_wrong("t", Method::Get, "/", s, &headers(None), "cut".into());
            assert!(
                matches!(get, Error::Body { .. }) && get.is_retryable(),
                "{s}"
            );
        }
        for method in WRITES {
            for s in [200, 201, 202] {
                let err = answered_wrong("t", method, "/", s, &headers(None), "cut".into());
                assert!(matches!(err, Error::Ambiguous { .. }), "{method} {s}");
                assert!(
                    !err.is_retryable() && err.may_have_applied(),
                    "{method} {s}"
                );
            }
            let limited = answered_wrong("t", method, "/", 429, &headers(None), "cut".into());
            assert!(limited.is_retryable(), "{method}");
            let busy = answered_wrong("t", method, "/", 503, &headers(Some("2")), "cut".into());
            assert!(busy.is_retryable(), "{method}");
            assert_eq!(busy.retry_after(), Some(Duration::from_secs(2)));
            let refused = answered_wrong("t", method, "/", 422, &headers(None), "cut".into());
            assert_eq!(refused.status(), Some(422));
            assert!(!refused.is_retryable() && !refused.may_have_applied());
        }
    }

    #[test]
    fn errors_that_are_never_retried_whatever_the_method() {
        for method in METHODS {
            let never = [
                Error::Certificate {
                    stream: "t".into(),
                    method,
                    endpoint: "/".into(),
                    detail: "bad".into(),
                },
                Error::Shape {
                    stream: "t".into(),
                    method,
                    endpoint: "/".into(),
                    detail: "bad".into(),
                },
                Error::ForeignHost {
                    stream: "t".into(),
                    url: "https://evil.example.com/".into(),
                    expected: "https://acme.zendesk.com".into(),
                },
                Error::Stalled {
                    stream: "t".into(),
                    endpoint: "/".into(),
                    start_time: 1,
                },
                Error::GaveUp {
                    attempts: 3,
                    source: Box::new(status(method, 429, None)),
                },
                Error::Ambiguous {
                    stream: "t".into(),
                    method,
                    endpoint: "/".into(),
                    detail: "reset".into(),
                },
            ];
            for err in never {
                assert!(!err.is_retryable(), "{method}: {err}");
                let ambiguous = matches!(err, Error::Ambiguous { .. });
                assert_eq!(err.may_have_applied(), ambiguous, "{method}: {err}");
            }
            let body = Error::Body {
                stream: "t".into(),
                method,
                endpoint: "/".into(),
                detail: "cut".into(),
            };
            assert_eq!(body.is_retryable(), method == Method::Get);
        }
    }

    #[test]
    fn errors_name_the_method_and_endpoint() {
        let err = status(Method::Post, 422, None);
        assert_eq!(err.to_string(), "t: POST / answered HTTP 422: ");
    }

    /// What a scripted loopback server does with one connection, once it has read a request.
    enum Act {
        /// Write this response (status line, headers and body) and close.
        Answer(&'static str),
        /// Close the connection without answering.
        Drop,
        /// Keep the connection open without answering, longer than the client waits.
        Stall,
    }

    /// A server on loopback that answers one connection per act, in order; the requests it
    /// read (request line and body) come back from the task.
    async fn server(acts: Vec<Act>) -> (Url, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for act in acts {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, length) = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before sending its request");
                    read.extend_from_slice(&buf[..n]);
                    if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&read[..end]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        read.drain(..end + 4);
                        break (head, length);
                    }
                };
                while read.len() < length {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before sending its body");
                    read.extend_from_slice(&buf[..n]);
                }
                let line = head.lines().next().unwrap_or_default().to_owned();
                seen.push(format!("{line} {}", String::from_utf8_lossy(&read)));
                match act {
                    Act::Answer(response) => {
                        socket.write_all(response.as_bytes()).await.unwrap();
                        socket.shutdown().await.ok();
                    }
                    Act::Drop => drop(socket),
                    Act::Stall => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        drop(socket);
                    }
                }
            }
            seen
        });
        (base, task)
    }

    const CREATED: &str = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
        content-length: 12\r\nconnection: close\r\n\r\n{\"ticket\":1}";
    const LIMITED: &str = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0.01\r\n\
        content-length: 0\r\nconnection: close\r\n\r\n";
    const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\n\
        content-length: 0\r\nconnection: close\r\n\r\n";

    fn post(client: &Client) -> Request {
        let url = client.endpoint("/api/v2/tickets.json");
        Request::post(url, &serde_json::json!({"ticket": {"subject": "hi"}})).unwrap()
    }

    #[tokio::test]
    async fn a_post_dropped_after_it_was_sent_is_not_sent_again() {
        let (base, server) = server(vec![Act::Drop]).await;
        let client = Client::try_new(&settings(base.as_str())).unwrap();
        let stats = RequestStats::default();
        let err = client.send("t", &post(&client), &stats).await.unwrap_err();
        assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
        assert!(err.may_have_applied());
        assert!(
            err.to_string().starts_with("t: POST /api/v2/tickets.json:"),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert_eq!((stats.requests(), stats.retries()), (1, 0));
        let seen = server.await.unwrap();
        assert_eq!(
            seen,
            [r#"POST /api/v2/tickets.json HTTP/1.1 {"ticket":{"subject":"hi"}}"#]
        );
    }

    #[tokio::test]
    async fn a_post_that_timed_out_after_it_was_sent_is_not_sent_again() {
        let (base, server) = server(vec![Act::Stall]).await;
        let mut settings = settings(base.as_str());
        settings.timeout = Duration::from_millis(300);
        let client = Client::try_new(&settings).unwrap();
        let stats = RequestStats::default();
        let err = client.send("t", &post(&client), &stats).await.unwrap_err();
        assert!(matches!(err, Error::Ambiguous { .. }), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert_eq!(stats.requests(), 1);
        assert_eq!(server.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_get_dropped_after_it_was_sent_is_sent_again() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{\"a\":[1]}";
        let (base, server) = server(vec![Act::Drop, Act::Answer(ok)]).await;
        let client = Client::try_new(&settings(base.as_str())).unwrap();
        let stats = RequestStats::default();
        let request = Request::get(client.endpoint("/api/v2/groups.json"));
        let value = client.send("t", &request, &stats).await.unwrap();
        assert_eq!(value, serde_json::json!({"a": [1]}));
        assert_eq!((stats.requests(), stats.retries()), (2, 1));
        assert_eq!(server.await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_post_refused_with_retry_after_is_sent_again() {
        let (base, server) = server(vec![Act::Answer(LIMITED), Act::Answer(CREATED)]).await;
        let client = Client::try_new(&settings(base.as_str())).unwrap();
        let stats = RequestStats::default();
        let value = client.send("t", &post(&client), &stats).await.unwrap();
        assert_eq!(value, serde_json::json!({"ticket": 1}));
        assert_eq!((stats.requests(), stats.retries()), (2, 1));
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1], "the same body sent again");
    }

    #[tokio::test]
    async fn a_post_answered_503_without_retry_after_is_not_sent_again() {
        let (base, server) = server(vec![Act::Answer(UNAVAILABLE)]).await;
        let client = Client::try_new(&settings(base.as_str())).unwrap();
        let stats = RequestStats::default();
        let err = client.send("t", &post(&client), &stats).await.unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert!(err.may_have_applied());
        assert_eq!(stats.requests(), 1);
        assert_eq!(server.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_post_whose_connection_is_refused_is_sent_again() {
        // A port nothing listens on: every connection is refused, nothing is ever sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let client = Client::try_new(&settings(&base)).unwrap();
        let stats = RequestStats::default();
        let err = client.send("t", &post(&client), &stats).await.unwrap_err();
        let Error::GaveUp { attempts, source } = &err else {
            panic!("{err}");
        };
        assert_eq!(*attempts, 3);
        assert!(
            matches!(**source, Error::Transport { connect: true, .. }),
            "{source}"
        );
        assert!(!err.may_have_applied());
        assert_eq!(stats.requests(), 3);
    }

    #[tokio::test]
    async fn a_delete_answered_no_content_reads_as_null() {
        let gone = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
        let (base, server) = server(vec![Act::Answer(gone)]).await;
        let client = Client::try_new(&settings(base.as_str())).unwrap();
        let request = Request::delete(client.endpoint("/api/v2/tickets/1.json"));
        let value = client
            .send("t", &request, &RequestStats::default())
            .await
            .unwrap();
        assert_eq!(value, Value::Null);
        assert_eq!(
            server.await.unwrap(),
            ["DELETE /api/v2/tickets/1.json HTTP/1.1 "]
        );
    }
}
