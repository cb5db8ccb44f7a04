//! zendesk-lake: an incremental, exact copy of a Zendesk Support account in Delta Lake tables.
//!
//! The crate is layered the way one object flows through a sync (DESIGN.md §2):
//! [`zendesk`] fetches pages under Zendesk's rules, [`decode`] turns them into Arrow by the
//! object's schema ([`objects`]), [`lake`] merges them into Delta and keeps the watermarks, and
//! [`sync`] orders those steps. [`sim`] is a simulated Zendesk account for tests and the demo.

pub mod config;
pub mod decode;
pub mod failpoint;
pub mod lake;
pub mod objects;
pub mod sim;
pub mod sync;
pub mod zendesk;

/// The Arrow, DataFusion and Delta types this crate uses, through deltalake's re-exports so that
/// exactly one copy of each is built.
pub use deltalake::{arrow, datafusion};
