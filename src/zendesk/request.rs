//! What the client sends: a method, a URL on the configured host, an optional JSON body, the
//! rate budget it draws from, and when it may be sent again (docs/ARCHITECTURE.md, "Requests and
//! retries").
//!
//! Sending a GET twice is sending it once, so a GET is retried on anything that may pass.
//! Sending a write twice may apply it twice (a second ticket, a second comment), so a write is
//! sent again only when Zendesk cannot have applied it: the connection failed before anything
//! was sent, or Zendesk refused the request unread (429; 503 with `Retry-After`). A write that
//! timed out or lost its connection once sent comes back as [`Error::Ambiguous`], for the
//! caller to find out what happened; the retry policy is derived from the method, never chosen
//! per call.
//!
//! [`Error::Ambiguous`]: super::Error::Ambiguous

use std::fmt;

use bytes::Bytes;
use url::Url;

use crate::spec::LimitClass;

/// An HTTP method the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// When a request of this method is sent again ([`Retry`]). PUT and DELETE are writes like
    /// POST: Zendesk's PUTs are not idempotent (a ticket update carrying a comment adds it
    /// again), and a DELETE sent twice answers 404 for a deletion that was made.
    pub fn retry(self) -> Retry {
        match self {
            Method::Get => Retry::Idempotent,
            Method::Post | Method::Put | Method::Delete => Retry::Unapplied,
        }
    }

    pub(super) fn to_http(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a failed request is sent again ([`Error::is_retryable`](super::Error::is_retryable)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Sending it again changes nothing at Zendesk (a GET): retried on 429, 408, 409, 5xx but
    /// 501, timeouts, dropped connections and unreadable bodies.
    Idempotent,
    /// A write: retried only when Zendesk cannot have applied it, that is when nothing was sent
    /// (the connection failed), on 429, and on 503 with `Retry-After`.
    Unapplied,
}

/// One request: method, URL, optional JSON body, the rate budget it draws from and the
/// statuses its caller handles itself.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: Url,
    body: Option<Bytes>,
    class: LimitClass,
    handled: &'static [u16],
}

impl Request {
    /// A request without a body, drawing from the account budget.
    pub fn new(method: Method, url: Url) -> Request {
        Request {
            method,
            url,
            body: None,
            class: LimitClass::Account,
            handled: &[],
        }
    }

    pub fn get(url: Url) -> Request {
        Request::new(Method::Get, url)
    }

    /// A POST of `body` (JSON).
    pub fn post(url: Url, body: &impl serde::Serialize) -> serde_json::Result<Request> {
        Request::new(Method::Post, url).with_json(body)
    }

    /// A PUT of `body` (JSON).
    pub fn put(url: Url, body: &impl serde::Serialize) -> serde_json::Result<Request> {
        Request::new(Method::Put, url).with_json(body)
    }

    pub fn delete(url: Url) -> Request {
        Request::new(Method::Delete, url)
    }

    /// The JSON body to send, serialised once: a retry sends the same bytes.
    pub fn with_json(mut self, body: &impl serde::Serialize) -> serde_json::Result<Request> {
        self.body = Some(Bytes::from(serde_json::to_vec(body)?));
        Ok(self)
    }

    /// The rate budget the request draws from (the account's by default).
    pub fn with_class(mut self, class: LimitClass) -> Request {
        self.class = class;
        self
    }

    /// Statuses returned at once, unretried, for the caller to handle (a 504 on a big export
    /// page is answered by asking for a smaller one).
    pub fn with_handled(mut self, statuses: &'static [u16]) -> Request {
        self.handled = statuses;
        self
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    pub fn class(&self) -> LimitClass {
        self.class
    }

    pub fn handled(&self) -> &'static [u16] {
        self.handled
    }

    /// When this request is sent again: derived from its method.
    pub fn retry(&self) -> Retry {
        self.method.retry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_get_is_idempotent() {
        assert_eq!(Method::Get.retry(), Retry::Idempotent);
        for method in [Method::Post, Method::Put, Method::Delete] {
            assert_eq!(method.retry(), Retry::Unapplied, "{method}");
        }
    }

    #[test]
    fn a_body_is_serialised_once_and_kept() {
        let url = Url::parse("https://acme.zendesk.com/api/v2/tickets.json").unwrap();
        let request = Request::post(url.clone(), &json!({"ticket": {"subject": "hi"}})).unwrap();
        assert_eq!(request.method(), Method::Post);
        assert_eq!(
            request.body().map(|b| b.as_ref()),
            Some(br#"{"ticket":{"subject":"hi"}}"#.as_slice())
        );
        assert_eq!(request.retry(), Retry::Unapplied);
        let get = Request::get(url).with_class(LimitClass::Incremental);
        assert!(get.body().is_none());
        assert_eq!(get.class(), LimitClass::Incremental);
        assert_eq!(get.retry(), Retry::Idempotent);
    }
}
