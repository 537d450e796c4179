//! The spend ledger: one record per request, handed off the request path through a
//! bounded channel to a writer thread that batches inserts into the store.

pub mod db;
pub mod error;
pub mod feedback;
mod postgres;
mod spill;
mod sqlite;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};
use tokio::sync::{mpsc, oneshot};

pub mod query;
pub mod rollup;

pub use error::{StoreError, StoreResult};
pub use postgres::PgStore;
pub use query::LedgerReader;
pub use sqlite::{SqliteDb, SqliteStore};

use crate::accounting::{Usage, Usd};
use crate::config::{LedgerBackend, LedgerConfig};
use crate::inflight::{InFlight, InFlightGuard};

/// Everything finance and platform teams need to know about one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub request_id: String,
    /// Unix time in milliseconds when the request arrived.
    pub ts_ms: i64,
    pub key_id: Option<String>,
    pub team: Option<String>,
    /// The client's `user` field.
    pub end_user: Option<String>,
    pub endpoint: Cow<'static, str>,
    pub requested_model: String,
    pub label: Option<String>,
    pub task: Option<String>,
    pub confidence: Option<f32>,
    pub difficulty: Option<f32>,
    /// PII kinds found, comma-separated (never the values).
    pub pii_kinds: String,
    /// What rules read besides the labels, so `crossroads replay` can route the request
    /// again: the classifier's prompt-token estimate and whether tools, images or JSON
    /// mode came with it. `None` in records from before they were kept.
    #[serde(default)]
    pub prompt_tokens_est: Option<u64>,
    #[serde(default)]
    pub tools: Option<bool>,
    #[serde(default)]
    pub images: Option<u32>,
    #[serde(default)]
    pub json_mode: Option<bool>,
    pub rule: Option<String>,
    /// The first shadow rule that matched: what it would have decided is not applied.
    pub shadow_rule: Option<String>,
    pub pool: Option<String>,
    pub deployment: Option<String>,
    pub provider: Option<Cow<'static, str>>,
    pub upstream_model: Option<String>,
    pub tier: Option<Cow<'static, str>>,
    pub cache_hit: bool,
    pub stream: bool,
    pub status: u16,
    pub error_kind: Option<Cow<'static, str>>,
    pub attempts: u32,
    /// Deployments that failed before the one that answered: `id:reason,...`.
    pub fallbacks: String,
    pub usage: Usage,
    pub cost: Usd,
    pub reference_cost: Usd,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub upstream_us: Option<u64>,
}

/// Where ledger batches are written. Runs on the writer thread, so it may block.
pub trait LedgerStore: Send {
    fn write(&mut self, batch: &[LedgerRecord]) -> StoreResult<()>;

    /// Work that may lag the records (SQLite's rollups): called after each written
    /// batch, its waiters already answered, and once more at shutdown (`finishing`).
    fn maintain(&mut self, _finishing: bool) -> StoreResult<()> {
        Ok(())
    }
}

enum Msg {
    /// A record, and who waits for its commit (`durability = "commit"`).
    Record(Box<LedgerRecord>, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
    /// Write everything queued before this message, then stop.
    Close,
}

/// How long the writer waits for more records after one arrives alone, before writing
/// the batch (never when a flush is waiting): the batches that make a busy ledger cheap,
/// at moderate rates too, for records that stay 5 ms longer in memory.
const LINGER: Duration = Duration::from_millis(5);

/// Ledger metrics, registered by the caller.
#[derive(Clone)]
pub struct LedgerMetrics {
    pub queue_depth: IntGauge,
    pub written: IntCounter,
    pub write_failures: IntCounter,
    /// Requests refused because the queue stayed full (the writer is behind).
    pub refused: IntCounter,
}

impl LedgerMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = LedgerMetrics {
            queue_depth: IntGauge::new(
                "crossroads_ledger_queue_depth",
                "Ledger records waiting to be written",
            )?,
            written: IntCounter::new(
                "crossroads_ledger_records_written_total",
                "Ledger records written to the store",
            )?,
            write_failures: IntCounter::new(
                "crossroads_ledger_write_failures_total",
                "Failed ledger batch writes (each is retried)",
            )?,
            refused: IntCounter::new(
                "crossroads_ledger_refused_requests_total",
                "Requests refused because the ledger queue stayed full",
            )?,
        };
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.written.clone()))?;
        registry.register(Box::new(m.write_failures.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        Ok(m)
    }
}

