//! Reading the ledger: spend totals grouped by a dimension, and pages of raw records
//! (feedback reads and writes are in [`super::feedback`]).
//! Shared by `GET /v1/spend`, `crossroads spend` and budgets resuming after a restart,
//! on either backend: the SQL is written once ([`super::db`]).

use std::path::Path;

use serde::Serialize;

use super::LedgerRecord;
use std::collections::BTreeMap;

use super::SqliteDb;
use super::db::{Cell, Db, Kind, Param};
use super::error::StoreResult;
use super::rollup::{DAY_MS, Dim, Metric, RAW_SUMS, Sums, bucket_sql};
use crate::accounting::Usd;
use crate::admission::{HistoryError, Scope, SpendSource};
use crate::config::LedgerBackend;

/// What spend is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Team,
    Key,
    Model,
    Deployment,
    Rule,
    Domain,
    Tier,
    Day,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "team" => GroupBy::Team,
            "key" => GroupBy::Key,
            "model" => GroupBy::Model,
            "deployment" => GroupBy::Deployment,
            "rule" => GroupBy::Rule,
            "domain" | "label" => GroupBy::Domain,
            "tier" => GroupBy::Tier,
            "day" => GroupBy::Day,
            _ => return None,
        })
    }

    /// The record column of the group (the day is computed apart).
    fn column(self) -> &'static str {
        match self {
            GroupBy::Team => "team",
            GroupBy::Key => "key_id",
            GroupBy::Model => "upstream_model",
            GroupBy::Deployment => "deployment",
            GroupBy::Rule => "rule",
            GroupBy::Domain => "label",
            GroupBy::Tier => "tier",
            GroupBy::Day => "NULL",
        }
    }
}

/// Which records count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Inclusive, Unix ms.
    pub from_ms: Option<i64>,
    /// Exclusive, Unix ms.
    pub to_ms: Option<i64>,
    pub team: Option<String>,
    pub key: Option<String>,
    /// These narrow pages of records (the console's request list); totals with any of
    /// them set are summed from the records rather than the rollups.
    pub tier: Option<String>,
    pub rule: Option<String>,
    pub deployment: Option<String>,
    pub status: Option<StatusClass>,
    pub request_id: Option<String>,
}

/// Answered or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// Below 400.
    Ok,
    /// 400 or above.
    Error,
}

impl StatusClass {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(StatusClass::Ok),
            "error" => Some(StatusClass::Error),
            _ => None,
        }
    }
}

/// Where a page of records starts: records strictly older than this one, in the order
/// `(ts_ms, request_id)`, so records sharing a millisecond are neither lost nor repeated
/// at a page boundary. Written `MS:REQUEST_ID`; a bare `MS` means before that instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub ts_ms: i64,
    pub request_id: Option<String>,
}

impl Cursor {
    pub fn parse(text: &str) -> Option<Cursor> {
        match text.split_once(':') {
            Some((ms, id)) => Some(Cursor {
                ts_ms: ms.parse().ok()?,
                request_id: Some(id.to_owned()),
            }),
            None => Some(Cursor {
                ts_ms: text.parse().ok()?,
                request_id: None,
            }),
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.request_id {
            Some(id) => write!(f, "{}:{id}", self.ts_ms),
            None => write!(f, "{}", self.ts_ms),
        }
    }
}

impl Filter {
    /// The `WHERE` clause (or nothing) and its parameters, numbered from `$1`.
    pub(super) fn sql(&self, before: Option<&Cursor>) -> (String, Vec<Param>) {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        let mut next = |p: Param| {
            values.push(p);
            format!("${}", values.len())
        };
        if let Some(from) = self.from_ms {
            clauses.push(format!("ts_ms >= {}", next(Param::Int(Some(from)))));
        }
        if let Some(to) = self.to_ms {
            clauses.push(format!("ts_ms < {}", next(Param::Int(Some(to)))));
        }
        if let Some(team) = &self.team {
            clauses.push(format!("team = {}", next(Param::Text(Some(team.clone())))));
        }
        if let Some(key) = &self.key {
            clauses.push(format!("key_id = {}", next(Param::Text(Some(key.clone())))));
        }
        for (column, value) in [
            ("tier", &self.tier),
            ("rule", &self.rule),
            ("deployment", &self.deployment),
            ("request_id", &self.request_id),
        ] {
            if let Some(value) = value {
                clauses.push(format!(
                    "{column} = {}",
                    next(Param::Text(Some(value.clone())))
                ));
            }
        }
        match self.status {
            Some(StatusClass::Ok) => clauses.push("status < 400".into()),
            Some(StatusClass::Error) => clauses.push("status >= 400".into()),
            None => {}
        }
        match before {
            Some(Cursor {
                ts_ms,
                request_id: Some(id),
            }) => {
                let ts = next(Param::Int(Some(*ts_ms)));
                let id = next(Param::Text(Some(id.clone())));
                clauses.push(format!("(ts_ms, request_id) < ({ts}, {id})"));
            }
            Some(Cursor {
                ts_ms,
                request_id: None,
            }) => clauses.push(format!("ts_ms < {}", next(Param::Int(Some(*ts_ms))))),
            None => {}
        }
        (where_clause(&clauses), values)
    }

