//! `crossroads feedback export`: the feedback given through `POST /v1/feedback`, each
//! row joined to its request's classifier outputs and route, as JSONL: training data
//! for `crossroads train` to come, and traffic that `crossroads calibrate --data` reads.

use super::Failed;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::ledger::{LedgerArgs, since_now};
use crate::ledger::query::Filter;

#[derive(Subcommand, Debug)]
pub enum FeedbackCommand {
    /// Write every feedback row on the requests since --since, oldest request first,
    /// with the request's domain, task, confidence, difficulty, rule and tier.
    Export {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The requests that arrived since then: 7d, 24h, 30m or a date (2026-11-01).
        #[arg(long, default_value = "7d")]
        since: String,
        /// The JSONL file to write [default: standard output].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(command: FeedbackCommand) -> ExitCode {
    let FeedbackCommand::Export { ledger, since, out } = command;
    match export(&ledger, &since, out.as_ref()) {
        Ok(rows) => {
            if let Some(path) = &out {
                eprintln!("wrote {rows} feedback rows to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export(ledger: &LedgerArgs, since: &str, out: Option<&PathBuf>) -> Result<usize, Failed> {
    let filter = Filter {
        from_ms: Some(since_now(since)?),
        ..Filter::default()
    };
    let rows = ledger.reader()?.rated(&filter)?;
    let mut text = String::new();
    for row in &rows {
        text.push_str(&serde_json::to_string(row).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    match out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?,
    }
    Ok(rows.len())
}
