#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn parse(body: &str) -> Result<Request, ApiError> {
    Request::parse(body.as_bytes())
}

fn param_of(err: ApiError) -> Option<&'static str> {
    match err {
        ApiError::BadRequest { param, .. } => param,
        other => panic!("expected a bad request, got {other:?}"),
    }
}

#[test]
fn parses_a_minimal_request() {
    let r = parse(r#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#)
        .expect("valid request");
    assert_eq!(r.model, "auto");
    assert!(!r.stream);
    assert!(!r.include_usage);
    assert_eq!(r.max_tokens, None);
    let prompt = r.prompt();
    assert_eq!(prompt.messages, 1);
    assert_eq!(prompt.segments[0].text, "hi");
}

#[test]
fn rejects_malformed_bodies_with_the_offending_param() {
    let cases = [
        ("not json", None),
        ("[1,2]", None),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (r#"{"model":5,"messages":[]}"#, Some("model")),
        (r#"{"model":"auto"}"#, Some("messages")),
        (r#"{"model":"auto","messages":[]}"#, Some("messages")),
        (r#"{"model":"auto","messages":"hi"}"#, Some("messages")),
        (
            r#"{"model":"auto","messages":[{"content":"x"}]}"#,
            Some("messages"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"wizard","content":"x"}]}"#,
            Some("messages"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":5}]}"#,
            Some("messages"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            Some("stream"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"n":0}"#,
            Some("n"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"tools":{}}"#,
            Some("tools"),
        ),
        (
            r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"stream_options":1}"#,
            Some("stream_options"),
        ),
    ];
    for (body, param) in cases {
        let err = parse(body).expect_err(body);
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(param_of(err), param, "{body}");
    }
}

#[test]
fn upstream_body_swaps_model_and_keeps_everything_else() {
    let r = parse(
        r#"{"model":"auto","messages":[{"role":"user","content":"x"}],
            "seed":7,"logprobs":true,"x_vendor":{"a":[1,2]},"tool_choice":"auto"}"#,
    )
    .expect("valid");
    let out: Value = serde_json::from_slice(&r.upstream_body("qwen", None)).expect("json");
    assert_eq!(out["model"], "qwen");
    assert_eq!(out["seed"], 7);
    assert_eq!(out["logprobs"], true);
    assert_eq!(out["x_vendor"]["a"][1], 2);
    assert_eq!(out["tool_choice"], "auto");
    assert!(out.get("stream_options").is_none());
}

#[test]
fn streams_always_ask_the_upstream_for_usage() {
    let r = parse(r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"stream":true}"#)
        .expect("valid");
    assert!(r.stream && !r.include_usage);
    let out: Value = serde_json::from_slice(&r.upstream_body("m", None)).expect("json");
    assert_eq!(out["stream_options"]["include_usage"], true);

    let r = parse(
        r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"stream":true,
            "stream_options":{"include_usage":true,"other":1}}"#,
    )
    .expect("valid");
    assert!(r.include_usage);
    let out: Value = serde_json::from_slice(&r.upstream_body("m", None)).expect("json");
    assert_eq!(out["stream_options"]["include_usage"], true);
    assert_eq!(out["stream_options"]["other"], 1);
}

#[test]
fn prompt_sees_parts_images_tools_and_json_mode() {
    let r = parse(
        r#"{"model":"auto","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"what is this"},
                                       {"type":"image_url","image_url":{"url":"data:x"}}]}],
            "tools":[{"type":"function","function":{"name":"f"}}],
            "response_format":{"type":"json_object"}}"#,
    )
    .expect("valid");
    let p = r.prompt();
    assert_eq!(p.messages, 2);
    assert_eq!(p.images, 1);
    assert!(p.has_tools && p.json_mode);
    assert_eq!(p.segments.len(), 2);
    assert_eq!(p.segments[0].role, Role::System);
}

#[test]
fn a_rule_cap_lowers_or_sets_max_tokens() {
    let r =
        parse(r#"{"model":"auto","messages":[{"role":"user","content":"x"}],"max_tokens":4000}"#)
            .expect("valid");
    let out: Value = serde_json::from_slice(&r.upstream_body("m", Some(512))).expect("json");
    assert_eq!(out["max_tokens"], 512);
    let out: Value = serde_json::from_slice(&r.upstream_body("m", Some(8000))).expect("json");
    assert_eq!(out["max_tokens"], 4000);
    let r = parse(r#"{"model":"auto","messages":[{"role":"user","content":"x"}]}"#).expect("valid");
    let out: Value = serde_json::from_slice(&r.upstream_body("m", Some(256))).expect("json");
    assert_eq!(out["max_tokens"], 256);
}
