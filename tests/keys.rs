//! Virtual keys, budgets and rate limits: 401 without a valid key, keys created and
//! revoked from the CLI, budgets that concurrent requests cannot overshoot, free local
//! traffic not blocked, RPM answered with 429 and Retry-After.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const KEY: &str = "ck-test-key-search";

fn keyed_config(local: &Upstream, fa: &Upstream, key_extra: &str, team_extra: &str) -> String {
    format!(
        "{}\n[auth]\nrequired = true\nrefresh_ms = 100\n\n[[teams]]\nid = \"search\"\n{team_extra}\n\n[[keys]]\nid = \"search-prod\"\nteam = \"search\"\nsha256 = \"{}\"\n{key_extra}\n",
        standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()),
        sha(KEY)
    )
}

/// A gateway whose frontier upstream answers `frontier`, with budget settings on the
/// key and the team; the upstreams live as long as the returned handles.
async fn budgeted(
    frontier: Scripted,
    key_extra: &str,
    team_extra: &str,
) -> (Gateway, [Upstream; 2]) {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(frontier).await;
    let gw = Gateway::start(&keyed_config(&local, &fa, key_extra, team_extra)).await;
    (gw, [local, fa])
}

async fn chat_as(gw: &Gateway, key: Option<&str>, body: serde_json::Value) -> reqwest::Response {
    let mut req = gw.client.post(gw.url("/v1/chat/completions")).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn requests_need_a_valid_key_and_are_attributed_to_it() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let gw = Gateway::start(&keyed_config(&local, &fa, "", "")).await;
    let (status, error) = error_of(chat_as(&gw, None, user("auto", "hi")).await).await;
    assert_eq!(status, 401);
    assert_eq!(error["type"], "authentication_error");
    let (status, _) = error_of(chat_as(&gw, Some("ck-wrong"), user("auto", "hi")).await).await;
    assert_eq!(status, 401);
    assert_eq!(
        chat_as(&gw, Some(KEY), user("auto", "hi")).await.status(),
        200
    );
    assert_eq!(fa.hits(), 1);
    let rows = gw.ledger_rows().await;
    let ok = rows.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(ok["key_id"], "search-prod");
    assert_eq!(ok["team"], "search");
}

#[tokio::test]
async fn cli_keys_work_at_once_and_stop_when_revoked() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let gw = Gateway::start(&keyed_config(&local, &fa, "", "")).await;
    let keys = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_crossroads"))
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(&gw.config_path)
            .output()
            .unwrap()
    };
    let out = keys(&[
        "create", "--id", "ci-bot", "--team", "search", "--rpm", "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().next().unwrap().to_owned();
    assert!(key.starts_with("ck-"));
    let mut accepted = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if chat_as(&gw, Some(&key), user("auto", "hi")).await.status() == 200 {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "a created key was not accepted");
    let listed = String::from_utf8(keys(&["list"]).stdout).unwrap();
    assert!(
        listed.contains("ci-bot") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "list must never show keys");

    assert!(keys(&["revoke", "ci-bot"]).status.success());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        chat_as(&gw, Some(&key), user("auto", "hi")).await.status(),
        401
    );
    assert!(
        String::from_utf8(keys(&["list"]).stdout)
            .unwrap()
            .contains("revoked")
    );
    assert!(!keys(&["revoke", "ci-bot"]).status.success());
}

#[tokio::test]
async fn concurrent_requests_never_overshoot_a_budget() {
    // Every answer costs 10 × $2/M + 50 × $8/M = $0.00042 at gpt-4.1 prices.
    let (gw, _upstreams) = budgeted(
        Scripted::delayed(
            Duration::from_millis(50),
            completion("gpt-4.1", "ok", 10, 50),
        ),
        "budget = { usd = 0.001, period = \"day\" }",
        "",
    )
    .await;
    let mut body = user("frontier", "hi");
    body["max_tokens"] = json!(50);
    let requests = (0..50).map(|_| chat_as(&gw, Some(KEY), body.clone()));
    let responses = futures_util::future::join_all(requests).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused: Vec<_> = responses
        .into_iter()
        .filter(|r| r.status() == 429)
        .collect();
    assert!(ok >= 1, "some requests must pass");
    assert_eq!(ok + refused.len(), 50);
    let (_, error) = error_of(refused.into_iter().next().unwrap()).await;
    assert_eq!(error["code"], "insufficient_quota");
    assert!(error["message"].as_str().unwrap().contains("budget"));
    let rows = gw.ledger_rows().await;
    let spent: i64 = rows.iter().map(|r| r["cost_pusd"].as_i64().unwrap()).sum();
    assert!(
        spent <= 1_000_000_000,
        "settled spend {spent} pico-USD exceeds the $0.001 budget"
    );
    assert!(
        gw.metrics()
            .await
            .contains("crossroads_budget_rejections_total{scope=\"key\"}")
    );
}

