//! zendesk-lake: an incremental, exact copy of a Zendesk Support account in Delta Lake tables.
//!
//! The crate is layered the way a stream flows through a sync (docs/ARCHITECTURE.md, "How a
//! sync runs"): [`zendesk`] reads pages under Zendesk's rules, one reader per stream kind;
//! [`decode`] turns them into Arrow rows per table by the table's schema ([`spec`], the registry
//! of streams and tables), both reading the pages of [`page`] and the JSON of [`json`], defined
//! below them; [`lake`] merges the rows into Delta and keeps the streams' positions; and [`sync`]
//! orders those steps ([`sync::Syncer`], built once per process). [`commands`] holds the
//! binary's commands, each a function returning a report. [`sim`] is a simulated Zendesk account
//! for tests and the demo.

pub mod commands;
pub mod config;
pub mod decode;
pub mod encode;
pub mod failpoint;
pub mod json;
pub mod lake;
pub mod listen;
pub mod page;
pub mod sim;
pub mod spec;
pub mod sync;
pub mod webhooks;
pub mod zendesk;

/// The Arrow, DataFusion and Delta types this crate uses, through deltalake's re-exports so that
/// exactly one copy of each is built.
pub use deltalake::{arrow, datafusion};
