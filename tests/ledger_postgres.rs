//! The PostgreSQL ledger, against the server on 127.0.0.1:5432 (database `test`): each
//! run writes into its own schema, which it drops at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs a query on a blocking thread (the sync client must not run on the runtime).
async fn pg<T: Send + 'static>(f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(URL, postgres::NoTls)
            .expect("PostgreSQL must run on 127.0.0.1:5432 with a `test` database");
        f(&mut client)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn records_land_in_postgres_with_exact_tokens_and_cost() {
    let schema = format!(
        "cr_test_{}_{}",
        std::process::id(),
        crossroads::admission::now_ms()
    );
    let local = Upstream::start(Scripted::json(completion("local-model", "l", 10, 5))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "f", 1000, 200))).await;
    let toml = standard_config(&local.base_url(), &fa.base_url(), &fa.base_url());
    let ledger = format!("[ledger]\nurl = \"{URL}\"\nschema = \"{schema}\"\n");
    let gw = Gateway::start_with_ledger(&toml, Some(&ledger)).await;
    assert_eq!(gw.chat(user("frontier", "hello")).await.status(), 200);
    assert_eq!(
        gw.chat(user("auto", "Write a Python function."))
            .await
            .status(),
        200
    );
    assert_eq!(gw.chat(user("no-such-model", "hello")).await.status(), 404);
    // Stopping drains the writer into PostgreSQL.
    assert!(gw.stop().await.is_empty(), "no SQLite ledger is written");

    let s = schema.clone();
    let rows = pg(move |c| {
        c.query(
            &format!("SELECT deployment, input_tokens, output_tokens, cost_pusd, reference_cost_pusd, status, usage_estimated FROM {s}.requests ORDER BY ts_ms, request_id"),
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get::<_, Option<String>>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4),
                r.get::<_, i32>(5),
                r.get::<_, bool>(6),
            )
        })
        .collect::<Vec<_>>()
    })
    .await;
    let s = schema.clone();
    pg(move |c| {
        c.batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
            .unwrap()
    })
    .await;

    assert_eq!(rows.len(), 3, "{rows:?}");
    let frontier = rows
        .iter()
        .find(|r| r.0.as_deref() == Some("frontier-a"))
        .unwrap();
    // 1000 × $2/M + 200 × $8/M = $0.0036.
    assert_eq!(
        (frontier.1, frontier.2, frontier.3, frontier.5, frontier.6),
        (1000, 200, 3_600_000_000, 200, false)
    );
    let local = rows
        .iter()
        .find(|r| r.0.as_deref() == Some("local-a"))
        .unwrap();
    assert_eq!((local.3, local.4), (0, 60_000_000));
    assert!(rows.iter().any(|r| r.5 == 404));
}

/// A schema of its own for one test, dropped when the test ends (pass or fail).
struct Schema(String);

