//! The networked ledger store: PostgreSQL, for several gateway replicas writing one
//! ledger. Same record, same columns as SQLite; schema versioned in a table. Also the
//! connection thread that readers (spend queries, the key store) share.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Statement};

use super::db::{Cell, Database, Kind, Param};
use super::error::{StoreError, StoreResult};
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

/// The columns of a record, in the order [`insert`] passes its fields.
const COLUMNS: &str = "request_id, ts_ms, key_id, team, end_user, endpoint, requested_model,
    label, task, confidence, difficulty, pii, pii_kinds, rule, shadow_rule, pool, deployment,
    provider, upstream_model, tier, cache_hit, stream, status, error_kind, attempts, fallbacks,
    input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
    usage_estimated, cost_pusd, reference_cost_pusd, latency_us, ttft_us, upstream_us,
    prompt_tokens_est, tools, images, json_mode";
const FIELDS: usize = 41;
/// Records per insert statement: a batch larger than this (`ledger.batch_size` has no
/// upper bound) is inserted in chunks, since a statement takes at most 65,535
/// parameters; it also bounds the statements [`PgStore`] keeps prepared.
const INSERT_ROWS: usize = 256;
const _: () = assert!(INSERT_ROWS * FIELDS <= u16::MAX as usize);

/// Inserts `rows` records in one statement and answers the ids it inserted (a record
/// already there, from a retried batch, is skipped).
fn insert_sql(rows: usize) -> String {
    let mut values = Vec::with_capacity(rows);
    for row in 0..rows {
        let params: Vec<String> = (1..=FIELDS)
            .map(|f| format!("${}", row * FIELDS + f))
            .collect();
        values.push(format!("({})", params.join(", ")));
    }
    format!(
        "INSERT INTO requests ({COLUMNS}) VALUES {} ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
        values.join(", ")
    )
}

pub struct PgStore {
    client: Client,
    /// The insert of n records (n ≤ [`INSERT_ROWS`]), by n, prepared on first use.
    inserts: HashMap<usize, Statement>,
    spend_upsert: Statement,
    latency_upsert: Statement,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Connects with `search_path` set to `schema`, creating and migrating it if needed.
pub fn connect(url: &str, schema: &str) -> StoreResult<Client> {
    let mut config: postgres::Config = url.parse().map_err(StoreError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let mut client = config.connect(NoTls).map_err(StoreError::Connect)?;
    // `schema` is validated as a plain identifier by the config.
    client.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
             SET search_path TO {schema};
             CREATE TABLE IF NOT EXISTS ledger_migrations (version INTEGER NOT NULL);"
    ))?;
    let mut tx = client.transaction()?;
    // One migrator at a time across replicas.
    tx.batch_execute("LOCK TABLE ledger_migrations IN EXCLUSIVE MODE")?;
    let done: i64 = tx
        .query_one("SELECT COUNT(*) FROM ledger_migrations", &[])?
        .get(0);
    for (i, migration) in migrations()
        .iter()
        .enumerate()
        .skip(usize::try_from(done).unwrap_or(0))
    {
        tx.batch_execute(migration)
            .map_err(|source| StoreError::Migration {
                version: i + 1,
                detail: source
                    .as_db_error()
                    .map_or(String::new(), |d| format!(": {}", d.message())),
                source,
            })?;
        tx.execute(
            "INSERT INTO ledger_migrations (version) VALUES ($1)",
            &[&i32::try_from(i + 1).unwrap_or(i32::MAX)],
        )?;
    }
    tx.commit()?;
    Ok(client)
}

impl PgStore {
    /// Connects, creates `schema` if needed and migrates it.
    pub fn open(url: &str, schema: &str) -> StoreResult<Self> {
        let mut client = connect(url, schema)?;
        let spend_upsert = client.prepare(&rollup::spend_upsert_many())?;
        let latency_upsert = client.prepare(&rollup::latency_upsert_many())?;
        Ok(PgStore {
            client,
            inserts: HashMap::new(),
            spend_upsert,
            latency_upsert,
        })
    }
}

type Job = Box<dyn FnOnce(StoreResult<&mut Client>) + Send>;

