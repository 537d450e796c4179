//! The console's API and the daily rollups under it: the rollups give the figures the
//! records give (every group, filter and latency histogram, on a ledger seeded with
//! synthetic traffic routed by the test config), the page and its endpoints answer the
//! admin, console and team keys with what each may see, budgets burn and project,
//! a request's detail explains its route, and replay prices a candidate config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "../examples/seed_ledger/traffic.rs"]
mod traffic;

use std::collections::BTreeMap;

use common::*;
use crossroads::accounting::Usd;
use crossroads::ledger::query::{Filter, GroupBy, day_string, parse_time};
use crossroads::ledger::rollup::DAY_MS;
use crossroads::ledger::{LedgerReader, LedgerRecord, LedgerStore, SqliteStore};
use serde_json::Value;

const SEARCH_KEY: &str = "ck-console-search";

/// The first seeded day: 2026-11-20.
fn start() -> i64 {
    parse_time("2026-11-20").unwrap()
}

/// `n` records over `days` days from [`start`], routed by `config`.
fn seed(config: &str, n: u64, days: i64) -> (tempfile::TempDir, Vec<LedgerRecord>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let config = crossroads::config::load(&path).unwrap();
    let records: Vec<LedgerRecord> = (0..n)
        .map(|i| traffic::record(&config, i, n, start(), days * DAY_MS))
        .collect();
    let mut store = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
    // The writer rolls up behind the records: most are in the rollups, the last
    // chunk not yet, so readers must add it themselves.
    let chunks: Vec<&[LedgerRecord]> = records.chunks(700).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        store.write(chunk).unwrap();
        if i + 1 < chunks.len() {
            store.roll_up().unwrap();
        }
    }
    (dir, records)
}

fn test_config() -> String {
    standard_config(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    )
}

/// The group of a record, as `GET /v1/spend` names it.
fn group_of(by: GroupBy, r: &LedgerRecord) -> Option<String> {
    match by {
        GroupBy::Team => r.team.clone(),
        GroupBy::Key => r.key_id.clone(),
        GroupBy::Model => r.upstream_model.clone(),
        GroupBy::Deployment => r.deployment.clone(),
        GroupBy::Rule => r.rule.clone(),
        GroupBy::Domain => r.label.clone(),
        GroupBy::Tier => r.tier.as_deref().map(str::to_owned),
        GroupBy::Day => Some(day_string(r.ts_ms.div_euclid(DAY_MS))),
    }
}

/// `(group, requests, input tokens, cost, reference)` summed here, from the records.
fn expected(
    by: GroupBy,
    records: &[LedgerRecord],
    keep: impl Fn(&LedgerRecord) -> bool,
) -> BTreeMap<Option<String>, (i64, i64, String, String)> {
    let mut sums: BTreeMap<Option<String>, (i64, i64, Usd, Usd)> = BTreeMap::new();
    for r in records.iter().filter(|r| keep(r)) {
        let s = sums.entry(group_of(by, r)).or_default();
        s.0 += 1;
        s.1 += r.usage.input as i64;
        s.2 += r.cost;
        s.3 += r.reference_cost;
    }
    sums.into_iter()
        .map(|(g, (n, input, cost, reference))| {
            (g, (n, input, cost.to_string(), reference.to_string()))
        })
        .collect()
}

fn answered(
    reader: &LedgerReader,
    by: GroupBy,
    filter: &Filter,
) -> BTreeMap<Option<String>, (i64, i64, String, String)> {
    reader
        .spend(by, filter)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.group,
                (r.requests, r.input_tokens, r.cost_usd, r.reference_cost_usd),
            )
        })
        .collect()
}

const GROUPS: [GroupBy; 8] = [
    GroupBy::Team,
    GroupBy::Key,
    GroupBy::Model,
    GroupBy::Deployment,
    GroupBy::Rule,
    GroupBy::Domain,
    GroupBy::Tier,
    GroupBy::Day,
];

