//! The HTTP client: authentication, rate budgets, retries with backoff, host pinning.
//!
//! Every request draws from the rate budgets before it is sent, so that a run stays inside
//! Zendesk's limits instead of discovering them through 429s: the account budget for every
//! request and, for incremental exports, also the export budget, each starting from the
//! configured number and then following what Zendesk's headers announce ([`super::budget`]).
//! Retries are driven by
//! [`Error::is_retryable`]; a 429 waits what `Retry-After` says (fractional seconds allowed),
//! everything else backs off exponentially with jitter. Redirects are never followed and
//! pagination URLs are only followed on the configured origin, so credentials go nowhere else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::Value;
use tracing::{debug, warn};
use url::Url;

use super::budget::{Budgets, Grant};
use super::{Error, Result};
use crate::config::{Auth, ZendeskSettings};
use crate::json::repair_text;
use crate::spec::LimitClass;

/// Request counters of one object's run.
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

/// A Zendesk API client, cheap to clone and shared by every object of a run.
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
    pub fn pinned(&self, object: &str, url: &str) -> Result<Url> {
        let foreign = || Error::ForeignHost {
            object: object.to_owned(),
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
        let mut me = self
            .get_json(
                "account",
                &self.endpoint("/api/v2/users/me.json"),
                LimitClass::Account,
                stats,
            )
            .await?;
        Ok(me.get_mut("user").map(Value::take).unwrap_or(Value::Null))
    }

    /// GET a JSON document, under the rate budget of `class`, retrying what can be retried.
    pub async fn get_json(
        &self,
        object: &str,
        url: &Url,
        class: LimitClass,
        stats: &RequestStats,
    ) -> Result<Value> {
        self.get_parsed(object, url, class, stats, &[], |text| {
            serde_json::from_slice(text)
        })
        .await
    }

    /// GET a document read by `parse`, as [`Client::get_json`] does (a body `parse` refuses is
    /// retried as a body that is not JSON is); the statuses in `handled` come back at once,
    /// unretried, for the caller to handle (a 504 on a big export page is answered by asking
    /// for a smaller one).
    pub async fn get_parsed<T>(
        &self,
        object: &str,
        url: &Url,
        class: LimitClass,
        stats: &RequestStats,
        handled: &[u16],
        parse: impl Fn(&Bytes) -> serde_json::Result<T>,
    ) -> Result<T> {
        // Never send the credentials anywhere else, whoever built the URL.
        if url.origin() != self.base.origin() {
            return Err(Error::ForeignHost {
                object: object.to_owned(),
                url: format!("{}{}", url.origin().ascii_serialization(), url.path()),
                expected: self.base.origin().ascii_serialization(),
            });
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = tokio::time::Instant::now();
            let grant = self.budgets.acquire(url.path(), class).await;
            let waited = started.elapsed().as_micros();
            stats
                .waited
                .fetch_add(u64::try_from(waited).unwrap_or(u64::MAX), Ordering::Relaxed);
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let err = match self.try_once(object, url, grant, &parse).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_retryable() || err.status().is_some_and(|s| handled.contains(&s)) {
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
            warn!(%object, attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying");
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// Send one GET under `grant`, which the answer's rate headers settle (a request that got no
    /// answer gives it back on drop).
    async fn try_once<T>(
        &self,
        object: &str,
        url: &Url,
        grant: Grant,
        parse: &impl Fn(&Bytes) -> serde_json::Result<T>,
    ) -> Result<T> {
        let endpoint = endpoint_of(url);
        let response = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| match refused_certificate(&e) {
                Some(detail) => Error::Certificate {
                    object: object.to_owned(),
                    endpoint: endpoint.clone(),
                    detail,
                },
                None => Error::Transport {
                    object: object.to_owned(),
                    endpoint: endpoint.clone(),
                    timeout: e.is_timeout(),
                    detail: transport_detail(&e),
                },
            })?;
        let status = response.status();
        let headers = response.headers().clone();
        self.budgets.settle(grant, url.path(), &headers);
        let body = response.bytes().await.map_err(|e| Error::Body {
            object: object.to_owned(),
            endpoint: endpoint.clone(),
            detail: format!("reading the body failed: {}", transport_detail(&e)),
        })?;
        if !status.is_success() {
            return Err(Error::Status {
                object: object.to_owned(),
                endpoint,
                status: status.as_u16(),
                snippet: snippet(&body),
                retry_after: retry_after(&headers),
            });
        }
        debug!(%object, %endpoint, bytes = body.len(), "page");
        match parse(&body) {
            Ok(value) => Ok(value),
            Err(e) => match repair_text(&body).and_then(|text| parse(&Bytes::from(text)).ok()) {
                Some(value) => {
                    warn!(%object, %endpoint, error = %e, "the page held invalid UTF-8 or lone surrogate escapes; they were replaced by U+FFFD");
                    Ok(value)
                }
                None => Err(Error::Body {
                    object: object.to_owned(),
                    endpoint,
                    detail: format!("not JSON ({e}); starts with: {}", snippet(&body)),
                }),
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

    #[test]
    fn retryable_statuses() {
        let status = |s| Error::Status {
            object: "t".into(),
            endpoint: "/".into(),
            status: s,
            snippet: String::new(),
            retry_after: None,
        };
        for s in [408, 409, 429, 500, 502, 503, 504] {
            assert!(status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422, 501] {
            assert!(!status(s).is_retryable(), "{s}");
        }
    }
}
