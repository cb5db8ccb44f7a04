//! Everything that knows Zendesk's HTTP API (docs/ARCHITECTURE.md, "How a sync runs"):
//! authentication, retries and host pinning ([`client`]), what a request is and when it may be
//! sent again ([`request`], "Requests and retries"), the rate budgets learned from Zendesk's
//! headers ([`budget`], "Rate budgets"), and the endpoints as sequences of pages, one reader
//! per stream kind ([`readers`], "Readers").

pub mod budget;
pub mod client;
pub mod readers;
pub mod request;
pub mod writers;

use std::time::Duration;

pub use client::{Client, RequestStats};
pub use readers::Reader;
pub use request::{Method, Request, Retry};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed Zendesk request. Every variant names the stream and the endpoint (path and query,
/// which never carry credentials: they travel in the Authorization header only), and those of a
/// request sent its method, on which whether it is sent again depends ([`Retry`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{stream}: {method} {endpoint} answered HTTP {status}{hint}: {snippet}", hint = status_hint(*.status))]
    Status {
        stream: String,
        method: Method,
        endpoint: String,
        status: u16,
        snippet: String,
        retry_after: Option<Duration>,
    },
    /// No answer came. `connect`: the connection failed, so nothing was sent. A write that may
    /// have been sent is [`Error::Ambiguous`] instead.
    #[error("{stream}: {method} {endpoint} failed: {detail}")]
    Transport {
        stream: String,
        method: Method,
        endpoint: String,
        detail: String,
        timeout: bool,
        connect: bool,
    },
    /// A write (POST, PUT, DELETE) that Zendesk may have applied: it was sent and then timed
    /// out or lost its connection, or Zendesk accepted it and its answer could not be read.
    /// Never sent again: sending it twice may apply it twice. The caller finds out what Zendesk
    /// holds before it tries again (docs/ARCHITECTURE.md, "Requests and retries").
    #[error("{stream}: {method} {endpoint}: {detail}; Zendesk may have applied it, so it was not sent again")]
    Ambiguous {
        stream: String,
        method: Method,
        endpoint: String,
        detail: String,
    },
    /// The server's TLS certificate failed validation. Never retried: no request was sent, and
    /// no request will be sent to a host that cannot prove who it is.
    #[error("{stream}: {method} {endpoint}: the server's TLS certificate was refused ({detail}); no request was sent")]
    Certificate {
        stream: String,
        method: Method,
        endpoint: String,
        detail: String,
    },
    #[error("{stream}: {method} {endpoint} returned an unreadable body: {detail}")]
    Body {
        stream: String,
        method: Method,
        endpoint: String,
        detail: String,
    },
    #[error("{stream}: {method} {endpoint}: unexpected response shape: {detail}")]
    Shape {
        stream: String,
        method: Method,
        endpoint: String,
        detail: String,
    },
    #[error(
        "{stream}: refusing to follow {url}: it is not on the configured Zendesk host {expected}"
    )]
    ForeignHost {
        stream: String,
        url: String,
        expected: String,
    },
    #[error(
        "{stream}: GET {endpoint}: the time export stalled at start_time {start_time}: more records \
         share that second than one page holds, so it cannot advance"
    )]
    Stalled {
        stream: String,
        endpoint: String,
        start_time: i64,
    },
    #[error("{source} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        #[source]
        source: Box<Error>,
    },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 => " (authentication failed: check ZENDESK_EMAIL and ZENDESK_API_TOKEN, or ZENDESK_OAUTH_TOKEN)",
        403 => " (forbidden: the credentials lack access, or the plan lacks this endpoint)",
        429 => " (rate limited)",
        _ => "",
    }
}

impl Error {
    /// Whether the same request may succeed when sent again, by its method ([`Retry`]).
    ///
    /// A GET: rate limits, conflicts, timeouts, server errors except 501, dropped connections
    /// and truncated or garbled bodies. A write: only what proves Zendesk did not apply it, a
    /// connection that failed before anything was sent, 429, and 503 with `Retry-After`
    /// (Zendesk's own refusal; a 503 without it may come from a proxy after Zendesk had the
    /// request).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status {
                method,
                status,
                retry_after,
                ..
            } => match method.retry() {
                Retry::Idempotent => {
                    matches!(status, 408 | 409 | 429) || (*status >= 500 && *status != 501)
                }
                Retry::Unapplied => *status == 429 || (*status == 503 && retry_after.is_some()),
            },
            Error::Transport {
                method, connect, ..
            } => match method.retry() {
                Retry::Idempotent => true,
                Retry::Unapplied => *connect,
            },
            Error::Body { method, .. } => method.retry() == Retry::Idempotent,
            Error::Ambiguous { .. }
            | Error::Shape { .. }
            | Error::ForeignHost { .. }
            | Error::Stalled { .. }
            | Error::Certificate { .. } => false,
            Error::GaveUp { .. } => false,
        }
    }

    /// Whether Zendesk may have applied the write that failed, looking through
    /// [`Error::GaveUp`]: it got no clear answer ([`Error::Ambiguous`]), or a server error that
    /// is not a refusal (Zendesk, or a proxy before it, may have failed after applying it).
    /// The caller finds out what Zendesk holds before sending it again. Never for a GET, which
    /// applies nothing.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Ambiguous { .. } => true,
            Error::Status { method, status, .. } => {
                method.retry() == Retry::Unapplied
                    && *status >= 500
                    && *status != 501
                    && !self.is_retryable()
            }
            Error::GaveUp { source, .. } => source.may_have_applied(),
            _ => false,
        }
    }

    /// The wait Zendesk asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, looking through [`Error::GaveUp`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::GaveUp { source, .. } => source.status(),
            _ => None,
        }
    }

    /// 401: the credentials are wrong, for every stream alike.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }
}
