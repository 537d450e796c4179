//! The gateway's live state, shared by every stage and endpoint: the runtime built from
//! the current config (swapped whole on reload) and the long-lived services (ledger,
//! metrics, keys, limits, cache). [`crate::app`] assembles it; everything else reads it.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::admission::Admission;
use crate::auth::Keyring;
use crate::cache::Cache;
use crate::ledger::{Ledger, LedgerReader};
use crate::metrics::Metrics;
use crate::reload::Reloader;
pub use crate::runtime::Runtime;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) runtime: watch::Receiver<Arc<Runtime>>,
    pub reloader: Arc<Reloader>,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    pub ids: Arc<RequestIds>,
    pub keyring: Arc<Keyring>,
    /// Rate limits and budgets: in this process, or shared in Redis (`[limits]`).
    pub admission: Arc<Admission>,
    /// Reads the ledger for the spend API; `None` for an in-memory ledger.
    pub reader: Option<Arc<LedgerReader>>,
    /// The response cache, built at startup from `[cache]`; `None` when off.
    pub cache: Option<Cache>,
}

impl AppState {
    /// The current runtime; in-flight requests keep theirs across a reload.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.borrow().clone()
    }
}

/// Unique request ids: a random per-process prefix and a counter.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        RequestIds {
            prefix: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            counter: AtomicU64::new(0),
        }
    }

    /// `req_` followed by 28 hex digits.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("req_{:016x}{:012x}", self.prefix, n & 0xffff_ffff_ffff)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}
