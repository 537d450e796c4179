//! `/metrics` after traffic: requests, latency, tokens, cost and classifier series.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

/// The value of the series `name{labels}` in Prometheus text.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_traffic_by_rule_tier_and_deployment() {
    let local = Upstream::start(Scripted::json(completion("local-model", "ok", 10, 5))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1000, 100))).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fa.base_url(),
    ))
    .await;
    for _ in 0..3 {
        gw.chat(user("auto", "Write a Python function that sorts a list."))
            .await;
    }
    gw.chat(user("auto", "Who painted the Mona Lisa?")).await;
    gw.chat(user("no-such-model", "hi")).await;

    let r = gw.get("/metrics").await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = r.text().await.unwrap();
    let get = |s: &str| value(&m, s).unwrap_or_else(|| panic!("missing {s} in\n{m}"));
    assert_eq!(
        get(
            r#"crossroads_requests_total{deployment="local-a",rule="code-local",status_class="2xx",tier="local"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"crossroads_requests_total{deployment="frontier-a",rule="default",status_class="2xx",tier="frontier"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            r#"crossroads_requests_total{deployment="none",rule="none",status_class="4xx",tier="none"}"#
        ),
        1.0
    );
    assert_eq!(
        get(r#"crossroads_errors_total{kind="model_not_found"}"#),
        1.0
    );
    assert_eq!(
        get(r#"crossroads_tokens_total{kind="input",tier="local"}"#),
        30.0
    );
    assert_eq!(
        get(r#"crossroads_tokens_total{kind="output",tier="frontier"}"#),
        100.0
    );
    // 1000 × $2/M + 100 × $8/M = $0.0028.
    assert!((get(r#"crossroads_cost_usd_total{tier="frontier"}"#) - 0.0028).abs() < 1e-12);
    assert!(get(r#"crossroads_reference_cost_usd_total{tier="local"}"#) > 0.0);
    assert_eq!(
        get(r#"crossroads_request_duration_seconds_count{tier="local"}"#),
        3.0
    );
    assert_eq!(
        get(r#"crossroads_upstream_duration_seconds_count{deployment="frontier-a"}"#),
        1.0
    );
    assert_eq!(get("crossroads_classifier_duration_seconds_count"), 4.0);
    assert_eq!(
        get(r#"crossroads_classifications_total{label="coding"}"#),
        3.0
    );
    assert!(m.contains("crossroads_ledger_queue_depth"));
    // Label values come from config, never from what clients send.
    assert!(!m.contains("no-such-model"));
}
