//! Dispatch falls back to the next deployment on 5xx, 429, timeouts and refused
//! connections before the first byte, and reports upstream failures as 502/504 without
//! leaking URLs or keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn ok(model: &str) -> Scripted {
    Scripted::json(completion(model, "fine", 10, 2))
}

#[tokio::test]
async fn falls_back_on_500() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::status(500, json!({"error": {"message": "boom"}}))).await;
    let fb = Upstream::start(ok("gpt-4.1-mini")).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    let r = gw.chat(user("frontier", "hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    // Priced at the deployment that answered: 10 × $0.40/M + 2 × $1.60/M.
    assert_eq!(r.headers()["x-crossroads-cost-usd"], "0.0000072");
    assert_eq!((fa.hits(), fb.hits()), (1, 1));
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(rows[0]["fallbacks"], "frontier-a:server_error");
    assert_eq!(rows[0]["deployment"], "frontier-b");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"crossroads_fallbacks_total{reason="server_error"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"crossroads_upstream_errors_total{deployment="frontier-a",kind="server_error"} 1"#
    ));
}

#[tokio::test]
async fn falls_back_on_429() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::Json {
        status: 429,
        body: json!({"error": {"message": "slow down"}}),
        delay: Duration::ZERO,
        headers: vec![("retry-after", "1".into())],
    })
    .await;
    let fb = Upstream::start(ok("gpt-4.1-mini")).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    let r = gw.chat(user("frontier", "hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
}

#[tokio::test]
async fn falls_back_on_timeout() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::Hang).await;
    let fb = Upstream::start(ok("gpt-4.1-mini")).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    let r = gw.chat(user("frontier", "hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    assert_eq!(gw.ledger_rows().await[0]["fallbacks"], "frontier-a:timeout");
}

#[tokio::test]
async fn falls_back_on_connection_refused() {
    let local = Upstream::start(ok("local-model")).await;
    let refused = refused_url().await;
    let fb = Upstream::start(ok("gpt-4.1-mini")).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &refused,
        &fb.base_url(),
    ))
    .await;
    let r = gw.chat(user("frontier", "hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    assert_eq!(gw.ledger_rows().await[0]["fallbacks"], "frontier-a:connect");
}

#[tokio::test]
async fn local_pool_falls_back_to_its_frontier_pool() {
    let refused = refused_url().await;
    let fa = Upstream::start(ok("gpt-4.1")).await;
    let fb = Upstream::start(ok("gpt-4.1-mini")).await;
    let gw = Gateway::start(&standard_config(&refused, &fa.base_url(), &fb.base_url())).await;
    let r = gw
        .chat(user(
            "auto",
            "Write a Python function that adds two numbers.",
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-rule"], "code-local");
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");
    assert_eq!(r.headers()["x-crossroads-tier"], "frontier");
}

#[tokio::test]
async fn stream_falls_back_when_the_first_deployment_fails_before_any_byte() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::status(
        503,
        json!({"error": {"message": "overloaded"}}),
    ))
    .await;
    let fb = Upstream::start(Scripted::sse(
        chunks("gpt-4.1-mini", &["hi"], Some((3, 1))),
        StreamEnd::Done,
    ))
    .await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    let mut body = user("frontier", "hello");
    body["stream"] = json!(true);
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    let data = sse_data(r).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn all_deployments_failing_is_a_502_without_internal_urls() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::status(
        500,
        json!({"error": {"message": "internal key sk-secret"}}),
    ))
    .await;
    let refused = refused_url().await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &refused,
    ))
    .await;
    let r = gw.chat(user("frontier", "hello")).await;
    let (status, error) = error_of(r).await;
    assert_eq!(status, 502);
    assert_eq!(error["code"], "upstream_unavailable");
    let message = error["message"].as_str().unwrap();
    assert!(
        !message.contains("127.0.0.1") && !message.contains("http"),
        "{message}"
    );
    assert!(!message.contains("sk-secret"), "{message}");
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["status"], 502);
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(rows[0]["error_kind"], "upstream_error");
}

#[tokio::test]
async fn all_deployments_timing_out_is_a_504() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::Hang).await;
    let fb = Upstream::start(Scripted::Hang).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    let (status, error) = error_of(gw.chat(user("frontier", "hello")).await).await;
    assert_eq!(status, 504);
    assert_eq!(error["code"], "upstream_timeout");
}

#[tokio::test]
async fn an_upstream_400_is_passed_on_not_retried() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::status(
        400,
        json!({"error": {"message": "Invalid schema for function 'lookup'", "type": "invalid_request_error"}}),
    ))
    .await;
    let fb = Upstream::start(ok("gpt-4.1-mini")).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    let (status, error) = error_of(gw.chat(user("frontier", "hello")).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["message"], "Invalid schema for function 'lookup'");
    assert_eq!(
        fb.hits(),
        0,
        "a request the upstream finds invalid must not be retried"
    );
}

#[tokio::test]
async fn upstream_credentials_problems_fall_back_and_stay_private() {
    let local = Upstream::start(ok("local-model")).await;
    let fa = Upstream::start(Scripted::status(
        401,
        json!({"error": {"message": "Incorrect API key provided: sk-abc***xyz"}}),
    ))
    .await;
    let fb = Upstream::start(Scripted::status(
        401,
        json!({"error": {"message": "Incorrect API key provided: sk-def"}}),
    ))
    .await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    let (status, error) = error_of(gw.chat(user("frontier", "hello")).await).await;
    assert_eq!(status, 502);
    assert!(!error["message"].as_str().unwrap().contains("sk-"));
}
