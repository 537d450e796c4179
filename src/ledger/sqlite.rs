//! The embedded ledger store: SQLite in WAL mode, schema versioned by `user_version`.

use std::path::Path;

use rusqlite::{Connection, params};

use super::rollup::{LATENCY_UPSERT, Rollup, SPEND_UPSERT};
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

/// Every migration: the statements above, then the rollups ([`super::rollup`]).
fn migrations() -> Vec<String> {
    let mut all: Vec<String> = MIGRATIONS.iter().map(|m| (*m).to_owned()).collect();
    all.push(super::rollup::migration());
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
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the ledger at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("ledger directory {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path).map_err(|e| format!("ledger {}: {e}", path.display()))?;
        Self::init(conn).map_err(|e| format!("ledger {}: {e}", path.display()))
    }

    /// A ledger that lives as long as the process (tests, dry runs).
    pub fn open_in_memory() -> Result<Self, String> {
        let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        Self::init(conn).map_err(|e| e.to_string())
    }

    fn init(mut conn: Connection) -> rusqlite::Result<Self> {
        // WAL lets readers (spend queries, tests) run while the writer appends;
        // NORMAL sync is durable across process crashes, which is what WAL promises.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Each step in a write transaction that reads the version again: a CLI command
        // opening the ledger while the gateway starts never runs a migration twice.
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
        Ok(SqliteStore { conn })
    }
}

fn opt_u64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl LedgerStore for SqliteStore {
    fn write(&mut self, batch: &[LedgerRecord]) -> Result<(), String> {
        let tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let mut rollup = Rollup::default();
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(|e| e.to_string())?;
            for r in batch {
                let inserted = insert
                    .execute(params![
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
                    ])
                    .map_err(|e| e.to_string())?;
                // A record already there (a retried batch) adds nothing to the sums.
                if inserted == 1 {
                    rollup.add(r);
                }
            }
            let mut spend = tx.prepare_cached(SPEND_UPSERT).map_err(|e| e.to_string())?;
            for (dim, day, team, key, value, sums) in rollup.spend_rows() {
                let mut values: Vec<rusqlite::types::Value> = vec![
                    dim.to_owned().into(),
                    day.into(),
                    team.to_owned().into(),
                    key.to_owned().into(),
                    value.to_owned().into(),
                ];
                values.extend(sums.iter().map(|n| rusqlite::types::Value::Integer(*n)));
                spend
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(|e| e.to_string())?;
            }
            let mut latency = tx
                .prepare_cached(LATENCY_UPSERT)
                .map_err(|e| e.to_string())?;
            for (day, deployment, metric, bucket, n) in rollup.latency_rows() {
                latency
                    .execute(params![day, deployment, metric, bucket, n])
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }
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
    fn the_migration_backfills_the_rollups_the_writer_keeps() {
        let mut store = SqliteStore::open_in_memory().unwrap();
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
        for chunk in records.chunks(64) {
            store.write(chunk).unwrap();
        }
        let written = rollups(&store.conn);
        assert!(written.len() > 100);
        store
            .conn
            .execute_batch("DELETE FROM spend_daily; DELETE FROM latency_daily;")
            .unwrap();
        store
            .conn
            .execute_batch(&super::super::rollup::backfill())
            .unwrap();
        assert_eq!(rollups(&store.conn), written);
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
