//! Zendesk's webhook deliveries (docs/ARCHITECTURE.md, "Webhooks"): what proves a delivery
//! genuine ([`signature`]) and what it says has changed ([`events`]). A delivery never carries
//! data into the lake: it only says which streams to run sooner, and the data comes from the
//! exports as in every sync, so a forged, lost or duplicated delivery can change when a run
//! happens, never what the lake holds. No HTTP here: the server is [`crate::listen`].

pub mod events;
pub mod signature;

pub use events::{Delivery, Malformed, Seen};
pub use signature::{Rejected, Verifier};
