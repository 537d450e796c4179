//! Reading the ledger: spend totals grouped by a dimension, and pages of raw records.
//! Shared by `GET /v1/spend`, `crossroads spend` and budgets resuming after a restart.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, params_from_iter, types::Value as SqlValue};
use serde::Serialize;

use crate::accounting::Usd;
use crate::admission::{Scope, SpendSource};

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

    fn column(self) -> &'static str {
        match self {
            GroupBy::Team => "team",
            GroupBy::Key => "key_id",
            GroupBy::Model => "upstream_model",
            GroupBy::Deployment => "deployment",
            GroupBy::Rule => "rule",
            GroupBy::Domain => "label",
            GroupBy::Tier => "tier",
            GroupBy::Day => "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')",
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

impl Filter {
    fn sql(&self) -> (String, Vec<SqlValue>) {
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        if let Some(from) = self.from_ms {
            clauses.push("ts_ms >= ?");
            values.push(SqlValue::Integer(from));
        }
        if let Some(to) = self.to_ms {
            clauses.push("ts_ms < ?");
            values.push(SqlValue::Integer(to));
        }
        if let Some(team) = &self.team {
            clauses.push("team = ?");
            values.push(SqlValue::Text(team.clone()));
        }
        if let Some(key) = &self.key {
            clauses.push("key_id = ?");
            values.push(SqlValue::Text(key.clone()));
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

/// A read-only handle on the ledger file.
pub struct LedgerReader {
    conn: Mutex<Connection>,
}

impl LedgerReader {
    pub fn open(path: &Path) -> Result<Self, String> {
        let conn = Connection::open(path).map_err(|e| format!("ledger {}: {e}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        Ok(LedgerReader {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| "the ledger reader is unavailable".to_owned())?;
        f(&conn).map_err(|e| e.to_string())
    }

    /// Spend totals grouped by `by`, dearest first.
    pub fn spend(&self, by: GroupBy, filter: &Filter) -> Result<Vec<SpendRow>, String> {
        let (clause, values) = filter.sql();
        let sql = format!(
            "SELECT {g} AS g, COUNT(*), SUM(input_tokens), SUM(cached_input_tokens),
                    SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens),
                    SUM(cost_pusd), SUM(reference_cost_pusd)
             FROM requests {clause} GROUP BY g ORDER BY SUM(cost_pusd) DESC, g",
            g = by.column()
        );
        self.with(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(values), |r| {
                let cost = Usd::from_pico(r.get::<_, Option<i64>>(7)?.unwrap_or(0));
                let reference = Usd::from_pico(r.get::<_, Option<i64>>(8)?.unwrap_or(0));
                Ok(SpendRow {
                    group: r.get(0)?,
                    requests: r.get(1)?,
                    input_tokens: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    cached_input_tokens: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                    cache_write_tokens: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                    output_tokens: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
                    reasoning_tokens: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                    cost_usd: cost.to_string(),
                    reference_cost_usd: reference.to_string(),
                    savings_usd: (reference - cost).to_string(),
                })
            })?;
            rows.collect()
        })
    }

    /// A page of raw records, newest first, older than `before_ms` when given.
    pub fn records(
        &self,
        filter: &Filter,
        before_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, String> {
        let mut filter = filter.clone();
        if let Some(before) = before_ms {
            filter.to_ms = Some(filter.to_ms.map_or(before, |t| t.min(before)));
        }
        let (clause, mut values) = filter.sql();
        values.push(SqlValue::Integer(i64::from(limit)));
        let sql =
            format!("SELECT * FROM requests {clause} ORDER BY ts_ms DESC, rowid DESC LIMIT ?");
        self.with(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            let names: Vec<String> = stmt
                .column_names()
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            let rows = stmt.query_map(params_from_iter(values), |row| {
                let mut map = serde_json::Map::new();
                for (i, name) in names.iter().enumerate() {
                    let value = match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                        rusqlite::types::ValueRef::Integer(n) => n.into(),
                        rusqlite::types::ValueRef::Real(f) => f.into(),
                        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                        rusqlite::types::ValueRef::Blob(_) => serde_json::Value::Null,
                    };
                    map.insert(name.clone(), value);
                }
                Ok(map)
            })?;
            rows.collect()
        })
    }
}

impl SpendSource for LedgerReader {
    fn spent_since(&self, scope: &Scope, since_ms: i64) -> Usd {
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
        let (clause, values) = filter.sql();
        let sql = format!("SELECT COALESCE(SUM(cost_pusd), 0) FROM requests {clause}");
        let pico = self
            .with(|conn| conn.query_row(&sql, params_from_iter(values), |r| r.get::<_, i64>(0)));
        Usd::from_pico(pico.unwrap_or(0))
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
