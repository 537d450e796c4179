//! `crossroads replay`: the recorded traffic routed again through a candidate config,
//! priced, without calling any upstream ([`crate::replay`]).

use std::path::PathBuf;

use super::classifier::Failed;
use super::ledger::{LedgerArgs, since_now};
use crate::accounting::Usd;
use crate::ledger::query::Filter;
use crate::replay::{Report, Totals};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The candidate config: its rules, pools, prices and classifier labels.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The ledger to replay, as `ledger.url` is written [default: the candidate's
    /// `[ledger]`, usually the one production writes].
    #[arg(long)]
    pub ledger: Option<String>,
    /// The PostgreSQL schema of --ledger.
    #[arg(long, default_value = "crossroads", requires = "ledger")]
    pub schema: String,
    /// The requests that arrived since then: 7d, 24h, 30m or a date (2026-11-01).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn replay_command(args: ReplayArgs) -> Result<(), Failed> {
    let candidate =
        crate::config::load(&args.config).map_err(|e| format!("invalid candidate config: {e}"))?;
    let ledger = LedgerArgs {
        ledger: args.ledger.clone(),
        schema: args.schema.clone(),
        config: Some(args.config.clone()),
    };
    let filter = Filter {
        from_ms: Some(since_now(&args.since)?),
        ..Filter::default()
    };
    let recorded = ledger.reader()?.recorded(&filter)?;
    let report = Report::with_key_budgets(&candidate, &ledger.key_budgets()?, &recorded);
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", render(&report, &args));
    }
    Ok(())
}

fn render(report: &Report, args: &ReplayArgs) -> String {
    let mut out = format!(
        "{} recorded requests since {} replayed through {}\n",
        report.total.requests,
        args.since,
        args.config.display()
    );
    if report.skipped > 0 {
        out += &format!(
            "{} not replayed (refused before routing, embeddings, or a model the candidate \
             does not know)\n",
            report.skipped
        );
    }
    if report.without_features > 0 {
        out += &format!(
            "{} recorded before the ledger kept tools, images and JSON mode: conditions on \
             those saw none\n",
            report.without_features
        );
    }
    out += "\nmoves (recorded -> candidate):\n";
    for (mv, n) in &report.moves {
        out += &format!("  {mv:<22} {n}\n");
    }
    let header = format!(
        "  {:<24} {:>9} {:>7} {:>14} {:>14} {:>14} {:>14} {:>14} {:>9}\n",
        "",
        "requests",
        "moved",
        "cost",
        "projected",
        "change",
        "savings",
        "proj. savings",
        "worse/better"
    );
    let line = |name: &str, t: &Totals| {
        format!(
            "  {:<24} {:>9} {:>7} {:>14} {:>14} {:>14} {:>14} {:>14} {:>4.1}/{:<4.1}\n",
            name,
            t.requests,
            t.moved,
            t.actual_cost.to_string(),
            t.projected_cost.to_string(),
            signed(t.projected_cost - t.actual_cost),
            (t.actual_reference - t.actual_cost).to_string(),
            (t.projected_reference - t.projected_cost).to_string(),
            t.expected_worse,
            t.expected_better,
        )
    };
    out += "\nin USD; worse/better: answers expected to get worse (moved to local) or better\n";
    out += "(moved to frontier), the sum of the classifier's difficulty over those moves\n\n";
    out += &header;
    out += &line("total", &report.total);
    out += "by rule (candidate):\n";
    for (rule, t) in &report.by_rule {
        out += &line(rule, t);
    }
    out += "by team:\n";
    for (team, t) in &report.by_team {
        out += &line(team, t);
    }
    out
}

fn signed(usd: Usd) -> String {
    if usd > Usd::ZERO {
        format!("+{usd}")
    } else {
        usd.to_string()
    }
}
