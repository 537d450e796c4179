//! Reading the ledger: spend totals grouped by a dimension, and pages of raw records
//! (feedback reads and writes are in [`super::feedback`]).
//! Shared by `GET /v1/spend`, `crossroads spend` and budgets resuming after a restart,
//! on either backend: the SQL is written once ([`super::db`]).

use std::path::Path;

use serde::Serialize;

use super::LedgerRecord;
use super::db::{Cell, Db, Dialect, Kind, Param};
use crate::accounting::Usd;
use crate::admission::{Scope, SpendSource};
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

    fn column(self, dialect: Dialect) -> &'static str {
        match self {
            GroupBy::Team => "team",
            GroupBy::Key => "key_id",
            GroupBy::Model => "upstream_model",
            GroupBy::Deployment => "deployment",
            GroupBy::Rule => "rule",
            GroupBy::Domain => "label",
            GroupBy::Tier => "tier",
            GroupBy::Day => match dialect {
                Dialect::Sqlite => "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')",
                Dialect::Postgres => {
                    "to_char(to_timestamp(ts_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
                }
            },
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
        let sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (sql, values)
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
    pub fn open(path: &Path) -> Result<Self, String> {
        Db::sqlite(path).map(|db| LedgerReader { db })
    }

    /// Reads the configured ledger; `None` for an in-memory one.
    pub fn for_backend(backend: &LedgerBackend) -> Result<Option<Self>, String> {
        Ok(Db::open(backend)?.map(|db| LedgerReader { db }))
    }

    /// Spend totals grouped by `by`, dearest first.
    pub fn spend(&self, by: GroupBy, filter: &Filter) -> Result<Vec<SpendRow>, String> {
        let (clause, values) = filter.sql(None);
        // PostgreSQL sums BIGINT into NUMERIC: cast back, which SQLite accepts too.
        let sql = format!(
            "SELECT {g} AS g, COUNT(*), CAST(SUM(input_tokens) AS BIGINT),
                    CAST(SUM(cached_input_tokens) AS BIGINT),
                    CAST(SUM(cache_write_tokens) AS BIGINT),
                    CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(reasoning_tokens) AS BIGINT),
                    CAST(SUM(cost_pusd) AS BIGINT), CAST(SUM(reference_cost_pusd) AS BIGINT)
             FROM requests {clause} GROUP BY g ORDER BY SUM(cost_pusd) DESC, g NULLS FIRST",
            g = by.column(self.db.dialect())
        );
        let mut kinds = [Kind::Int; 9];
        kinds[0] = Kind::Text;
        let rows = self.db.query(&sql, values, &kinds)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let n = |i: usize| r.get(i).and_then(Cell::int).unwrap_or(0);
                let cost = Usd::from_pico(n(7));
                let reference = Usd::from_pico(n(8));
                SpendRow {
                    group: r.first().and_then(Cell::text),
                    requests: n(1),
                    input_tokens: n(2),
                    cached_input_tokens: n(3),
                    cache_write_tokens: n(4),
                    output_tokens: n(5),
                    reasoning_tokens: n(6),
                    cost_usd: cost.to_string(),
                    reference_cost_usd: reference.to_string(),
                    savings_usd: (reference - cost).to_string(),
                }
            })
            .collect())
    }

    /// A page of raw records, newest first, older than `before` when given. Returns the
    /// records and the cursor of the next page when this one is full.
    pub fn records(
        &self,
        filter: &Filter,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page, String> {
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
    pub fn recorded(&self, filter: &Filter) -> Result<Vec<LedgerRecord>, String> {
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

    fn spent(&self, scope: &Scope, since_ms: i64) -> Result<Usd, String> {
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
    fn spent_since(&self, scope: &Scope, since_ms: i64) -> Result<Usd, String> {
        self.spent(scope, since_ms).inspect_err(|e| {
            tracing::error!(error = %e, scope = scope.kind(), "cannot read past spend; the budget's requests are refused until it can");
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
}
