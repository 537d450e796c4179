//! The inbound APIs. Each parses its wire format into the common request and renders
//! the common result back ([`crate::pipeline::FrontEnd`]); [`crate::pipeline::serve`]
//! runs every stage between.

pub mod chat;
pub mod messages;
pub mod responses;
mod sse;
