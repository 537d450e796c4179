//! The networked ledger store: PostgreSQL, for several gateway replicas writing one
//! ledger. Same record, same columns as SQLite; schema versioned in a table. Also the
//! connection thread that readers (spend queries, the key store) share.

use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Statement};

use super::rollup::{self, Rollup};
use super::{LedgerRecord, LedgerStore};

/// Migrations, applied in order; `ledger_migrations` records how many ran.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE requests (
    request_id       TEXT PRIMARY KEY,
    ts_ms            BIGINT NOT NULL,
    key_id           TEXT,
    team             TEXT,
    end_user         TEXT,
    endpoint         TEXT NOT NULL,
    requested_model  TEXT NOT NULL,
    label            TEXT,
    task             TEXT,
    confidence       REAL,
    difficulty       REAL,
    pii              BOOLEAN NOT NULL,
    pii_kinds        TEXT NOT NULL,
    rule             TEXT,
    shadow_rule      TEXT,
    pool             TEXT,
    deployment       TEXT,
    provider         TEXT,
    upstream_model   TEXT,
    tier             TEXT,
    cache_hit        BOOLEAN NOT NULL,
    stream           BOOLEAN NOT NULL,
    status           INTEGER NOT NULL,
    error_kind       TEXT,
    attempts         INTEGER NOT NULL,
    fallbacks        TEXT NOT NULL,
    input_tokens     BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens    BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    usage_estimated  BOOLEAN NOT NULL,
    cost_pusd        BIGINT NOT NULL,
    reference_cost_pusd BIGINT NOT NULL,
    latency_us       BIGINT NOT NULL,
    ttft_us          BIGINT,
    upstream_us      BIGINT
);
CREATE INDEX requests_ts ON requests (ts_ms);
CREATE INDEX requests_team_ts ON requests (team, ts_ms);
CREATE INDEX requests_key_ts ON requests (key_id, ts_ms);
",
    "
CREATE TABLE keys (
    id          TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL UNIQUE,
    team        TEXT,
    budget_pusd BIGINT,
    period      TEXT,
    rpm         BIGINT,
    tpm         BIGINT,
    created_ms  BIGINT NOT NULL,
    revoked_ms  BIGINT
);
",
    "
CREATE TABLE feedback (
    request_id TEXT NOT NULL,
    ts_ms      BIGINT NOT NULL,
    key_id     TEXT,
    team       TEXT,
    score      DOUBLE PRECISION NOT NULL,
    thumbs     TEXT,
    label      TEXT,
    comment    TEXT,
    PRIMARY KEY (request_id, ts_ms)
);
CREATE INDEX feedback_ts ON feedback (ts_ms);
",
    // What `crossroads replay` needs to route a recorded request again.
    "
ALTER TABLE requests ADD COLUMN prompt_tokens_est BIGINT;
ALTER TABLE requests ADD COLUMN tools BOOLEAN;
ALTER TABLE requests ADD COLUMN images INTEGER;
ALTER TABLE requests ADD COLUMN json_mode BOOLEAN;
",
];

/// Every migration: the statements above, then the rollups ([`super::rollup`]).
fn migrations() -> Vec<String> {
    let mut all: Vec<String> = MIGRATIONS.iter().map(|m| (*m).to_owned()).collect();
    all.push(super::rollup::migration(false));
    all
}

const INSERT: &str = "INSERT INTO requests (
    request_id, ts_ms, key_id, team, end_user, endpoint, requested_model, label, task,
    confidence, difficulty, pii, pii_kinds, rule, shadow_rule, pool, deployment, provider,
    upstream_model, tier, cache_hit, stream, status, error_kind, attempts, fallbacks,
    input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
    usage_estimated, cost_pusd, reference_cost_pusd, latency_us, ttft_us, upstream_us,
    prompt_tokens_est, tools, images, json_mode
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
    $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37,
    $38, $39, $40, $41)
ON CONFLICT (request_id) DO NOTHING";

