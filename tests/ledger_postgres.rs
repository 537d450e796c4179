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