impl Schema {
    fn new(tag: &str) -> Schema {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        Schema(format!(
            "cr_{tag}_{}_{}_{}",
            std::process::id(),
            crossroads::admission::now_ms(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
    }

    /// The ledger backend of this schema.
    fn backend(&self) -> LedgerBackend {
        LedgerBackend::Postgres {
            url: crossroads::config::Secret::new(URL.into()),
            schema: self.0.clone(),
        }
    }

    /// The `[ledger]` section pointing at this schema.
    fn ledger(&self) -> String {
        format!("[ledger]\nurl = \"{URL}\"\nschema = \"{}\"\n", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0);
        // Off the test's runtime: the sync client runs one of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(URL, postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        })
        .join();
    }
}

use crossroads::accounting::{Usage, Usd};
use crossroads::config::{LedgerBackend, LedgerConfig};
use crossroads::ledger::query::{Cursor, Filter, GroupBy};
use crossroads::ledger::rollup::Metric;
use crossroads::ledger::{LedgerReader, LedgerRecord};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
/// 2026-11-27T00:00:00Z.
const NOV_27: i64 = 1_795_737_600_000;

/// Records with known teams, keys, models, days and costs; five share one millisecond
/// so paging must break ties.
fn synthetic() -> Vec<LedgerRecord> {
    (0..12)
        .map(|i: i64| {
            let team = ["search", "ads", "search"][(i % 3) as usize];
            LedgerRecord {
                request_id: format!("req-{i:02}"),
                ts_ms: if i < 5 {
                    NOV_27 + 1_000
                } else {
                    NOV_27 + (i % 2) * DAY_MS + i * 60_000
                },
                key_id: Some(format!("{team}-key")),
                team: Some(team.into()),
                endpoint: "chat.completions".into(),
                requested_model: "auto".into(),
                upstream_model: Some(if i % 4 == 0 { "gpt-4.1" } else { "qwen" }.into()),
                deployment: Some(format!("dep-{}", i % 2)),
                tier: Some(if i % 4 == 0 { "frontier" } else { "local" }.into()),
                cache_hit: i == 7,
                status: 200,
                attempts: 1,
                confidence: Some(0.5),
                usage: Usage {
                    input: 100 + i as u64,
                    cached_input: i as u64,
                    output: 10 * i as u64,
                    reasoning: i as u64 / 2,
                    estimated: i == 3,
                    ..Usage::default()
                },
                cost: Usd::from_pico(1_000_000 * i),
                reference_cost: Usd::from_pico(3_000_000 * i),
                latency_us: 1_000,
                ..LedgerRecord::default()
            }
        })
        .collect()
}

/// Writes `records` through the ledger writer of `backend`, then opens its reader.
async fn write_and_read(backend: LedgerBackend, records: Vec<LedgerRecord>) -> LedgerReader {
    let config = LedgerConfig {
        backend: backend.clone(),
        queue_capacity: 64,
        batch_size: 4,
        durability: crossroads::config::Durability::Batched,
    };
    let metrics = crossroads::ledger::LedgerMetrics::new(&prometheus::Registry::new()).unwrap();
    let (ledger, writer) = crossroads::ledger::start(&config, metrics).unwrap();
    for r in records {
        ledger.record(r);
    }
    writer.shutdown().await;
    tokio::task::spawn_blocking(move || LedgerReader::for_backend(&backend).unwrap().unwrap())
        .await
        .unwrap()
}

/// Requests, input, cached input and output tokens, cost and savings of one group.
type Totals = (i64, i64, i64, i64, String, String);
/// A group's key, as a function of a record.
type GroupKey = Box<dyn Fn(&LedgerRecord) -> Option<String>>;

/// Totals of `records` by `key`, computed here, as the API prints them.
fn expected(
    records: &[LedgerRecord],
    key: impl Fn(&LedgerRecord) -> Option<String>,
) -> BTreeMap<Option<String>, Totals> {
    let mut sums: BTreeMap<Option<String>, [i64; 6]> = BTreeMap::new();
    for r in records {
        let e = sums.entry(key(r)).or_default();
        e[0] += 1;
        e[1] += r.usage.input as i64;
        e[2] += r.usage.cached_input as i64;
        e[3] += r.usage.output as i64;
        e[4] += r.cost.pico();
        e[5] += r.reference_cost.pico();
    }
    sums.into_iter()
        .map(|(k, [n, i, c, o, cost, reference])| {
            (
                k,
                (
                    n,
                    i,
                    c,
                    o,
                    Usd::from_pico(cost).to_string(),
                    Usd::from_pico(reference - cost).to_string(),
                ),
            )
        })
        .collect()
}

async fn check_reader(reader: LedgerReader, records: Vec<LedgerRecord>) {
    let reader = std::sync::Arc::new(reader);
    let day = |ms: i64| {
        if ms < NOV_27 + DAY_MS {
            "2026-11-27"
        } else {
            "2026-11-28"
        }
    };
    let cases: Vec<(GroupBy, GroupKey)> = vec![
        (GroupBy::Team, Box::new(|r| r.team.clone())),
        (GroupBy::Key, Box::new(|r| r.key_id.clone())),
        (GroupBy::Model, Box::new(|r| r.upstream_model.clone())),
        (GroupBy::Deployment, Box::new(|r| r.deployment.clone())),
        (
            GroupBy::Tier,
            Box::new(|r| r.tier.as_deref().map(str::to_owned)),
        ),
        (GroupBy::Rule, Box::new(|r| r.rule.clone())),
        (
            GroupBy::Day,
            Box::new(move |r| Some(day(r.ts_ms).to_owned())),
        ),
    ];
    // Whole days are summed from the rollups, a bound inside a day from the records:
    // the figures are the same.
    let whole = Filter::default();
    let inside = Filter {
        from_ms: Some(NOV_27 - 1),
        ..Filter::default()
    };
    for ((by, key), filter) in cases
        .iter()
        .flat_map(|case| [(case, whole.clone()), (case, inside.clone())])
    {
        let (r, by) = (reader.clone(), *by);
        let rows = tokio::task::spawn_blocking(move || r.spend(by, &filter))
            .await
            .unwrap()
            .unwrap();
        let got: BTreeMap<_, _> = rows
            .into_iter()
            .map(|r| {
                (
                    r.group,
                    (
                        r.requests,
                        r.input_tokens,
                        r.cached_input_tokens,
                        r.output_tokens,
                        r.cost_usd,
                        r.savings_usd,
                    ),
                )
            })
            .collect();
        assert_eq!(got, expected(&records, key), "group_by {by:?}");
    }
    // A filtered total: one team, from the second day on.
    let r = reader.clone();
    let filter = Filter {
        team: Some("search".into()),
        from_ms: Some(NOV_27 + DAY_MS),
        ..Filter::default()
    };
    let rows = tokio::task::spawn_blocking(move || r.spend(GroupBy::Team, &filter))
        .await
        .unwrap()
        .unwrap();
    let want: Vec<_> = records
        .iter()
        .filter(|r| r.team.as_deref() == Some("search") && r.ts_ms >= NOV_27 + DAY_MS)
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].requests, want.len() as i64);

    // Latency histograms: the same from the rollups and the records.
    let r = reader.clone();
    let (mut a, mut b) = tokio::task::spawn_blocking(move || {
        (
            r.latency(&Filter::default()).unwrap(),
            r.latency(&Filter {
                from_ms: Some(NOV_27 - 1),
                ..Filter::default()
            })
            .unwrap(),
        )
    })
    .await
    .unwrap();
    let order = |x: &(String, Metric, i64, i64)| (x.0.clone(), x.1.as_str(), x.2);
    a.sort_by_key(order);
    b.sort_by_key(order);
    assert_eq!(a, b);
    assert_eq!(
        a.iter().map(|(_, _, _, n)| n).sum::<i64>(),
        records.len() as i64,
        "every record reached a deployment and has a latency"
    );

    // Paging two at a time visits every record once, newest first, ties included.
    let mut seen = Vec::new();
    let mut before: Option<Cursor> = None;
    for _ in 0..20 {
        let r = reader.clone();
        let b = before.clone();
        let page =
            tokio::task::spawn_blocking(move || r.records(&Filter::default(), b.as_ref(), 2))
                .await
                .unwrap()
                .unwrap();
        for rec in &page.records {
            seen.push((
                rec["ts_ms"].as_i64().unwrap(),
                rec["request_id"].as_str().unwrap().to_owned(),
            ));
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let mut want: Vec<_> = records
        .iter()
        .map(|r| (r.ts_ms, r.request_id.clone()))
        .collect();
    want.sort();
    want.reverse();
    assert_eq!(seen, want, "pages in order, none lost or repeated");

    // One record read back whole: the same JSON from either backend.
    let r = reader.clone();
    let filter = Filter {
        key: Some("ads-key".into()),
        ..Filter::default()
    };
    let page = tokio::task::spawn_blocking(move || r.records(&filter, None, 1000))
        .await
        .unwrap()
        .unwrap();
    let seven = page
        .records
        .iter()
        .find(|r| r["request_id"] == "req-07")
        .unwrap();
    assert_eq!(seven["cache_hit"], true);
    assert_eq!(seven["usage_estimated"], false);
    assert_eq!(seven["status"], 200);
    assert_eq!(seven["confidence"], 0.5);
    assert_eq!(seven["output_tokens"], 70);
    assert_eq!(seven["cost_pusd"], 7_000_000);
    assert_eq!(seven["ttft_us"], Value::Null);
    assert!(page.records.iter().all(|r| r["team"] == "ads"));
}

#[tokio::test]
async fn spend_totals_and_pages_match_what_was_written_on_both_backends() {
    let schema = Schema::new("spend");
    let pg = write_and_read(schema.backend(), synthetic()).await;
    check_reader(pg, synthetic()).await;

    let dir = tempfile::tempdir().unwrap();
    let sqlite = write_and_read(
        LedgerBackend::Sqlite(dir.path().join("ledger.db")),
        synthetic(),
    )
    .await;
    check_reader(sqlite, synthetic()).await;
}

/// The rollup rows of schema `s`, one string each, in key order.
fn rollup_rows(c: &mut postgres::Client, s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        format!(
            "SELECT dim, day, team, key_id, value, requests, errors, cache_hits, fallbacks, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_pusd, reference_cost_pusd FROM {s}.spend_daily ORDER BY 1, 2, 3, 4, 5"
        ),
        format!(
            "SELECT deployment, metric, day, bucket, n FROM {s}.latency_daily ORDER BY 1, 2, 3, 4"
        ),
    ] {
        for row in c.query(&sql, &[]).unwrap() {
            let cells: Vec<String> = (0..row.len())
                .map(|i| {
                    row.try_get::<_, String>(i)
                        .or_else(|_| row.try_get::<_, i64>(i).map(|n| n.to_string()))
                        .unwrap()
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// How many records `schema` holds.
async fn stored_records(schema: &Schema) -> i64 {
    let s = schema.0.clone();
    pg(move |c| {
        c.query_one(&format!("SELECT COUNT(*) FROM {s}.requests"), &[])
            .unwrap()
            .get(0)
    })
    .await
}

/// The rollups the writer kept in `schema`, and the same rolled up again from its
/// records by the migration's SQL.
async fn written_and_backfilled(schema: &Schema) -> (Vec<String>, Vec<String>) {
    let s = schema.0.clone();
    pg(move |c| {
        let written = rollup_rows(c, &s);
        c.batch_execute(&format!(
            "SET search_path TO {s}; DELETE FROM spend_daily; DELETE FROM latency_daily; {}",
            crossroads::ledger::rollup::roll_up_sql("TRUE")
        ))
        .unwrap();
        (written, rollup_rows(c, &s))
    })
    .await
}

#[tokio::test]
async fn the_postgres_migration_backfills_the_rollups_the_writer_keeps() {
    let schema = Schema::new("rollup");
    write_and_read(schema.backend(), synthetic()).await;
    let (written, backfilled) = written_and_backfilled(&schema).await;
    assert!(written.len() > 20, "{written:?}");
    assert_eq!(backfilled, written);
}

#[tokio::test]
async fn records_written_twice_count_once_in_the_records_and_the_rollups() {
    let schema = Schema::new("twice");
    let records = synthetic();
    // Each record twice in a row (the same batch, as a retried write may send it), then
    // the whole set again through a second writer (a batch retried after a restart).
    let doubled: Vec<LedgerRecord> = records
        .iter()
        .flat_map(|r| [r.clone(), r.clone()])
        .collect();
    write_and_read(schema.backend(), doubled).await;
    write_and_read(schema.backend(), records.clone()).await;
    let stored = stored_records(&schema).await;
    assert_eq!(stored, records.len() as i64);
    let (written, backfilled) = written_and_backfilled(&schema).await;
    assert!(written.len() > 20, "{written:?}");
    assert_eq!(backfilled, written);
}

#[tokio::test]
async fn a_batch_larger_than_one_insert_statement_is_written_whole() {
    // More records than one statement's 65,535 parameters hold (41 a record): a
    // `ledger.batch_size` of thousands must not make every write fail.
    let schema = Schema::new("big");
    let records: Vec<LedgerRecord> = (0..2_000)
        .map(|i| LedgerRecord {
            request_id: format!("big-{i}"),
            ..synthetic()[i % 12].clone()
        })
        .collect();
    let s = schema.0.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = crossroads::ledger::PgStore::open(URL, &s).unwrap();
        crossroads::ledger::LedgerStore::write(&mut store, &records).unwrap();
    })
    .await
    .unwrap();
    let stored = stored_records(&schema).await;
    assert_eq!(stored, 2_000);
    let (written, backfilled) = written_and_backfilled(&schema).await;
    assert_eq!(backfilled, written);
}

const SEARCH: &str = "ck-pg-search";
const ADS: &str = "ck-pg-ads";

#[tokio::test]
async fn spend_api_and_cli_read_postgres() {
    let schema = Schema::new("api");
    let local = Upstream::start(Scripted::json(completion("l", "ok", 10, 5))).await;
    // 1000 × $2/M + 100 × $8/M = $0.0028 per frontier answer.
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1000, 100))).await;
    let config = format!(
        "{}\n[[teams]]\nid = \"search\"\n\n[[teams]]\nid = \"ads\"\n\n[[keys]]\nid = \"search-key\"\nteam = \"search\"\nsha256 = \"{}\"\n\n[[keys]]\nid = \"ads-key\"\nteam = \"ads\"\nsha256 = \"{}\"\n",
        standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()),
        sha(SEARCH),
        sha(ADS)
    );
    let gw = Gateway::start_with_ledger(&config, Some(&schema.ledger())).await;
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
    let get = |path: &str, key: &str| {
        gw.client
            .get(gw.url(path))
            .bearer_auth(key.to_owned())
            .send()
    };
    let body: Value = get("/v1/spend?group_by=team", ADMIN_KEY)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = body["data"].as_array().unwrap();
    let search = rows.iter().find(|r| r["group"] == "search").unwrap();
    assert_eq!(search["requests"], 3);
    assert_eq!(search["input_tokens"], 2010);
    assert_eq!(search["cost_usd"], "0.0056");
    // The local answer saved what gpt-4.1 would have cost: 10 × $2/M + 5 × $8/M.
    assert_eq!(search["savings_usd"], "0.00006");
    let ads = rows.iter().find(|r| r["group"] == "ads").unwrap();
    assert_eq!(ads["cost_usd"], "0.0028");

    let r = get("/v1/spend?group_by=key&format=csv", ADS).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "the ads key sees only ads traffic: {csv}");
    assert!(lines[1].starts_with("ads-key,1,1000,"), "{csv}");

