//! What the commands that read the ledger share: which ledger (`--ledger URL` or the
//! config's), and how far back (`--since`).

use super::Failed;
use std::path::PathBuf;

use std::collections::HashMap;

use crate::config::{BudgetConfig, LedgerBackend};
pub use crate::ledger::query::since_ms;
use crate::ledger::{LedgerReader, SqliteStore};

/// Which ledger to read.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LedgerArgs {
    /// The ledger, written as `ledger.url` in routes.toml: `sqlite://PATH` or
    /// `postgres://USER@HOST:PORT/DB`. Without it, the ledger of --config.
    #[arg(long)]
    pub ledger: Option<String>,
    /// The PostgreSQL schema of --ledger.
    #[arg(long, default_value = "crossroads", requires = "ledger")]
    pub schema: String,
    /// The config whose `[ledger]` to read [default: routes.toml].
    #[arg(long, short, conflicts_with = "ledger")]
    pub config: Option<PathBuf>,
}

impl LedgerArgs {
    /// Whether a ledger was named (a command with another source may go without).
    pub fn given(&self) -> bool {
        self.ledger.is_some() || self.config.is_some()
    }

    fn backend(&self) -> Result<LedgerBackend, Failed> {
        match &self.ledger {
            Some(url) => crate::config::ledger_backend(url.clone(), self.schema.clone())
                .map_err(|(_, message)| format!("--ledger: {message}").into()),
            None => {
                let path = self
                    .config
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("routes.toml"));
                crate::config::load(&path)
                    .map(|c| c.ledger.backend)
                    .map_err(|e| format!("invalid config: {e}").into())
            }
        }
    }

    /// The budgets of the keys in the ledger's key store (`crossroads keys create`),
    /// revoked ones included (their past traffic counted against them), by key id.
    pub fn key_budgets(&self) -> Result<HashMap<String, BudgetConfig>, Failed> {
        let Some(store) = crate::auth::store::KeyStore::for_backend(&self.backend()?)? else {
            return Ok(HashMap::new());
        };
        Ok(store
            .list()?
            .into_iter()
            .filter_map(|k| Some((k.info.id, k.info.budget?)))
            .collect())
    }

    /// Opens the ledger for reading. Its schema is brought up to date first, as the
    /// gateway does at start, so a ledger of an older version gains the tables it lacks
    /// (PostgreSQL migrates on every connection).
    pub fn reader(&self) -> Result<LedgerReader, Failed> {
        let backend = self.backend()?;
        if let LedgerBackend::Sqlite(path) = &backend {
            if !path.exists() {
                return Err(format!("no ledger at {}", path.display()).into());
            }
            SqliteStore::open(path)?;
        }
        LedgerReader::for_backend(&backend)?
            .ok_or_else(|| "the ledger is in memory: nothing to read".into())
    }
}

/// [`since_ms`] from now, or the error message the commands print.
pub fn since_now(since: &str) -> Result<i64, Failed> {
    since_ms(since, crate::admission::now_ms())
        .ok_or_else(|| "--since must look like 7d, 24h, 30m or 2026-11-01".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn since_accepts_durations_and_dates() {
        assert_eq!(since_ms("7d", 10 * 86_400_000), Some(3 * 86_400_000));
        assert_eq!(since_ms("2h", 3 * 3_600_000), Some(3_600_000));
        assert_eq!(since_ms("2026-11-01", 0), Some(1_793_491_200_000));
        assert_eq!(since_ms("soon", 0), None);
    }

    #[test]
    fn a_missing_ledger_file_is_an_error_not_a_new_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.db");
        let args = LedgerArgs {
            ledger: Some(format!("sqlite://{}", path.display())),
            ..LedgerArgs::default()
        };
        assert!(matches!(args.reader(), Err(e) if e.to_string().starts_with("no ledger at")));
        assert!(!path.exists());
        let bad = LedgerArgs {
            ledger: Some("mysql://x".into()),
            ..LedgerArgs::default()
        };
        assert!(
            matches!(bad.reader(), Err(e) if e.to_string().starts_with("--ledger: use sqlite://"))
        );
    }
}