    /// The days the rollups hold for this filter, `[from, to)` in days since the epoch,
    /// or `None` when only the records can answer it: a bound inside a day, or a filter
    /// the rollups do not keep.
    fn rollup_days(&self) -> Option<(Option<i64>, Option<i64>)> {
        let day = |ms: Option<i64>| match ms {
            Some(ms) if ms.rem_euclid(DAY_MS) != 0 => Err(()),
            Some(ms) => Ok(Some(ms.div_euclid(DAY_MS))),
            None => Ok(None),
        };
        let narrowed = self.tier.is_some()
            || self.rule.is_some()
            || self.deployment.is_some()
            || self.status.is_some()
            || self.request_id.is_some();
        match (narrowed, day(self.from_ms), day(self.to_ms)) {
            (false, Ok(from), Ok(to)) => Some((from, to)),
            _ => None,
        }
    }

    /// The `WHERE` clause over a rollup table for `days` (and `spend_daily`'s `dim`),
    /// with its parameters. Latency rollups (`dim` `None`) are not kept per team or key.
    fn rollup_sql(
        &self,
        days: (Option<i64>, Option<i64>),
        dim: Option<Dim>,
    ) -> (String, Vec<Param>) {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        let mut next = |p: Param| {
            values.push(p);
            format!("${}", values.len())
        };
        if let Some(dim) = dim {
            clauses.push(format!(
                "dim = {}",
                next(Param::Text(Some(dim.as_str().to_owned())))
            ));
        }
        if let Some(from) = days.0 {
            clauses.push(format!("day >= {}", next(Param::Int(Some(from)))));
        }
        if let Some(to) = days.1 {
            clauses.push(format!("day < {}", next(Param::Int(Some(to)))));
        }
        if dim.is_some() {
            if let Some(team) = &self.team {
                clauses.push(format!("team = {}", next(Param::Text(Some(team.clone())))));
            }
            if let Some(key) = &self.key {
                clauses.push(format!("key_id = {}", next(Param::Text(Some(key.clone())))));
            }
        }
        (where_clause(&clauses), values)
    }
}

/// `clause` (a `WHERE` clause or nothing) narrowed by `condition`.
fn and(clause: String, condition: Option<&str>) -> String {
    match condition {
        None => clause,
        Some(c) if clause.is_empty() => format!("WHERE {c}"),
        Some(c) => format!("{clause} AND {c}"),
    }
}

fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

/// The sums of one group, on one day when grouped by day too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Days since the Unix epoch.
    pub day: Option<i64>,
    pub group: Option<String>,
    pub sums: Sums,
}

impl Group {
    /// As `GET /v1/spend` lists it; grouped by day, the group is the date.
    pub fn row(&self, by: GroupBy) -> SpendRow {
        let s = &self.sums;
        let cost = Usd::from_pico(s.cost_pusd);
        let reference = Usd::from_pico(s.reference_cost_pusd);
        SpendRow {
            group: match by {
                GroupBy::Day => self.day.map(day_string),
                _ => self.group.clone(),
            },
            requests: s.requests,
            input_tokens: s.input_tokens,
            cached_input_tokens: s.cached_input_tokens,
            cache_write_tokens: s.cache_write_tokens,
            output_tokens: s.output_tokens,
            reasoning_tokens: s.reasoning_tokens,
            cost_usd: cost.to_string(),
            reference_cost_usd: reference.to_string(),
            savings_usd: (reference - cost).to_string(),
            cost,
        }
    }
}

/// Totals of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendRow {
    pub group: Option<String>,
    pub requests: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    /// Exact decimal USD.
    pub cost_usd: String,
    pub reference_cost_usd: String,
    pub savings_usd: String,
    /// What orders the rows.
    #[serde(skip)]
    pub cost: Usd,
}

