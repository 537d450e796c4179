//! Limits shared by replicas through Redis (`[limits] backend = "redis"`): two gateways
//! on one Redis enforce one budget and one RPM limit together, reservations of a
//! replica that died expire, the ledger seeds a period once, money stays exact past
//! 2^53 pico-dollars, and an unreachable Redis gets the configured policy.
//!
//! These tests need the Redis at 127.0.0.1:6379 (or `CROSSROADS_TEST_REDIS_URL`) and
//! fail without it. Each uses its own key prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::redis_server::{redis, redis_url, test_redis, unique_prefix};
use common::*;
use crossroads::accounting::Usd;
use crossroads::admission::shared::{SharedLimits, SharedVerdict};
use crossroads::admission::{Ask, Scope, SpendSource, now_ms, period_start_ms};
use crossroads::config::{BudgetConfig, BudgetPeriod};
use serde_json::json;

const KEY: &str = "ck-test-key-search";

/// The standard config with one key (team `search`) and a `[limits]` section.
fn config(local: &Upstream, fa: &Upstream, key_extra: &str, limits: &str) -> String {
    format!(
        "{}\n[auth]\nrequired = true\n\n[[teams]]\nid = \"search\"\n\n[[keys]]\nid = \"search-prod\"\nteam = \"search\"\nsha256 = \"{}\"\n{key_extra}\n\n[limits]\n{limits}\n",
        standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()),
        sha(KEY)
    )
}

fn shared(prefix: &str) -> String {
    format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\nredis_timeout_ms = 1000\n",
        redis_url()
    )
}

/// The `[limits]` of a gateway reaching Redis through `proxy`, with a 200 ms timeout.
fn shared_via(proxy: &Proxy, prefix: &str) -> String {
    format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\nredis_timeout_ms = 200\n",
        proxy.url()
    )
}

/// A gateway whose `[limits]` reach Redis through `proxy`, its frontier deployment
/// answering with `tokens` (prompt, completion); the upstreams live as long as it.
async fn gateway_behind(
    proxy: &Proxy,
    prefix: &str,
    key_extra: &str,
    tokens: (u64, u64),
) -> (Gateway, [Upstream; 2]) {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let answer = completion("gpt-4.1", "ok", tokens.0, tokens.1);
    let fa = Upstream::start(Scripted::json(answer)).await;
    let gw = Gateway::start(&config(&local, &fa, key_extra, &shared_via(proxy, prefix))).await;
    (gw, [local, fa])
}

async fn chat_as(gw: &Gateway, body: serde_json::Value) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The shared account of a key's daily budget.
async fn account(prefix: &str, key_id: &str) -> (Option<i64>, Option<i64>) {
    let mut r = redis().await;
    let start = period_start_ms(BudgetPeriod::Day, now_ms());
    let key = format!("{prefix}budget:key:{key_id}:{start}");
    redis::cmd("HMGET")
        .arg(&key)
        .arg("spent")
        .arg("reserved")
        .query_async(&mut r)
        .await
        .unwrap()
}