    let page: Value = get("/v1/spend/requests?limit=2", SEARCH)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|r| r["team"] == "search"));
    let next = page["next_before"].as_str().unwrap().to_owned();
    let rest: Value = get(&format!("/v1/spend/requests?limit=2&before={next}"), SEARCH)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_before"], Value::Null);

    let out = tokio::task::spawn_blocking({
        let path = gw.config_path.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
                .args([
                    "spend", "--since", "1d", "--by", "team", "--csv", "--config",
                ])
                .arg(path)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("search,3,2010,") && l.contains(",0.0056,")),
        "{csv}"
    );

    // The console reads the same ledger: its totals are the API's and the CLI's.
    let overview: Value = get("/ui/api/overview", CONSOLE_KEY)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let totals = &overview["totals"];
    assert_eq!(totals["requests"], 4, "{overview}");
    assert_eq!(totals["cost_usd"], "0.0084");
    assert_eq!(totals["savings_usd"], "0.00006");
    let local = overview["mix"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "local")
        .unwrap();
    assert_eq!(local["requests"], 1);
    let team: Value = get("/ui/api/overview", SEARCH)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        team["totals"]["cost_usd"], "0.0056",
        "a team's key sees its team"
    );
    let latency: Value = get("/ui/api/latency", ADMIN_KEY)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deployments: Vec<&str> = latency["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment"].as_str().unwrap())
        .collect();
    assert!(
        deployments.contains(&"frontier-a") && deployments.contains(&"local-a"),
        "{latency}"
    );
    gw.stop().await;
}

