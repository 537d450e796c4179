//! Feedback: `POST /v1/feedback` on served requests (its 400s and 404s, a team's key
//! rating only its team's requests), then `crossroads calibrate --target-quality` and
//! `crossroads feedback export` reading it back from the ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

const SEARCH: &str = "ck-feedback-search";
const ADS: &str = "ck-feedback-ads";

/// The standard config with teams `search` and `ads`, a key each.
async fn gateway() -> Gateway {
    let local = Upstream::start(Scripted::json(completion("local-model", "ok", 10, 5))).await;
    let frontier = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 100, 10))).await;
    let config = format!(
        "{}\n[[teams]]\nid = \"search\"\n\n[[teams]]\nid = \"ads\"\n\n[[keys]]\nid = \"search-key\"\nteam = \"search\"\nsha256 = \"{}\"\n\n[[keys]]\nid = \"ads-key\"\nteam = \"ads\"\nsha256 = \"{}\"\n",
        standard_config(
            &local.base_url(),
            &frontier.base_url(),
            &frontier.base_url()
        ),
        sha(SEARCH),
        sha(ADS)
    );
    Gateway::start(&config).await
}

/// Serves one request with `key` and returns its request id.
async fn serve(gw: &Gateway, key: &str, model: &str, prompt: &str) -> String {
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&user(model, prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-crossroads-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn feedback(gw: &Gateway, key: Option<&str>, body: impl Into<String>) -> reqwest::Response {
    let mut request = gw
        .client
        .post(gw.url("/v1/feedback"))
        .header("content-type", "application/json")
        .body(body.into());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn feedback_is_stored_for_the_callers_own_requests_only() {
    let gw = gateway().await;
    let id = serve(&gw, SEARCH, "local", "hello").await;

    // Posted right after the answer: the gateway waits for the record to reach the ledger.
    let r = feedback(
        &gw,
        Some(SEARCH),
        &json!({ "request_id": id, "score": 0.8, "label": "local_ok", "comment": "fine" })
            .to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(stored["request_id"], id.as_str());
    assert_eq!(stored["score"], 0.8);
    assert_eq!(stored["thumbs"], Value::Null);
    assert_eq!(stored["label"], "local_ok");
    assert_eq!(stored["key_id"], "search-key");
    assert_eq!(stored["team"], "search");
    assert!(stored["ts_ms"].as_i64().unwrap() > 0);

    let r = feedback(
        &gw,
        Some(SEARCH),
        &json!({ "request_id": id, "thumbs": "down" }).to_string(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let stored: Value = r.json().await.unwrap();
    assert_eq!(
        (stored["score"].clone(), stored["thumbs"].clone()),
        (json!(0.0), json!("down"))
    );

    // Bad bodies: OpenAI-shaped 400s naming the field.
    for (body, param) in [
        (json!({ "score": 1 }).to_string(), json!("request_id")),
        (
            json!({ "request_id": id, "score": 1.5 }).to_string(),
            json!("score"),
        ),
        (
            json!({ "request_id": id, "score": 1, "thumbs": "up" }).to_string(),
            json!("score"),
        ),
        (json!({ "request_id": id }).to_string(), json!("score")),
        (
            json!({ "request_id": id, "thumbs": "meh" }).to_string(),
            json!("thumbs"),
        ),
        (
            json!({ "request_id": id, "score": 1, "mood": "x" }).to_string(),
            Value::Null,
        ),
        ("{\"request_id\": ".to_owned(), Value::Null),
    ] {
        let (status, error) = error_of(feedback(&gw, Some(SEARCH), &body).await).await;
        assert_eq!((status, &error["param"]), (400, &param), "{body}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
    }

    // An unknown id, and another team's request, answer the same 404.
    let (status, unknown) = error_of(
        feedback(
            &gw,
            Some(SEARCH),
            r#"{"request_id": "req_nope", "score": 1}"#,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, &unknown["code"]),
        (404, &json!("request_not_found"))
    );
    let body = json!({ "request_id": id, "score": 1 }).to_string();
    let (status, other) = error_of(feedback(&gw, Some(ADS), &body).await).await;
    assert_eq!((status, &other["code"]), (404, &json!("request_not_found")));
    // Without a key (keys are optional here) only anonymous requests can be rated.
    let (status, _) = error_of(feedback(&gw, None, &body).await).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(feedback(&gw, Some("ck-wrong"), &body).await).await;
    assert_eq!(status, 401);
    // The admin key rates any request.
    assert_eq!(feedback(&gw, Some(ADMIN_KEY), &body).await.status(), 200);

    let metrics = gw.metrics().await;
    for (outcome, n) in [
        ("stored", 3),
        ("bad_request", 7),
        ("unknown_request", 1),
        ("other_team", 2),
        ("unauthorized", 1),
    ] {
        let line = format!("crossroads_feedback_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    let path = gw.ledger_path.clone();
    let rows: Vec<(String, f64, Option<String>)> = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT request_id, score, key_id FROM feedback ORDER BY ts_ms")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        rows,
        [
            (id.clone(), 0.8, Some("search-key".to_owned())),
            (id.clone(), 0.0, Some("search-key".to_owned())),
            (id.clone(), 1.0, None),
        ]
    );
}

/// The smallest 4-decimal number above `d`: where `min_difficulty` goes to keep `d` local.
fn just_above(d: f32) -> f32 {
    ((d * 1e4).floor() + 1.0) / 1e4
}

#[tokio::test]
async fn calibrate_finds_the_threshold_that_keeps_local_quality_from_ledger_feedback() {
    let gw = gateway().await;
    // 30 requests of growing difficulty (longer prompts): every fifth, from the
    // easiest, answered by the frontier, the other 24 locally.
    let mut local_ids = Vec::new();
    let mut frontier_ids = Vec::new();
    for i in 0..30 {
        let prompt = "tell me more about the weather ".repeat(3 + 6 * i);
        if i % 5 == 0 {
            frontier_ids.push(serve(&gw, SEARCH, "frontier", &prompt).await);
        } else {
            local_ids.push(serve(&gw, SEARCH, "local", &prompt).await);
        }
    }
    let rows = gw.ledger_rows().await;
    let difficulty = |id: &str| {
        rows.iter().find(|r| r["request_id"] == id).unwrap()["difficulty"]
            .as_f64()
            .unwrap() as f32
    };
    let mut all: Vec<f32> = rows
        .iter()
        .map(|r| r["difficulty"].as_f64().unwrap() as f32)
        .collect();
    all.sort_by(f32::total_cmp);
    for pair in all.windows(2) {
        assert!(
            just_above(pair[0]) <= pair[1],
            "the prompts must part in 4-decimal steps: {all:?}"
        );
    }
    let mut local: Vec<(f32, &str)> = local_ids
        .iter()
        .map(|id| (difficulty(id), id.as_str()))
        .collect();
    local.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The 20 easiest local answers are good, the 4 hardest bad; the frontier's bad,
    // which says nothing of local answers and must not count.
    // First a wrong verdict on the easiest, corrected later: the newest one counts.
    let post = |id: &str, verdict: Value| {
        let mut body = verdict;
        body["request_id"] = id.into();
        feedback(&gw, Some(SEARCH), body.to_string())
    };
    assert_eq!(
        post(local[0].1, json!({ "score": 0.0 })).await.status(),
        200
    );
    for (rank, (_, id)) in local.iter().enumerate() {
        let verdict = match rank {
            0..10 => json!({ "thumbs": "up" }),
            10..20 => json!({ "score": 1.0 }),
            _ => json!({ "thumbs": "down", "label": "needed_frontier" }),
        };
        assert_eq!(post(id, verdict).await.status(), 200);
    }
    for id in &frontier_ids {
        assert_eq!(post(id, json!({ "score": 0.1 })).await.status(), 200);
    }

    // By hand: the means of the 20..=24 easiest local answers are 1, 0.952, 0.909,
    // 0.870, 0.833; a target of 0.9 keeps the 22 easiest local.
    let threshold = just_above(local[21].0);
    let sent = all.iter().filter(|&&d| d >= threshold).count();
    let expected = format!(
        "min_difficulty = {threshold:.4}   # sends {sent} of 30 requests ({:.1}%) to the frontier",
        100.0 * sent as f64 / 30.0
    );
    let ledger = format!("sqlite://{}", gw.ledger_path.display());
    let out = succeeded(&crossroads([
        "calibrate",
        "--ledger",
        &ledger,
        "--since",
        "1d",
        "--target-quality",
        "0.9",
    ]));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(expected.as_str()), "{out}");
    let evidence = lines.next().unwrap();
    assert!(
        evidence.contains("the mean score of the 22 rated local answers")
            && evidence.contains("31 feedback rows read, 24 requests rated on local answers, 6 on frontier answers (mean 0.100)"),
        "{out}"
    );

    // Too little feedback: refused, with the counts.
    let out = crossroads([
        "calibrate",
        "--ledger",
        &ledger,
        "--target-quality",
        "0.9",
        "--min-feedback",
        "25",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("too little feedback: 24 rated requests answered locally (of 31 feedback rows), at least 25 needed"),
        "{stderr}"
    );
    // Only the newest verdict counts: with the first, wrong one, the 20 easiest would
    // miss a target of 1.
    let out = crossroads(["calibrate", "--ledger", &ledger, "--target-quality", "1"]);
    assert!(
        succeeded(&out).starts_with(&format!("min_difficulty = {:.4}", just_above(local[19].0)))
    );

    // The share goal reads the same ledger: 6 of 30 to the frontier.
    let out = succeeded(&crossroads([
        "calibrate",
        "--config",
        gw.config_path.to_str().unwrap(),
        "--frontier-share",
        "0.2",
    ]));
    assert!(
        out.contains("# sends 6 of 30 requests (20.0%) to the frontier"),
        "{out}"
    );

    // The export: every feedback row joined to its request, which calibrate reads back.
    let export = gw.ledger_path.with_file_name("feedback.jsonl");
    let out = crossroads([
        "feedback",
        "export",
        "--ledger",
        &ledger,
        "--out",
        export.to_str().unwrap(),
    ]);
    succeeded(&out);
    let text = std::fs::read_to_string(&export).unwrap();
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 31);
    let hardest = exported
        .iter()
        .find(|r| r["request_id"] == local[23].1)
        .unwrap();
    assert_eq!(hardest["tier"], "local");
    assert_eq!(hardest["thumbs"], "down");
    assert_eq!(hardest["feedback_label"], "needed_frontier");
    assert_eq!(hardest["team"], "search");
    assert_eq!(hardest["difficulty"].as_f64().unwrap() as f32, local[23].0);
    assert!(hardest["domain"].is_string() && hardest["rule"] == "alias");
    let out = succeeded(&crossroads([
        "calibrate",
        "--data",
        export.to_str().unwrap(),
        "--target-quality",
        "0.9",
    ]));
    assert_eq!(out.lines().next(), Some(expected.as_str()), "{out}");
}
