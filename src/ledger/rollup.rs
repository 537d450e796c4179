//! Daily rollups of the ledger, kept beside the records, so the console and
//! `GET /v1/spend` answer from a few thousand summed rows instead of scanning millions
//! of requests.
//!
//! `spend_daily` holds, per UTC day, team and key, one row of sums for each value of
//! each dimension a reader groups by ([`Dim`]); `latency_daily` holds, per UTC day and
//! deployment, histograms of latency and time to first token in buckets of two
//! significant digits ([`latency_bucket`]).
//!
//! SQLite rolls records up behind the writer, off the request path: about once a
//! second the writer thread adds the records past a watermark (`rollup_state`, a
//! rowid: SQLite's single writer gives rowids in commit order) to the rollups with
//! [`roll_up_sql`] and moves the watermark, in one transaction; readers add the few
//! records past it themselves, so figures are exact at any moment. PostgreSQL, where
//! replicas write concurrently and ids say nothing of commit order, adds each batch's
//! [`Rollup`] in the batch's own transaction. A record already there (a retried batch)
//! adds nothing either way. The migration fills both tables from the records already
//! there with the same SQL.

use foldhash::HashMap;

use super::LedgerRecord;

/// One day in Unix milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// A dimension of `spend_daily`: which record field `value` holds. `All` has an empty
/// value and answers totals by team, key and day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    All,
    Model,
    Deployment,
    Rule,
    Domain,
    Tier,
}

impl Dim {
    pub const EVERY: [Dim; 6] = [
        Dim::All,
        Dim::Model,
        Dim::Deployment,
        Dim::Rule,
        Dim::Domain,
        Dim::Tier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dim::All => "all",
            Dim::Model => "model",
            Dim::Deployment => "deployment",
            Dim::Rule => "rule",
            Dim::Domain => "domain",
            Dim::Tier => "tier",
        }
    }

    /// The record's value for this dimension; `""` for none.
    fn value(self, r: &LedgerRecord) -> &str {
        match self {
            Dim::All => "",
            Dim::Model => r.upstream_model.as_deref().unwrap_or_default(),
            Dim::Deployment => r.deployment.as_deref().unwrap_or_default(),
            Dim::Rule => r.rule.as_deref().unwrap_or_default(),
            Dim::Domain => r.label.as_deref().unwrap_or_default(),
            Dim::Tier => r.tier.as_deref().unwrap_or_default(),
        }
    }
}

/// What a group of requests adds up to. Counts and pico-dollars, as the ledger stores
/// them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub requests: i64,
    /// Answers with status 400 or above.
    pub errors: i64,
    pub cache_hits: i64,
    /// Requests that fell back from at least one deployment.
    pub fallbacks: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_pusd: i64,
    pub reference_cost_pusd: i64,
}

impl Sums {
    /// The columns, in the order of [`Sums::from_cells`] and of the tables.
    pub const COLUMNS: [&'static str; 11] = [
        "requests",
        "errors",
        "cache_hits",
        "fallbacks",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_pusd",
        "reference_cost_pusd",
    ];

    fn of(r: &LedgerRecord) -> Sums {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Sums {
            requests: 1,
            errors: i64::from(r.status >= 400),
            cache_hits: i64::from(r.cache_hit),
            fallbacks: i64::from(!r.fallbacks.is_empty()),
            input_tokens: n(r.usage.input),
            cached_input_tokens: n(r.usage.cached_input),
            cache_write_tokens: n(r.usage.cache_write),
            output_tokens: n(r.usage.output),
            reasoning_tokens: n(r.usage.reasoning),
            cost_pusd: r.cost.pico(),
            reference_cost_pusd: r.reference_cost.pico(),
        }
    }

