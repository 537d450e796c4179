//! Property tests of every parser that reads bytes from outside: the chat request and
//! every inbound API's body, the SSE framing, the Anthropic translation both ways, the
//! config loader and the cache key canonicalizer. Properties: no input panics; round trips hold where a format has
//! one; the cache key depends on a body's value, never on its spelling.

use serde_json::{Map, Value, json};

use crossroads::cache::CacheKey;
use crossroads::frontend::embeddings::Embeddings;
use crossroads::frontend::messages::Messages;
use crossroads::frontend::responses::Responses;
use crossroads::pipeline::FrontEnd;
use crossroads::provider::anthropic::{self, StreamTranslator};
use crossroads::request::{Limits, Request};
use crossroads::sse;

use super::hostile::{Gen, cases, check};

/// Fields the gateway rewrites on the way upstream; every other one passes through.
const REWRITTEN: [&str; 4] = [
    "model",
    "max_tokens",
    "max_completion_tokens",
    "stream_options",
];

/// Bytes a chat endpoint may receive: a near-valid body, often damaged, or raw noise.
fn chat_bytes(g: &mut Gen) -> Vec<u8> {
    match g.rng.usize(..10) {
        0 => (0..g.rng.usize(..64)).map(|_| g.rng.u8(..)).collect(),
        1 => {
            let depth = g.rng.usize(100..300);
            g.nested(depth).into_bytes()
        }
        2..=5 => {
            let body = g.chat_body().to_string();
            g.mutate(body.as_bytes())
        }
        _ => g.chat_body().to_string().into_bytes(),
    }
}

#[test]
fn chat_parser_rejects_with_400_or_round_trips_upstream() {
    check("chat_parser", cases(4000), |g| {
        let bytes = chat_bytes(g);
        let request = match Request::parse(&bytes) {
            Err(e) => {
                assert_eq!(e.status().as_u16(), 400, "{e:?}");
                return;
            }
            Ok(r) => r,
        };
        let _ = request.prompt();
        // Serialize → parse gives the same request.
        let again = Request::parse(&serde_json::to_vec(&request.body).unwrap()).unwrap();
        assert_eq!(again.body, request.body);
        assert_eq!(
            (again.stream, again.max_tokens, again.choices),
            (request.stream, request.max_tokens, request.choices)
        );
        // The upstream body is a valid request with only the gateway's substitutions.
        let cap = g.bool().then(|| g.rng.u64(..10_000));
        let upstream = Request::parse(&request.upstream_body("up-model", cap))
            .unwrap_or_else(|e| panic!("upstream body does not parse: {e:?}"));
        assert_eq!(upstream.model, "up-model");
        assert_eq!(upstream.stream, request.stream);
        assert_eq!(upstream.choices, request.choices);
        assert!(upstream.include_usage || !request.stream);
        if let Some(cap) = cap {
            assert!(upstream.max_tokens.is_some_and(|m| m <= cap));
        } else {
            assert_eq!(upstream.max_tokens, request.max_tokens);
        }
        for (key, value) in &request.body {
            if !REWRITTEN.contains(&key.as_str()) {
                assert_eq!(upstream.body.get(key), Some(value), "field {key} changed");
            }
        }
    });
}

/// An SSE stream of `data` payloads with the other fields and comments providers send,
/// framed with LF or CRLF event by event.
fn sse_stream(g: &mut Gen, data: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for payload in data {
        let crlf = g.bool();
        let nl = if crlf { "\r\n" } else { "\n" };
        if g.one_in(4) {
            out.extend_from_slice(format!(": keep-alive{nl}{nl}").as_bytes());
        }
        let mut lines = Vec::new();
        if g.bool() {
            lines.push("event: message".to_owned());
        }
        // One space after the colon is optional, unless the payload starts with one.
        let space = payload.starts_with(' ') || g.bool();
        lines.push(format!("data:{}{payload}", if space { " " } else { "" }));
        if g.one_in(3) {
            lines.push("id: 7".to_owned());
        }
        out.extend_from_slice(lines.join(nl).as_bytes());
        out.extend_from_slice(format!("{nl}{nl}").as_bytes());
    }
    out
}