/// The columns of a raw record, in the order pages list them, and how to read each.
const RECORD_COLUMNS: &[(&str, Kind)] = &[
    ("request_id", Kind::Text),
    ("ts_ms", Kind::Int),
    ("key_id", Kind::Text),
    ("team", Kind::Text),
    ("end_user", Kind::Text),
    ("endpoint", Kind::Text),
    ("requested_model", Kind::Text),
    ("label", Kind::Text),
    ("task", Kind::Text),
    ("confidence", Kind::Real),
    ("difficulty", Kind::Real),
    ("pii", Kind::Bool),
    ("pii_kinds", Kind::Text),
    ("rule", Kind::Text),
    ("shadow_rule", Kind::Text),
    ("pool", Kind::Text),
    ("deployment", Kind::Text),
    ("provider", Kind::Text),
    ("upstream_model", Kind::Text),
    ("tier", Kind::Text),
    ("cache_hit", Kind::Bool),
    ("stream", Kind::Bool),
    ("status", Kind::Int4),
    ("error_kind", Kind::Text),
    ("attempts", Kind::Int4),
    ("fallbacks", Kind::Text),
    ("input_tokens", Kind::Int),
    ("cached_input_tokens", Kind::Int),
    ("cache_write_tokens", Kind::Int),
    ("output_tokens", Kind::Int),
    ("reasoning_tokens", Kind::Int),
    ("usage_estimated", Kind::Bool),
    ("cost_pusd", Kind::Int),
    ("reference_cost_pusd", Kind::Int),
    ("latency_us", Kind::Int),
    ("ttft_us", Kind::Int),
    ("upstream_us", Kind::Int),
    ("prompt_tokens_est", Kind::Int),
    ("tools", Kind::Bool),
    ("images", Kind::Int4),
    ("json_mode", Kind::Bool),
];

/// How replay sets a record's field from its column.
type SetField = fn(&mut LedgerRecord, &Cell);

/// The columns replay reads, each with the field it fills (kinds as in
/// [`RECORD_COLUMNS`]).
const REPLAY_COLUMNS: &[(&str, SetField)] = &[
    ("key_id", |r, c| r.key_id = c.text()),
    ("team", |r, c| r.team = c.text()),
    ("endpoint", |r, c| {
        r.endpoint = c.text().unwrap_or_default().into()
    }),
    ("requested_model", |r, c| {
        r.requested_model = c.text().unwrap_or_default()
    }),
    ("label", |r, c| r.label = c.text()),
    ("task", |r, c| r.task = c.text()),
    ("confidence", |r, c| {
        r.confidence = c.real().map(|v| v as f32)
    }),
    ("difficulty", |r, c| {
        r.difficulty = c.real().map(|v| v as f32)
    }),
    ("pii_kinds", |r, c| {
        r.pii_kinds = c.text().unwrap_or_default()
    }),
    ("prompt_tokens_est", |r, c| r.prompt_tokens_est = count(c)),
    ("tools", |r, c| r.tools = c.boolean()),
    ("images", |r, c| {
        r.images = count(c).and_then(|n| u32::try_from(n).ok())
    }),
    ("json_mode", |r, c| r.json_mode = c.boolean()),
    ("tier", |r, c| r.tier = c.text().map(Into::into)),
    ("cache_hit", |r, c| {
        r.cache_hit = c.boolean().unwrap_or(false)
    }),
    ("input_tokens", |r, c| r.usage.input = count(c).unwrap_or(0)),
    ("cached_input_tokens", |r, c| {
        r.usage.cached_input = count(c).unwrap_or(0)
    }),
    ("cache_write_tokens", |r, c| {
        r.usage.cache_write = count(c).unwrap_or(0)
    }),
    ("output_tokens", |r, c| {
        r.usage.output = count(c).unwrap_or(0)
    }),
    ("reasoning_tokens", |r, c| {
        r.usage.reasoning = count(c).unwrap_or(0)
    }),
    ("cost_pusd", |r, c| {
        r.cost = Usd::from_pico(c.int().unwrap_or(0))
    }),
    ("reference_cost_pusd", |r, c| {
        r.reference_cost = Usd::from_pico(c.int().unwrap_or(0))
    }),
];

/// A non-negative count.
fn count(cell: &Cell) -> Option<u64> {
    cell.int().and_then(|n| u64::try_from(n).ok())
}

/// A handle on the ledger, SQLite or PostgreSQL, for reads and for feedback (the only
/// rows written outside the ledger writer).
pub struct LedgerReader {
    pub(super) db: Db,
}