    pub fn add(&mut self, o: &Sums) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.cache_hits += o.cache_hits;
        self.fallbacks += o.fallbacks;
        self.input_tokens += o.input_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cost_pusd += o.cost_pusd;
        self.reference_cost_pusd += o.reference_cost_pusd;
    }

    /// Reads the eleven columns starting at `at` (a missing or null one is 0).
    pub fn from_cells(cells: &[super::db::Cell], at: usize) -> Sums {
        let n = |i: usize| cells.get(at + i).and_then(|c| c.int()).unwrap_or(0);
        Sums {
            requests: n(0),
            errors: n(1),
            cache_hits: n(2),
            fallbacks: n(3),
            input_tokens: n(4),
            cached_input_tokens: n(5),
            cache_write_tokens: n(6),
            output_tokens: n(7),
            reasoning_tokens: n(8),
            cost_pusd: n(9),
            reference_cost_pusd: n(10),
        }
    }

    /// The values as statement parameters, in [`Sums::COLUMNS`] order.
    fn values(&self) -> [i64; 11] {
        [
            self.requests,
            self.errors,
            self.cache_hits,
            self.fallbacks,
            self.input_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.cost_pusd,
            self.reference_cost_pusd,
        ]
    }
}

/// The bucket of a duration in microseconds: the value cut to two significant digits
/// (7 → 7, 1234 → 1200, 98765 → 98000), so a bucket is at most 10% wide and a
/// percentile read at its middle is within 5%. [`bucket_sql`] computes the same in SQL.
pub fn latency_bucket(us: u64) -> i64 {
    let v = i64::try_from(us).unwrap_or(i64::MAX);
    let mut step = 1;
    while v / step >= 100 {
        step *= 10;
    }
    v / step * step
}

/// The width of the bucket that starts at `bucket`.
pub fn bucket_width(bucket: i64) -> i64 {
    let mut step = 1;
    while bucket / step >= 100 {
        step *= 10;
    }
    step
}

/// Which histogram of `latency_daily` a count is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Latency,
    Ttft,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Ttft => "ttft",
        }
    }
}

/// The rows records add to the rollup tables, summed in memory. Adding a record
/// allocates only for a group not seen before: groups are found by borrowed keys.
#[derive(Debug, Default)]
pub struct Rollup {
    /// By day, team and key (written into one string), then by dimension and value.
    spend: HashMap<String, Owner>,
    /// By day and deployment, then by metric and bucket.
    latency: HashMap<String, Histograms>,
    /// The key being looked up, reused.
    scratch: String,
}

/// A day's and deployment's counts by metric and bucket.
type Histograms = (i64, String, HashMap<(Metric, i64), i64>);

/// The sums of one day, team and key.
#[derive(Debug, Default)]
struct Owner {
    day: i64,
    team: String,
    key: String,
    dims: [HashMap<String, Sums>; 6],
}

impl Rollup {
    pub fn add(&mut self, r: &LedgerRecord) {
        use std::fmt::Write;
        let day = r.ts_ms.div_euclid(DAY_MS);
        let team = r.team.as_deref().unwrap_or_default();
        let key = r.key_id.as_deref().unwrap_or_default();
        let sums = Sums::of(r);
        self.scratch.clear();
        let _ = write!(self.scratch, "{day}\u{1}{team}\u{1}{key}");
        if !self.spend.contains_key(self.scratch.as_str()) {
            self.spend.insert(
                self.scratch.clone(),
                Owner {
                    day,
                    team: team.to_owned(),
                    key: key.to_owned(),
                    ..Owner::default()
                },
            );
        }
        if let Some(owner) = self.spend.get_mut(self.scratch.as_str()) {
            for (dim, values) in Dim::EVERY.iter().zip(owner.dims.iter_mut()) {
                let value = dim.value(r);
                match values.get_mut(value) {
                    Some(total) => total.add(&sums),
                    None => {
                        values.insert(value.to_owned(), sums);
                    }
                }
            }
        }
        // Requests that reached a deployment; refusals have no latency of one.
        if let Some(deployment) = &r.deployment {
            self.scratch.clear();
            let _ = write!(self.scratch, "{day}\u{1}{deployment}");
            let buckets = match self.latency.get_mut(self.scratch.as_str()) {
                Some((_, _, buckets)) => buckets,
                None => {
                    let entry = (day, deployment.clone(), HashMap::default());
                    &mut self.latency.entry(self.scratch.clone()).or_insert(entry).2
                }
            };
            *buckets
                .entry((Metric::Latency, latency_bucket(r.latency_us)))
                .or_default() += 1;
            if let Some(ttft) = r.ttft_us {
                *buckets
                    .entry((Metric::Ttft, latency_bucket(ttft)))
                    .or_default() += 1;
            }
        }
    }