const KEY: &str = "ck-pg-budget";

fn keyed(local: &Upstream, fa: &Upstream, key_extra: &str) -> String {
    format!(
        "{}\n[auth]\nrequired = true\nrefresh_ms = 100\n\n[[teams]]\nid = \"search\"\n\n[[keys]]\nid = \"search-prod\"\nteam = \"search\"\nsha256 = \"{}\"\n{key_extra}\n",
        standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()),
        sha(KEY)
    )
}

/// Whether `gw` answers `key` with `status` within two seconds.
async fn until(gw: &Gateway, key: &str, status: u16) -> bool {
    for _ in 0..40 {
        if chat_as(gw, key, user("auto", "hi")).await.status() == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn chat_as(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn budgets_resume_the_period_spend_after_a_restart() {
    let schema = Schema::new("budget");
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    // Every answer costs 10 × $2/M + 50 × $8/M = $0.00042 at gpt-4.1 prices, and each
    // request reserves a little more than that (its prompt plus max_tokens = 50).
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 10, 50))).await;
    let config = keyed(&local, &fa, "budget = { usd = 0.001, period = \"day\" }");
    let mut body = user("frontier", "hi");
    body["max_tokens"] = serde_json::json!(50);

    let first = Gateway::start_with_ledger(&config, Some(&schema.ledger())).await;
    for _ in 0..2 {
        assert_eq!(chat_as(&first, KEY, body.clone()).await.status(), 200);
    }
    first.stop().await;

    // A new process: without the ledger's $0.00084 it would let a third request in.
    let second = Gateway::start_with_ledger(&config, Some(&schema.ledger())).await;
    let (status, error) = error_of(chat_as(&second, KEY, body.clone()).await).await;
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["code"], "insufficient_quota");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("spent $0.00084"),
        "{error}"
    );
    assert_eq!(fa.hits(), 2);
    second.stop().await;
}

