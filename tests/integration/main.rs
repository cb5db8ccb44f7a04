//! Integration tests: the library and the binary against the simulated account, tempdir lakes and
//! the real Zendesk samples in tests/data. One test binary, so the heavy dependencies link once.

mod account;
mod azure;
mod bench;
mod budget;
mod cli;
mod common;
mod configuration;
mod crash;
mod faults;
mod hostile;
mod import;
mod listen;
mod maintenance;
mod migrate;
mod progress;
mod proxy;
mod push;
mod s3;
mod samples;
mod store_faults;
mod stores;
mod sync;
mod syncer;
mod tables;
mod webhook;
