//! The embedded ledger store: SQLite in WAL mode, schema versioned by `user_version`.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::db::{Cell, Database, Kind, Param};
use super::error::{StoreError, StoreResult};
use super::rollup::{Rollup, WATERMARK, latency_upsert, roll_up_sql, spend_upsert};
use super::{LedgerRecord, LedgerStore};

/// Schema migrations, applied in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE requests (
    request_id       TEXT PRIMARY KEY,
    ts_ms            INTEGER NOT NULL,
    key_id           TEXT,
    team             TEXT,
    end_user         TEXT,
    endpoint         TEXT NOT NULL,
    requested_model  TEXT NOT NULL,
    label            TEXT,
    confidence       REAL,
    difficulty       REAL,
    pii              INTEGER NOT NULL,
    pii_kinds        TEXT NOT NULL,
    rule             TEXT,
    pool             TEXT,
    deployment       TEXT,
    provider         TEXT,
    upstream_model   TEXT,
    tier             TEXT,
    cache_hit        INTEGER NOT NULL,
    stream           INTEGER NOT NULL,
    status           INTEGER NOT NULL,
    error_kind       TEXT,
    attempts         INTEGER NOT NULL,
    fallbacks        TEXT NOT NULL,
    input_tokens     INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    output_tokens    INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    usage_estimated  INTEGER NOT NULL,
    cost_pusd        INTEGER NOT NULL,
    reference_cost_pusd INTEGER NOT NULL,
    latency_us       INTEGER NOT NULL,
    ttft_us          INTEGER,
    upstream_us      INTEGER
);
CREATE INDEX requests_ts ON requests (ts_ms);
CREATE INDEX requests_team_ts ON requests (team, ts_ms);
CREATE INDEX requests_key_ts ON requests (key_id, ts_ms);
"#,
    r#"
ALTER TABLE requests ADD COLUMN task TEXT;
"#,
    r#"
ALTER TABLE requests ADD COLUMN shadow_rule TEXT;
"#,
    // `POST /v1/feedback`. No foreign key: a request's row may reach the ledger after
    // the answer does, and the gateway checks the id before it stores feedback.
    r#"
CREATE TABLE feedback (
    request_id TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    key_id     TEXT,
    team       TEXT,
    score      REAL NOT NULL,
    thumbs     TEXT,
    label      TEXT,
    comment    TEXT,
    PRIMARY KEY (request_id, ts_ms)
);
CREATE INDEX feedback_ts ON feedback (ts_ms);
"#,
    // What `crossroads replay` needs to route a recorded request again.
    r#"
ALTER TABLE requests ADD COLUMN prompt_tokens_est INTEGER;
ALTER TABLE requests ADD COLUMN tools INTEGER;
ALTER TABLE requests ADD COLUMN images INTEGER;
ALTER TABLE requests ADD COLUMN json_mode INTEGER;
"#,
];

/// The key store's table (`crossroads keys create`). Earlier versions created it when
/// the key store opened, hence `IF NOT EXISTS`.
const KEYS: &str = "
CREATE TABLE IF NOT EXISTS keys (
    id          TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE,
    team        TEXT,
    budget_pusd INTEGER,
    period      TEXT,
    rpm         INTEGER,
    tpm         INTEGER,
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER
);";

/// Every migration: the statements above, then the rollups ([`super::rollup`]), then
/// the key store's table.
fn migrations() -> Vec<String> {
    let mut all: Vec<String> = MIGRATIONS.iter().map(|m| (*m).to_owned()).collect();
    all.push(super::rollup::migration(true));
    all.push(KEYS.to_owned());
    all
}

const INSERT: &str = "INSERT OR IGNORE INTO requests (
    request_id, ts_ms, key_id, team, end_user, endpoint, requested_model, label, confidence,
    difficulty, pii, pii_kinds, rule, pool, deployment, provider, upstream_model, tier,
    cache_hit, stream, status, error_kind, attempts, fallbacks, input_tokens,
    cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, usage_estimated,
    cost_pusd, reference_cost_pusd, latency_us, ttft_us, upstream_us, task,
    shadow_rule, prompt_tokens_est, tools, images, json_mode
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
    ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36,
    ?37, ?38, ?39, ?40, ?41)";

