//! `crossroads spend`: spend totals from the ledger, as `GET /v1/spend` gives them.

use std::process::ExitCode;

use super::ledger::{LedgerArgs, since_now};
use crate::ledger::query::{Filter, GroupBy, to_csv};

pub fn run(
    ledger: &LedgerArgs,
    since: &str,
    by: &str,
    team: Option<String>,
    csv: bool,
) -> ExitCode {
    let Some(group) = GroupBy::parse(by) else {
        eprintln!("error: --by must be team, key, model, deployment, rule, domain, tier or day");
        return ExitCode::from(2);
    };
    let from_ms = match since_now(since) {
        Ok(ms) => ms,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let reader = ledger.reader();
    let filter = Filter {
        from_ms: Some(from_ms),
        team,
        ..Filter::default()
    };
    match reader.and_then(|r| Ok(r.spend(group, &filter)?)) {
        Ok(rows) if csv => {
            print!("{}", to_csv(by, &rows));
            ExitCode::SUCCESS
        }
        Ok(rows) => {
            println!(
                "{:<28} {:>9} {:>12} {:>12} {:>14} {:>14} {:>14}",
                by, "requests", "input tok", "output tok", "cost $", "reference $", "saved $"
            );
            for r in rows {
                println!(
                    "{:<28} {:>9} {:>12} {:>12} {:>14} {:>14} {:>14}",
                    r.group.as_deref().unwrap_or("-"),
                    r.requests,
                    r.input_tokens + r.cached_input_tokens + r.cache_write_tokens,
                    r.output_tokens,
                    r.cost_usd,
                    r.reference_cost_usd,
                    r.savings_usd
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