    /// Each `spend_daily` row as the parameters of [`spend_upsert`].
    pub fn spend_rows(
        &self,
    ) -> impl Iterator<Item = (&'static str, i64, &str, &str, &str, [i64; 11])> {
        self.spend.values().flat_map(|o| {
            Dim::EVERY
                .iter()
                .zip(&o.dims)
                .flat_map(move |(dim, values)| {
                    values.iter().map(move |(value, sums)| {
                        (
                            dim.as_str(),
                            o.day,
                            o.team.as_str(),
                            o.key.as_str(),
                            value.as_str(),
                            sums.values(),
                        )
                    })
                })
        })
    }

    /// Each `latency_daily` row as the parameters of [`latency_upsert`].
    pub fn latency_rows(&self) -> impl Iterator<Item = (i64, &str, &'static str, i64, i64)> {
        self.latency
            .values()
            .flat_map(|(day, deployment, buckets)| {
                buckets.iter().map(move |((metric, bucket), n)| {
                    (*day, deployment.as_str(), metric.as_str(), *bucket, *n)
                })
            })
    }
}

/// How an insert into `spend_daily` adds to a row already there.
const SPEND_CONFLICT: &str = "ON CONFLICT (dim, day, team, key_id, value) DO UPDATE SET
    requests = spend_daily.requests + excluded.requests,
    errors = spend_daily.errors + excluded.errors,
    cache_hits = spend_daily.cache_hits + excluded.cache_hits,
    fallbacks = spend_daily.fallbacks + excluded.fallbacks,
    input_tokens = spend_daily.input_tokens + excluded.input_tokens,
    cached_input_tokens = spend_daily.cached_input_tokens + excluded.cached_input_tokens,
    cache_write_tokens = spend_daily.cache_write_tokens + excluded.cache_write_tokens,
    output_tokens = spend_daily.output_tokens + excluded.output_tokens,
    reasoning_tokens = spend_daily.reasoning_tokens + excluded.reasoning_tokens,
    cost_pusd = spend_daily.cost_pusd + excluded.cost_pusd,
    reference_cost_pusd = spend_daily.reference_cost_pusd + excluded.reference_cost_pusd";

/// How an insert into `latency_daily` adds to a bucket already there.
const LATENCY_CONFLICT: &str = "ON CONFLICT (day, deployment, metric, bucket) DO UPDATE SET
    n = latency_daily.n + excluded.n";

/// Adds one row of sums (`$1`–`$5` the key, `$6`–`$16` the sums).
pub fn spend_upsert() -> String {
    format!(
        "INSERT INTO spend_daily (dim, day, team, key_id, value, {})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         {SPEND_CONFLICT}",
        Sums::COLUMNS.join(", ")
    )
}

/// Adds to one histogram bucket.
pub fn latency_upsert() -> String {
    format!(
        "INSERT INTO latency_daily (day, deployment, metric, bucket, n)
         VALUES ($1, $2, $3, $4, $5) {LATENCY_CONFLICT}"
    )
}

/// PostgreSQL: adds many rows of sums in one statement, each parameter an array of one
/// column (`$1`–`$5` the keys, `$6`–`$16` the sums, in [`Sums::COLUMNS`] order).
pub fn spend_upsert_many() -> String {
    let sums = (6..=16)
        .map(|i| format!("${i}::BIGINT[]"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO spend_daily (dim, day, team, key_id, value, {})
         SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], {sums})
         {SPEND_CONFLICT}",
        Sums::COLUMNS.join(", ")
    )
}