impl LedgerReader {
    /// Reads a SQLite ledger file.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(LedgerReader {
            db: Box::new(SqliteDb::open(path)?),
        })
    }

    /// Reads the configured ledger; `None` for an in-memory one.
    pub fn for_backend(backend: &LedgerBackend) -> StoreResult<Option<Self>> {
        Ok(super::db::open(backend)?.map(|db| LedgerReader { db }))
    }

    /// Spend totals grouped by `by`, dearest first.
    pub fn spend(&self, by: GroupBy, filter: &Filter) -> StoreResult<Vec<SpendRow>> {
        let mut rows: Vec<SpendRow> = self
            .grouped(by, false, filter)?
            .into_iter()
            .map(|g| g.row(by))
            .collect();
        rows.sort_by(|a, b| b.cost.cmp(&a.cost).then_with(|| a.group.cmp(&b.group)));
        Ok(rows)
    }

    /// Spend totals by day and by `by`, oldest day first, dearest group first within
    /// a day.
    pub fn series(&self, by: GroupBy, filter: &Filter) -> StoreResult<Vec<Group>> {
        let mut groups = self.grouped(by, true, filter)?;
        groups.sort_by(|a, b| {
            a.day
                .cmp(&b.day)
                .then_with(|| b.sums.cost_pusd.cmp(&a.sums.cost_pusd))
                .then_with(|| a.group.cmp(&b.group))
        });
        Ok(groups)
    }

    /// The sums of `filter`'s requests grouped by `by` (and by day), from the rollups
    /// when they hold the filter, else from the records: both give the same figures.
    fn grouped(&self, by: GroupBy, by_day: bool, filter: &Filter) -> StoreResult<Vec<Group>> {
        let by_day = by_day || by == GroupBy::Day;
        let mut kinds = vec![Kind::Int, Kind::Text];
        kinds.extend([Kind::Int; 11]);
        let cast = |sums: &[&str]| {
            sums.iter()
                .map(|e| format!("CAST({e} AS BIGINT)"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Sums of the records `filter` and `only` select.
        let records = |(table, only): (&str, Option<&str>)| {
            let (clause, values) = filter.sql(None);
            let sql = format!(
                "SELECT {day}, {group}, {sums} FROM {table} {clause} GROUP BY 1, 2",
                clause = and(clause, only),
                group = by.column(),
                day = if by_day {
                    format!("ts_ms / {DAY_MS}")
                } else {
                    "CAST(NULL AS BIGINT)".into()
                },
                sums = cast(&RAW_SUMS),
            );
            (sql, values)
        };
        let mut queries = Vec::new();
        match filter.rollup_days() {
            Some(days) => {
                let (dim, group) = match by {
                    GroupBy::Team => (Dim::All, "NULLIF(team, '')"),
                    GroupBy::Key => (Dim::All, "NULLIF(key_id, '')"),
                    GroupBy::Day => (Dim::All, "NULL"),
                    GroupBy::Model => (Dim::Model, "NULLIF(value, '')"),
                    GroupBy::Deployment => (Dim::Deployment, "NULLIF(value, '')"),
                    GroupBy::Rule => (Dim::Rule, "NULLIF(value, '')"),
                    GroupBy::Domain => (Dim::Domain, "NULLIF(value, '')"),
                    GroupBy::Tier => (Dim::Tier, "NULLIF(value, '')"),
                };
                let (clause, values) = filter.rollup_sql(days, Some(dim));
                let sums: Vec<String> = Sums::COLUMNS.iter().map(|c| format!("SUM({c})")).collect();
                let sums: Vec<&str> = sums.iter().map(String::as_str).collect();
                let sql = format!(
                    "SELECT {day}, {group}, {sums} FROM spend_daily {clause} GROUP BY 1, 2",
                    day = if by_day {
                        "day"
                    } else {
                        "CAST(NULL AS BIGINT)"
                    },
                    sums = cast(&sums),
                );
                queries.push((sql, values));
                queries.extend(
                    self.db
                        .not_rolled_up()
                        .map(|(table, tail)| records((table, Some(tail)))),
                );
            }
            None => queries.push(records(("requests", None))),
        }
        let mut merged: BTreeMap<(Option<i64>, Option<String>), Sums> = BTreeMap::new();
        for (sql, values) in queries {
            for r in self.db.query(&sql, values, &kinds)? {
                let key = (r.first().and_then(Cell::int), r.get(1).and_then(Cell::text));
                merged.entry(key).or_default().add(&Sums::from_cells(&r, 2));
            }
        }
        Ok(merged
            .into_iter()
            .map(|((day, group), sums)| Group { day, group, sums })
            .collect())
    }

    /// Latency and time-to-first-token histograms of each deployment: `(deployment,
    /// metric, bucket, count)` ([`super::rollup::latency_bucket`]). Team and key do
    /// not narrow them: latency belongs to the deployment.
    pub fn latency(&self, filter: &Filter) -> StoreResult<Vec<(String, Metric, i64, i64)>> {
        let kinds = [Kind::Text, Kind::Text, Kind::Int, Kind::Int];
        let records = |(table, only): (&str, Option<&str>)| {
            let (clause, values) = filter.sql(None);
            let histogram = |metric: &str, column: &str| {
                format!(
                    "SELECT deployment, '{metric}', {bucket}, COUNT(*) FROM {table} {clause}
                     GROUP BY 1, 3",
                    clause = and(
                        and(clause.clone(), only),
                        Some(&format!("deployment IS NOT NULL AND {column} IS NOT NULL"))
                    ),
                    bucket = bucket_sql(column),
                )
            };
            let sql = format!(
                "{} UNION ALL {}",
                histogram("latency", "latency_us"),
                histogram("ttft", "ttft_us")
            );
            (sql, values)
        };
        let mut queries = Vec::new();
        match filter.rollup_days() {
            Some(days) => {
                let (clause, values) = filter.rollup_sql(days, None);
                let sql = format!(
                    "SELECT deployment, metric, bucket, CAST(SUM(n) AS BIGINT) FROM latency_daily
                     {clause} GROUP BY 1, 2, 3"
                );
                queries.push((sql, values));
                queries.extend(
                    self.db
                        .not_rolled_up()
                        .map(|(table, tail)| records((table, Some(tail)))),
                );
            }
            None => queries.push(records(("requests", None))),
        }
        let mut merged: BTreeMap<(String, Metric, i64), i64> = BTreeMap::new();
        for (sql, values) in queries {
            for r in self.db.query(&sql, values, &kinds)? {
                let metric = match r.get(1).and_then(Cell::text).as_deref() {
                    Some("latency") => Metric::Latency,
                    Some("ttft") => Metric::Ttft,
                    _ => continue,
                };
                let (Some(deployment), Some(bucket), Some(n)) = (
                    r.first().and_then(Cell::text),
                    r.get(2).and_then(Cell::int),
                    r.get(3).and_then(Cell::int),
                ) else {
                    continue;
                };
                *merged.entry((deployment, metric, bucket)).or_default() += n;
            }
        }
        Ok(merged
            .into_iter()
            .map(|((deployment, metric, bucket), n)| (deployment, metric, bucket, n))
            .collect())
    }

    /// A page of raw records, newest first, older than `before` when given. Returns the
    /// records and the cursor of the next page when this one is full.
    pub fn records(
        &self,
        filter: &Filter,
        before: Option<&Cursor>,
        limit: u32,
    ) -> StoreResult<Page> {
        let (clause, mut values) = filter.sql(before);
        values.push(Param::Int(Some(i64::from(limit))));
        let columns: Vec<&str> = RECORD_COLUMNS.iter().map(|(name, _)| *name).collect();
        let kinds: Vec<Kind> = RECORD_COLUMNS.iter().map(|(_, kind)| *kind).collect();
        let sql = format!(
            "SELECT {} FROM requests {clause} ORDER BY ts_ms DESC, request_id DESC LIMIT ${}",
            columns.join(", "),
            values.len()
        );
        let rows = self.db.query(&sql, values, &kinds)?;
        let next = (rows.len() == limit as usize)
            .then(|| {
                let last = rows.last()?;
                Some(Cursor {
                    ts_ms: last.get(1)?.int()?,
                    request_id: Some(last.first()?.text()?),
                })
            })
            .flatten();
        let records = rows
            .into_iter()
            .map(|row| {
                columns
                    .iter()
                    .zip(row.iter())
                    .map(|(name, cell)| ((*name).to_owned(), cell.to_json()))
                    .collect()
            })
            .collect();
        Ok(Page { records, next })
    }

    /// The requests of `filter` as replay reads them ([`crate::replay`]), oldest first.
    pub fn recorded(&self, filter: &Filter) -> StoreResult<Vec<LedgerRecord>> {
        let (clause, values) = filter.sql(None);
        let columns: Vec<&str> = REPLAY_COLUMNS.iter().map(|(name, _)| *name).collect();
        let kinds: Vec<Kind> = columns
            .iter()
            .map(|name| {
                RECORD_COLUMNS
                    .iter()
                    .find(|(column, _)| column == name)
                    .map_or(Kind::Text, |(_, kind)| *kind)
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM requests {clause} ORDER BY ts_ms, request_id",
            columns.join(", ")
        );
        let rows = self.db.query(&sql, values, &kinds)?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut record = LedgerRecord::default();
                for ((_, set), cell) in REPLAY_COLUMNS.iter().zip(row) {
                    set(&mut record, cell);
                }
                record
            })
            .collect())
    }

    fn spent(&self, scope: &Scope, since_ms: i64) -> StoreResult<Usd> {
        let filter = match scope {
            Scope::Key(id) => Filter {
                key: Some(id.clone()),
                from_ms: Some(since_ms),
                ..Filter::default()
            },
            Scope::Team(id) => Filter {
                team: Some(id.clone()),
                from_ms: Some(since_ms),
                ..Filter::default()
            },
        };
        let (clause, values) = filter.sql(None);
        let sql =
            format!("SELECT CAST(COALESCE(SUM(cost_pusd), 0) AS BIGINT) FROM requests {clause}");
        let rows = self.db.query(&sql, values, &[Kind::Int])?;
        Ok(Usd::from_pico(
            rows.first()
                .and_then(|r| r.first())
                .and_then(Cell::int)
                .unwrap_or(0),
        ))
    }
}

