//! `crossroads replay`: a recorded ledger routed again through a candidate config, with
//! every figure of a small example worked out by hand; and the facts replay needs land
//! in the ledger of a real request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use crossroads::accounting::{Usage, Usd};
use crossroads::ledger::{LedgerRecord, LedgerStore, SqliteStore};
use serde_json::{Value, json};

/// pico-USD per token of gpt-4.1, the reference: $2 in, $8 out per million.
const IN: i64 = 2_000_000;
const OUT: i64 = 8_000_000;

fn record(
    id: &str,
    label: Option<&str>,
    difficulty: f32,
    tier: Option<&str>,
    tokens: (u64, u64),
) -> LedgerRecord {
    let (input, output) = tokens;
    let reference = input as i64 * IN + output as i64 * OUT;
    let frontier = tier == Some("frontier");
    LedgerRecord {
        request_id: id.into(),
        ts_ms: 1_796_000_000_000,
        endpoint: "chat.completions".into(),
        requested_model: "auto".into(),
        label: label.map(Into::into),
        task: Some("other".into()),
        confidence: Some(0.4),
        difficulty: label.map(|_| difficulty),
        prompt_tokens_est: Some(input),
        tools: Some(false),
        images: Some(0),
        json_mode: Some(false),
        tier: tier.map(|t| t.to_owned().into()),
        status: 200,
        usage: Usage {
            input,
            output,
            ..Usage::default()
        },
        // Served by gpt-4.1 on the frontier, for nothing locally.
        cost: Usd::from_pico(if frontier { reference } else { 0 }),
        reference_cost: Usd::from_pico(reference),
        ..LedgerRecord::default()
    }
}

/// The recorded traffic (under the standard config: PII and confident coding go local,
/// the rest to gpt-4.1):
/// - r1 `other`, difficulty 0.8, frontier, 1000 in / 500 out: $0.006
/// - r2 `other`, difficulty 0.2, frontier, 2000 / 300, team `search`: $0.0064
/// - r3 `coding` (confidence 0.9), local, 500 / 200: $0
/// - r4 `other` with an e-mail address, local, 300 / 100: $0
/// - r5 a cache hit, `other`, difficulty 0.1, 100 / 50: $0
/// - r6 refused before routing (no label): not replayed
fn seed(path: &Path) {
    let mut r2 = record("r2", Some("other"), 0.2, Some("frontier"), (2000, 300));
    r2.team = Some("search".into());
    let mut r3 = record("r3", Some("coding"), 0.7, Some("local"), (500, 200));
    r3.confidence = Some(0.9);
    let mut r4 = record("r4", Some("other"), 0.9, Some("local"), (300, 100));
    r4.pii_kinds = "email".into();
    let mut r5 = record("r5", Some("other"), 0.1, None, (100, 50));
    r5.cache_hit = true;
    let mut r6 = record("r6", None, 0.0, None, (0, 0));
    r6.status = 401;
    let records = [
        record("r1", Some("other"), 0.8, Some("frontier"), (1000, 500)),
        r2,
        r3,
        r4,
        r5,
        r6,
    ];
    SqliteStore::open(path).unwrap().write(&records).unwrap();
}

/// The candidate: hard prompts (difficulty ≥ 0.6) to the frontier, everything else
/// local with at most 100 output tokens.
fn candidate(ledger: &Path) -> String {
    let url = "http://127.0.0.1:9/v1";
    standard_config(url, url, url).replace(
        "[[rules]]\nid = \"default\"\npool = \"frontier\"",
        "[[rules]]\nid = \"hard-frontier\"\nwhen = { min_difficulty = 0.6 }\npool = \"frontier\"\n\n\
         [[rules]]\nid = \"default\"\npool = \"local\"\nmax_tokens = 100",
    ) + &format!("\n[ledger]\nurl = \"sqlite://{}\"\n", ledger.display())
}

