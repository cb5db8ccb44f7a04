//! Writes to Zendesk (docs/ARCHITECTURE.md, "Layout"; DESIGN.md, "The write path and
//! webhooks"): bulk endpoints that answer with a job, and the look-ups that find out what an
//! interrupted write did. Writers know Zendesk's endpoints and shapes, nothing of the lake: the
//! caller records intent before a write and the outcome after its job ends.
//!
//! A write goes out once: the client never resends one Zendesk may have applied
//! ([`super::Error::may_have_applied`]), and neither does a writer; the caller resolves it by a
//! look-up ([`tickets::by_external_id`], [`tickets::exported_since`]).

pub mod jobs;
pub mod tickets;