#[test]
fn rollups_and_records_give_the_same_spend_for_every_group_and_filter() {
    let (dir, records) = seed(&test_config(), 3_000, 6);
    let reader = LedgerReader::open(&dir.path().join("ledger.db")).unwrap();
    let day = |d: i64| start() + d * DAY_MS;
    for by in GROUPS {
        // Whole days (the rollups answer) and bounds inside a day (the records do).
        for (from, to) in [
            (None, None),
            (Some(day(1)), Some(day(4))),
            (Some(day(2) + 1), Some(day(5) - 1)),
        ] {
            for (team, key) in [
                (None, None),
                (Some("search"), None),
                (None, Some("ads-prod")),
            ] {
                let filter = Filter {
                    from_ms: from,
                    to_ms: to,
                    team: team.map(str::to_owned),
                    key: key.map(str::to_owned),
                    ..Filter::default()
                };
                let want = expected(by, &records, |r| {
                    from.is_none_or(|f| r.ts_ms >= f)
                        && to.is_none_or(|t| r.ts_ms < t)
                        && team.is_none_or(|t| r.team.as_deref() == Some(t))
                        && key.is_none_or(|k| r.key_id.as_deref() == Some(k))
                });
                assert!(!want.is_empty());
                assert_eq!(answered(&reader, by, &filter), want, "{by:?} {filter:?}");
            }
        }
    }
    // Filters the rollups do not keep are summed from the records.
    let filter = Filter {
        tier: Some("local".into()),
        ..Filter::default()
    };
    assert_eq!(
        answered(&reader, GroupBy::Team, &filter),
        expected(GroupBy::Team, &records, |r| r.tier.as_deref()
            == Some("local"))
    );
}

#[test]
fn a_retried_batch_adds_nothing_to_the_rollups() {
    let (dir, records) = seed(&test_config(), 500, 2);
    let mut store = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
    store.write(&records[..200]).unwrap();
    store.roll_up().unwrap();
    let reader = LedgerReader::open(&dir.path().join("ledger.db")).unwrap();
    assert_eq!(
        answered(&reader, GroupBy::Team, &Filter::default()),
        expected(GroupBy::Team, &records, |_| true)
    );
}

#[test]
fn latency_histograms_from_rollups_equal_those_from_records() {
    let (dir, records) = seed(&test_config(), 2_000, 3);
    let reader = LedgerReader::open(&dir.path().join("ledger.db")).unwrap();
    let whole = Filter {
        from_ms: Some(start()),
        ..Filter::default()
    };
    let inside = Filter {
        from_ms: Some(start() - 1),
        ..Filter::default()
    };
    let mut a = reader.latency(&whole).unwrap();
    let mut b = reader.latency(&inside).unwrap();
    a.sort_by(|x, y| (&x.0, x.1.as_str(), x.2).cmp(&(&y.0, y.1.as_str(), y.2)));
    b.sort_by(|x, y| (&x.0, x.1.as_str(), x.2).cmp(&(&y.0, y.1.as_str(), y.2)));
    assert_eq!(a, b);
    let routed = records.iter().filter(|r| r.deployment.is_some()).count() as i64;
    let counted: i64 = a
        .iter()
        .filter(|(_, m, _, _)| m.as_str() == "latency")
        .map(|(_, _, _, n)| n)
        .sum();
    assert_eq!(counted, routed);
}