/// Splits `bytes` at random points, as network reads do.
fn chunked(g: &mut Gen, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = g.rng.usize(1..=rest.len().min(40));
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    chunks
}

/// The data payloads of `chunks`, reassembled event by event as the gateway's stream
/// readers do.
fn reassemble(chunks: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut payloads = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        while let Some((len, sep)) = sse::event_end(&buffer) {
            assert!(len + sep <= buffer.len());
            if let Some(data) = sse::data_of(&buffer[..len]) {
                payloads.push(data.to_vec());
            }
            buffer.drain(..len + sep);
        }
    }
    payloads
}

#[test]
fn sse_framing_round_trips_however_the_bytes_arrive() {
    check("sse_round_trip", cases(3000), |g| {
        let data: Vec<String> = (0..g.rng.usize(..8))
            .map(|_| g.string().replace(['\r', '\n'], ""))
            .collect();
        let bytes = sse_stream(g, &data);
        let want: Vec<Vec<u8>> = data.iter().map(|d| d.clone().into_bytes()).collect();
        assert_eq!(reassemble(std::slice::from_ref(&bytes)), want);
        assert_eq!(reassemble(&chunked(g, &bytes)), want);
        // Damaged framing may lose events, never panic.
        let damaged = g.mutate(&bytes);
        let _ = reassemble(&chunked(g, &damaged));
        let _ = sse::field(&damaged, b"event");
    });
}

/// A generated body, damaged one time in three, and what front-end `F` parsed it into;
/// `None` after checking that what it refused got a 400.
fn parsed_or_400<F: FrontEnd>(
    g: &mut Gen,
    body: fn(&mut Gen) -> Value,
) -> Option<(Vec<u8>, Request)> {
    let body = body(g).to_string();
    let bytes = if g.one_in(3) {
        g.mutate(body.as_bytes())
    } else {
        body.into_bytes()
    };
    match F::parse(&bytes) {
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400, "{e:?}");
            None
        }
        Ok((_, request)) => Some((bytes, request)),
    }
}

/// A front-end's parser: a 400 for bad input, else a chat request the chat endpoint
/// itself accepts, bounding the billed bytes by at least the client's body.
fn front_end_parser<F: FrontEnd>(name: &str, body: fn(&mut Gen) -> Value) {
    check(name, cases(4000), |g| {
        let Some((bytes, request)) = parsed_or_400::<F>(g, body) else {
            return;
        };
        // The bound covers the client's bytes and the translated body's.
        assert!(request.body_bytes >= bytes.len());
        let translated = serde_json::to_vec(&request.body).unwrap().len();
        assert!(
            request.body_bytes >= translated,
            "{} < {translated}",
            request.body_bytes
        );
        assert!(request.include_usage || !request.stream);
        let _ = request.prompt();
        let upstream = Request::parse(&request.upstream_body("up-model", None))
            .unwrap_or_else(|e| panic!("translated body does not parse: {e:?}"));
        assert_eq!(upstream.max_tokens, request.max_tokens);
    });
}

#[test]
fn messages_parser_rejects_with_400_or_gives_a_valid_chat_request() {
    front_end_parser::<Messages>("messages_parser", Gen::messages_body);
}

#[test]
fn responses_parser_rejects_with_400_or_gives_a_valid_chat_request() {
    front_end_parser::<Responses>("responses_parser", Gen::responses_body);
}