#[tokio::test]
async fn reservations_bound_every_choice_and_every_tool_schema() {
    let (gw, _upstreams) = budgeted(
        Scripted::json(completion("gpt-4.1", "ok", 10, 50)),
        "budget = { usd = 0.001, period = \"day\" }",
        "",
    )
    .await;
    // At gpt-4.1 prices 50 output tokens bound $0.0004 a choice; the prompt is bounded
    // by the body's bytes at $2/M.
    let mut body = user("frontier", "hi");
    body["max_tokens"] = json!(50);
    let mut three = body.clone();
    three["n"] = json!(3);
    let (status, error) = error_of(chat_as(&gw, Some(KEY), three).await).await;
    assert_eq!(status, 429, "three choices can cost $0.0012: {error}");
    let mut tools = body.clone();
    tools["tools"] = json!([{"type": "function", "function": {
        "name": "lookup",
        "description": "x".repeat(300),
        "parameters": {"type": "object", "properties": {}},
    }}]);
    let (status, error) = error_of(chat_as(&gw, Some(KEY), tools).await).await;
    assert_eq!(status, 429, "a tool schema is billed prompt: {error}");
    assert_eq!(chat_as(&gw, Some(KEY), body).await.status(), 200);
}

#[tokio::test]
async fn a_rules_max_tokens_cap_bounds_the_reservation() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 10, 50))).await;
    let budget = "budget = { usd = 0.001, period = \"day\" }";
    let uncapped = keyed_config(&local, &fa, budget, "");
    let capped = uncapped.replace(
        "id = \"default\"\npool = \"frontier\"",
        "id = \"default\"\npool = \"frontier\"\nmax_tokens = 50",
    );
    assert_ne!(capped, uncapped);
    // 1,000 output tokens at gpt-4.1's $8/M bound $0.008, over the budget; capped at
    // 50 by the rule, the request can cost $0.0004 and fits.
    let mut body = user("auto", "hi");
    body["max_tokens"] = json!(1000);
    let gw = Gateway::start(&uncapped).await;
    let (status, error) = error_of(chat_as(&gw, Some(KEY), body.clone()).await).await;
    assert_eq!(status, 429, "{error}");
    let gw = Gateway::start(&capped).await;
    assert_eq!(chat_as(&gw, Some(KEY), body).await.status(), 200);
    let sent = fa.received().pop().unwrap().body;
    assert_eq!(sent["max_tokens"], 50, "{sent}");
}

#[tokio::test]
async fn team_budgets_apply_and_free_local_traffic_passes() {
    let (gw, _upstreams) = budgeted(
        Scripted::json(completion("gpt-4.1", "ok", 100, 100)),
        "",
        "budget = { usd = 0.0001, period = \"month\" }",
    )
    .await;
    // The first frontier request cannot fit: its upper bound is above the budget.
    let (status, error) = error_of(chat_as(&gw, Some(KEY), user("frontier", "hi")).await).await;
    assert_eq!(status, 429);
    assert!(
        error["message"].as_str().unwrap().contains("team `search`"),
        "{error}"
    );
    // Local deployments cost nothing: the spent budget does not stop them.
    assert_eq!(
        chat_as(&gw, Some(KEY), user("local", "hi")).await.status(),
        200
    );
}