/// A gateway over a seeded ledger: team `search` with a monthly budget, its key with a
/// daily one, team `ads` without.
async fn console(n: u64, search_budget: &str) -> (Gateway, Vec<LedgerRecord>, tempfile::TempDir) {
    let config = format!(
        "{}\n[[teams]]\nid = \"search\"\nbudget = {{ usd = {search_budget}, period = \"month\" }}\n\n[[teams]]\nid = \"ads\"\n\n[[keys]]\nid = \"search-prod\"\nteam = \"search\"\nsha256 = \"{}\"\nbudget = {{ usd = 5, period = \"day\" }}\n",
        test_config(),
        sha(SEARCH_KEY),
    );
    // Records up to now, so the current budget periods hold some.
    let now = crossroads::admission::now_ms();
    let days = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.toml");
    std::fs::write(&path, &config).unwrap();
    let parsed = crossroads::config::load(&path).unwrap();
    let first = (now.div_euclid(DAY_MS) - days + 1) * DAY_MS;
    let records: Vec<LedgerRecord> = (0..n)
        .map(|i| traffic::record(&parsed, i, n, first, now - first))
        .collect();
    let ledger = dir.path().join("ledger.db");
    let mut store = SqliteStore::open(&ledger).unwrap();
    store.write(&records[..n as usize / 2]).unwrap();
    store.roll_up().unwrap();
    store.write(&records[n as usize / 2..]).unwrap();
    let section = format!("[ledger]\nurl = \"sqlite://{}\"", ledger.display());
    let gw = Gateway::start_with_ledger(&config, Some(&section)).await;
    (gw, records, dir)
}

