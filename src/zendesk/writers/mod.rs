//! Writes to Zendesk, beside [`super::readers`] (docs/ARCHITECTURE.md, "Rooms of the code" and
//! "Requests and retries"): typed calls of the endpoints that change something, sent through the
//! same client, rate budgets and stats as every read — the bulk endpoints that answer with a
//! job ([`jobs`], [`tickets`]), the Webhooks and Triggers APIs ([`webhooks`]) — and the look-ups
//! that find out what an interrupted write did. Writers know Zendesk's endpoints and shapes,
//! nothing of the lake: the caller records intent before a write and the outcome after.
//!
//! A write goes out once: the client never resends one Zendesk may have applied
//! ([`super::Error::may_have_applied`]), and neither does a writer without first finding out
//! what Zendesk holds ([`tickets::by_external_id`], [`tickets::exported_since`], a webhook
//! found by its endpoint).

pub mod jobs;
pub mod tickets;
pub mod webhooks;