#[tokio::test]
async fn requests_per_minute_are_limited_with_retry_after() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let gw = Gateway::start(&keyed_config(&local, &fa, "rpm = 2", "")).await;
    assert_eq!(
        chat_as(&gw, Some(KEY), user("auto", "hi")).await.status(),
        200
    );
    assert_eq!(
        chat_as(&gw, Some(KEY), user("auto", "hi")).await.status(),
        200
    );
    let r = chat_as(&gw, Some(KEY), user("auto", "hi")).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Two this minute weigh fully at the next one; a third fits half way into it.
    assert!((30..=91).contains(&retry), "Retry-After {retry}");
    let (_, error) = error_of(r).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(fa.hits(), 2);
}

#[tokio::test]
async fn keys_added_to_the_config_work_after_a_reload_without_a_key_store() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let memory = "[ledger]\nurl = \"sqlite::memory:\"\n";
    let config = keyed_config(&local, &fa, "", "");
    let gw = Gateway::start_with_ledger(&config, Some(memory)).await;
    let new_key = "ck-test-key-added";
    assert_eq!(
        chat_as(&gw, Some(new_key), user("auto", "hi"))
            .await
            .status(),
        401
    );

    let added = format!(
        "{config}\n[[keys]]\nid = \"added\"\nteam = \"search\"\nsha256 = \"{}\"\n\n{memory}",
        sha(new_key)
    );
    std::fs::write(&gw.config_path, added).unwrap();
    gw.state
        .reloader
        .reload(crossroads::reload::Trigger::Admin)
        .await
        .unwrap();
    let mut status = 0;
    for _ in 0..40 {
        status = chat_as(&gw, Some(new_key), user("auto", "hi"))
            .await
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "the reloaded key was never accepted");
    assert_eq!(
        chat_as(&gw, Some(KEY), user("auto", "hi")).await.status(),
        200
    );
}

/// The rule that shifts a caller past 40% of its budget to the local pool.
const NEAR_BUDGET_LOCAL: &str = "[[rules]]\nid = \"near-budget-local\"\nwhen = { min_budget_used = 0.4 }\npool = \"local\"\n\n[[rules]]\nid = \"default\"";

#[tokio::test]
async fn a_caller_nearing_its_budget_is_shifted_to_local_instead_of_refused() {
    // Each frontier answer costs 10 × $2/M + 50 × $8/M = $0.00042 of the $0.001.
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 10, 50))).await;
    let budgeted = keyed_config(
        &local,
        &fa,
        "budget = { usd = 0.001, period = \"day\" }",
        "",
    );
    let mut ask = user("auto", "Tell me about Rome.");
    ask["max_tokens"] = serde_json::json!(50);
    // Without the rule, the second request's reservation (about $0.0006) no longer
    // fits the $0.00058 left: refused.
    let plain = Gateway::start(&budgeted).await;
    assert_eq!(chat_as(&plain, Some(KEY), ask.clone()).await.status(), 200);
    assert_eq!(chat_as(&plain, Some(KEY), ask.clone()).await.status(), 429);

    let config = budgeted.replacen("[[rules]]\nid = \"default\"", NEAR_BUDGET_LOCAL, 1);
    assert!(config.contains("near-budget-local"));
    let gw = Gateway::start(&config).await;
    let hits_before = fa.hits();
    let tiers: Vec<String> = {
        let mut tiers = Vec::new();
        for _ in 0..3 {
            let r = chat_as(&gw, Some(KEY), ask.clone()).await;
            assert_eq!(r.status(), 200, "shifted, not refused");
            tiers.push(format!(
                "{}:{}",
                r.headers()["x-crossroads-rule"].to_str().unwrap(),
                r.headers()["x-crossroads-tier"].to_str().unwrap()
            ));
        }
        tiers
    };
    // 0% spent: the frontier; 42%, then still 42% (local answers are free): local.
    assert_eq!(
        tiers,
        [
            "default:frontier",
            "near-budget-local:local",
            "near-budget-local:local"
        ]
    );
    assert_eq!((fa.hits() - hits_before, local.hits()), (1, 2));

    // Explain, with the caller's key, shows why.
    let (_, explained) = gw.explain(Some(KEY), &ask).await;
    let text = explained.to_string();
    assert!(text.contains("near-budget-local"), "{text}");
    assert!(text.contains("budget used ≥ 40%"), "{text}");
    // Without the key the rule cannot match: no budget to read.
    let (_, anonymous) = gw.explain(None, &ask).await;
    assert!(
        anonymous.to_string().contains("the caller has no budget"),
        "{anonymous}"
    );
}
