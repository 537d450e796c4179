//! Client mistakes get a 4xx in the OpenAI error shape; nothing a client sends causes a
//! 5xx or a panic, and every request is still recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

async fn setup() -> (Gateway, Upstream) {
    let up = Upstream::start(Scripted::json(completion("m", "ok", 1, 1))).await;
    let gw = Gateway::start(&standard_config(
        &up.base_url(),
        &up.base_url(),
        &up.base_url(),
    ))
    .await;
    (gw, up)
}

#[tokio::test]
async fn malformed_bodies_get_400_with_the_parameter() {
    let (gw, up) = setup().await;
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("{not json", None),
        ("", None),
        ("[]", None),
        ("\"text\"", None),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (
            r#"{"model":["auto"],"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (r#"{"model":"auto"}"#, Some("messages")),
        (r#"{"model":"auto","messages":[]}"#, Some("messages")),
        (
            r#"{"model":"auto","messages":{"role":"user"}}"#,
            Some("messages"),
        ),
        (r#"{"model":"auto","messages":[42]}"#, Some("messages")),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":{"a":1}}]}"#,
            Some("messages"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"stream":1}"#,
            Some("stream"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
            Some("max_tokens"),
        ),
    ];
    for (body, param) in cases {
        let (status, error) = error_of(gw.chat_raw(body.to_owned()).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"].as_str(), param, "{body}");
    }
    assert_eq!(up.hits(), 0);
    let rows = gw.ledger_rows().await;
    assert!(
        rows.iter()
            .all(|r| r["status"] == 400 && r["error_kind"] == "bad_request")
    );
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let (gw, up) = setup().await;
    let (status, error) = error_of(gw.chat(user("gpt-7-ultra", "hi")).await).await;
    assert_eq!(status, 404);
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    assert!(error["message"].as_str().unwrap().contains("gpt-7-ultra"));
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (gw, up) = setup().await;
    let big = "x".repeat(5 * 1024 * 1024);
    let (status, error) = error_of(gw.chat(user("auto", &big)).await).await;
    assert_eq!(status, 413);
    assert_eq!(error["code"], "request_too_large");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408_within_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start(Scripted::json(completion("m", "ok", 1, 1))).await;
    let toml = standard_config(&up.base_url(), &up.base_url(), &up.base_url())
        .replace("request_timeout_ms = 5000", "request_timeout_ms = 300");
    let gw = Gateway::start(&toml).await;
    for path in ["/v1/chat/completions", "/v1/route/explain"] {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{{");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tcp.read_to_end(&mut answer);
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("no answer: the stalled body holds the connection")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_openai_errors() {
    let (gw, _up) = setup().await;
    let (status, _) = error_of(gw.get("/v1/nothing-here").await).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(gw.get("/v1/chat/completions").await).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn rejecting_rules_answer_with_their_status() {
    let up = Upstream::start(Scripted::json(completion("m", "ok", 1, 1))).await;
    let config = standard_config(&up.base_url(), &up.base_url(), &up.base_url()).replace(
        "[[rules]]\nid = \"pii-local\"",
        "[[rules]]\nid = \"no-images\"\nwhen = { images = true }\nreject = { status = 422, message = \"images are not allowed here\" }\n\n[[rules]]\nid = \"pii-local\"",
    );
    let gw = Gateway::start(&config).await;
    let body = json!({
        "model": "auto",
        "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "what is this?" },
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } }
        ]}]
    });
    let r = gw.chat(body).await;
    assert_eq!(r.headers()["x-crossroads-rule"], "no-images");
    let (status, error) = error_of(r).await;
    assert_eq!(status, 422);
    assert_eq!(error["message"], "images are not allowed here");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn random_bodies_never_cause_a_5xx() {
    let (gw, _up) = setup().await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        "\"model\"",
        ":",
        ",",
        "\"auto\"",
        "\"messages\"",
        "null",
        "1e999",
        "-0",
        "\"role\"",
        "\"user\"",
        "\"content\"",
        "\"\\u0000\"",
        "true",
        "\"stream\"",
        "🦀",
        "\"\\ud800\"",
    ];
    for _ in 0..300 {
        let mut body = String::new();
        for _ in 0..(seed % 24) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        let r = gw.chat_raw(body.clone()).await;
        assert!(
            r.status().is_client_error() || r.status().is_success(),
            "{body} → {}",
            r.status()
        );
    }
}

#[tokio::test]
async fn a_handler_that_panics_answers_an_openai_500_not_a_dropped_connection() {
    use tower::ServiceExt;
    let router = axum::Router::new()
        .route(
            "/boom",
            axum::routing::get(|| async {
                panic!("boom");
                #[allow(unreachable_code)]
                ""
            }),
        )
        .layer(crossroads::app::panics_answer_500());
    let request = axum::http::Request::get("/boom")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 500);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("logged")
    );
}