#[test]
fn embeddings_parser_rejects_with_400_or_passes_the_body_through() {
    check("embeddings_parser", cases(4000), |g| {
        let Some((bytes, request)) = parsed_or_400::<Embeddings>(g, Gen::embeddings_body) else {
            return;
        };
        assert_eq!(request.body_bytes, bytes.len());
        assert!(!request.stream);
        // The reservation's bound holds: no more tokens than bytes.
        let prompt = request.prompt();
        let text: usize = prompt.segments.iter().map(|s| s.text.len()).sum();
        assert!(text as u64 + prompt.token_ids <= bytes.len() as u64);
        // Upstream gets the same body, model swapped, no output limit added.
        let upstream = request.upstream_body("up-model", Some(7));
        let mut sent: Map<String, Value> = serde_json::from_slice(&upstream).unwrap();
        assert_eq!(sent.remove("model"), Some(json!("up-model")));
        let mut asked = request.body.clone();
        asked.remove("model");
        assert_eq!(sent, asked);
    });
}

#[test]
fn anthropic_request_translation_never_panics_and_bounds_max_tokens() {
    check("anthropic_request", cases(3000), |g| {
        let Ok(request) = Request::parse(&chat_bytes(g)) else {
            return;
        };
        let cap = g.bool().then(|| g.rng.u64(1..10_000));
        let limits = Limits::resolve(&request, cap, 4096);
        let Ok(body) =
            anthropic::translate(&request, "claude-x", limits.max_tokens.unwrap_or(4096))
        else {
            return;
        };
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["model"], "claude-x");
        assert!(body["messages"].is_array(), "{body}");
        let max = body["max_tokens"].as_u64().unwrap();
        assert!(cap.is_none_or(|c| max <= c), "{max} over cap {cap:?}");
    });
}