pub struct PgStore {
    client: Client,
    insert: Statement,
    spend_upsert: Statement,
    latency_upsert: Statement,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Connects with `search_path` set to `schema`, creating and migrating it if needed.
pub fn connect(url: &str, schema: &str) -> Result<Client, String> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| format!("ledger PostgreSQL URL: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let mut client = config
        .connect(NoTls)
        .map_err(|e| format!("ledger PostgreSQL: cannot connect: {e}"))?;
    // `schema` is validated as a plain identifier by the config.
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             SET search_path TO {schema};
             CREATE TABLE IF NOT EXISTS ledger_migrations (version INTEGER NOT NULL);"
        ))
        .map_err(|e| format!("ledger PostgreSQL: {e}"))?;
    let mut tx = client.transaction().map_err(|e| e.to_string())?;
    // One migrator at a time across replicas.
    tx.batch_execute("LOCK TABLE ledger_migrations IN EXCLUSIVE MODE")
        .map_err(|e| e.to_string())?;
    let done: i64 = tx
        .query_one("SELECT COUNT(*) FROM ledger_migrations", &[])
        .map_err(|e| e.to_string())?
        .get(0);
    for (i, migration) in migrations()
        .iter()
        .enumerate()
        .skip(usize::try_from(done).unwrap_or(0))
    {
        tx.batch_execute(migration).map_err(|e| {
            let detail = e
                .as_db_error()
                .map_or(String::new(), |d| format!(": {}", d.message()));
            format!("ledger PostgreSQL migration {}: {e}{detail}", i + 1)
        })?;
        tx.execute(
            "INSERT INTO ledger_migrations (version) VALUES ($1)",
            &[&i32::try_from(i + 1).unwrap_or(i32::MAX)],
        )
        .map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(client)
}

impl PgStore {
    /// Connects, creates `schema` if needed and migrates it.
    pub fn open(url: &str, schema: &str) -> Result<Self, String> {
        let mut client = connect(url, schema)?;
        let mut prepare = |sql: &str| client.prepare(sql).map_err(|e| e.to_string());
        let insert = prepare(INSERT)?;
        let spend_upsert = prepare(&rollup::spend_upsert())?;
        let latency_upsert = prepare(&rollup::latency_upsert())?;
        Ok(PgStore {
            client,
            insert,
            spend_upsert,
            latency_upsert,
        })
    }
}

type Job = Box<dyn FnOnce(Result<&mut Client, String>) + Send>;

/// How long a reader waits after a failed connect before trying again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A PostgreSQL connection owned by its own thread. The `postgres` client drives a
/// private runtime and must not be called from the async runtime's threads; callers
/// hand it work instead and wait for the answer. It connects on first use and again
/// after the connection breaks.
pub struct PgWorker {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl PgWorker {
    /// Starts the thread; the first job connects.
    pub fn start(url: String, schema: String) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ledger-pg-reader".into())
            .spawn(move || {
                let mut client: Option<Client> = None;
                // After a failed connect, jobs fail at once for a while instead of each
                // waiting out a connect timeout of its own.
                let mut down: Option<(Instant, String)> = None;
                // Ends when the last handle is dropped.
                for job in rx {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = None;
                        if let Some((since, e)) = &down
                            && since.elapsed() < RECONNECT_AFTER
                        {
                            job(Err(e.clone()));
                            continue;
                        }
                        match connect(&url, &schema) {
                            Ok(c) => {
                                client = Some(c);
                                down = None;
                            }
                            Err(e) => {
                                down = Some((Instant::now(), e.clone()));
                                job(Err(e));
                                continue;
                            }
                        }
                    }
                    if let Some(c) = client.as_mut() {
                        job(Ok(c));
                    }
                }
            })
            .map_err(|e| format!("cannot start the PostgreSQL reader thread: {e}"))?;
        Ok(PgWorker {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on the connection's thread and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let _ = tx.send(client.and_then(|c| f(c).map_err(|e| format!("PostgreSQL: {e}"))));
        });
        self.jobs
            .lock()
            .map_err(|_| "the PostgreSQL reader is unavailable".to_owned())?
            .send(job)
            .map_err(|_| "the PostgreSQL reader thread stopped".to_owned())?;
        rx.recv()
            .map_err(|_| "the PostgreSQL reader thread stopped".to_owned())?
    }
}