/// PostgreSQL: adds to many histogram buckets in one statement, each parameter an array
/// of one column.
pub fn latency_upsert_many() -> String {
    format!(
        "INSERT INTO latency_daily (day, deployment, metric, bucket, n)
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
         {LATENCY_CONFLICT}"
    )
}

/// The tables (`BIGINT` is an integer to SQLite too).
pub const SCHEMA: &str = "
CREATE TABLE spend_daily (
    dim TEXT NOT NULL,
    day BIGINT NOT NULL,
    team TEXT NOT NULL,
    key_id TEXT NOT NULL,
    value TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    fallbacks BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_pusd BIGINT NOT NULL,
    reference_cost_pusd BIGINT NOT NULL,
    PRIMARY KEY (dim, day, team, key_id, value)
);
CREATE TABLE latency_daily (
    day BIGINT NOT NULL,
    deployment TEXT NOT NULL,
    metric TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (day, deployment, metric, bucket)
);
";

/// [`latency_bucket`] in SQL, of the column `{c}`.
const BUCKET_SQL: &str = "CASE WHEN {c} < 100 THEN {c}
    WHEN {c} < 1000 THEN {c} / 10 * 10
    WHEN {c} < 10000 THEN {c} / 100 * 100
    WHEN {c} < 100000 THEN {c} / 1000 * 1000
    WHEN {c} < 1000000 THEN {c} / 10000 * 10000
    WHEN {c} < 10000000 THEN {c} / 100000 * 100000
    WHEN {c} < 100000000 THEN {c} / 1000000 * 1000000
    WHEN {c} < 1000000000 THEN {c} / 10000000 * 10000000
    WHEN {c} < 10000000000 THEN {c} / 100000000 * 100000000
    ELSE {c} / 1000000000 * 1000000000 END";

/// [`latency_bucket`] of `column`, as SQL.
pub fn bucket_sql(column: &str) -> String {
    BUCKET_SQL.replace("{c}", column)
}

/// The sums of [`Sums::COLUMNS`] over raw `requests` rows, as SQL.
pub const RAW_SUMS: [&str; 11] = [
    "COUNT(*)",
    "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN fallbacks <> '' THEN 1 ELSE 0 END)",
    "SUM(input_tokens)",
    "SUM(cached_input_tokens)",
    "SUM(cache_write_tokens)",
    "SUM(output_tokens)",
    "SUM(reasoning_tokens)",
    "SUM(cost_pusd)",
    "SUM(reference_cost_pusd)",
];

/// The statements that add the records `range` selects (a SQL condition on
/// `requests`) to the rollups.
pub fn roll_up_sql(range: &str) -> String {
    let mut sql = String::new();
    let columns = Sums::COLUMNS.join(", ");
    let sums = RAW_SUMS.join(", ");
    for dim in Dim::EVERY {
        let value = match dim {
            Dim::All => "''",
            Dim::Model => "COALESCE(upstream_model, '')",
            Dim::Deployment => "COALESCE(deployment, '')",
            Dim::Rule => "COALESCE(rule, '')",
            Dim::Domain => "COALESCE(label, '')",
            Dim::Tier => "COALESCE(tier, '')",
        };
        // SQLite reads an upsert after a SELECT only when the SELECT has a WHERE.
        sql.push_str(&format!(
            "INSERT INTO spend_daily (dim, day, team, key_id, value, {columns})
             SELECT '{dim}', ts_ms / {DAY_MS}, COALESCE(team, ''), COALESCE(key_id, ''), {value},
                    {sums}
             FROM requests WHERE {range} GROUP BY 2, 3, 4, 5 {SPEND_CONFLICT};\n",
            dim = dim.as_str(),
        ));
    }
    for (metric, column) in [("latency", "latency_us"), ("ttft", "ttft_us")] {
        sql.push_str(&format!(
            "INSERT INTO latency_daily (day, deployment, metric, bucket, n)
             SELECT ts_ms / {DAY_MS}, deployment, '{metric}', {bucket}, COUNT(*)
             FROM requests WHERE deployment IS NOT NULL AND {column} IS NOT NULL AND {range}
             GROUP BY 1, 2, 4 {LATENCY_CONFLICT};\n",
            bucket = bucket_sql(column),
        ));
    }
    sql
}