/// Waits (up to 5 s) until the shared account of `key_id` reads `expected` (spent,
/// reserved): settlements reach Redis off the request path.
async fn await_account(prefix: &str, key_id: &str, expected: (i64, i64), what: &str) {
    let expected = (Some(expected.0), Some(expected.1));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = account(prefix, key_id).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: account {now:?} (spent, reserved), expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_replicas_never_overshoot_one_budget() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    // Every answer costs 10 × $2/M + 50 × $8/M = $0.00042; a request reserves a little
    // less than $0.0005, so two fit in $0.001 and a third never does. Alone, each
    // replica would let two through: four in all, $0.00168.
    let fa = Upstream::start(Scripted::delayed(
        Duration::from_millis(50),
        completion("gpt-4.1", "ok", 10, 50),
    ))
    .await;
    let toml = config(
        &local,
        &fa,
        "budget = { usd = 0.001, period = \"day\" }",
        &shared(&prefix),
    );
    let a = Gateway::start(&toml).await;
    let b = Gateway::start(&toml).await;
    let mut body = user("frontier", "hi");
    body["max_tokens"] = json!(50);
    let requests = (0..50).map(|i| chat_as(if i % 2 == 0 { &a } else { &b }, body.clone()));
    let responses = futures_util::future::join_all(requests).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    let refused: Vec<_> = responses
        .into_iter()
        .filter(|r| r.status() == 429)
        .collect();
    assert_eq!(ok + refused.len(), 50);
    assert!(ok >= 1, "some requests must pass");
    let (_, error) = error_of(refused.into_iter().next().unwrap()).await;
    assert_eq!(error["code"], "insufficient_quota");
    let rows: Vec<_> = a
        .ledger_rows()
        .await
        .into_iter()
        .chain(b.ledger_rows().await)
        .collect();
    let spent: i64 = rows.iter().map(|r| r["cost_pusd"].as_i64().unwrap()).sum();
    assert!(
        spent <= 1_000_000_000,
        "settled spend {spent} pico-USD across both replicas exceeds the $0.001 budget"
    );
    assert_eq!(spent, ok as i64 * 420_000_000);
    // Settling leaves the request path: the shared account catches up with the ledger.
    await_account(
        &prefix,
        "search-prod",
        (spent, 0),
        "the shared account catches up with the ledger",
    )
    .await;
    // $0.00084 of $0.001 is past the 80% warning: exactly one replica saw it cross.
    let warnings = "crossroads_budget_warnings_total{scope=\"key\"}";
    let expected = if ok >= 2 { 1.0 } else { 0.0 };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let crossings = metric(&a.metrics().await, warnings) + metric(&b.metrics().await, warnings);
        if crossings == expected {
            break;
        }
        assert!(Instant::now() < deadline, "{crossings} warnings");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_replicas_share_one_tpm_window_with_generated_tokens() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 10, 500))).await;
    let toml = config(&local, &fa, "tpm = 600", &shared(&prefix));
    let a = Gateway::start(&toml).await;
    let b = Gateway::start(&toml).await;
    assert_eq!(chat_as(&a, user("frontier", "hi")).await.status(), 200);
    // The 500 generated tokens reach the shared window off the request path.
    // They land in this minute's window or, across a minute boundary, the last one.
    let mut r = redis().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = now_ms();
        let minute = now - now.rem_euclid(60_000);
        let mut t = 0;
        for start in [minute, minute - 60_000] {
            let window: Option<i64> = redis::cmd("HGET")
                .arg(format!("{prefix}rate:search-prod:{start}"))
                .arg("t")
                .query_async(&mut r)
                .await
                .unwrap();
            t += window.unwrap_or(0);
        }
        if t >= 500 {
            break;
        }
        assert!(Instant::now() < deadline, "window tokens {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 500 generated tokens leave no room for a long prompt on `b`.
    let long = "word ".repeat(400);
    let r = chat_as(&b, user("frontier", &long)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let (_, error) = error_of(r).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{error}"
    );
    assert_eq!(fa.hits(), 1);
}

#[tokio::test]
async fn a_failed_request_releases_its_shared_reservation() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::status(500, json!({"error": {"message": "down"}}))).await;
    let gw = Gateway::start(&config(
        &local,
        &fa,
        "budget = { usd = 1, period = \"day\" }",
        &shared(&prefix),
    ))
    .await;
    assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 502);
    await_account(
        &prefix,
        "search-prod",
        (0, 0),
        "the failed request's reservation is released",
    )
    .await;
}

#[tokio::test]
async fn a_spent_shared_budget_still_lets_free_local_traffic_through() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let gw = Gateway::start(&config(
        &local,
        &fa,
        "budget = { usd = 0.000001, period = \"month\" }",
        &shared(&prefix),
    ))
    .await;
    let (status, error) = error_of(chat_as(&gw, user("frontier", "hi")).await).await;
    assert_eq!(status, 429);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("monthly budget"),
        "{error}"
    );
    // The local pool falls back to frontier, but its free deployment fits any budget.
    let r = chat_as(&gw, user("local", "hi")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "local-a");
    assert_eq!(fa.hits(), 0);
}

#[tokio::test]
async fn two_replicas_share_one_rpm_limit() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let toml = config(&local, &fa, "rpm = 3", &shared(&prefix));
    let a = Gateway::start(&toml).await;
    let b = Gateway::start(&toml).await;
    for gw in [&a, &b, &a] {
        assert_eq!(chat_as(gw, user("frontier", "hi")).await.status(), 200);
    }
    // Alone, `b` has seen one request of its three.
    let r = chat_as(&b, user("frontier", "hi")).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Three this minute weigh fully at the next one; a fourth fits a third of the way in.
    assert!((20..=81).contains(&retry), "Retry-After {retry}");
    let (_, error) = error_of(r).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(chat_as(&a, user("frontier", "hi")).await.status(), 429);
    assert_eq!(fa.hits(), 3);
    assert!(
        metric(
            &b.metrics().await,
            "crossroads_rate_limited_total{limit=\"rpm\"}"
        ) >= 1.0
    );
}

