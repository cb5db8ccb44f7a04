//! The commands of the `zendesk-lake` binary, one file each, as library functions that return
//! a report (docs/ARCHITECTURE.md, "Rooms of the code"). The binary parses its arguments, calls
//! one of these and renders the report; tests call them directly. A command orders the rooms
//! below it ([`crate::sync`], [`crate::lake`], [`crate::sim`]) and holds no logic they could
//! share; what the write commands share with each other is in [`write`].

pub mod bench;
pub mod check;
pub mod import;
pub mod listen;
pub mod maintenance;
pub mod push;
pub mod query;
pub mod simulate;
pub mod status;
pub mod sync;
pub mod webhook;
pub mod write;