/// A Messages event stream with text, a tool call and usage that may be huge.
fn anthropic_events(g: &mut Gen) -> Vec<String> {
    let tokens = |g: &mut Gen| {
        if g.one_in(4) {
            u64::MAX
        } else {
            g.rng.u64(..5000)
        }
    };
    let usage = json!({ "input_tokens": tokens(g), "output_tokens": 1,
        "cache_read_input_tokens": tokens(g), "cache_creation_input_tokens": tokens(g) });
    let mut events = vec![
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",
            "content":[],"model":"claude-x","stop_reason":null,"usage": usage}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    ];
    for _ in 0..g.rng.usize(..5) {
        let text = g.string();
        events.push(json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}}));
    }
    events.push(json!({"type":"content_block_start","index":1,
        "content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}));
    events.push(json!({"type":"content_block_delta","index":1,
        "delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}));
    events.push(
        json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},
        "usage":{"output_tokens": tokens(g)}}),
    );
    events.push(json!({"type":"message_stop"}));
    events.iter().map(Value::to_string).collect()
}

/// The translator's output for `chunks`, with the clock's `created` taken out, and
/// whether it saw the end of the message.
fn translate_stream(chunks: &[Vec<u8>]) -> (Vec<Value>, bool) {
    let mut translator = StreamTranslator::default();
    let mut out = Vec::new();
    for chunk in chunks {
        match translator.feed(chunk) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(_) => return (Vec::new(), false),
        }
    }
    let values = reassemble(&[out])
        .into_iter()
        .filter(|d| d != b"[DONE]")
        .map(|d| {
            let mut v: Value = serde_json::from_slice(&d).unwrap();
            v.as_object_mut().map(|o| o.remove("created"));
            v
        })
        .collect();
    (values, translator.finished())
}

#[test]
fn anthropic_stream_translation_is_independent_of_chunking() {
    check("anthropic_stream", cases(1500), |g| {
        let events = anthropic_events(g);
        let bytes = sse_stream(g, &events);
        let (whole, finished) = translate_stream(std::slice::from_ref(&bytes));
        assert!(finished, "a complete stream must finish");
        let usage = &whole.last().unwrap()["usage"];
        assert!(usage["prompt_tokens"].as_u64().is_some(), "{usage}");
        assert_eq!(translate_stream(&chunked(g, &bytes)), (whole, true));
        // Damaged streams and whole Messages bodies: errors, never panics.
        let damaged = g.mutate(&bytes);
        let _ = translate_stream(&chunked(g, &damaged));
        let message = json!({"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"text","text": g.string()},{"type":"tool_use","id":"t","name":"f","input": g.value(2)}],
            "stop_reason": g.string(), "usage": serde_json::from_str::<Value>(&events[0]).unwrap()["message"]["usage"]});
        let body = message.to_string();
        assert!(anthropic::completion(body.as_bytes()).is_ok());
        let _ = anthropic::completion(&g.mutate(body.as_bytes()));
    });
}

const CONFIG: &str = include_str!("../fixtures/gateway.toml");

#[test]
fn config_loader_reports_errors_never_panics() {
    let env = |_: &str| None::<String>;
    let valid = CONFIG
        .replace("@LOCAL_URL@", "http://127.0.0.1:9/v1")
        .replace("@FRONTIER_A_URL@", "http://127.0.0.1:9/v1")
        .replace("@FRONTIER_B_URL@", "http://127.0.0.1:9/v1");
    let path = std::path::Path::new("fuzz.toml");
    crossroads::config::from_toml_str(&valid, path, &env).unwrap();
    check("config_loader", cases(1500), |g| {
        let text = match g.rng.usize(..3) {
            // Line-level damage: a line dropped, repeated, or its value replaced.
            0 | 1 => {
                let mut lines: Vec<String> = valid.lines().map(str::to_owned).collect();
                for _ in 0..g.rng.usize(1..4) {
                    let i = g.rng.usize(..lines.len());
                    match g.rng.usize(..3) {
                        0 => {
                            lines.remove(i);
                        }
                        1 => lines.insert(i, lines[i].clone()),
                        _ => {
                            if let Some((key, _)) = lines[i].split_once('=') {
                                let value = toml_value(g);
                                lines[i] = format!("{key}= {value}");
                            }
                        }
                    }
                }
                lines.join("\n")
            }
            _ => String::from_utf8_lossy(&g.mutate(valid.as_bytes())).into_owned(),
        };
        if let Err(e) = crossroads::config::from_toml_str(&text, path, &env) {
            assert!(!e.to_string().is_empty());
        }
    });
}

/// A TOML value of any type, edge numbers included.
fn toml_value(g: &mut Gen) -> String {
    match g.rng.usize(..8) {
        0 => "-1".into(),
        1 => "18446744073709551615".into(),
        2 => "1e308".into(),
        3 => "nan".into(),
        4 => "[]".into(),
        5 => "{ a = 1 }".into(),
        6 => "true".into(),
        _ => Value::String(g.string()).to_string(),
    }
}

fn key_of(body: &Map<String, Value>) -> CacheKey {
    CacheKey::new(Some("team"), "pool", ["m1", "m2"], Some(100), body)
}

#[test]
fn cache_key_depends_on_the_value_not_its_spelling() {
    check("cache_key", cases(3000), |g| {
        let Value::Object(body) = g.chat_body() else {
            unreachable!()
        };
        let key = key_of(&body);
        // Any spelling of the same body: key order, whitespace, `1` / `1.0` / `1e0`.
        let respelled: Map<String, Value> =
            serde_json::from_str(&g.respell(&Value::Object(body.clone()))).unwrap();
        assert!(
            key == key_of(&respelled),
            "respelling changed the key: {body:?} vs {respelled:?}"
        );
        // Fields that cannot change the answer do not change the key.
        let mut bookkeeping = body.clone();
        bookkeeping.insert("user".into(), Value::String(g.string()));
        bookkeeping.insert("stream".into(), Value::Bool(g.bool()));
        assert!(key == key_of(&bookkeeping));
        // Any other field that changes makes another key.
        let mut changed = body.clone();
        let field = (*g.pick(&["messages", "temperature", "tools", "seed"])).to_owned();
        let before = changed.get(&field).cloned();
        let after = json!({ "changed": g.rng.u64(..) });
        changed.insert(field, after.clone());
        assert!(before == Some(after) || key != key_of(&changed));
        // Deep values, as deep as the parser lets through.
        let deep: Map<String, Value> =
            serde_json::from_str(&format!("{{\"x\":{}}}", g.nested(126))).unwrap();
        let _ = key_of(&deep);
    });
}
