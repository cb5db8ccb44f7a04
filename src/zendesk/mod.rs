//! Everything that knows Zendesk's HTTP API: authentication, retries and host pinning
//! ([`client`]), the rate budgets learned from Zendesk's headers ([`budget`]), and the endpoints as sequences of pages, one reader per stream kind
//! ([`readers`]).

pub mod budget;
pub mod client;
pub mod readers;

use std::time::Duration;

pub use client::{Client, RequestStats};
pub use readers::Reader;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed Zendesk request. Every variant names the object and the endpoint (path and query,
/// which never carry credentials: they travel in the Authorization header only).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{object}: GET {endpoint} answered HTTP {status}{hint}: {snippet}", hint = status_hint(*.status))]
    Status {
        object: String,
        endpoint: String,
        status: u16,
        snippet: String,
        retry_after: Option<Duration>,
    },
    #[error("{object}: GET {endpoint} failed: {detail}")]
    Transport {
        object: String,
        endpoint: String,
        detail: String,
        timeout: bool,
    },
    /// The server's TLS certificate failed validation. Never retried: no request was sent, and
    /// no request will be sent to a host that cannot prove who it is.
    #[error("{object}: GET {endpoint}: the server's TLS certificate was refused ({detail}); no request was sent")]
    Certificate {
        object: String,
        endpoint: String,
        detail: String,
    },
    #[error("{object}: GET {endpoint} returned an unreadable body: {detail}")]
    Body {
        object: String,
        endpoint: String,
        detail: String,
    },
    #[error("{object}: GET {endpoint}: unexpected response shape: {detail}")]
    Shape {
        object: String,
        endpoint: String,
        detail: String,
    },
    #[error(
        "{object}: refusing to follow {url}: it is not on the configured Zendesk host {expected}"
    )]
    ForeignHost {
        object: String,
        url: String,
        expected: String,
    },
    #[error(
        "{object}: GET {endpoint}: the time export stalled at start_time {start_time}: more records \
         share that second than one page holds, so it cannot advance"
    )]
    Stalled {
        object: String,
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
    /// Whether the same request may succeed when sent again: rate limits, conflicts, timeouts,
    /// server errors except 501, dropped connections and truncated or garbled bodies.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || (*status >= 500 && *status != 501)
            }
            Error::Transport { .. } | Error::Body { .. } => true,
            Error::Shape { .. }
            | Error::ForeignHost { .. }
            | Error::Stalled { .. }
            | Error::Certificate { .. } => false,
            Error::GaveUp { .. } => false,
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

    /// 401: the credentials are wrong, for every object alike.
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401)
    }
}
