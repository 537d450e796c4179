//! Hot reload: a new config is validated off the request path and swapped atomically;
//! an invalid one is refused and the old one keeps serving; in-flight requests finish
//! on the config they started with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

async fn admin_reload(gw: &Gateway, key: Option<&str>) -> reqwest::Response {
    let mut req = gw.client.post(gw.url("/admin/reload"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

fn reload_count(metrics: &str, result: &str, trigger: &str) -> f64 {
    let series =
        format!("crossroads_config_reloads_total{{result=\"{result}\",trigger=\"{trigger}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn admin_reload_swaps_the_routes() {
    let local = Upstream::start(Scripted::json(completion("local-model", "l", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 1, 1))).await;
    let config = standard_config(&local.base_url(), &fa.base_url(), &fa.base_url());
    let gw = Gateway::start(&config).await;
    let r = gw.chat(user("auto", "Tell me about Rome.")).await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");

    // Send the default rule to the local pool instead.
    gw.rewrite_config(&config.replace(
        "[[rules]]\nid = \"default\"\npool = \"frontier\"",
        "[[rules]]\nid = \"default\"\npool = \"local\"",
    ));
    let r = admin_reload(&gw, Some(ADMIN_KEY)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = gw.chat(user("auto", "Tell me about Rome.")).await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "local-a");
    assert_eq!(reload_count(&gw.metrics().await, "ok", "admin"), 1.0);
}

#[tokio::test]
async fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 1, 1))).await;
    let config = standard_config(&fa.base_url(), &fa.base_url(), &fa.base_url())
        .replace("config_poll_ms = 100", "config_poll_ms = 0");
    let gw = Gateway::start(&config).await;
    gw.rewrite_config(&config.replace(
        "pool = \"frontier\"\n\n[[prices]]",
        "pool = \"nowhere\"\n\n[[prices]]",
    ));
    let r = admin_reload(&gw, Some(ADMIN_KEY)).await;
    let (status, error) = error_of(r).await;
    assert_eq!(status, 422);
    assert_eq!(error["code"], "invalid_config");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown pool `nowhere`")
    );
    let r = gw.chat(user("auto", "hello")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-rule"], "default");
    assert_eq!(reload_count(&gw.metrics().await, "error", "admin"), 1.0);
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_key() {
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 1, 1))).await;
    let gw = Gateway::start(&standard_config(
        &fa.base_url(),
        &fa.base_url(),
        &fa.base_url(),
    ))
    .await;
    let (status, error) = error_of(admin_reload(&gw, None).await).await;
    assert_eq!(status, 401);
    assert_eq!(error["type"], "authentication_error");
    let (status, _) = error_of(admin_reload(&gw, Some("wrong")).await).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let local = Upstream::start(Scripted::json(completion("local-model", "l", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 1, 1))).await;
    let config = standard_config(&local.base_url(), &fa.base_url(), &fa.base_url());
    let gw = Gateway::start(&config).await;
    let watcher = tokio::spawn(crossroads::reload::watch_file(gw.state.reloader.clone()));
    // Modification times can be coarse: make sure the new file differs in size too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    gw.rewrite_config(&format!(
        "{}\n# reloaded\n",
        config.replace(
            "[[rules]]\nid = \"default\"\npool = \"frontier\"",
            "[[rules]]\nid = \"default\"\npool = \"local\""
        )
    ));
    let mut routed_local = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = gw.chat(user("auto", "Tell me about Rome.")).await;
        if r.headers()["x-crossroads-deployment"] == "local-a" {
            routed_local = true;
            break;
        }
    }
    watcher.abort();
    assert!(routed_local, "the watcher never applied the new file");
    assert_eq!(reload_count(&gw.metrics().await, "ok", "file"), 1.0);
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let local = Upstream::start(Scripted::json(completion("local-model", "l", 1, 1))).await;
    let fa = Upstream::start(Scripted::delayed(
        Duration::from_millis(400),
        completion("gpt-4.1", "slow", 1, 1),
    ))
    .await;
    let config = standard_config(&local.base_url(), &fa.base_url(), &fa.base_url());
    let gw = Gateway::start(&config).await;
    let slow = {
        let client = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tokio::spawn(async move {
            client
                .post(url)
                .json(&user("auto", "Tell me about Rome."))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Remove the frontier deployments' pool from routing entirely.
    gw.rewrite_config(&config.replace(
        "[[rules]]\nid = \"default\"\npool = \"frontier\"",
        "[[rules]]\nid = \"default\"\npool = \"local\"",
    ));
    assert_eq!(admin_reload(&gw, Some(ADMIN_KEY)).await.status(), 200);
    let r = slow.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["deployment"], "frontier-a");
    assert_eq!(rows[0]["status"], 200);
}

#[test]
fn restart_only_settings_are_named_when_a_reload_changes_them() {
    let base = standard_config(
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
    );
    let parse = |toml: &str| {
        crossroads::config::from_toml_str(toml, std::path::Path::new("routes.toml"), &|_| None)
            .unwrap()
    };
    let old = parse(&base);
    let changed = |edit: &str| {
        let new = parse(&base.replacen("[server]\n", &format!("[server]\n{edit}"), 1));
        crossroads::reload::restart_only_changes(&old, &new)
    };
    assert!(crossroads::reload::restart_only_changes(&old, &parse(&base)).is_empty());
    // Settings a reload applies are not named.
    assert!(changed("body_limit_bytes = 100000\n").is_empty());
    assert_eq!(changed("workers = 1\n"), ["server.workers"]);
    assert_eq!(
        changed("shutdown_grace_ms = 1234\n"),
        ["server.shutdown_grace_ms"]
    );
    let appended = |section: &str| {
        crossroads::reload::restart_only_changes(&old, &parse(&format!("{base}\n{section}")))
    };
    assert_eq!(appended("[budgets]\nwarn_at = 0.5\n"), ["budgets.warn_at"]);
    assert!(appended("[budgets]\ndefault_max_tokens = 100\n").is_empty());
    assert_eq!(appended("[limits]\nbackend = \"redis\"\n"), ["[limits]"]);
    assert_eq!(
        appended("[ledger]\nurl = \"sqlite://x.db\"\n"),
        ["[ledger]"]
    );
    assert_eq!(appended("[cache]\nttl_ms = 1000\n"), ["[cache]"]);
}