/// The request path's handle on the ledger.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
    metrics: LedgerMetrics,
    pending: Arc<InFlight>,
}

/// Owns the writer thread; [`LedgerWriter::shutdown`] drains and joins it.
pub struct LedgerWriter {
    tx: mpsc::Sender<Msg>,
    thread: JoinHandle<()>,
    /// Set at shutdown: a failing store stops retrying and spills instead.
    stopping: Arc<AtomicBool>,
    pending: Arc<InFlight>,
}

/// Resolves once a record is committed; an error means it was lost (the writer
/// stopped without writing or spilling it).
pub type Commit = oneshot::Receiver<()>;

/// A promise of one more record: [`Ledger::flush`] and [`LedgerWriter::shutdown`] wait
/// for it to be recorded or dropped.
pub type PendingRecord = InFlightGuard;

/// Opens the configured store and starts the writer thread.
pub fn start(config: &LedgerConfig, metrics: LedgerMetrics) -> StoreResult<(Ledger, LedgerWriter)> {
    let backend = config.backend.clone();
    let spill = match &backend {
        LedgerBackend::Sqlite(path) => Some(spill::path_for(path)),
        LedgerBackend::SqliteMemory => None,
        // Replicas share the database; each spills beside its working directory.
        LedgerBackend::Postgres { schema, .. } => {
            Some(PathBuf::from(format!("crossroads-{schema}.spill.jsonl")))
        }
    };
    let open = move || -> StoreResult<Box<dyn LedgerStore>> {
        Ok(match &backend {
            LedgerBackend::Sqlite(path) => Box::new(SqliteStore::open(path)?),
            LedgerBackend::SqliteMemory => Box::new(SqliteStore::open_in_memory()?),
            LedgerBackend::Postgres { url, schema } => {
                Box::new(postgres::PgStore::open(url.expose(), schema)?)
            }
        })
    };
    start_with(
        Box::new(open),
        spill,
        config.queue_capacity,
        config.batch_size,
        metrics,
    )
}

/// Opens a store; runs on the writer thread, where blocking clients may block.
pub type OpenStore = Box<dyn FnOnce() -> StoreResult<Box<dyn LedgerStore>> + Send>;