/// A period's spend read from the ledger.
struct Ledger(Usd);

impl SpendSource for Ledger {
    fn spent_since(&self, _: &Scope, _: i64) -> Result<Usd, crossroads::admission::HistoryError> {
        Ok(self.0)
    }
}

fn counters() -> (prometheus::IntCounterVec, prometheus::IntCounterVec) {
    let vec = |name: &str, label: &str| {
        prometheus::IntCounterVec::new(prometheus::Opts::new(name, "test"), &[label]).unwrap()
    };
    (vec("warnings", "scope"), vec("errors", "op"))
}

fn limits(prefix: &str, lease: Duration, history: Usd) -> Arc<SharedLimits> {
    let (warnings, errors) = counters();
    Arc::new(
        SharedLimits::new(
            &redis_url(),
            prefix.to_owned(),
            Duration::from_secs(1),
            lease,
            Arc::new(Ledger(history)),
            0.8,
            warnings,
            errors,
        )
        .unwrap(),
    )
}

/// Shared limits reaching Redis through `proxy` (200 ms timeout), and their error
/// counter.
fn limits_behind(
    proxy: &Proxy,
    prefix: &str,
    history: Usd,
) -> (Arc<SharedLimits>, prometheus::IntCounterVec) {
    let (warnings, errors) = counters();
    let limits = SharedLimits::new(
        &proxy.url(),
        prefix.to_owned(),
        Duration::from_millis(200),
        Duration::from_secs(60),
        Arc::new(Ledger(history)),
        0.8,
        warnings,
        errors.clone(),
    )
    .unwrap();
    (Arc::new(limits), errors)
}

fn ask<'a>(budgets: &'a [(Scope, BudgetConfig)], amount: Usd) -> Ask<'a> {
    Ask {
        key: "search-prod",
        rpm: None,
        tpm: None,
        tokens: 0,
        budgets,
        amount,
        free_fallback: false,
        block_free: false,
        now_ms: now_ms(),
    }
}

fn daily(usd: f64) -> BudgetConfig {
    BudgetConfig {
        limit: Usd::from_dollars(usd).unwrap(),
        period: BudgetPeriod::Day,
    }
}

#[tokio::test]
async fn a_dead_replicas_reservations_expire_with_their_lease() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let budgets = [(Scope::Key("search-prod".into()), daily(0.001))];
    // A replica reserves the whole budget and dies: it never settles nor releases.
    let dead = limits(&prefix, Duration::from_millis(1_000), Usd::ZERO);
    let whole = Usd::from_dollars(0.001).unwrap();
    match dead.admit(&ask(&budgets, whole)).await.unwrap() {
        SharedVerdict::Admitted(hold) => std::mem::forget(hold),
        _ => panic!("the first reservation must fit"),
    }
    let alive = limits(&prefix, Duration::from_secs(60), Usd::ZERO);
    let small = Usd::from_dollars(0.0001).unwrap();
    assert!(matches!(
        alive.admit(&ask(&budgets, small)).await.unwrap(),
        SharedVerdict::OverBudget { reserved, .. } if reserved == whole
    ));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    match alive.admit(&ask(&budgets, small)).await.unwrap() {
        SharedVerdict::Admitted(hold) => hold.settle(small),
        _ => panic!("the dead replica's lease ran out: its room must be free"),
    }
    await_account(
        &prefix,
        "search-prod",
        (small.pico(), 0),
        "the dead replica's lease ran out",
    )
    .await;
}