/// A SQLite ledger file.
pub struct SqliteStore {
    conn: Connection,
    /// When the rollups last caught up.
    rolled: std::time::Instant,
    /// The sums of the records this store wrote since then, and their rowids (first,
    /// last, count); `None` when they cannot be trusted (a batch failed mid-way).
    pending: Rollup,
    pending_rows: Option<Option<(i64, i64, i64)>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the ledger at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        Connection::open(path)
            .and_then(Self::init)
            .map_err(|e| StoreError::from(e).in_file(path))
    }

    /// A ledger that lives as long as the process (tests, dry runs).
    pub fn open_in_memory() -> StoreResult<Self> {
        Ok(Self::init(Connection::open_in_memory()?)?)
    }

    fn init(mut conn: Connection) -> rusqlite::Result<Self> {
        // WAL lets readers (spend queries, tests) run while the writer appends;
        // NORMAL sync is durable across process crashes, which is what WAL promises.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn,
            rolled: std::time::Instant::now(),
            pending: Rollup::default(),
            pending_rows: Some(None),
        })
    }
}

/// Brings a ledger's schema up to date. Each step runs in a write transaction that
/// reads the version again: a CLI command opening the ledger while the gateway starts
/// never runs a migration twice.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, migration) in migrations().iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version <= i {
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
    }
    Ok(())
}

/// The readers' connection to a SQLite ledger.
pub struct SqliteDb(Mutex<Connection>);

impl SqliteDb {
    /// Opens (creating if needed) and migrates the ledger at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let open = || -> rusqlite::Result<Connection> {
            let mut conn = Connection::open(path)?;
            migrate(&mut conn)?;
            Ok(conn)
        };
        let conn = open().map_err(|e| StoreError::from(e).in_file(path))?;
        Ok(SqliteDb(Mutex::new(conn)))
    }

    /// A private in-memory ledger (tests).
    pub fn open_in_memory() -> StoreResult<Self> {
        let mut conn = Connection::open_in_memory()?;
        migrate(&mut conn)?;
        Ok(SqliteDb(Mutex::new(conn)))
    }

    fn lock(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.0
            .lock()
            .map_err(|_| StoreError::Unavailable("the ledger connection"))
    }
}

impl Database for SqliteDb {
    fn batch(&self, sql: &str) -> StoreResult<()> {
        Ok(self.lock()?.execute_batch(sql)?)
    }

    fn execute(&self, sql: &str, params: Vec<Param>) -> StoreResult<u64> {
        let n = self.lock()?.execute(
            sql,
            rusqlite::params_from_iter(params.iter().map(sqlite_param)),
        )?;
        Ok(n as u64)
    }

    fn query(&self, sql: &str, params: Vec<Param>, kinds: &[Kind]) -> StoreResult<Vec<Vec<Cell>>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(
            rusqlite::params_from_iter(params.iter().map(sqlite_param)),
            |row| {
                kinds
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| sqlite_cell(row.get_ref(i)?, *kind))
                    .collect::<rusqlite::Result<Vec<_>>>()
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The records past the rollups' watermark. `NOT INDEXED` keeps SQLite on the rowid
    /// range (a few rows) rather than a filter's time index (the whole range).
    fn not_rolled_up(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "requests NOT INDEXED",
            "rowid > (SELECT rolled_rowid FROM rollup_state)",
        ))
    }
}

fn sqlite_param(p: &Param) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match p {
        Param::Int(Some(n)) => Value::Integer(*n),
        Param::Real(Some(f)) => Value::Real(*f),
        Param::Text(Some(t)) => Value::Text(t.clone()),
        Param::Int(None) | Param::Real(None) | Param::Text(None) => Value::Null,
    }
}

fn sqlite_cell(value: rusqlite::types::ValueRef<'_>, kind: Kind) -> rusqlite::Result<Cell> {
    use rusqlite::types::ValueRef;
    Ok(match (value, kind) {
        (ValueRef::Null, _) => Cell::Null,
        (ValueRef::Integer(n), Kind::Bool) => Cell::Bool(n != 0),
        (ValueRef::Integer(n), Kind::Real | Kind::Double) => Cell::Real(n as f64),
        (ValueRef::Integer(n), _) => Cell::Int(n),
        (ValueRef::Real(f), _) => Cell::Real(f),
        (ValueRef::Text(t), _) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        (ValueRef::Blob(_), _) => Cell::Null,
    })
}

