//! The key store: keys created by `crossroads keys create`, kept (hashed) in the
//! ledger's SQLite file so one file holds a deployment's state.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{KeyHash, KeyInfo, hex, parse_hex};
use crate::config::{BudgetConfig, BudgetPeriod};

const SCHEMA: &str = "
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

/// A key as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub info: KeyInfo,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

pub struct KeyStore {
    conn: Connection,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl KeyStore {
    pub fn open(path: &Path) -> Result<Self, String> {
        let conn =
            Connection::open(path).map_err(|e| format!("key store {}: {e}", path.display()))?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Self, String> {
        Self::init(Connection::open_in_memory().map_err(|e| e.to_string())?)
    }

    fn init(conn: Connection) -> Result<Self, String> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| format!("key store: {e}"))?;
        Ok(KeyStore { conn })
    }

    /// Stores a new key's hash.
    pub fn create(&self, hash: &KeyHash, info: &KeyInfo) -> Result<(), String> {
        let (budget, period) = match info.budget {
            Some(b) => (Some(b.limit.pico()), Some(b.period.as_str())),
            None => (None, None),
        };
        self.conn
            .execute(
                "INSERT INTO keys (id, sha256, team, budget_pusd, period, rpm, tpm, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    info.id,
                    hex(hash),
                    info.team,
                    budget,
                    period,
                    info.rpm,
                    info.tpm.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                    now_ms()
                ],
            )
            .map(|_| ())
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    format!("a key with id `{}` already exists", info.id)
                }
                other => other.to_string(),
            })
    }

    /// Revokes a key; false when there is no such active key.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        self.conn
            .execute(
                "UPDATE keys SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms()],
            )
            .map(|n| n > 0)
            .map_err(|e| e.to_string())
    }

    /// Every key, revoked ones included.
    pub fn list(&self) -> Result<Vec<StoredKey>, String> {
        self.query("SELECT id, sha256, team, budget_pusd, period, rpm, tpm, created_ms, revoked_ms FROM keys ORDER BY created_ms")
            .map(|rows| rows.into_iter().map(|(_, k)| k).collect())
    }

    /// The keys that may authenticate, by hash.
    pub fn active(&self) -> Result<Vec<(KeyHash, KeyInfo)>, String> {
        self.query("SELECT id, sha256, team, budget_pusd, period, rpm, tpm, created_ms, revoked_ms FROM keys WHERE revoked_ms IS NULL")
            .map(|rows| rows.into_iter().map(|(h, k)| (h, k.info)).collect())
    }

    /// Whether a key id exists.
    pub fn exists(&self, id: &str) -> Result<bool, String> {
        self.conn
            .query_row("SELECT 1 FROM keys WHERE id = ?1", params![id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| e.to_string())
    }

    fn query(&self, sql: &str) -> Result<Vec<(KeyHash, StoredKey)>, String> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<u32>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sha, team, budget, period, rpm, tpm, created_ms, revoked_ms) =
                row.map_err(|e| e.to_string())?;
            let Some(hash) = parse_hex(&sha) else {
                continue;
            };
            let budget = match (budget, period.as_deref().and_then(BudgetPeriod::parse)) {
                (Some(pico), Some(period)) => Some(BudgetConfig {
                    limit: crate::accounting::Usd::from_pico(pico),
                    period,
                }),
                _ => None,
            };
            out.push((
                hash,
                StoredKey {
                    info: KeyInfo {
                        id,
                        team,
                        budget,
                        rpm,
                        tpm: tpm.and_then(|t| u64::try_from(t).ok()),
                    },
                    created_ms,
                    revoked_ms,
                },
            ));
        }
        Ok(out)
    }
}