#[tokio::test]
async fn replicas_starting_together_seed_the_period_once() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let budgets = [(Scope::Key("search-prod".into()), daily(1.0))];
    let seed = Usd::from_dollars(0.25).unwrap();
    let replicas: Vec<_> = (0..4)
        .map(|_| limits(&prefix, Duration::from_secs(60), seed))
        .collect();
    let amount = Usd::from_dollars(0.01).unwrap();
    let verdicts = futures_util::future::join_all(
        replicas
            .iter()
            .map(|r| async { r.admit(&ask(&budgets, amount)).await.unwrap() }),
    )
    .await;
    for v in verdicts {
        match v {
            SharedVerdict::Admitted(hold) => drop(hold),
            _ => panic!("$0.25 + 4 × $0.01 fits $1"),
        }
    }
    let (spent, _) = account(&prefix, "search-prod").await;
    assert_eq!(
        spent,
        Some(seed.pico()),
        "the ledger's spend is counted once"
    );
}

#[tokio::test]
async fn money_stays_exact_beyond_double_precision() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    // $20,000 is 2 × 10^16 pico-USD, past 2^53: doubles cannot tell it from one more.
    let budgets = [(Scope::Team("search".into()), daily(20_000.0))];
    let limit = budgets[0].1.limit;
    let seed = Usd::from_pico(limit.pico() - 2);
    let r = limits(&prefix, Duration::from_secs(60), seed);
    let one = Usd::from_pico(1);
    for _ in 0..2 {
        match r.admit(&ask(&budgets, one)).await.unwrap() {
            SharedVerdict::Admitted(hold) => std::mem::forget(hold),
            _ => panic!("one pico-dollar still fits"),
        }
    }
    assert!(matches!(
        r.admit(&ask(&budgets, one)).await.unwrap(),
        SharedVerdict::OverBudget { spent, reserved, .. }
            if spent == seed && reserved == Usd::from_pico(2)
    ));
}

/// A TCP proxy in front of the test Redis that can cut every connection and refuse new
/// ones, as an outage does, and come back.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    pumps: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let target = url::Url::parse(&redis_url()).unwrap();
        let target = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port().unwrap_or(6379)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            up: Arc::default(),
            pumps: Arc::default(),
        };
        proxy.up.store(true, Ordering::SeqCst);
        let (up, pumps) = (proxy.up.clone(), proxy.pumps.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let mut pumps = pumps.lock().unwrap();
                pumps.push(tokio::spawn(pump(cr, sw)));
                pumps.push(tokio::spawn(pump(sr, cw)));
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for pump in self.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn pump(from: tokio::net::tcp::OwnedReadHalf, to: tokio::net::tcp::OwnedWriteHalf) {
    use std::io::ErrorKind::WouldBlock;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buf[sent..n]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == WouldBlock => continue,
                Err(_) => return,
            }
        }
    }
}

#[tokio::test]
async fn a_settlement_that_fails_in_an_outage_is_retried() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let proxy = Proxy::start().await;
    let (limits, errors) = limits_behind(&proxy, &prefix, Usd::ZERO);
    let budgets = [(Scope::Key("search-prod".into()), daily(1.0))];
    let reserved = Usd::from_dollars(0.5).unwrap();
    let cost = Usd::from_dollars(0.3).unwrap();
    let SharedVerdict::Admitted(hold) = limits.admit(&ask(&budgets, reserved)).await.unwrap()
    else {
        panic!("$0.5 fits $1");
    };
    proxy.down();
    hold.settle(cost);
    eventually("the failed settlement counted", || async {
        errors.with_label_values(&["settle"]).get() >= 1
    })
    .await;
    assert_eq!(
        account(&prefix, "search-prod").await,
        (Some(0), Some(reserved.pico()))
    );
    proxy.up();
    // What shutdown waits for: once settled, the retried settlement is in Redis.
    tokio::time::timeout(Duration::from_secs(5), limits.settled())
        .await
        .unwrap();
    assert_eq!(
        account(&prefix, "search-prod").await,
        (Some(cost.pico()), Some(0))
    );
}

#[tokio::test]
async fn an_outage_falls_back_to_local_limits_and_redis_takes_over_again() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let proxy = Proxy::start().await;
    let (gw, _upstreams) = gateway_behind(&proxy, &prefix, "rpm = 100", (1, 1)).await;
    let fallbacks = "crossroads_admission_fallbacks_total{policy=\"local\"}";
    assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 200);
    proxy.down();
    assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 200);
    assert_eq!(metric(&gw.metrics().await, fallbacks), 1.0);
    proxy.up();
    // Past the cool-down Redis is asked again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 200);
    assert_eq!(metric(&gw.metrics().await, fallbacks), 1.0);
    let now = now_ms();
    let window = format!("{prefix}rate:search-prod:{}", now - now.rem_euclid(60_000));
    let before = format!(
        "{prefix}rate:search-prod:{}",
        now - now.rem_euclid(60_000) - 60_000
    );
    let mut r = redis().await;
    let mut counted = 0;
    for key in [window, before] {
        let n: Option<i64> = redis::cmd("HGET")
            .arg(key)
            .arg("r")
            .query_async(&mut r)
            .await
            .unwrap();
        counted += n.unwrap_or(0);
    }
    assert_eq!(
        counted, 2,
        "the first and the last request are counted in Redis"
    );
}

