//! Crossroads: an OpenAI-compatible gateway that decides, per request, whether a local
//! specialist model or a frontier API should answer, and accounts for every cent.
//!
//! The request flow ([`pipeline::serve`] names each stage):
//!
//! ```text
//! client → frontend (chat, responses, messages, embeddings: parse into request::Request)
//!   → auth → classify (label, confidence, difficulty, PII) → route (rules → pool)
//!   → admission (rate limits, budget reservation) → cache (exact key, replay)
//!   → dispatch (deployments in order, fallback) → provider (wire format, HTTP) → upstream
//! response ← frontend (render) ← pipeline (headers, SSE metering) ← accounting (usage → cost)
//!   → ledger (group commit; the response's last bytes wait for it) + metrics
//! ```
//!
//! - [`config`]: `routes.toml` → validated runtime types.
//! - [`classify`], [`route`], [`accounting`]: the pure core; no I/O, unit-tested and benched alone.
//! - [`pipeline`]: the request path, assembled in one place; [`frontend`]: the inbound
//!   APIs, each only a wire format.
//! - [`cache`]: the response cache: a pure key, memory and Redis stores, stream replay.
//! - [`admission`]: rate limits and budget reservations, in process or shared in Redis.
//! - [`redis_conn`]: the Redis connection both share: deadlines and a cool-down.
//! - [`inflight`]: background work that shutdown waits for.
//! - [`provider`], [`dispatch`]: upstream HTTP and fallback.
//! - [`ledger`]: the spend ledger and its writer thread; spend queries and the
//!   database connection ([`ledger::db`]) shared with the key store ([`auth`]), on SQLite
//!   or PostgreSQL.
//! - [`replay`]: recorded traffic routed again through a candidate config, priced.
//! - [`app`]: mounts the endpoints; [`handler`]: the side endpoints.
//! - [`server`], [`cli`]: serving and the `crossroads` command.

pub mod accounting;
pub mod admission;
pub mod app;
pub mod auth;
pub mod cache;
pub mod classify;
pub mod cli;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod error;
pub mod frontend;
pub mod handler;
pub mod inflight;
pub mod ledger;
pub mod metrics;
pub mod pipeline;
pub mod provider;
pub mod redis_conn;
pub mod reload;
pub mod replay;
pub mod request;
pub mod route;
pub mod runtime;
pub mod server;
pub mod sse;
pub mod state;