/// Starts the writer thread on a given store. Records spilled by an earlier run to
/// `spill` are written first; at shutdown, records the store cannot take go there.
pub fn start_with(
    open: OpenStore,
    spill: Option<PathBuf>,
    capacity: usize,
    batch_size: usize,
    metrics: LedgerMetrics,
) -> StoreResult<(Ledger, LedgerWriter)> {
    let (opened_tx, opened) = std::sync::mpsc::sync_channel::<StoreResult<()>>(1);
    let (tx, mut rx) = mpsc::channel::<Msg>(capacity);
    let stopping = Arc::new(AtomicBool::new(false));
    let thread_metrics = metrics.clone();
    let thread_stopping = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || {
            let metrics = thread_metrics;
            let mut store = match open().and_then(|mut store| {
                if let Some(path) = &spill {
                    spill::replay(path, store.as_mut())?;
                }
                Ok(store)
            }) {
                Ok(store) => {
                    let _ = opened_tx.send(Ok(()));
                    store
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let mut batch: Vec<LedgerRecord> = Vec::with_capacity(batch_size);
            let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
            // Blocks for the first message, then takes whatever queued up meanwhile
            // (lingering once for more): batches grow with load.
            let mut closing = false;
            while !closing && let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                let mut lingered = false;
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Record(r, commit) => {
                            batch.push(*r);
                            // Someone waits for this record: write without lingering.
                            waiting.extend(commit);
                        }
                        Msg::Flush(done) => waiting.push(done),
                        Msg::Close => {
                            closing = true;
                            break;
                        }
                    }
                    if batch.len() >= batch_size {
                        break;
                    }
                    next = rx.try_recv().ok();
                    if next.is_none() && !lingered && waiting.is_empty() {
                        // At a moderate rate each record would arrive alone and cost a
                        // transaction of its own: give the next ones a moment to join.
                        lingered = true;
                        std::thread::sleep(LINGER);
                        next = rx.try_recv().ok();
                    }
                }
                if !write_with_retry(store.as_mut(), &batch, &metrics, &thread_stopping) {
                    // Shutting down with a store that fails: keep every record in the
                    // spill file, the queued ones too, for the next start to replay.
                    rx.close();
                    while let Ok(msg) = rx.try_recv() {
                        if let Msg::Record(r, commit) = msg {
                            batch.push(*r);
                            waiting.extend(commit);
                        }
                    }
                    // Spilled is kept: the next start writes it before anything else.
                    if spill::save(spill.as_deref(), &batch) {
                        for done in waiting.drain(..) {
                            let _ = done.send(());
                        }
                    }
                    break;
                }
                metrics.written.inc_by(batch.len() as u64);
                batch.clear();
                metrics.queue_depth.set(rx.len() as i64);
                for done in waiting.drain(..) {
                    let _ = done.send(());
                }
                maintain(store.as_mut(), closing, &metrics);
            }
        })
        .map_err(|source| StoreError::Thread {
            what: "ledger writer",
            source,
        })?;
    opened
        .recv()
        .map_err(|_| StoreError::Unavailable("the ledger writer"))??;
    let pending = Arc::new(InFlight::default());
    Ok((
        Ledger {
            tx: tx.clone(),
            metrics,
            pending: pending.clone(),
        },
        LedgerWriter {
            tx,
            thread,
            stopping,
            pending,
        },
    ))
}

/// The store's lagging work; a failure is retried at the next batch (the records are
/// safe: readers add what the rollups lack).
fn maintain(store: &mut dyn LedgerStore, finishing: bool, metrics: &LedgerMetrics) {
    if let Err(e) = store.maintain(finishing) {
        metrics.write_failures.inc();
        tracing::warn!(error = %e, "ledger rollups could not catch up; retrying after the next batch");
    }
}