#[tokio::test]
async fn unreachable_redis_falls_back_to_local_limits_by_default() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let dead = refused_url().await.replace("http://", "redis://");
    let dead = dead.trim_end_matches("/v1");
    let gw = Gateway::start(&config(
        &local,
        &fa,
        "rpm = 2",
        &format!("backend = \"redis\"\nredis_url = \"{dead}\"\nredis_timeout_ms = 200\n"),
    ))
    .await;
    let started = Instant::now();
    assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 200);
    assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 200);
    // Enforced in this process meanwhile.
    let r = chat_as(&gw, user("frontier", "hi")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(2), "never a hang");
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "crossroads_admission_fallbacks_total{policy=\"local\"}"),
        3.0
    );
    assert!(metric(&m, "crossroads_admission_redis_errors_total{op=\"admit\"}") >= 1.0);
}

#[tokio::test]
async fn unreachable_redis_refuses_with_503_when_configured() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let dead = refused_url().await.replace("http://", "redis://");
    let dead = dead.trim_end_matches("/v1");
    let gw = Gateway::start(&config(
        &local,
        &fa,
        "rpm = 100",
        &format!(
            "backend = \"redis\"\nredis_url = \"{dead}\"\nredis_timeout_ms = 200\non_redis_error = \"reject\"\n"
        ),
    ))
    .await;
    let started = Instant::now();
    let r = chat_as(&gw, user("frontier", "hi")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let (_, error) = error_of(r).await;
    assert_eq!(error["code"], "limits_unavailable");
    assert_eq!(error["type"], "server_error");
    assert!(started.elapsed() < Duration::from_secs(2), "never a hang");
    assert_eq!(fa.hits(), 0);
    assert_eq!(
        metric(
            &gw.metrics().await,
            "crossroads_admission_fallbacks_total{policy=\"reject\"}"
        ),
        1.0
    );
}

fn parse(limits: &str) -> Result<crossroads::config::Config, crossroads::config::ConfigError> {
    let toml = format!(
        "{}\n[limits]\n{limits}\n",
        standard_config(
            "http://127.0.0.1:9/v1",
            "http://127.0.0.1:9/v1",
            "http://127.0.0.1:9/v1"
        )
    );
    crossroads::config::from_toml_str(&toml, std::path::Path::new("routes.toml"), &|_| None)
}