/// A page of raw ledger records.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl SpendSource for LedgerReader {
    /// Called once per budget and period by a process (the first request that needs
    /// it); from the async runtime it costs that request one query.
    fn spent_since(&self, scope: &Scope, since_ms: i64) -> Result<Usd, HistoryError> {
        self.spent(scope, since_ms).map_err(|e| {
            tracing::error!(error = %e, scope = scope.kind(), "cannot read past spend; the budget's requests are refused until it can");
            HistoryError::Source(Box::new(e))
        })
    }
}

/// Spend rows as CSV.
pub fn to_csv(by: &str, rows: &[SpendRow]) -> String {
    let mut out = format!(
        "{by},requests,input_tokens,cached_input_tokens,cache_write_tokens,output_tokens,reasoning_tokens,cost_usd,reference_cost_usd,savings_usd\n"
    );
    for r in rows {
        let group = r.group.as_deref().unwrap_or("");
        let quoted = if group.contains([',', '"', '\n']) {
            format!("\"{}\"", group.replace('"', "\"\""))
        } else {
            group.to_owned()
        };
        out.push_str(&format!(
            "{quoted},{},{},{},{},{},{},{},{},{}\n",
            r.requests,
            r.input_tokens,
            r.cached_input_tokens,
            r.cache_write_tokens,
            r.output_tokens,
            r.reasoning_tokens,
            r.cost_usd,
            r.reference_cost_usd,
            r.savings_usd
        ));
    }
    out
}