/// Retries a failing batch with back-off until it is written: a record is never
/// dropped. While it retries, the bounded queue fills and pushes back on requests.
/// Returns false when shutdown began while the store was still failing.
fn write_with_retry(
    store: &mut dyn LedgerStore,
    batch: &[LedgerRecord],
    metrics: &LedgerMetrics,
    stopping: &AtomicBool,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    let mut delay = Duration::from_millis(50);
    loop {
        match store.write(batch) {
            Ok(()) => return true,
            Err(e) => {
                metrics.write_failures.inc();
                tracing::error!(error = %e, records = batch.len(), "ledger write failed; retrying");
                if stopping.load(Ordering::Acquire) {
                    return false;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Room for one record in the writer's queue, taken when a request arrives and used
/// when it finishes. While the writer is behind, arriving requests wait for room: the
/// backlog is bounded by the queue, not by how long the overload lasts.
pub struct LedgerSlot(mpsc::OwnedPermit<Msg>);

impl Ledger {
    /// Takes room for a request's record, waiting at most `wait` for the writer to make
    /// some. `None` when it did not (the caller refuses the request, which has cost
    /// nothing yet) or when the writer has stopped.
    pub async fn slot(&self, wait: Duration) -> Option<LedgerSlot> {
        let tx = self.tx.clone();
        match tokio::time::timeout(wait, tx.reserve_owned()).await {
            Ok(Ok(permit)) => Some(LedgerSlot(permit)),
            Ok(Err(_)) => None,
            Err(_) => {
                self.metrics.refused.inc();
                None
            }
        }
    }

    /// Queues a record in the room taken for it, or like [`Ledger::record`] without.
    pub fn record_in(&self, slot: Option<LedgerSlot>, record: LedgerRecord) {
        self.queue(slot, Msg::Record(Box::new(record), None));
    }

    /// Queues a record like [`Ledger::record_in`]; the returned [`Commit`] resolves
    /// once the record is committed to the store (or, at a shutdown whose store
    /// fails, saved to the spill file that the next start replays). The writer does
    /// not linger for a batch while anyone waits: concurrent requests still share one
    /// transaction (group commit), a lone one is written at once.
    pub fn record_committed(&self, slot: Option<LedgerSlot>, record: LedgerRecord) -> Commit {
        let (done, commit) = oneshot::channel();
        self.queue(slot, Msg::Record(Box::new(record), Some(done)));
        commit
    }

    fn queue(&self, slot: Option<LedgerSlot>, msg: Msg) {
        match slot {
            Some(LedgerSlot(permit)) => {
                permit.send(msg);
            }
            None => self.send(msg),
        }
    }

    /// Queues a record. Never blocks the caller: when the queue is full the record
    /// waits in a task for space instead of being dropped. Requests take a
    /// [`LedgerSlot`] first, so this overflow stays rare and bounded.
    pub fn record(&self, record: LedgerRecord) {
        self.send(Msg::Record(Box::new(record), None));
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            if tx.send(msg).await.is_err() {
                                tracing::error!("ledger writer stopped; a record was lost");
                            }
                        });
                    }
                    // Outside the runtime (a drop at exit) the only way left is to wait.
                    Err(_) => {
                        if tx.blocking_send(msg).is_err() {
                            tracing::error!("ledger writer stopped; a record was lost");
                        }
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("ledger writer stopped; a record was lost");
            }
        }
    }

    /// Whether the writer still accepts records.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Announces a record that will be recorded later, off the request path.
    pub fn pending(&self) -> PendingRecord {
        self.pending.start()
    }

    /// Waits until every record queued (or announced) before this call is written.
    pub async fn flush(&self) {
        self.pending.idle().await;
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

impl LedgerWriter {
    /// Writes every record queued so far, then stops the writer thread. Call it after
    /// the server has finished its in-flight requests.
    pub async fn shutdown(self) {
        let LedgerWriter {
            tx,
            thread,
            stopping,
            pending,
        } = self;
        // Requests that finished are still being counted: their records come first.
        if tokio::time::timeout(Duration::from_secs(10), pending.idle())
            .await
            .is_err()
        {
            tracing::error!("records still being counted at shutdown were not written");
        }
        stopping.store(true, Ordering::Release);
        if tx.send(Msg::Close).await.is_err() {
            tracing::error!("ledger writer stopped early");
        }
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            _ => tracing::error!("ledger writer thread panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Mutex;

    use super::*;

    /// A store that fails, or keeps what it is given.
    struct TestStore {
        fail: bool,
        kept: Arc<Mutex<Vec<LedgerRecord>>>,
    }

    impl LedgerStore for TestStore {
        fn write(&mut self, batch: &[LedgerRecord]) -> StoreResult<()> {
            if self.fail {
                return Err(StoreError::Unavailable("the disk"));
            }
            self.kept.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
    }

    fn record(id: &str) -> LedgerRecord {
        LedgerRecord {
            request_id: id.into(),
            endpoint: "chat.completions".into(),
            tier: Some("local".into()),
            status: 200,
            ..LedgerRecord::default()
        }
    }

    /// A store that blocks until the test lets it write.
    struct GatedStore {
        gate: Arc<Mutex<()>>,
        kept: Arc<Mutex<Vec<LedgerRecord>>>,
    }

    impl LedgerStore for GatedStore {
        fn write(&mut self, batch: &[LedgerRecord]) -> StoreResult<()> {
            let _open = self.gate.lock().unwrap();
            self.kept.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
    }

    // The held guard is the gate the writer thread waits on; no task ever waits for it.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_writer_makes_requests_wait_for_room_instead_of_piling_up() {
        let gate = Arc::new(Mutex::new(()));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let metrics = LedgerMetrics::new(&prometheus::Registry::new()).unwrap();
        let store = GatedStore {
            gate: gate.clone(),
            kept: kept.clone(),
        };
        let closed = gate.lock().unwrap();
        let (ledger, writer) = start_with(
            Box::new(move || Ok(Box::new(store) as Box<dyn LedgerStore>)),
            None,
            4,
            4,
            metrics.clone(),
        )
        .unwrap();
        // The writer takes the first record and blocks on it; four more fill the queue.
        let first = ledger.slot(Duration::from_secs(1)).await.unwrap();
        ledger.record_in(Some(first), record("r0"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 1..=4 {
            let slot = ledger.slot(Duration::from_secs(1)).await;
            assert!(slot.is_some(), "room for record {i}");
            ledger.record_in(slot, record(&format!("r{i}")));
        }
        // Full: the next request waits, and is refused when no room comes in time.
        assert!(ledger.slot(Duration::from_millis(50)).await.is_none());
        assert_eq!(metrics.refused.get(), 1);
        // A request waiting when the writer catches up gets its room.
        let waiting = tokio::spawn({
            let ledger = ledger.clone();
            async move { ledger.slot(Duration::from_secs(5)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(closed);
        assert!(waiting.await.unwrap());
        drop(ledger);
        writer.shutdown().await;
        assert_eq!(
            kept.lock().unwrap().len(),
            5,
            "every queued record is written"
        );
    }

    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_resolves_only_once_its_record_is_in_the_store() {
        let gate = Arc::new(Mutex::new(()));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let store = GatedStore {
            gate: gate.clone(),
            kept: kept.clone(),
        };
        let closed = gate.lock().unwrap();
        let metrics = LedgerMetrics::new(&prometheus::Registry::new()).unwrap();
        let (ledger, writer) = start_with(
            Box::new(move || Ok(Box::new(store) as Box<dyn LedgerStore>)),
            None,
            16,
            16,
            metrics,
        )
        .unwrap();
        let mut commits: Vec<Commit> = (0..3)
            .map(|i| ledger.record_committed(None, record(&format!("c{i}"))))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        for commit in &mut commits {
            assert!(commit.try_recv().is_err(), "resolved before the write");
        }
        drop(closed);
        for commit in commits {
            tokio::time::timeout(Duration::from_secs(5), commit)
                .await
                .expect("the commit resolves once written")
                .expect("the record was committed");
        }
        assert_eq!(kept.lock().unwrap().len(), 3);
        drop(ledger);
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn a_failing_store_spills_at_shutdown_and_the_next_start_replays() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("ledger.db.spill.jsonl");
        let kept = Arc::new(Mutex::new(Vec::new()));
        let metrics = LedgerMetrics::new(&prometheus::Registry::new()).unwrap();
        let failing = TestStore {
            fail: true,
            kept: kept.clone(),
        };
        let (ledger, writer) = start_with(
            Box::new(move || Ok(Box::new(failing) as Box<dyn LedgerStore>)),
            Some(spill.clone()),
            16,
            4,
            metrics.clone(),
        )
        .unwrap();
        for i in 0..10 {
            ledger.record(record(&format!("r{i}")));
        }
        drop(ledger);
        tokio::time::timeout(Duration::from_secs(10), writer.shutdown())
            .await
            .unwrap();
        let lines = std::fs::read_to_string(&spill).unwrap().lines().count();
        assert_eq!(lines, 10, "every record is in the spill file");

        let working = TestStore {
            fail: false,
            kept: kept.clone(),
        };
        let (_ledger, writer) = start_with(
            Box::new(move || Ok(Box::new(working) as Box<dyn LedgerStore>)),
            Some(spill.clone()),
            16,
            4,
            metrics,
        )
        .unwrap();
        writer.shutdown().await;
        let replayed = kept.lock().unwrap();
        assert_eq!(replayed.len(), 10);
        assert_eq!(replayed[3], record("r3"));
        assert!(!spill.exists(), "the spill file is removed once replayed");
    }
}
