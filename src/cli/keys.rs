//! `crossroads keys`: create, list and revoke virtual keys in the key store.

use super::Failed;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::accounting::Usd;
use crate::auth::store::KeyStore;
use crate::auth::{self, KeyInfo};
use crate::config::{BudgetConfig, BudgetPeriod};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        /// Key id (default: generated).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// Spend limit in USD per period.
        #[arg(long)]
        budget_usd: Option<f64>,
        /// `day` or `month` (UTC).
        #[arg(long, default_value = "month")]
        period: String,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute.
        #[arg(long)]
        tpm: Option<u64>,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by id; every gateway sharing the ledger refuses it within
    /// `auth.refresh_ms`, at once with PostgreSQL.
    Revoke { id: String },
    /// Print the SHA-256 of a key, to declare it in routes.toml.
    Hash { key: String },
}

/// Runs a keys command against the key store of the config's ledger.
pub fn run(config: &Path, command: KeysCommand) -> ExitCode {
    if let KeysCommand::Hash { key } = &command {
        println!("{}", auth::hex(&auth::hash_key(key)));
        return ExitCode::SUCCESS;
    }
    let store = match crate::config::load(config)
        .map_err(Failed::from)
        .and_then(|c| Ok(KeyStore::for_backend(&c.ledger.backend)?))
    {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "error: the ledger is in memory: keys need a ledger file (ledger.url = \"sqlite://PATH\") or a postgres:// URL"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match execute(&store, command) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(store: &KeyStore, command: KeysCommand) -> Result<String, Failed> {
    match command {
        KeysCommand::Create {
            id,
            team,
            budget_usd,
            period,
            rpm,
            tpm,
        } => {
            let key = auth::generate_key()?;
            let hash = auth::hash_key(&key);
            let id = id.unwrap_or_else(|| format!("key-{}", &auth::hex(&hash)[..8]));
            let budget = budget_usd
                .map(|usd| {
                    Ok::<_, Failed>(BudgetConfig {
                        limit: Usd::from_dollars(usd)?,
                        period: BudgetPeriod::parse(&period)
                            .ok_or_else(|| format!("--period `{period}` is not day or month"))?,
                    })
                })
                .transpose()?;
            store.create(
                &hash,
                &KeyInfo {
                    id: id.clone(),
                    team,
                    budget,
                    rpm,
                    tpm,
                },
            )?;
            Ok(format!(
                "{key}\n\nkey `{id}` created; the key above is shown once and only its hash is stored\n"
            ))
        }
        KeysCommand::List => {
            let mut out = format!(
                "{:<24} {:<16} {:<24} {:>8} {:>10} {}\n",
                "id", "team", "budget", "rpm", "tpm", "status"
            );
            for k in store.list()? {
                let budget = k.info.budget.map_or_else(
                    || "-".to_owned(),
                    |b| format!("${} per {}", b.limit, b.period.as_str()),
                );
                let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
                out.push_str(&format!(
                    "{:<24} {:<16} {:<24} {:>8} {:>10} {}\n",
                    k.info.id,
                    k.info.team.as_deref().unwrap_or("-"),
                    budget,
                    opt(k.info.rpm.map(u64::from)),
                    opt(k.info.tpm),
                    if k.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                ));
            }
            Ok(out)
        }
        KeysCommand::Revoke { id } => {
            if store.revoke(&id)? {
                Ok(format!("key `{id}` revoked\n"))
            } else if store.exists(&id)? {
                Err(format!("key `{id}` is already revoked").into())
            } else {
                Err(format!("no key `{id}`").into())
            }
        }
        KeysCommand::Hash { key } => Ok(format!("{}\n", auth::hex(&auth::hash_key(&key)))),
    }
}
