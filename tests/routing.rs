//! Rule features platform teams tune: header conditions, max_tokens caps, shadow rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

const EXTRA_RULES: &str = r#"
[[rules]]
id = "search-team"
when = { header = { "X-Team" = "search" } }
pool = "local"
max_tokens = 128

[[rules]]
id = "try-local-for-history"
when = { label = ["other"] }
pool = "local"
shadow = true

[[rules]]
id = "pii-local""#;

async fn setup() -> (Gateway, Upstream, Upstream) {
    let local = Upstream::start(Scripted::json(completion("local-model", "l", 3, 2))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 3, 2))).await;
    let config = standard_config(&local.base_url(), &fa.base_url(), &fa.base_url())
        .replace("[[rules]]\nid = \"pii-local\"", EXTRA_RULES);
    (Gateway::start(&config).await, local, fa)
}

#[tokio::test]
async fn header_rule_routes_and_caps_max_tokens() {
    let (gw, local, _fa) = setup().await;
    let mut body = user("auto", "Tell me about Rome.");
    body["max_tokens"] = json!(1000);
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .header("x-team", "search")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-crossroads-rule"], "search-team");
    assert_eq!(local.received()[0].body["max_tokens"], 128);

    // Without the header the rule does not apply.
    let r = gw.chat(body).await;
    assert_eq!(r.headers()["x-crossroads-rule"], "default");
}

#[tokio::test]
async fn shadow_rules_are_recorded_not_applied() {
    let (gw, local, fa) = setup().await;
    let r = gw.chat(user("auto", "Tell me about Rome.")).await;
    assert_eq!(r.headers()["x-crossroads-rule"], "default");
    assert_eq!((local.hits(), fa.hits()), (0, 1));
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["shadow_rule"], "try-local-for-history");
    assert!(
        gw.metrics()
            .await
            .contains(r#"crossroads_shadow_rule_matches_total{rule="try-local-for-history"} 1"#)
    );

    let (_, explained) = gw.explain(None, &user("auto", "Tell me about Rome.")).await;
    let reasons = explained["reasons"].to_string();
    assert!(
        reasons.contains("shadow rule `try-local-for-history` would have matched"),
        "{reasons}"
    );
}

#[tokio::test]
async fn a_rule_can_measure_savings_against_its_own_reference_model() {
    let local = Upstream::start(Scripted::json(completion("local-model", "l", 1000, 100))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 3, 2))).await;
    let config = standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()).replace(
        "when = { label = [\"coding\"], min_confidence = 0.5 }\npool = \"local\"",
        "when = { label = [\"coding\"], min_confidence = 0.5 }\npool = \"local\"\nreference_model = \"gpt-4.1-mini\"",
    );
    let gw = Gateway::start(&config).await;
    let r = gw
        .chat(user("auto", "Write a Python function that adds numbers."))
        .await;
    assert_eq!(r.headers()["x-crossroads-rule"], "code-local");
    let rows = gw.ledger_rows().await;
    // 1000 × $0.40/M + 100 × $1.60/M at gpt-4.1-mini, not gpt-4.1's $2.80.
    assert_eq!(rows[0]["reference_cost_pusd"], 560_000_000i64);
}