/// SQLite's watermark: the rowid up to which records are in the rollups.
pub const WATERMARK: &str = "SELECT rolled_rowid FROM rollup_state";

/// The migration that adds the rollups and fills them from the records there.
pub fn migration(sqlite: bool) -> String {
    if sqlite {
        format!(
            "{SCHEMA}
             CREATE TABLE rollup_state (id INTEGER PRIMARY KEY CHECK (id = 1),
                                        rolled_rowid INTEGER NOT NULL);
             INSERT INTO rollup_state (id, rolled_rowid)
                 SELECT 1, COALESCE(MAX(rowid), 0) FROM requests;
             {}",
            roll_up_sql("rowid <= (SELECT rolled_rowid FROM rollup_state)")
        )
    } else {
        format!("{SCHEMA}{}", roll_up_sql("TRUE"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn buckets_keep_two_significant_digits() {
        for (us, bucket) in [
            (0, 0),
            (7, 7),
            (99, 99),
            (100, 100),
            (1234, 1200),
            (98_765, 98_000),
            (1_000_000, 1_000_000),
            (123_456_789, 120_000_000),
        ] {
            assert_eq!(latency_bucket(us), bucket, "{us}");
        }
        assert_eq!(bucket_width(1200), 100);
        assert_eq!(bucket_width(99), 1);
        // Every value lies in its bucket, which is at most 10% wide.
        for us in (1..2_000_000u64).step_by(997) {
            let b = latency_bucket(us);
            let w = bucket_width(b);
            assert!(b <= us as i64 && (us as i64) < b + w, "{us}");
            assert!(w * 10 <= b.max(10), "{us}");
        }
    }

    #[test]
    fn the_sql_bucket_is_the_rust_bucket() {
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        let sql = format!("SELECT {}", bucket_sql("?1"));
        for us in [
            0u64,
            5,
            99,
            100,
            101,
            999,
            1000,
            45_678,
            9_999_999,
            12_345_678_901,
        ] {
            let got: i64 = conn
                .query_row(&sql, [us as i64], |r| r.get(0))
                .expect("bucket");
            assert_eq!(got, latency_bucket(us), "{us}");
        }
    }

    #[test]
    fn a_record_adds_one_row_per_dimension_and_its_latencies() {
        let mut rollup = Rollup::default();
        let record = LedgerRecord {
            ts_ms: 3 * DAY_MS + 5,
            team: Some("search".into()),
            deployment: Some("local".into()),
            tier: Some("local".into()),
            latency_us: 1234,
            ttft_us: Some(456),
            fallbacks: "a:timeout".into(),
            status: 200,
            ..LedgerRecord::default()
        };
        rollup.add(&record);
        rollup.add(&record);
        let rows: Vec<_> = rollup.spend_rows().collect();
        assert_eq!(rows.len(), Dim::EVERY.len());
        for (_, day, team, key, _, sums) in &rows {
            assert_eq!((*day, *team, *key), (3, "search", ""));
            assert_eq!((sums[0], sums[3]), (2, 2), "two requests, both fell back");
        }
        let mut latency: Vec<_> = rollup.latency_rows().collect();
        latency.sort();
        assert_eq!(
            latency,
            vec![
                (3, "local", "latency", 1200, 2),
                (3, "local", "ttft", 450, 2)
            ]
        );
    }
}
