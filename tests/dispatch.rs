//! Dispatch: retries with back-off, Retry-After, passive health ejection, pool
//! strategies, capacity and context windows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn ok(model: &str) -> Scripted {
    Scripted::json(completion(model, "fine", 10, 2))
}

/// The standard config with extra text after the pools and a changed frontier pool.
fn config(
    local: &Upstream,
    fa: &Upstream,
    fb: &Upstream,
    frontier_pool: &str,
    extra: &str,
) -> String {
    standard_config(&local.base_url(), &fa.base_url(), &fb.base_url())
        .replace(
            "[[pools]]\nid = \"frontier\"\ndeployments = [\"frontier-a\", \"frontier-b\"]",
            &format!("[[pools]]\nid = \"frontier\"\n{frontier_pool}\n\n[[pools]]\nid = \"solo\"\ndeployments = [\"frontier-b\"]\n\n[[aliases]]\nname = \"solo\"\npool = \"solo\"\n{extra}"),
        )
}

const PRIORITY: &str = "deployments = [\"frontier-a\", \"frontier-b\"]";

#[tokio::test]
async fn a_failed_pass_is_retried_after_a_backoff() {
    let (local, fa, fb) = (
        Upstream::start(ok("l")).await,
        Upstream::start(ok("a")).await,
        Upstream::start(ok("b")).await,
    );
    fb.push(Scripted::status(503, json!({"error": {"message": "busy"}})));
    let toml = config(&local, &fa, &fb, PRIORITY, "")
        .replace("retries = 0", "retries = 2\nretry_backoff_ms = 50");
    let gw = Gateway::start(&toml).await;
    let r = gw.chat(user("solo", "hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fb.hits(), 2);
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(rows[0]["fallbacks"], "frontier-b:server_error");
}

#[tokio::test]
async fn rate_limits_everywhere_reach_the_client_as_429_with_retry_after() {
    let (local, fa) = (
        Upstream::start(ok("l")).await,
        Upstream::start(ok("a")).await,
    );
    let fb = Upstream::start(Scripted::Json {
        status: 429,
        body: json!({"error": {"message": "quota"}}),
        delay: Duration::ZERO,
        headers: vec![("retry-after", "7".into())],
    })
    .await;
    let gw = Gateway::start(&config(&local, &fa, &fb, PRIORITY, "")).await;
    let r = gw.chat(user("solo", "hello")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let (_, error) = error_of(r).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn retry_after_is_honoured_between_passes() {
    let (local, fa) = (
        Upstream::start(ok("l")).await,
        Upstream::start(ok("a")).await,
    );
    let fb = Upstream::start(ok("b")).await;
    fb.push(Scripted::Json {
        status: 429,
        body: json!({"error": {"message": "slow down"}}),
        delay: Duration::ZERO,
        headers: vec![("retry-after", "1".into())],
    });
    let toml = config(&local, &fa, &fb, PRIORITY, "")
        .replace("retries = 0", "retries = 1\nretry_backoff_ms = 10");
    let gw = Gateway::start(&toml).await;
    let started = Instant::now();
    let r = gw.chat(user("solo", "hello")).await;
    assert_eq!(r.status(), 200);
    // Jitter scales the wait by 0.5-1.5.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn consecutive_failures_eject_a_deployment() {
    let local = Upstream::start(ok("l")).await;
    let fa = Upstream::start(Scripted::status(500, json!({"error": {"message": "down"}}))).await;
    let fb = Upstream::start(ok("b")).await;
    let gw = Gateway::start(&config(&local, &fa, &fb, PRIORITY, "")).await;
    for _ in 0..6 {
        let r = gw.chat(user("frontier", "hello")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    }
    assert_eq!(fa.hits(), 3, "after three failures frontier-a is skipped");
    assert!(
        gw.metrics()
            .await
            .contains(r#"crossroads_deployment_ejections_total{deployment="frontier-a"} 1"#)
    );
}

#[tokio::test]
async fn cheapest_strategy_prefers_the_cheaper_model() {
    let (local, fa, fb) = (
        Upstream::start(ok("l")).await,
        Upstream::start(ok("a")).await,
        Upstream::start(ok("b")).await,
    );
    let pool = "deployments = [\"frontier-a\", \"frontier-b\"]\nstrategy = \"cheapest\"";
    let gw = Gateway::start(&config(&local, &fa, &fb, pool, "")).await;
    let r = gw.chat(user("frontier", "hello")).await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
}

#[tokio::test]
async fn weighted_strategy_splits_traffic_by_weight() {
    let (local, fa, fb) = (
        Upstream::start(ok("l")).await,
        Upstream::start(ok("a")).await,
        Upstream::start(ok("b")).await,
    );
    let pool =
        "deployments = [\"frontier-a\", \"frontier-b\"]\nstrategy = \"weighted\"\nweights = [3, 1]";
    let gw = Gateway::start(&config(&local, &fa, &fb, pool, "")).await;
    for _ in 0..200 {
        assert_eq!(gw.chat(user("frontier", "hello")).await.status(), 200);
    }
    let share = fa.hits() as f64 / 200.0;
    assert!(
        (0.62..=0.88).contains(&share),
        "frontier-a got {share} of the traffic"
    );
}

#[tokio::test]
async fn least_latency_strategy_prefers_the_faster_deployment() {
    let local = Upstream::start(ok("l")).await;
    let fa = Upstream::start(Scripted::delayed(
        Duration::from_millis(60),
        completion("a", "slow", 1, 1),
    ))
    .await;
    let fb = Upstream::start(ok("b")).await;
    let pool = "deployments = [\"frontier-a\", \"frontier-b\"]\nstrategy = \"least_latency\"";
    let gw = Gateway::start(&config(&local, &fa, &fb, pool, "")).await;
    for _ in 0..20 {
        assert_eq!(gw.chat(user("frontier", "hello")).await.status(), 200);
    }
    assert_eq!(fa.hits(), 1, "frontier-a is measured once, then avoided");
    assert_eq!(fb.hits(), 19);
}

#[tokio::test]
async fn a_full_deployment_is_skipped() {
    let local = Upstream::start(ok("l")).await;
    let fa = Upstream::start(Scripted::delayed(
        Duration::from_millis(300),
        completion("a", "slow", 1, 1),
    ))
    .await;
    let fb = Upstream::start(ok("b")).await;
    let toml = config(&local, &fa, &fb, PRIORITY, "").replacen(
        "model = \"gpt-4.1\"\ntier = \"frontier\"",
        "model = \"gpt-4.1\"\ntier = \"frontier\"\nmax_concurrency = 1",
        1,
    );
    let gw = Gateway::start(&toml).await;
    let (a, b) = tokio::join!(gw.chat(user("frontier", "one")), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gw.chat(user("frontier", "two")).await
    });
    assert_eq!(a.headers()["x-crossroads-deployment"], "frontier-a");
    assert_eq!(b.headers()["x-crossroads-deployment"], "frontier-b");
    let rows = gw.ledger_rows().await;
    assert!(
        rows.iter()
            .any(|r| r["fallbacks"] == "frontier-a:at_capacity"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_too_small_context_window_is_skipped() {
    let (local, fa, fb) = (
        Upstream::start(ok("l")).await,
        Upstream::start(ok("a")).await,
        Upstream::start(ok("b")).await,
    );
    let toml = config(&local, &fa, &fb, PRIORITY, "").replacen(
        "model = \"gpt-4.1\"\ntier = \"frontier\"",
        "model = \"gpt-4.1\"\ntier = \"frontier\"\ncontext_window = 100",
        1,
    );
    let gw = Gateway::start(&toml).await;
    let r = gw.chat(user("frontier", "short")).await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");
    let mut body = user("frontier", "short");
    body["max_tokens"] = json!(500);
    let r = gw.chat(body).await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    let r = gw.chat(user("frontier", &"long text ".repeat(100))).await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    // The largest max_tokens fits no window: no overflow into a small number.
    let mut body = user("frontier", "short");
    body["max_tokens"] = json!(u64::MAX);
    let r = gw.chat(body).await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-b");
    assert_eq!(fa.hits(), 1);
}