/// Unix ms `since` ago (`7d`, `24h`, `30m`) or at a date (`2026-11-01`) or Unix ms.
pub fn since_ms(since: &str, now_ms: i64) -> Option<i64> {
    let unit_ms = match since.chars().last()? {
        'd' => 86_400_000,
        'h' => 3_600_000,
        'm' => 60_000,
        _ => return parse_time(since),
    };
    let n: i64 = since[..since.len() - 1].parse().ok()?;
    Some(now_ms - n * unit_ms)
}

/// `YYYY-MM-DD` of a day counted from the Unix epoch (UTC).
pub fn day_string(day: i64) -> String {
    let (y, m, d) = crate::admission::civil_date(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix ms of a `YYYY-MM-DD` date (UTC midnight) or of a Unix ms number.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let mut parts = text.get(..10)?.split('-');
    let (y, m, d): (i64, i64, i64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_and_millis() {
        assert_eq!(parse_time("2026-11-01"), Some(1_793_491_200_000));
        assert_eq!(parse_time("2024-03-01"), Some(1_709_251_200_000));
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2026-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn days_print_as_the_dates_they_parse_from() {
        for date in [
            "1970-01-01",
            "2024-02-29",
            "2026-12-31",
            "2027-01-01",
            "2000-03-01",
        ] {
            let ms = parse_time(date).unwrap_or_default();
            assert_eq!(day_string(ms / DAY_MS), date);
        }
    }
}