#[tokio::test]
async fn keys_created_and_revoked_on_one_replica_hold_on_another() {
    let schema = Schema::new("keys");
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    // Polling every minute: only the database's signal can explain changes seen sooner.
    let config = keyed(&local, &fa, "").replace("refresh_ms = 100", "refresh_ms = 60000");
    assert!(config.contains("refresh_ms = 60000"));
    let a = Gateway::start_with_ledger(&config, Some(&schema.ledger())).await;
    let b = Gateway::start_with_ledger(&config, Some(&schema.ledger())).await;
    let keys = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let path = a.config_path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
                .arg("keys")
                .args(args)
                .arg("--config")
                .arg(path)
                .output()
                .unwrap()
        })
    };
    let out = keys(&["create", "--id", "ci-bot", "--team", "search"])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let dup = keys(&["create", "--id", "ci-bot"]).await.unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // Both replicas accept it at once, told by PostgreSQL.
    assert!(
        until(&a, &key, 200).await,
        "replica a never accepted the new key"
    );
    assert!(
        until(&b, &key, 200).await,
        "replica b never accepted the new key"
    );

    let listed = keys(&["list"]).await.unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("ci-bot") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "list must never show keys");

    assert!(keys(&["revoke", "ci-bot"]).await.unwrap().status.success());
    let revoked_at = std::time::Instant::now();
    assert!(
        until(&b, &key, 401).await,
        "replica b still accepts a revoked key"
    );
    assert!(
        until(&a, &key, 401).await,
        "replica a still accepts a revoked key"
    );
    eprintln!(
        "revocation refused on both replicas after {:?}",
        revoked_at.elapsed()
    );
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "revocation took {:?}",
        revoked_at.elapsed()
    );
    assert!(
        String::from_utf8(keys(&["list"]).await.unwrap().stdout)
            .unwrap()
            .contains("revoked")
    );
    assert!(!keys(&["revoke", "ci-bot"]).await.unwrap().status.success());
    let names: BTreeSet<String> = pg({
        let s = schema.0.clone();
        move |c| {
            c.query(&format!("SELECT id FROM {s}.keys"), &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
    })
    .await;
    assert_eq!(names, BTreeSet::from(["ci-bot".to_owned()]));
    a.stop().await;
    b.stop().await;
}

/// A key created while a replica's listener was still connecting sends it no signal;
/// the listener must read such changes once `LISTEN` holds, or the replica would miss
/// them until its next poll (a minute by default).
#[tokio::test]
async fn a_listener_reads_changes_made_while_it_connected() {
    use crossroads::auth::store::KeyStore;
    let schema = Schema::new("listen");
    let backend = schema.backend();
    let open = move || KeyStore::for_backend(&backend).unwrap().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watching = open.clone();
    tokio::task::spawn_blocking(move || {
        watching()
            .watch(move |changed| tx.send(changed).is_ok())
            .unwrap()
    })
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the listener never ticked");
    assert_eq!(first, Some(true), "no refresh once LISTEN held");

    // Then a key created through another connection is heard (idle ticks are `false`).
    tokio::task::spawn_blocking(move || {
        let key = crossroads::auth::generate_key().unwrap();
        let info = crossroads::auth::KeyInfo {
            id: "heard".into(),
            team: None,
            budget: None,
            rpm: None,
            tpm: None,
        };
        open()
            .create(&crossroads::auth::hash_key(&key), &info)
            .unwrap();
    })
    .await
    .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while rx.recv().await == Some(false) {}
    })
    .await;
    assert!(heard.is_ok(), "a NOTIFY was not heard");

    // The channel is the one every version's replicas and CLIs use: `{schema}_keys`.
    let channel = format!("{}_keys", schema.0);
    pg(move |c| c.batch_execute(&format!("NOTIFY {channel}")).unwrap()).await;
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while rx.recv().await == Some(false) {}
    })
    .await;
    assert!(heard.is_ok(), "a NOTIFY on {{schema}}_keys was not heard");
    drop(rx);
}