#[test]
fn limits_settings_are_checked_and_named_by_their_path() {
    use crossroads::config::{LimitsConfig, OnRedisError};
    assert_eq!(parse("").unwrap().limits, LimitsConfig::Memory);
    let LimitsConfig::Redis(r) = parse("backend = \"redis\"").unwrap().limits else {
        panic!("backend = \"redis\" must select Redis");
    };
    assert_eq!(r.key_prefix, "crossroads:limits:");
    assert_eq!(r.on_error, OnRedisError::Local);
    assert_eq!(r.reservation_ttl, Duration::from_secs(900));
    for (limits, path, says) in [
        ("redis_ur = \"x\"", "limits.redis_ur", "unknown field"),
        (
            "on_redis_error = \"maybe\"",
            "limits.on_redis_error",
            "maybe",
        ),
        (
            "backend = \"redis\"\nredis_url = \"http://h:1\"",
            "limits.redis_url",
            "not supported",
        ),
        (
            "backend = \"redis\"\nreservation_ttl_ms = 10",
            "limits.reservation_ttl_ms",
            "at least 1000",
        ),
        (
            "backend = \"redis\"\nkey_prefix = \"\"",
            "limits.key_prefix",
            "must not be empty",
        ),
        (
            "backend = \"redis\"\nredis_timeout_ms = 0",
            "limits.redis_timeout_ms",
            "greater than 0",
        ),
    ] {
        let e = parse(limits).expect_err(limits);
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}

#[test]
fn a_lease_shorter_than_the_request_deadline_is_linted() {
    let lints = |ttl: u64| {
        let config = parse(&format!("backend = \"redis\"\nreservation_ttl_ms = {ttl}")).unwrap();
        crossroads::config::lint(&config)
            .into_iter()
            .filter(|l| l.path == "limits.reservation_ttl_ms")
            .count()
    };
    // The standard config's request_timeout_ms is 5000.
    assert_eq!(lints(5_000), 1);
    assert_eq!(lints(60_000), 0);
}

#[test]
fn check_shows_the_limits_backend_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[limits]\nbackend = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:6379/0\"\non_redis_error = \"reject\"\n",
            standard_config(
                "http://127.0.0.1:9/v1",
                "http://127.0.0.1:9/v1",
                "http://127.0.0.1:9/v1"
            )
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("limits: redis redis://127.0.0.1:6379/0")
            && text.contains("on error: reject"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// The added latency of shared limits, measured (not asserted): the same requests through
/// a gateway with in-process limits and one with Redis limits, interleaved.
/// `cargo test --test limits added_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn added_latency_of_shared_limits() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 10, 5))).await;
    let key = "rpm = 1000000\ntpm = 1000000000\nbudget = { usd = 1000000, period = \"day\" }";
    let memory = Gateway::start(&config(&local, &fa, key, "backend = \"memory\"")).await;
    let shared_gw = Gateway::start(&config(&local, &fa, key, &shared(&prefix))).await;
    let mut body = user("frontier", "hi");
    body["max_tokens"] = json!(16);
    let n = 2_000;
    let (mut m, mut s) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 200 {
        for (gw, out) in [(&memory, &mut m), (&shared_gw, &mut s)] {
            let started = Instant::now();
            assert_eq!(chat_as(gw, body.clone()).await.status(), 200);
            if i >= 200 {
                out.push(started.elapsed());
            }
        }
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (a, b) = (pct(&mut m, p), pct(&mut s, p));
        println!(
            "{name}: memory {:>7.1} µs, redis {:>7.1} µs, added {:>6.1} µs",
            a.as_secs_f64() * 1e6,
            b.as_secs_f64() * 1e6,
            (b.as_secs_f64() - a.as_secs_f64()) * 1e6
        );
    }
    // The admission step alone, against a bare PING on the same server.
    let direct = limits(&prefix, Duration::from_secs(60), Usd::ZERO);
    let budgets = [(Scope::Key("latency".into()), daily(1_000_000.0))];
    let mut r = redis().await;
    let (mut admit, mut ping) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let started = Instant::now();
        let mut a = ask(&budgets, Usd::from_pico(1));
        a.rpm = Some(1_000_000);
        match direct.admit(&a).await.unwrap() {
            SharedVerdict::Admitted(hold) => {
                admit.push(started.elapsed());
                hold.settle(Usd::from_pico(1));
            }
            _ => panic!("a huge budget admits"),
        }
        let started = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut r).await.unwrap();
        ping.push(started.elapsed());
    }
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        println!(
            "{name}: admit script {:>6.1} µs, PING {:>6.1} µs",
            pct(&mut admit, p).as_secs_f64() * 1e6,
            pct(&mut ping, p).as_secs_f64() * 1e6
        );
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut r)
        .await
        .unwrap();
    for line in stats.lines().filter(|l| l.contains("evalsha")) {
        println!("redis {line}");
    }
}

