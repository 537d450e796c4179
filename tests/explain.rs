//! `POST /v1/route/explain`: the routing decision and its reasons, without any upstream call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

async fn explain(gw: &Gateway, body: Value) -> (u16, Value) {
    gw.explain(None, &body).await
}

#[tokio::test]
async fn explains_a_code_prompt_without_calling_upstreams() {
    let up = Upstream::start(Scripted::json(completion("m", "ok", 1, 1))).await;
    let gw = Gateway::start(&standard_config(
        &up.base_url(),
        &up.base_url(),
        &up.base_url(),
    ))
    .await;
    let (status, e) = explain(
        &gw,
        user("auto", "Fix this Rust code: fn main() { let x = vec![1]; }"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(e["classification"]["label"], "coding");
    assert!(e["classification"]["confidence"].as_f64().unwrap() > 0.5);
    assert!(e["classification"]["difficulty"].is_number());
    assert_eq!(e["classification"]["pii"], serde_json::json!([]));
    assert_eq!(e["rule"], "code-local");
    assert_eq!(e["pool"], "local");
    let ids: Vec<&str> = e["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["local-a", "frontier-a", "frontier-b"]);
    let reasons: Vec<&str> = e["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("rule `pii-local` skipped")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("rule `code-local` matched")),
        "{reasons:?}"
    );
    assert_eq!(up.hits(), 0);
    assert!(gw.ledger_rows().await.is_empty(), "explain is not traffic");
}

#[tokio::test]
async fn explains_pii_and_default_routes() {
    let up = Upstream::start(Scripted::json(completion("m", "ok", 1, 1))).await;
    let gw = Gateway::start(&standard_config(
        &up.base_url(),
        &up.base_url(),
        &up.base_url(),
    ))
    .await;
    let (_, e) = explain(
        &gw,
        user("frontier", "Card 4111 1111 1111 1111 was charged twice"),
    )
    .await;
    assert_eq!(e["rule"], "pii-local");
    assert_eq!(e["classification"]["pii"][0], "payment_card");

    let (_, e) = explain(&gw, user("auto", "What is the capital of France?")).await;
    assert_eq!(e["rule"], "default");
    assert_eq!(e["pool"], "frontier");
}

#[tokio::test]
async fn explain_rejects_bad_input_like_chat_does() {
    let up = Upstream::start(Scripted::Hang).await;
    let gw = Gateway::start(&standard_config(
        &up.base_url(),
        &up.base_url(),
        &up.base_url(),
    ))
    .await;
    let (status, e) = explain(&gw, user("nope", "hi")).await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], "model_not_found");
    let (status, _) = explain(&gw, serde_json::json!({"model": "auto"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_cli_prints_the_same_decision_as_the_endpoint() {
    let up = Upstream::start(Scripted::Hang).await;
    let gw = Gateway::start(&standard_config(
        &up.base_url(),
        &up.base_url(),
        &up.base_url(),
    ))
    .await;
    let prompt = "Write a Rust function that parses a date.";
    let (_, http) = explain(&gw, user("auto", prompt)).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(["explain", "--prompt", prompt, "--config"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["rule", "pool", "deployments", "reasons", "classification"] {
        assert_eq!(cli[field], http[field], "{field}");
    }
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("crossroads_rule_hits_total{"),
        "explain is not traffic"
    );
    assert!(
        !metrics.contains("crossroads_classifications_total{"),
        "explain does not count classifications"
    );
}