/// How long a reader waits after a failed connect before trying again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// A PostgreSQL connection owned by its own thread. The `postgres` client drives a
/// private runtime and must not be called from the async runtime's threads; callers
/// hand it work instead and wait for the answer. It connects on first use and again
/// after the connection breaks.
pub struct PgWorker {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Where it connects, for [`Database::listen`]'s own connection.
    url: String,
    schema: String,
}

impl PgWorker {
    /// Starts the thread; the first job connects.
    pub fn start(url: String, schema: String) -> StoreResult<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (thread_url, thread_schema) = (url.clone(), schema.clone());
        std::thread::Builder::new()
            .name("ledger-pg-reader".into())
            .spawn(move || {
                let mut client: Option<Client> = None;
                // After a failed connect, jobs fail at once for a while instead of each
                // waiting out a connect timeout of its own.
                let mut down: Option<(Instant, Arc<StoreError>)> = None;
                // Ends when the last handle is dropped.
                for job in rx {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = None;
                        if let Some((since, e)) = &down
                            && since.elapsed() < RECONNECT_AFTER
                        {
                            job(Err(StoreError::Again(e.clone())));
                            continue;
                        }
                        match connect(&thread_url, &thread_schema) {
                            Ok(c) => {
                                client = Some(c);
                                down = None;
                            }
                            Err(e) => {
                                let e = Arc::new(e);
                                down = Some((Instant::now(), e.clone()));
                                job(Err(StoreError::Again(e)));
                                continue;
                            }
                        }
                    }
                    if let Some(c) = client.as_mut() {
                        job(Ok(c));
                    }
                }
            })
            .map_err(|source| StoreError::Thread {
                what: "PostgreSQL reader",
                source,
            })?;
        Ok(PgWorker {
            jobs: Mutex::new(tx),
            url,
            schema,
        })
    }

    /// Runs `f` on the connection's thread and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> StoreResult<T> {
        const GONE: StoreError = StoreError::Unavailable("the PostgreSQL reader");
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let _ = tx.send(client.and_then(|c| Ok(f(c)?)));
        });
        self.jobs
            .lock()
            .map_err(|_| GONE)?
            .send(job)
            .map_err(|_| GONE)?;
        rx.recv().map_err(|_| GONE)?
    }
}

impl Database for PgWorker {
    fn batch(&self, sql: &str) -> StoreResult<()> {
        let sql = sql.to_owned();
        self.run(move |c| c.batch_execute(&sql))
    }

    fn execute(&self, sql: &str, params: Vec<Param>) -> StoreResult<u64> {
        let sql = sql.to_owned();
        self.run(move |c| c.execute(&sql, &pg_params(&params)))
    }

    /// From inside the async runtime this blocks the calling thread for one round trip
    /// (queries run on the connection's own thread, never on the runtime's).
    fn query(&self, sql: &str, params: Vec<Param>, kinds: &[Kind]) -> StoreResult<Vec<Vec<Cell>>> {
        let sql = sql.to_owned();
        let kinds = kinds.to_vec();
        self.run(move |c| {
            c.query(&sql, &pg_params(&params))?
                .iter()
                .map(|row| {
                    kinds
                        .iter()
                        .enumerate()
                        .map(|(i, kind)| pg_cell(row, i, *kind))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect()
        })
    }

    /// None: the rollups commit with the records.
    fn not_rolled_up(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    /// `NOTIFY {schema}_{topic}`: the database's channels are shared by every schema.
    fn notify(&self, topic: &str) -> StoreResult<()> {
        self.batch(&format!("NOTIFY {}_{topic}", self.schema))
    }

    fn listen(&self, topic: &str, tick: Box<dyn FnMut(bool) -> bool + Send>) -> StoreResult<()> {
        let channel = format!("{}_{topic}", self.schema);
        listen(self.url.clone(), self.schema.clone(), channel, tick)
    }
}

fn pg_params(params: &[Param]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(n) => n as &(dyn postgres::types::ToSql + Sync),
            Param::Real(f) => f as &(dyn postgres::types::ToSql + Sync),
            Param::Text(t) => t as &(dyn postgres::types::ToSql + Sync),
        })
        .collect()
}

fn pg_cell(row: &postgres::Row, i: usize, kind: Kind) -> Result<Cell, postgres::Error> {
    Ok(match kind {
        Kind::Text => row.try_get::<_, Option<String>>(i)?.map(Cell::Text),
        Kind::Int => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
        Kind::Int4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|n| Cell::Int(i64::from(n))),
        Kind::Real => row
            .try_get::<_, Option<f32>>(i)?
            .map(|f| Cell::Real(f64::from(f))),
        Kind::Double => row.try_get::<_, Option<f64>>(i)?.map(Cell::Real),
        Kind::Bool => row.try_get::<_, Option<bool>>(i)?.map(Cell::Bool),
    }
    .unwrap_or(Cell::Null))
}

