//! The reliability suite (RELIABILITY.md has its figures and the commands that
//! reproduce them). `cargo test` runs it in a bounded form; environment variables
//! scale it to full size:
//!
//! - [`parsers`]: property tests of every parser of outside bytes
//!   (`CROSSROADS_PROP_CASES`, `CROSSROADS_SEED`).
//! - [`http_fuzz`]: hostile HTTP against a real `crossroads serve`
//!   (`CROSSROADS_FUZZ_REQUESTS`, `CROSSROADS_BIN`).
//! - [`faults`]: upstreams that fail, at set rates (`CROSSROADS_FAULT_REQUESTS`).
//! - [`crash`]: `kill -9` under load, answers received whole against the ledger
//!   (`CROSSROADS_CRASH_CYCLES`).
//! - [`restart`]: reloads and SIGTERM under load (`CROSSROADS_RELOADS`,
//!   `CROSSROADS_RELOAD_MS`).
//! - [`replicas`]: two processes on PostgreSQL and Redis, one killed under load.
//! - [`soak`]: a steady mixed load, memory, descriptors and p99 sampled
//!   (`CROSSROADS_SOAK_SECONDS`, `CROSSROADS_SOAK_RATE`).
//!
//! Full size, by hand: `scripts/reliability.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod crash;
mod faults;
mod hostile;
mod http_fuzz;
mod load;
mod parsers;
mod replicas;
mod restart;
mod soak;
