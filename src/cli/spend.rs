//! `crossroads spend`: spend totals from the ledger, as `GET /v1/spend` gives them.

use std::path::Path;
use std::process::ExitCode;

use crate::ledger::LedgerReader;
use crate::ledger::query::{Filter, GroupBy, parse_time, to_csv};

/// Unix ms `since` ago (`7d`, `24h`, `30m`) or at a date (`2026-11-01`).
fn since_ms(since: &str, now_ms: i64) -> Option<i64> {
    let unit_ms = match since.chars().last()? {
        'd' => 86_400_000,
        'h' => 3_600_000,
        'm' => 60_000,
        _ => return parse_time(since),
    };
    let n: i64 = since[..since.len() - 1].parse().ok()?;
    Some(now_ms - n * unit_ms)
}

pub fn run(config: &Path, since: &str, by: &str, team: Option<String>, csv: bool) -> ExitCode {
    let Some(group) = GroupBy::parse(by) else {
        eprintln!("error: --by must be team, key, model, deployment, rule, domain, tier or day");
        return ExitCode::from(2);
    };
    let Some(from_ms) = since_ms(since, crate::admission::now_ms()) else {
        eprintln!("error: --since must look like 7d, 24h, 30m or 2026-11-01");
        return ExitCode::from(2);
    };
    let reader = crate::config::load(config)
        .map_err(|e| e.to_string())
        .and_then(|c| LedgerReader::for_backend(&c.ledger.backend))
        .and_then(|r| r.ok_or_else(|| "the ledger is in memory: nothing to read".to_owned()));
    let filter = Filter {
        from_ms: Some(from_ms),
        team,
        ..Filter::default()
    };
    match reader.and_then(|r| r.spend(group, &filter)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_dates() {
        assert_eq!(since_ms("7d", 10 * 86_400_000), Some(3 * 86_400_000));
        assert_eq!(since_ms("2h", 3 * 3_600_000), Some(3_600_000));
        assert_eq!(since_ms("2026-11-01", 0), Some(1_793_491_200_000));
        assert_eq!(since_ms("soon", 0), None);
    }
}