impl LedgerStore for PgStore {
    fn write(&mut self, batch: &[LedgerRecord]) -> StoreResult<()> {
        let mut tx = self.client.transaction()?;
        let mut inserted = HashSet::new();
        for chunk in batch.chunks(INSERT_ROWS) {
            let statement = match self.inserts.get(&chunk.len()) {
                Some(statement) => statement.clone(),
                None => {
                    let statement = tx.prepare(&insert_sql(chunk.len()))?;
                    self.inserts.insert(chunk.len(), statement.clone());
                    statement
                }
            };
            inserted.extend(insert(&mut tx, &statement, chunk)?);
        }
        let mut rollup = Rollup::default();
        for r in batch {
            // A record already there (a retried batch) adds nothing to the sums.
            if inserted.remove(r.request_id.as_str()) {
                rollup.add(r);
            }
        }
        add_rollup(&mut tx, &self.spend_upsert, &self.latency_upsert, &rollup)?;
        Ok(tx.commit()?)
    }
}

/// Inserts `batch` with `statement` (of [`insert_sql`] for its length); the ids it
/// inserted (a record already there, from a retried batch, is not among them).
fn insert(
    tx: &mut postgres::Transaction<'_>,
    statement: &Statement,
    batch: &[LedgerRecord],
) -> StoreResult<HashSet<String>> {
    /// What a record's fields become as parameters, owned where they are computed.
    struct Computed<'a> {
        endpoint: &'a str,
        pii: bool,
        provider: Option<&'a str>,
        tier: Option<&'a str>,
        status: i32,
        error_kind: Option<&'a str>,
        attempts: i32,
        tokens: [i64; 5],
        cost: i64,
        reference_cost: i64,
        latency_us: i64,
        ttft_us: Option<i64>,
        upstream_us: Option<i64>,
        prompt_tokens_est: Option<i64>,
        images: Option<i32>,
    }
    let small = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let computed: Vec<Computed<'_>> = batch
        .iter()
        .map(|r| Computed {
            endpoint: r.endpoint.as_ref(),
            pii: !r.pii_kinds.is_empty(),
            provider: r.provider.as_deref(),
            tier: r.tier.as_deref(),
            status: i32::from(r.status),
            error_kind: r.error_kind.as_deref(),
            attempts: small(r.attempts),
            tokens: [
                int(r.usage.input),
                int(r.usage.cached_input),
                int(r.usage.cache_write),
                int(r.usage.output),
                int(r.usage.reasoning),
            ],
            cost: r.cost.pico(),
            reference_cost: r.reference_cost.pico(),
            latency_us: int(r.latency_us),
            ttft_us: r.ttft_us.map(int),
            upstream_us: r.upstream_us.map(int),
            prompt_tokens_est: r.prompt_tokens_est.map(int),
            images: r.images.map(small),
        })
        .collect();
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        Vec::with_capacity(batch.len() * FIELDS);
    for (r, c) in batch.iter().zip(&computed) {
        params.extend([
            &r.request_id as &(dyn postgres::types::ToSql + Sync),
            &r.ts_ms,
            &r.key_id,
            &r.team,
            &r.end_user,
            &c.endpoint,
            &r.requested_model,
            &r.label,
            &r.task,
            &r.confidence,
            &r.difficulty,
            &c.pii,
            &r.pii_kinds,
            &r.rule,
            &r.shadow_rule,
            &r.pool,
            &r.deployment,
            &c.provider,
            &r.upstream_model,
            &c.tier,
            &r.cache_hit,
            &r.stream,
            &c.status,
            &c.error_kind,
            &c.attempts,
            &r.fallbacks,
            &c.tokens[0],
            &c.tokens[1],
            &c.tokens[2],
            &c.tokens[3],
            &c.tokens[4],
            &r.usage.estimated,
            &c.cost,
            &c.reference_cost,
            &c.latency_us,
            &c.ttft_us,
            &c.upstream_us,
            &c.prompt_tokens_est,
            &r.tools,
            &c.images,
            &r.json_mode,
        ]);
    }
    Ok(tx
        .query(statement, &params)?
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<_, _>>()?)
}