#[tokio::test]
async fn what_the_fallback_spent_reaches_redis_once_it_is_back() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let proxy = Proxy::start().await;
    let (limits, errors) = limits_behind(&proxy, &prefix, Usd::ZERO);
    let budgets = [(Scope::Key("search-prod".into()), daily(1.0))];
    let dollars = |d: f64| Usd::from_dollars(d).unwrap();
    let SharedVerdict::Admitted(hold) = limits.admit(&ask(&budgets, dollars(0.5))).await.unwrap()
    else {
        panic!("$0.5 fits $1");
    };
    hold.settle(dollars(0.1));
    tokio::time::timeout(Duration::from_secs(5), limits.settled())
        .await
        .unwrap();
    // The seed records when it was read (owe.lua compares it with the outage's spend).
    let start = period_start_ms(BudgetPeriod::Day, now_ms());
    let seeded: Option<i64> = redis::cmd("HGET")
        .arg(format!("{prefix}budget:key:search-prod:{start}"))
        .arg("seeded")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    assert!(seeded.is_some_and(|t| t <= now_ms()));
    proxy.down();
    assert!(limits.admit(&ask(&budgets, dollars(0.5))).await.is_err());
    // Two requests the fallback admitted settle while Redis is away.
    limits.owing(&budgets, now_ms()).settle(dollars(0.2));
    limits.owing(&budgets, now_ms()).settle(dollars(0.05));
    eventually("the failed owing counted", || async {
        errors.with_label_values(&["owe"]).get() >= 1
    })
    .await;
    assert_eq!(
        account(&prefix, "search-prod").await,
        (Some(dollars(0.1).pico()), Some(0))
    );
    proxy.up();
    // Shutdown waits for this too: once settled, Redis has the outage's spend, once.
    tokio::time::timeout(Duration::from_secs(10), limits.settled())
        .await
        .unwrap();
    assert_eq!(
        account(&prefix, "search-prod").await,
        (Some(dollars(0.35).pico()), Some(0))
    );
}

#[tokio::test]
async fn a_gateway_pays_the_shared_budget_what_it_spent_in_an_outage() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let proxy = Proxy::start().await;
    // Every answer costs 10 × $2/M + 50 × $8/M = $0.00042.
    let budget = "budget = { usd = 1.0, period = \"day\" }";
    let (gw, _upstreams) = gateway_behind(&proxy, &prefix, budget, (10, 50)).await;
    let cost = 420_000_000;
    assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 200);
    await_account(&prefix, "search-prod", (cost, 0), "through Redis").await;
    proxy.down();
    for _ in 0..2 {
        assert_eq!(chat_as(&gw, user("frontier", "hi")).await.status(), 200);
    }
    let fallbacks = "crossroads_admission_fallbacks_total{policy=\"local\"}";
    assert_eq!(metric(&gw.metrics().await, fallbacks), 2.0);
    assert_eq!(account(&prefix, "search-prod").await, (Some(cost), Some(0)));
    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(10);
    while account(&prefix, "search-prod").await != (Some(3 * cost), Some(0)) {
        assert!(
            Instant::now() < deadline,
            "the outage's spend never reached Redis: {:?}",
            account(&prefix, "search-prod").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once only, however many times it was offered.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        account(&prefix, "search-prod").await,
        (Some(3 * cost), Some(0))
    );
}

#[tokio::test]
async fn a_batch_of_owed_spend_is_counted_once_however_often_it_is_offered() {
    let prefix = unique_prefix("limits");
    let Some(mut r) = test_redis("a shared-limits test").await else {
        return;
    };
    // Seeded before the outage (no `seeded` field: as older versions wrote it), never
    // seeded, and seeded from the ledger after the outage's requests were settled.
    let [old, unseeded, later] =
        ["old", "new", "later"].map(|id| format!("{prefix}budget:key:{id}:0"));
    let settled_at = now_ms();
    let expiry = settled_at + 60_000;
    for (account, fields) in [(&old, vec![100]), (&later, vec![100, settled_at + 1])] {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(account).arg("spent").arg(fields[0]);
        if let Some(seeded) = fields.get(1) {
            cmd.arg("seeded").arg(*seeded);
        }
        let _: () = cmd.query_async(&mut r).await.unwrap();
    }
    let script = redis::Script::new(include_str!("../src/admission/lua/owe.lua"));
    for member in ["replica-owed-1", "replica-owed-1", "replica-owed-2"] {
        let mut invocation = script.prepare_invoke();
        for account in [&old, &unseeded, &later] {
            invocation.key(account).key(format!("{account}:owed"));
        }
        invocation.arg(member);
        for _ in 0..3 {
            invocation.arg(25).arg(expiry).arg(settled_at);
        }
        let _: i64 = invocation.invoke_async(&mut r).await.unwrap();
    }
    let spent = |account: String| {
        let mut r = r.clone();
        async move {
            let v: Option<i64> = redis::cmd("HGET")
                .arg(account)
                .arg("spent")
                .query_async(&mut r)
                .await
                .unwrap();
            v
        }
    };
    assert_eq!(
        spent(old.clone()).await,
        Some(150),
        "two batches of 25, the repeated one counted once"
    );
    // Left to the ledger's seed, which holds these requests.
    assert_eq!(spent(unseeded.clone()).await, None);
    assert_eq!(spent(later.clone()).await, Some(100));
}