fn opt_u64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl LedgerStore for SqliteStore {
    fn write(&mut self, batch: &[LedgerRecord]) -> StoreResult<()> {
        // Sums are added as rows go in: until the commit they cannot be trusted, and
        // after a failed batch not until the next roll-up sums the records again.
        let trusted = self.pending_rows.take();
        let mut rows = trusted.flatten();
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for r in batch {
                let inserted = insert.execute(params![
                    r.request_id,
                    r.ts_ms,
                    r.key_id,
                    r.team,
                    r.end_user,
                    r.endpoint,
                    r.requested_model,
                    r.label,
                    r.confidence,
                    r.difficulty,
                    !r.pii_kinds.is_empty(),
                    r.pii_kinds,
                    r.rule,
                    r.pool,
                    r.deployment,
                    r.provider,
                    r.upstream_model,
                    r.tier,
                    r.cache_hit,
                    r.stream,
                    r.status,
                    r.error_kind,
                    r.attempts,
                    r.fallbacks,
                    int(r.usage.input),
                    int(r.usage.cached_input),
                    int(r.usage.cache_write),
                    int(r.usage.output),
                    int(r.usage.reasoning),
                    r.usage.estimated,
                    r.cost.pico(),
                    r.reference_cost.pico(),
                    int(r.latency_us),
                    opt_u64(r.ttft_us),
                    opt_u64(r.upstream_us),
                    r.task,
                    r.shadow_rule,
                    opt_u64(r.prompt_tokens_est),
                    r.tools,
                    r.images,
                    r.json_mode,
                ])?;
                // A record already there (a retried batch) adds nothing to the sums.
                if inserted == 1 {
                    self.pending.add(r);
                    let id = tx.last_insert_rowid();
                    rows = Some(rows.map_or((id, id, 1), |(first, _, n)| (first, id, n + 1)));
                }
            }
        }
        tx.commit()?;
        self.pending_rows = trusted.map(|_| rows);
        Ok(())
    }

    /// Rolls the records written since the last roll-up into the rollups, about once a
    /// second (and at shutdown), after the batch's waiters were answered.
    fn maintain(&mut self, finishing: bool) -> StoreResult<()> {
        if finishing || self.rolled.elapsed() >= ROLL_UP_EVERY {
            self.roll_up()?;
        }
        Ok(())
    }
}