#[tokio::test]
async fn an_unreachable_database_fails_reads_and_budgets_closed() {
    let backend = LedgerBackend::Postgres {
        url: crossroads::config::Secret::new(
            refused_url()
                .await
                .replace("http://", "postgres://postgres@")
                .replace("/v1", "/test"),
        ),
        schema: "unused".into(),
    };
    let reader = LedgerReader::for_backend(&backend).unwrap().unwrap();
    let (first, second) = tokio::task::spawn_blocking(move || {
        let first = reader.spend(GroupBy::Team, &Filter::default());
        let second = crossroads::admission::SpendSource::spent_since(
            &reader,
            &crossroads::admission::Scope::Key("k".into()),
            0,
        );
        (first, second)
    })
    .await
    .unwrap();
    assert!(first.unwrap_err().to_string().contains("cannot connect"));
    // No spend is made up: the budget's requests are refused until the ledger answers.
    assert!(second.is_err());
}

/// A schema migrated by the previous version (no `feedback` table) gains it on the next
/// connection; feedback is then stored, calibrated on and exported as on SQLite.
#[tokio::test]
async fn feedback_in_postgres_calibrates_to_the_hand_computed_threshold() {
    use crossroads::ledger::feedback::Feedback;
    let schema = Schema::new("feedback");
    let backend = schema.backend();
    let now = crossroads::admission::now_ms();
    // 24 local answers at 0.01005, 0.02005, ... 0.24005; 6 frontier ones below 0.01.
    let records: Vec<LedgerRecord> = (0..30)
        .map(|i: usize| LedgerRecord {
            request_id: format!("req-{i:02}"),
            ts_ms: now,
            team: Some("search".into()),
            endpoint: "chat.completions".into(),
            requested_model: "auto".into(),
            difficulty: Some(if i < 24 {
                0.01 * (i + 1) as f32 + 0.000_05
            } else {
                0.001 * (i - 23) as f32
            }),
            tier: Some(if i < 24 { "local" } else { "frontier" }.into()),
            status: 200,
            ..LedgerRecord::default()
        })
        .collect();
    let reader = write_and_read(backend, records).await;
    let s = schema.0.clone();
    pg(move |c| {
        c.batch_execute(&format!(
            "DROP TABLE {s}.feedback;
             DROP TABLE {s}.spend_daily;
             DROP TABLE {s}.latency_daily;
             ALTER TABLE {s}.requests DROP COLUMN prompt_tokens_est, DROP COLUMN tools,
                 DROP COLUMN images, DROP COLUMN json_mode;
             DELETE FROM {s}.ledger_migrations WHERE version >= 3"
        ))
        .unwrap()
    })
    .await;
    let stored = tokio::task::spawn_blocking(move || {
        (0..30)
            .map(|i| {
                reader
                    .add_feedback(Feedback {
                        request_id: format!("req-{i:02}"),
                        ts_ms: now,
                        key_id: None,
                        team: None,
                        // The 20 easiest local answers good, the 4 hardest and the
                        // frontier's bad.
                        score: if i < 20 { 1.0 } else { 0.0 },
                        thumbs: None,
                        label: None,
                        comment: None,
                    })
                    .unwrap()
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(stored, 30);
    let run = |args: &[&str]| {
        let ledger = ["--ledger", URL, "--schema", &schema.0];
        succeeded(&crossroads(args.iter().chain(&ledger)))
    };
    // By hand: the means of the 20..=24 easiest local answers are 1, 0.952, 0.909,
    // 0.870, 0.833, so 0.9 keeps the 22 easiest (up to 0.22005) local; 0.23005 and
    // 0.24005 go to the frontier.
    let out = run(&["calibrate", "--target-quality", "0.9", "--since", "1d"]);
    assert!(
        out.starts_with(
            "min_difficulty = 0.2201   # sends 2 of 30 requests (6.7%) to the frontier\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("the mean score of the 22 rated local answers"),
        "{out}"
    );
    let export = run(&["feedback", "export"]);
    let rows: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 30);
    assert_eq!(
        rows[23]["difficulty"].as_f64().unwrap() as f32,
        0.01 * 24.0 + 0.000_05
    );
    assert_eq!(
        (&rows[23]["tier"], &rows[23]["score"]),
        (&Value::from("local"), &Value::from(0.0))
    );
}