impl LedgerStore for PgStore {
    fn write(&mut self, batch: &[LedgerRecord]) -> Result<(), String> {
        let mut tx = self.client.transaction().map_err(|e| e.to_string())?;
        let mut rollup = Rollup::default();
        for r in batch {
            let status = i32::from(r.status);
            let attempts = i32::try_from(r.attempts).unwrap_or(i32::MAX);
            let images = r.images.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
            let inserted = tx
                .execute(
                    &self.insert,
                    &[
                        &r.request_id,
                        &r.ts_ms,
                        &r.key_id,
                        &r.team,
                        &r.end_user,
                        &r.endpoint.as_ref(),
                        &r.requested_model,
                        &r.label,
                        &r.task,
                        &r.confidence,
                        &r.difficulty,
                        &!r.pii_kinds.is_empty(),
                        &r.pii_kinds,
                        &r.rule,
                        &r.shadow_rule,
                        &r.pool,
                        &r.deployment,
                        &r.provider.as_deref(),
                        &r.upstream_model,
                        &r.tier.as_deref(),
                        &r.cache_hit,
                        &r.stream,
                        &status,
                        &r.error_kind.as_deref(),
                        &attempts,
                        &r.fallbacks,
                        &int(r.usage.input),
                        &int(r.usage.cached_input),
                        &int(r.usage.cache_write),
                        &int(r.usage.output),
                        &int(r.usage.reasoning),
                        &r.usage.estimated,
                        &r.cost.pico(),
                        &r.reference_cost.pico(),
                        &int(r.latency_us),
                        &r.ttft_us.map(int),
                        &r.upstream_us.map(int),
                        &r.prompt_tokens_est.map(int),
                        &r.tools,
                        &images,
                        &r.json_mode,
                    ],
                )
                .map_err(|e| e.to_string())?;
            // A record already there (a retried batch) adds nothing to the sums.
            if inserted == 1 {
                rollup.add(r);
            }
        }
        for (dim, day, team, key, value, sums) in rollup.spend_rows() {
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
                vec![&dim, &day, &team, &key, &value];
            params.extend(
                sums.iter()
                    .map(|n| n as &(dyn postgres::types::ToSql + Sync)),
            );
            tx.execute(&self.spend_upsert, &params)
                .map_err(|e| e.to_string())?;
        }
        for (day, deployment, metric, bucket, n) in rollup.latency_rows() {
            tx.execute(
                &self.latency_upsert,
                &[&day, &deployment, &metric, &bucket, &n],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// Calls `tick(true)` after every `NOTIFY channel` from any connection to the database,
/// and `tick(false)` about once a second otherwise, on a thread of its own, until
/// `tick` returns false. Also calls `tick(true)` once `LISTEN` holds, since a change made
/// while connecting sends no signal. Reconnects after errors; while disconnected it keeps
/// ticking.
pub fn listen(
    url: String,
    schema: String,
    channel: String,
    mut tick: impl FnMut(bool) -> bool + Send + 'static,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("ledger-pg-listen".into())
        .spawn(move || {
            loop {
                let listening = connect(&url, &schema).and_then(|mut c| {
                    c.batch_execute(&format!("LISTEN {channel}"))
                        .map(|()| c)
                        .map_err(|e| e.to_string())
                });
                let mut client = match listening {
                    // Changes committed before LISTEN took effect sent no signal here:
                    // read them now, on the first connection as after a reconnect.
                    Ok(c) if tick(true) => c,
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for key changes; retrying");
                        std::thread::sleep(RECONNECT_AFTER);
                        // Changes made meanwhile are read now.
                        if !tick(true) {
                            return;
                        }
                        continue;
                    }
                };
                loop {
                    let next = client
                        .notifications()
                        .timeout_iter(Duration::from_secs(1))
                        .next();
                    let keep = match next {
                        Ok(Some(_)) => {
                            // One refresh covers every change already queued.
                            while let Ok(Some(_)) = client.notifications().iter().next() {}
                            tick(true)
                        }
                        Ok(None) if !client.is_closed() => tick(false),
                        Ok(None) | Err(_) => break,
                    };
                    if !keep {
                        return;
                    }
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the PostgreSQL listener thread: {e}"))
}
