//! The spend API and CLI: totals by dimension in JSON and CSV, raw record pages, the
//! admin key seeing everything and a team key only its team.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

const SEARCH: &str = "ck-spend-search";
const ADS: &str = "ck-spend-ads";

async fn setup() -> Gateway {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 10, 5))).await;
    // 1000 × $2/M + 100 × $8/M = $0.0028 per frontier answer.
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1000, 100))).await;
    let config = format!(
        "{}\n[[teams]]\nid = \"search\"\n\n[[teams]]\nid = \"ads\"\n\n[[keys]]\nid = \"search-key\"\nteam = \"search\"\nsha256 = \"{}\"\n\n[[keys]]\nid = \"ads-key\"\nteam = \"ads\"\nsha256 = \"{}\"\n",
        standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()),
        sha(SEARCH),
        sha(ADS)
    );
    let gw = Gateway::start(&config).await;
    for (key, model) in [
        (SEARCH, "frontier"),
        (SEARCH, "frontier"),
        (SEARCH, "local"),
        (ADS, "frontier"),
    ] {
        let r = gw
            .client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&user(model, "hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    gw.flush_ledger().await;
    gw
}

async fn get(gw: &Gateway, path: &str, key: &str) -> reqwest::Response {
    gw.client
        .get(gw.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_sees_spend_by_team_with_savings() {
    let gw = setup().await;
    let body: Value = get(&gw, "/v1/spend?group_by=team", ADMIN_KEY)
        .await
        .json()
        .await
        .unwrap();
    let rows = body["data"].as_array().unwrap();
    let search = rows.iter().find(|r| r["group"] == "search").unwrap();
    assert_eq!(search["requests"], 3);
    assert_eq!(search["cost_usd"], "0.0056");
    // The local answer saved what gpt-4.1 would have cost: 10 × $2/M + 5 × $8/M.
    assert_eq!(search["savings_usd"], "0.00006");
    let ads = rows.iter().find(|r| r["group"] == "ads").unwrap();
    assert_eq!(ads["cost_usd"], "0.0028");

    let by_tier: Value = get(&gw, "/v1/spend?group_by=tier", ADMIN_KEY)
        .await
        .json()
        .await
        .unwrap();
    let tiers: Vec<&str> = by_tier["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["group"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["frontier", "local"]);
}

#[tokio::test]
async fn csv_and_a_team_key_sees_only_its_team() {
    let gw = setup().await;
    let r = get(&gw, "/v1/spend?group_by=key&format=csv", ADS).await;
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("key,requests,input_tokens"), "{csv}");
    assert_eq!(lines.len(), 2, "the ads key sees only ads traffic: {csv}");
    assert!(lines[1].starts_with("ads-key,1,1000,"), "{csv}");

    let page: Value = get(&gw, "/v1/spend/requests?limit=2", SEARCH)
        .await
        .json()
        .await
        .unwrap();
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|r| r["team"] == "search"));
    assert!(page["next_before"].is_string());
}

#[tokio::test]
async fn spend_needs_a_key_and_valid_parameters() {
    let gw = setup().await;
    let (status, _) = error_of(gw.get("/v1/spend").await).await;
    assert_eq!(status, 401);
    let (status, error) = error_of(get(&gw, "/v1/spend?group_by=planet", ADMIN_KEY).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["param"], "group_by");
    let (status, _) = error_of(get(&gw, "/v1/spend?from=yesterday", ADMIN_KEY).await).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn cli_prints_the_same_totals() {
    let gw = setup().await;
    let out = Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args([
            "spend", "--since", "1d", "--by", "team", "--csv", "--config",
        ])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("search,3,") && l.contains(",0.0056,")),
        "{csv}"
    );
}