/// Adds a batch's sums to the rollup tables: one statement for every `spend_daily` row
/// and one for every `latency_daily` bucket, whatever the batch holds (a statement per
/// row cost a round trip each: about ten for a one-record batch). Rows go in key order,
/// so replicas adding to the same rows at once lock them in the same order.
fn add_rollup(
    tx: &mut postgres::Transaction<'_>,
    spend_upsert: &Statement,
    latency_upsert: &Statement,
    rollup: &Rollup,
) -> StoreResult<()> {
    let mut spend: Vec<_> = rollup.spend_rows().collect();
    spend.sort_unstable_by_key(|r| (r.0, r.1, r.2, r.3, r.4));
    if !spend.is_empty() {
        let dims: Vec<&str> = spend.iter().map(|r| r.0).collect();
        let days: Vec<i64> = spend.iter().map(|r| r.1).collect();
        let teams: Vec<&str> = spend.iter().map(|r| r.2).collect();
        let keys: Vec<&str> = spend.iter().map(|r| r.3).collect();
        let values: Vec<&str> = spend.iter().map(|r| r.4).collect();
        let sums: Vec<Vec<i64>> = (0..rollup::Sums::COLUMNS.len())
            .map(|c| spend.iter().map(|r| r.5[c]).collect())
            .collect();
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            vec![&dims, &days, &teams, &keys, &values];
        params.extend(
            sums.iter()
                .map(|column| column as &(dyn postgres::types::ToSql + Sync)),
        );
        tx.execute(spend_upsert, &params)?;
    }
    let mut latency: Vec<_> = rollup.latency_rows().collect();
    latency.sort_unstable_by_key(|r| (r.0, r.1, r.2, r.3));
    if !latency.is_empty() {
        let days: Vec<i64> = latency.iter().map(|r| r.0).collect();
        let deployments: Vec<&str> = latency.iter().map(|r| r.1).collect();
        let metrics: Vec<&str> = latency.iter().map(|r| r.2).collect();
        let buckets: Vec<i64> = latency.iter().map(|r| r.3).collect();
        let counts: Vec<i64> = latency.iter().map(|r| r.4).collect();
        tx.execute(
            latency_upsert,
            &[&days, &deployments, &metrics, &buckets, &counts],
        )?;
    }
    Ok(())
}

/// Calls `tick(true)` after every `NOTIFY channel` from any connection to the database,
/// and `tick(false)` about once a second otherwise, on a thread of its own, until
/// `tick` returns false. Also calls `tick(true)` once `LISTEN` holds, since a change made
/// while connecting sends no signal. Reconnects after errors; while disconnected it keeps
/// ticking.
fn listen(
    url: String,
    schema: String,
    channel: String,
    mut tick: Box<dyn FnMut(bool) -> bool + Send>,
) -> StoreResult<()> {
    std::thread::Builder::new()
        .name("ledger-pg-listen".into())
        .spawn(move || {
            loop {
                let listening = connect(&url, &schema).and_then(|mut c| {
                    c.batch_execute(&format!("LISTEN {channel}"))
                        .map(|()| c)
                        .map_err(StoreError::from)
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
        .map_err(|source| StoreError::Thread {
            what: "PostgreSQL listener",
            source,
        })
}