#[tokio::test]
async fn a_second_outage_starts_from_the_ledger_not_from_the_first() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let proxy = Proxy::start().await;
    // $0.00042 an answer; with max_tokens 50 a request reserves a little under $0.0005.
    let budget = "budget = { usd = 0.0015, period = \"day\" }";
    let (gw, _upstreams) = gateway_behind(&proxy, &prefix, budget, (10, 50)).await;
    let mut body = user("frontier", "hi");
    body["max_tokens"] = json!(50);
    let cost = 420_000_000;
    // One request through Redis, one in a first outage, one through Redis again.
    assert_eq!(chat_as(&gw, body.clone()).await.status(), 200);
    assert_eq!(gw.ledger_rows().await.len(), 1);
    proxy.down();
    assert_eq!(chat_as(&gw, body.clone()).await.status(), 200);
    proxy.up();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(chat_as(&gw, body.clone()).await.status(), 200);
    await_account(&prefix, "search-prod", (3 * cost, 0), "all three in Redis").await;
    assert_eq!(gw.ledger_rows().await.len(), 3);
    // A second outage: the ledger says $0.00126 is spent, so another reservation of
    // nearly $0.0005 does not fit $0.0015. (Counting on from the first outage, this
    // process would know of $0.00084 only, and let it through.)
    proxy.down();
    let r = chat_as(&gw, body.clone()).await;
    assert_eq!(r.status(), 429);
    let (_, error) = error_of(r).await;
    assert_eq!(error["code"], "insufficient_quota");
}

#[tokio::test]
async fn an_account_seeded_after_an_outage_does_not_count_it_twice() {
    let prefix = unique_prefix("limits");
    let Some(mut r) = test_redis("a shared-limits test").await else {
        return;
    };
    let proxy = Proxy::start().await;
    let dollars = |d: f64| Usd::from_dollars(d).unwrap();
    let (limits, _) = limits_behind(&proxy, &prefix, Usd::ZERO);
    let budgets = [(Scope::Key("search-prod".into()), daily(1.0))];
    proxy.down();
    assert!(limits.admit(&ask(&budgets, dollars(0.1))).await.is_err());
    limits.owing(&budgets, now_ms()).settle(dollars(0.2));
    proxy.up();
    // Redis never saw this period. Another replica seeds it from the ledger, which
    // holds the $0.2, before the owed $0.2 is offered again (a second after the first
    // offer failed), as admit.lua does.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let start = period_start_ms(BudgetPeriod::Day, now_ms());
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}budget:key:search-prod:{start}"))
        .arg("spent")
        .arg(dollars(0.2).pico())
        .arg("seeded")
        .arg(now_ms())
        .query_async(&mut r)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), limits.settled())
        .await
        .unwrap();
    assert_eq!(
        account(&prefix, "search-prod").await.0,
        Some(dollars(0.2).pico())
    );
}

#[tokio::test]
async fn a_budget_rule_reads_the_spend_of_every_replica() {
    let prefix = unique_prefix("limits");
    let Some(_) = test_redis("a shared-limits test").await else {
        return;
    };
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    // $0.00042 a frontier answer, of a $0.001 budget.
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 10, 50))).await;
    let toml = config(
        &local,
        &fa,
        "budget = { usd = 0.001, period = \"day\" }",
        &shared(&prefix),
    )
    .replacen(
        "[[rules]]\nid = \"default\"",
        "[[rules]]\nid = \"near-budget-local\"\nwhen = { min_budget_used = 0.4 }\npool = \"local\"\n\n[[rules]]\nid = \"default\"",
        1,
    );
    let a = Gateway::start(&toml).await;
    let b = Gateway::start(&toml).await;
    let mut body = user("auto", "Tell me about Rome.");
    body["max_tokens"] = json!(50);
    let r = chat_as(&a, body.clone()).await;
    assert_eq!(r.headers()["x-crossroads-tier"], "frontier");
    await_account(
        &prefix,
        "search-prod",
        (420_000_000, 0),
        "a's spend is shared",
    )
    .await;
    // b has served nothing and its own ledger is empty: only Redis knows the 42%.
    let r = chat_as(&b, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-rule"], "near-budget-local");
    assert_eq!(r.headers()["x-crossroads-tier"], "local");
}
