//! The write side's requests, beside [`super::readers`] (docs/ARCHITECTURE.md, "Requests and
//! retries"): typed calls of Zendesk's endpoints that change something, sent through the same
//! client, rate budgets and stats as every read. A write is never sent twice blindly: when one
//! fails in a way that may have applied it ([`super::Error::may_have_applied`]), its caller
//! finds out what Zendesk holds before it tries again.

pub mod webhooks;