fn replay(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(["replay", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    succeeded(&out)
}

fn usd(pico: i64) -> Value {
    json!(Usd::from_pico(pico).to_string())
}

#[test]
fn a_candidate_config_is_priced_on_recorded_traffic_as_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    seed(&ledger);
    let config = dir.path().join("candidate.toml");
    std::fs::write(&config, candidate(&ledger)).unwrap();
    let report: Value =
        serde_json::from_str(&replay(&config, &["--since", "2026-01-01", "--json"])).unwrap();

    // r1 stays on the frontier (hard); r2 moves local with its output capped at 100;
    // r3 (coding) and r4 (PII) stay local; r5 stays a cache hit.
    let total = &report["total"];
    assert_eq!(total["requests"], 5);
    assert_eq!(total["moved"], 1);
    assert_eq!(report["skipped"], 1);
    assert_eq!(report["without_features"], 0);
    let r1 = 1000 * IN + 500 * OUT;
    let r2 = 2000 * IN + 300 * OUT;
    assert_eq!(total["actual_cost"], usd(r1 + r2));
    assert_eq!(total["projected_cost"], usd(r1));
    // References: as recorded, and projected on the candidate's usage (r2's output 100).
    let recorded_refs =
        r1 + r2 + (500 * IN + 200 * OUT) + (300 * IN + 100 * OUT) + (100 * IN + 50 * OUT);
    assert_eq!(total["actual_reference"], usd(recorded_refs));
    assert_eq!(total["projected_reference"], usd(recorded_refs - 200 * OUT));
    assert!((total["expected_worse"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert_eq!(total["expected_better"], 0.0);
    assert_eq!(
        report["moves"],
        json!({"cache -> cache": 1, "frontier -> frontier": 1, "frontier -> local": 1, "local -> local": 2})
    );
    let by_rule = &report["by_rule"];
    assert_eq!(by_rule["hard-frontier"]["requests"], 1);
    assert_eq!(by_rule["hard-frontier"]["projected_cost"], usd(r1));
    assert_eq!(by_rule["default"]["requests"], 2);
    assert_eq!(by_rule["default"]["moved"], 1);
    assert_eq!(by_rule["code-local"]["requests"], 1);
    assert_eq!(by_rule["pii-local"]["requests"], 1);
    assert_eq!(report["by_team"]["search"]["actual_cost"], usd(r2));
    assert_eq!(report["by_team"]["search"]["projected_cost"], usd(0));
    assert_eq!(report["by_team"]["-"]["requests"], 4);

    // The text report says the same.
    let text = replay(&config, &["--since", "2026-01-01"]);
    assert!(
        text.starts_with("5 recorded requests since 2026-01-01"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["frontier", "->", "local", "1"])),
        "{text}"
    );
    assert!(text.contains(&format!("-{}", Usd::from_pico(r2))), "{text}");
}

/// Team `search` (a $0.01 monthly budget in the candidate) and key `ads-key` (a $0.01
/// monthly budget in the ledger's key store) each send three frontier requests of
/// $0.006, in this order. The candidate sends callers past half their budget local:
/// the first request of each stays on the frontier ($0.006 spent, 60%), the next two
/// move local. Without the running budgets nothing would move.
#[test]
fn budget_rules_see_what_the_candidate_would_have_spent() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let records: Vec<LedgerRecord> = (0..6)
        .map(|i| {
            let mut r = record(
                &format!("b{i}"),
                Some("other"),
                0.1,
                Some("frontier"),
                (1000, 500),
            );
            r.ts_ms += i64::from(i) * 60_000;
            if i % 2 == 0 {
                r.team = Some("search".into());
            } else {
                r.key_id = Some("ads-key".into());
            }
            r
        })
        .collect();
    SqliteStore::open(&ledger).unwrap().write(&records).unwrap();
    let url = "http://127.0.0.1:9/v1";
    let config = dir.path().join("candidate.toml");
    std::fs::write(
        &config,
        standard_config(url, url, url).replace(
            "[[rules]]\nid = \"default\"\npool = \"frontier\"",
            "[[rules]]\nid = \"near-budget-local\"\nwhen = { min_budget_used = 0.5 }\npool = \"local\"\n\n\
             [[rules]]\nid = \"default\"\npool = \"frontier\"",
        ) + &format!(
            "\n[[teams]]\nid = \"search\"\nbudget = {{ usd = 0.01, period = \"month\" }}\n\n[ledger]\nurl = \"sqlite://{}\"\n",
            ledger.display()
        ),
    )
    .unwrap();
    let created = std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args([
            "keys",
            "create",
            "--id",
            "ads-key",
            "--budget-usd",
            "0.01",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    succeeded(&created);
    let report: Value =
        serde_json::from_str(&replay(&config, &["--since", "2026-01-01", "--json"])).unwrap();
    let each = 1000 * IN + 500 * OUT;
    assert_eq!(each, 6_000_000_000, "$0.006 a request");
    assert_eq!(
        report["moves"],
        json!({"frontier -> frontier": 2, "frontier -> local": 4}),
        "{report}"
    );
    assert_eq!(report["by_rule"]["near-budget-local"]["requests"], 4);
    assert_eq!(report["total"]["projected_cost"], usd(2 * each));
    assert_eq!(report["by_team"]["search"]["projected_cost"], usd(each));
}

#[tokio::test]
async fn the_ledger_keeps_what_replay_needs_without_the_prompt() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 3, 2))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 3, 2))).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fa.base_url(),
    ))
    .await;
    let mut body = user("frontier", "What is the weather in Paris today?");
    body["tools"] =
        json!([{"type": "function", "function": {"name": "weather", "parameters": {}}}]);
    body["response_format"] = json!({"type": "json_object"});
    assert_eq!(gw.chat(body).await.status(), 200);
    let rows = gw.ledger_rows().await;
    let row = &rows[0];
    assert_eq!(row["tools"], 1);
    assert_eq!(row["json_mode"], 1);
    assert_eq!(row["images"], 0);
    assert!(row["prompt_tokens_est"].as_u64().unwrap() > 5);
    assert!(
        !row.values()
            .any(|v| v.as_str().is_some_and(|s| s.contains("Paris"))),
        "no prompt text in the ledger"
    );
}
