//! The reliability suite (RELIABILITY.md has its figures and the commands that
//! reproduce them). `cargo test` runs it in a bounded form; environment variables
//! scale it to full size:
//!
//! - [`parsers`]: property tests of every parser of outside bytes
//!   (`CROSSROADS_PROP_CASES`, `CROSSROADS_SEED`).
//!
//! Full size, by hand: `scripts/reliability.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hostile;
mod parsers;