/// How far the rollups may lag the records (readers add the lag themselves).
const ROLL_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl SqliteStore {
    /// Adds the records past the watermark to the rollups and moves the watermark, in
    /// one transaction ([`super::rollup`]).
    pub fn roll_up(&mut self) -> StoreResult<()> {
        self.rolled = std::time::Instant::now();
        let tx = self.conn.transaction()?;
        let (rolled, last): (i64, i64) = tx.query_row(
            &format!("SELECT ({WATERMARK}), (SELECT COALESCE(MAX(rowid), 0) FROM requests)"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let pending = std::mem::take(&mut self.pending);
        let rows = self.pending_rows.replace(None);
        if last > rolled {
            // This store wrote every record past the watermark, one rowid after
            // another: its sums are theirs. Otherwise (another process wrote too, or
            // records from before a restart wait), the records are summed again.
            if rows == Some(Some((rolled + 1, last, last - rolled))) {
                upsert(&tx, &pending)?;
            } else {
                tx.execute_batch(&roll_up_sql(&format!(
                    "rowid > {rolled} AND rowid <= {last}"
                )))?;
            }
            tx.execute("UPDATE rollup_state SET rolled_rowid = ?1", [last])?;
        }
        tx.commit()?;
        // Caught up: what this store writes next is summed again from here.
        self.pending_rows = Some(None);
        Ok(())
    }
}

/// Adds `sums` to the rollup tables.
fn upsert(tx: &rusqlite::Transaction<'_>, sums: &Rollup) -> rusqlite::Result<()> {
    let mut spend = tx.prepare_cached(&spend_upsert())?;
    for (dim, day, team, key, value, totals) in sums.spend_rows() {
        let mut values: Vec<rusqlite::types::Value> = vec![
            dim.to_owned().into(),
            day.into(),
            team.to_owned().into(),
            key.to_owned().into(),
            value.to_owned().into(),
        ];
        values.extend(totals.iter().map(|n| rusqlite::types::Value::Integer(*n)));
        spend.execute(rusqlite::params_from_iter(values))?;
    }
    let mut latency = tx.prepare_cached(&latency_upsert())?;
    for (day, deployment, metric, bucket, n) in sums.latency_rows() {
        latency.execute(params![day, deployment, metric, bucket, n])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::accounting::{Usage, Usd};

    #[test]
    fn writes_and_reopens_without_remigrating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let record = LedgerRecord {
            request_id: "req-1".into(),
            endpoint: "chat.completions".into(),
            requested_model: "auto".into(),
            status: 200,
            usage: Usage {
                input: 10,
                output: 5,
                ..Usage::default()
            },
            cost: Usd::from_pico(123),
            ..LedgerRecord::default()
        };
        store.write(std::slice::from_ref(&record)).unwrap();
        // A retried batch must not duplicate rows.
        store.write(std::slice::from_ref(&record)).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let (n, cost): (i64, i64) = store
            .conn
            .query_row("SELECT COUNT(*), SUM(cost_pusd) FROM requests", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((n, cost), (1, 123));
    }

    /// Every row of the rollup tables, in order.
    fn rollups(conn: &Connection) -> Vec<String> {
        let mut rows = Vec::new();
        for sql in [
            "SELECT * FROM spend_daily ORDER BY dim, day, team, key_id, value",
            "SELECT * FROM latency_daily ORDER BY day, deployment, metric, bucket",
        ] {
            let mut stmt = conn.prepare(sql).unwrap();
            let n = stmt.column_count();
            let mut q = stmt.query([]).unwrap();
            while let Some(row) = q.next().unwrap() {
                let cells: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                rows.push(cells.join("|"));
            }
        }
        rows
    }

    #[test]
    fn rollups_caught_up_in_steps_equal_one_roll_up_of_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let records: Vec<LedgerRecord> = (0..500i64)
            .map(|i| LedgerRecord {
                request_id: format!("req-{i}"),
                ts_ms: i * 3_600_000 * 7,
                team: (i % 3 > 0).then(|| format!("team-{}", i % 3)),
                key_id: (i % 5 > 0).then(|| format!("key-{}", i % 5)),
                endpoint: "chat.completions".into(),
                requested_model: "auto".into(),
                label: Some(["math", "law"][(i % 2) as usize].into()),
                rule: (i % 4 > 0).then(|| "default".into()),
                deployment: (i % 6 > 0).then(|| format!("d{}", i % 2)),
                upstream_model: Some("m".into()),
                tier: (i % 6 > 0).then(|| "local".into()),
                cache_hit: i % 9 == 0,
                status: if i % 17 == 0 { 502 } else { 200 },
                fallbacks: if i % 11 == 0 {
                    "d1:timeout".into()
                } else {
                    String::new()
                },
                usage: Usage {
                    input: i as u64 * 13,
                    output: i as u64,
                    ..Usage::default()
                },
                cost: Usd::from_pico(i * 1_000_003),
                reference_cost: Usd::from_pico(i * 2_000_007),
                latency_us: (i as u64 * 7919) % 5_000_000,
                ttft_us: (i % 2 == 0).then_some(i as u64 * 31),
                ..LedgerRecord::default()
            })
            .collect();
        // Rolled up a few chunks at a time, with a retried batch among them.
        for (i, chunk) in records[..384].chunks(64).enumerate() {
            store.write(chunk).unwrap();
            if i % 3 == 2 {
                store.roll_up().unwrap();
            }
        }
        store.write(&records[..64]).unwrap();
        store.write(&records[384..450]).unwrap();
        // A restart with records not rolled up: the new store sums them from the table.
        drop(store);
        let mut store = SqliteStore::open(&path).unwrap();
        store.write(&records[450..]).unwrap();
        store.maintain(true).unwrap();
        let incremental = rollups(&store.conn);
        assert!(incremental.len() > 100);
        // All at once, as the migration does for the records an older ledger holds.
        store
            .conn
            .execute_batch(
                "DELETE FROM spend_daily; DELETE FROM latency_daily;
                 UPDATE rollup_state SET rolled_rowid = 0;",
            )
            .unwrap();
        store.roll_up().unwrap();
        assert_eq!(rollups(&store.conn), incremental);
        let per_batch = {
            let mut rollup = super::super::rollup::Rollup::default();
            for r in &records {
                rollup.add(r);
            }
            rollup.spend_rows().count()
        };
        assert_eq!(
            per_batch,
            incremental
                .iter()
                .filter(|r| r.matches('|').count() == 15)
                .count(),
            "PostgreSQL's per-batch rollup makes the same spend rows"
        );
    }

    #[test]
    fn a_ledger_of_the_previous_version_opens_and_gains_the_feedback_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // What the previous version left: three migrations and a record.
            let conn = Connection::open(&path).unwrap();
            for migration in &MIGRATIONS[..3] {
                conn.execute_batch(migration).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute_batch(
                "INSERT INTO requests (request_id, ts_ms, endpoint, requested_model, pii,
                    pii_kinds, cache_hit, stream, status, attempts, fallbacks, input_tokens,
                    cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
                    usage_estimated, cost_pusd, reference_cost_pusd, latency_us)
                 VALUES ('old-1', 1, 'chat.completions', 'auto', 0, '', 0, 0, 200, 1, '',
                    0, 0, 0, 0, 0, 0, 0, 0, 0)",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let version: usize = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, migrations().len());
        let (requests, feedback): (i64, i64) = store
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM requests), (SELECT COUNT(*) FROM feedback)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((requests, feedback), (1, 0));
    }
}