async fn get(gw: &Gateway, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = gw.client.get(gw.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn money(v: &Value) -> Usd {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("money as a string: {v}"));
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let pico = format!("{frac:0<12}");
    Usd::from_pico(whole.parse::<i64>().unwrap() * 1_000_000_000_000 + pico.parse::<i64>().unwrap())
}

#[tokio::test]
async fn the_page_is_served_without_a_key_and_holds_no_data() {
    let (gw, _, _dir) = console(50, "100").await;
    let r = gw.get("/ui").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert!(r.text().await.unwrap().contains("<html"));
}

#[tokio::test]
async fn each_key_sees_what_it_may() {
    let (gw, records, _dir) = console(400, "100").await;
    assert_eq!(
        get(&gw, "/ui/api/whoami", Some(ADMIN_KEY)).await.1["role"],
        "admin"
    );
    assert_eq!(
        get(&gw, "/ui/api/whoami", Some(CONSOLE_KEY)).await.1["role"],
        "console"
    );
    let (_, team) = get(&gw, "/ui/api/whoami", Some(SEARCH_KEY)).await;
    assert_eq!(
        (team["role"].as_str(), team["team"].as_str()),
        (Some("team"), Some("search"))
    );
    let (status, body) = get(&gw, "/ui/api/overview", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(get(&gw, "/ui/api/overview", Some("ck-nobody")).await.0, 401);
    // The console key reads spend but reloads nothing.
    assert_eq!(
        get(&gw, "/v1/spend?group_by=team", Some(CONSOLE_KEY))
            .await
            .0,
        200
    );
    let reload = gw
        .client
        .post(gw.url("/admin/reload"))
        .bearer_auth(CONSOLE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 401);
    // A team's key sees its team's totals only, whatever team it asks for.
    let (_, overview) = get(&gw, "/ui/api/overview?team=ads", Some(SEARCH_KEY)).await;
    let search = records
        .iter()
        .filter(|r| r.team.as_deref() == Some("search"))
        .count();
    assert_eq!(overview["totals"]["requests"], search as i64);
}

#[tokio::test]
async fn the_overview_equals_the_spend_api_the_cli_and_the_records() {
    let (gw, records, dir) = console(1_500, "100").await;
    let (status, o) = get(&gw, "/ui/api/overview", Some(CONSOLE_KEY)).await;
    assert_eq!(status, 200, "{o}");
    let cost: Usd = records.iter().fold(Usd::ZERO, |s, r| s + r.cost);
    let reference: Usd = records.iter().fold(Usd::ZERO, |s, r| s + r.reference_cost);
    assert_eq!(o["totals"]["requests"], records.len() as i64);
    assert_eq!(money(&o["totals"]["cost_usd"]), cost);
    assert_eq!(money(&o["totals"]["savings_usd"]), reference - cost);
    // The same range through /v1/spend.
    let (from, to) = (o["from"].as_str().unwrap(), o["to"].as_str().unwrap());
    let (_, spend) = get(
        &gw,
        &format!("/v1/spend?group_by=team&from={from}&to={to}"),
        Some(ADMIN_KEY),
    )
    .await;
    let api: Usd = spend["data"]
        .as_array()
        .unwrap()
        .iter()
        .fold(Usd::ZERO, |s, r| s + money(&r["cost_usd"]));
    assert_eq!(api, cost);
    // And through `crossroads spend` on the same ledger file.
    let ledger = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let cli = succeeded(
        &std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
            .args([
                "spend", "--ledger", &ledger, "--since", from, "--by", "team", "--csv",
            ])
            .output()
            .unwrap(),
    );
    let column = cli
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "cost_usd")
        .unwrap();
    let summed = cli.lines().skip(1).fold(Usd::ZERO, |s, l| {
        s + money(&Value::from(l.split(',').nth(column).unwrap()))
    });
    assert_eq!(summed, cost, "{cli}");
    // 30 days by default, every one listed; the days and the mix add up.
    let series = o["series"].as_array().unwrap();
    assert_eq!(series.len(), 30);
    let by_day: i64 = series.iter().map(|d| d["requests"].as_i64().unwrap()).sum();
    assert_eq!(by_day, records.len() as i64);
    let mix: i64 = o["mix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(mix, records.len() as i64);
    let cache = o["mix"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "cache")
        .unwrap();
    assert_eq!(
        cache["requests"],
        records.iter().filter(|r| r.cache_hit).count() as i64
    );
    // Spend by day and rule, as the console charts it.
    let (_, daily) = get(
        &gw,
        &format!("/v1/spend?group_by=rule&interval=day&from={from}&to={to}"),
        Some(ADMIN_KEY),
    )
    .await;
    let rows = daily["data"].as_array().unwrap();
    assert!(
        rows.iter()
            .all(|r| r["day"].as_str().is_some_and(|d| d.len() == 10))
    );
    let summed: Usd = rows
        .iter()
        .fold(Usd::ZERO, |s, r| s + money(&r["cost_usd"]));
    assert_eq!(summed, cost);
    let csv = gw
        .client
        .get(gw.url(&format!(
            "/v1/spend?group_by=rule&interval=day&from={from}&format=csv"
        )))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("day,rule,requests,"), "{csv}");
    assert_eq!(csv.lines().count(), rows.len() + 1);
}

#[tokio::test]
async fn budgets_show_their_burn_and_when_they_run_out() {
    // A small monthly budget for `search`: the ledger's spend crossed it already.
    let (gw, records, _dir) = console(2_000, "1").await;
    let (status, body) = get(&gw, "/ui/api/budgets", Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{body}");
    let budgets = body["data"].as_array().unwrap();
    assert_eq!(budgets.len(), 2, "{body}");
    let team = budgets.iter().find(|b| b["scope"] == "team").unwrap();
    assert_eq!(team["id"], "search");
    let now = crossroads::admission::now_ms();
    let month =
        crossroads::admission::period_start_ms(crossroads::config::BudgetPeriod::Month, now);
    let spent: Usd = records
        .iter()
        .filter(|r| r.team.as_deref() == Some("search") && r.ts_ms >= month)
        .fold(Usd::ZERO, |s, r| s + r.cost);
    assert_eq!(money(&team["spent_usd"]), spent);
    // The day the cumulative spend crossed $1.
    let mut cumulative = Usd::ZERO;
    let mut crossed = None;
    let mut days: Vec<&LedgerRecord> = records
        .iter()
        .filter(|r| r.team.as_deref() == Some("search") && r.ts_ms >= month)
        .collect();
    days.sort_by_key(|r| r.ts_ms);
    let mut by_day: BTreeMap<i64, Usd> = BTreeMap::new();
    for r in days {
        *by_day.entry(r.ts_ms.div_euclid(DAY_MS)).or_default() += r.cost;
    }
    for (day, usd) in by_day {
        cumulative += usd;
        if crossed.is_none() && cumulative >= Usd::from_pico(1_000_000_000_000) {
            crossed = Some(day_string(day));
        }
    }
    assert_eq!(
        team["projected_exhaustion"].as_str().map(str::to_owned),
        crossed
    );
    let key = budgets.iter().find(|b| b["scope"] == "key").unwrap();
    assert_eq!(
        (key["id"].as_str(), key["period"].as_str()),
        (Some("search-prod"), Some("day"))
    );
    // A team's key sees its own budgets only; `ads` has none.
    let (_, mine) = get(&gw, "/ui/api/budgets", Some(SEARCH_KEY)).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_request_detail_explains_its_route() {
    let (gw, records, _dir) = console(300, "100").await;
    let routed = records
        .iter()
        .find(|r| r.rule.as_deref() == Some("default"))
        .unwrap();
    let (status, body) = get(
        &gw,
        &format!("/ui/api/requests/{}", routed.request_id),
        Some(CONSOLE_KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["record"]["request_id"], routed.request_id.as_str());
    assert_eq!(body["explanation"]["rule"], "default");
    let reasons = body["explanation"]["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("rule `default` matched")),
        "{body}"
    );
    let (status, body) = get(&gw, "/ui/api/requests/req_missing", Some(CONSOLE_KEY)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "request_not_found");
    // Another team's request is not found for a team's key.
    let ads = records
        .iter()
        .find(|r| r.team.as_deref() == Some("ads"))
        .unwrap();
    let (status, _) = get(
        &gw,
        &format!("/ui/api/requests/{}", ads.request_id),
        Some(SEARCH_KEY),
    )
    .await;
    assert_eq!(status, 404);
    // The request list narrows by rule, tier and status.
    let (_, page) = get(
        &gw,
        "/v1/spend/requests?rule=default&status=ok&limit=1000",
        Some(ADMIN_KEY),
    )
    .await;
    let listed = page["data"].as_array().unwrap();
    let want = records
        .iter()
        .filter(|r| r.rule.as_deref() == Some("default") && r.status < 400)
        .count();
    assert_eq!(listed.len(), want);
    assert!(listed.iter().all(|r| r["rule"] == "default"));
}

#[tokio::test]
async fn replay_from_the_console_prices_a_candidate() {
    let (gw, records, _dir) = console(600, "100").await;
    let post = |body: String, query: &'static str| {
        gw.client
            .post(gw.url(&format!("/ui/api/replay{query}")))
            .bearer_auth(ADMIN_KEY)
            .body(body)
            .send()
    };
    // The running config moves nothing.
    let same = std::fs::read_to_string(&gw.config_path).unwrap();
    let r = post(same.clone(), "?since=all").await.unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    let routed = records
        .iter()
        .filter(|r| r.tier.is_some() || r.cache_hit)
        .count() as i64;
    assert_eq!(report["total"]["requests"], routed, "{report}");
    assert_eq!(report["total"]["moved"], 0);
    // Everything to the local pool: every frontier answer moves, and costs nothing.
    let candidate = same.replace(
        "id = \"default\"\npool = \"frontier\"",
        "id = \"default\"\npool = \"local\"",
    );
    assert_ne!(
        candidate, same,
        "the default rule is where the test expects it"
    );
    let report: Value = post(candidate, "?since=all")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        report["moves"]["frontier -> local"].as_i64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(report["total"]["projected_cost"], "0");
    // Client mistakes are 4xx with the API's error shape.
    let r = post("not toml [".into(), "").await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    assert_eq!(post(same, "?since=yesterday").await.unwrap().status(), 400);
    for bad in [
        "/v1/spend?interval=week",
        "/v1/spend/requests?status=maybe",
        "/ui/api/overview?from=soon",
    ] {
        let (status, body) = get(&gw, bad, Some(ADMIN_KEY)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
