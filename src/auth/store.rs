//! The key store: keys created by `crossroads keys create`, kept (hashed) beside the
//! ledger so one database holds a deployment's state: in the ledger's SQLite file, or in
//! its PostgreSQL schema, where every replica sharing the database sees the same keys.

use std::path::Path;

use super::{KeyHash, KeyInfo, hex, parse_hex};
use crate::config::{BudgetConfig, BudgetPeriod, LedgerBackend};
use crate::ledger::SqliteDb;
use crate::ledger::StoreError;
use crate::ledger::db::{self, Cell, Db, Kind, Param};

/// Why the key store failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("a key with id `{0}` already exists")]
    Exists(String),
    #[error("key store: {0}")]
    Store(#[from] StoreError),
}

const COLUMNS: &str = "id, sha256, team, budget_pusd, period, rpm, tpm, created_ms, revoked_ms";
const KINDS: [Kind; 9] = [
    Kind::Text,
    Kind::Text,
    Kind::Text,
    Kind::Int,
    Kind::Text,
    Kind::Int,
    Kind::Int,
    Kind::Int,
    Kind::Int,
];

/// A key as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub info: KeyInfo,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// The keys, in the ledger's database (whose migrations create their table).
pub struct KeyStore {
    db: Db,
}

/// What the key store notifies other connections of when the keys change.
const CHANGES: &str = "keys";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl KeyStore {
    /// The key store in a SQLite ledger file.
    pub fn open(path: &Path) -> Result<Self, KeyStoreError> {
        Self::init(Box::new(SqliteDb::open(path)?))
    }

    /// The key store of the configured ledger; `None` for an in-memory ledger.
    pub fn for_backend(backend: &LedgerBackend) -> Result<Option<Self>, KeyStoreError> {
        db::open(backend)?.map(Self::init).transpose()
    }

    pub fn open_in_memory() -> Result<Self, KeyStoreError> {
        Self::init(Box::new(SqliteDb::open_in_memory()?))
    }

    fn init(db: Db) -> Result<Self, KeyStoreError> {
        // Opening migrated the schema; fail now, not on the first request.
        db.query("SELECT 1 FROM keys LIMIT 1", Vec::new(), &[])?;
        Ok(KeyStore { db })
    }

    /// Tells the gateways that listen ([`KeyStore::watch`]) that the keys changed. They
    /// also re-read the keys every `auth.refresh_ms`, so a lost signal only delays a
    /// change.
    fn announce(&self) {
        if let Err(e) = self.db.notify(CHANGES) {
            tracing::warn!(error = %e, "key change not announced; gateways see it within auth.refresh_ms");
        }
    }

    /// Calls `tick(true)` when another process changes the keys, and `tick(false)`
    /// about once a second otherwise, on a thread of its own, until `tick` returns
    /// false (PostgreSQL; on SQLite nothing calls it and the gateway polls).
    pub fn watch(
        &self,
        tick: impl FnMut(bool) -> bool + Send + 'static,
    ) -> Result<(), KeyStoreError> {
        Ok(self.db.listen(CHANGES, Box::new(tick))?)
    }

    /// Stores a new key's hash.
    pub fn create(&self, hash: &KeyHash, info: &KeyInfo) -> Result<(), KeyStoreError> {
        let (budget, period) = match info.budget {
            Some(b) => (Some(b.limit.pico()), Some(b.period.as_str().to_owned())),
            None => (None, None),
        };
        self.db
            .execute(
                "INSERT INTO keys (id, sha256, team, budget_pusd, period, rpm, tpm, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                vec![
                    Param::Text(Some(info.id.clone())),
                    Param::Text(Some(hex(hash))),
                    Param::Text(info.team.clone()),
                    Param::Int(budget),
                    Param::Text(period),
                    Param::Int(info.rpm.map(i64::from)),
                    Param::Int(info.tpm.map(|t| i64::try_from(t).unwrap_or(i64::MAX))),
                    Param::Int(Some(now_ms())),
                ],
            )
            .map_err(|e| {
                if e.is_conflict() {
                    KeyStoreError::Exists(info.id.clone())
                } else {
                    e.into()
                }
            })?;
        self.announce();
        Ok(())
    }

    /// Revokes a key; false when there is no such active key.
    pub fn revoke(&self, id: &str) -> Result<bool, KeyStoreError> {
        let revoked = self
            .db
            .execute(
                "UPDATE keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
                vec![Param::Int(Some(now_ms())), Param::Text(Some(id.to_owned()))],
            )
            .map(|n| n > 0)?;
        if revoked {
            self.announce();
        }
        Ok(revoked)
    }

    /// Every key, revoked ones included.
    pub fn list(&self) -> Result<Vec<StoredKey>, KeyStoreError> {
        self.query(&format!(
            "SELECT {COLUMNS} FROM keys ORDER BY created_ms, id"
        ))
        .map(|rows| rows.into_iter().map(|(_, k)| k).collect())
    }

    /// The keys that may authenticate, by hash.
    pub fn active(&self) -> Result<Vec<(KeyHash, KeyInfo)>, KeyStoreError> {
        self.query(&format!(
            "SELECT {COLUMNS} FROM keys WHERE revoked_ms IS NULL"
        ))
        .map(|rows| rows.into_iter().map(|(h, k)| (h, k.info)).collect())
    }

    /// Whether a key id exists.
    pub fn exists(&self, id: &str) -> Result<bool, KeyStoreError> {
        self.db
            .query(
                "SELECT 1 FROM keys WHERE id = $1",
                vec![Param::Text(Some(id.to_owned()))],
                &[],
            )
            .map(|rows| !rows.is_empty())
            .map_err(KeyStoreError::from)
    }

    fn query(&self, sql: &str) -> Result<Vec<(KeyHash, StoredKey)>, KeyStoreError> {
        let rows = self.db.query(sql, Vec::new(), &KINDS)?;
        let mut out = Vec::new();
        for row in rows {
            let text = |i: usize| row.get(i).and_then(Cell::text);
            let int = |i: usize| row.get(i).and_then(Cell::int);
            let (Some(id), Some(hash)) = (text(0), text(1).as_deref().and_then(parse_hex)) else {
                continue;
            };
            let budget = match (int(3), text(4).as_deref().and_then(BudgetPeriod::parse)) {
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
                        team: text(2),
                        budget,
                        rpm: int(5).and_then(|n| u32::try_from(n).ok()),
                        tpm: int(6).and_then(|t| u64::try_from(t).ok()),
                    },
                    created_ms: int(7).unwrap_or(0),
                    revoked_ms: int(8),
                },
            ));
        }
        Ok(out)
    }
}
