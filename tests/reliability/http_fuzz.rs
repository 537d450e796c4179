//! Black-box HTTP fuzzer: hostile requests over raw TCP to a real `crossroads serve`
//! (scripted upstreams behind it) on every endpoint it serves. Bad JSON, wrong types,
//! huge numbers, deep nesting, invalid UTF-8, header abuse, oversize announced lengths,
//! truncated, stalled and trickled bodies, broken framing. Counted: gateway panics,
//! 5xx answers, hangs (no answer within the client timeout), 4xx bodies that are not
//! OpenAI errors, and the gateway's memory after.
//!
//! `CROSSROADS_FUZZ_REQUESTS` sets the count (CI: 5,000; full size: 100,000).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::served::{free_port, serve_with};
use super::common::*;
use super::hostile::{Gen, seed};

/// The gateway's request timeout in this run: stalled bodies must end by then.
const REQUEST_TIMEOUT_MS: u64 = 2000;
/// A request with no complete answer after this long is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENCY: usize = 32;

/// How the bytes of a case go out.
#[derive(Clone, Copy, Debug)]
enum Send {
    /// All at once, then wait for the answer.
    Whole,
    /// All at once, then half-close: the announced body never comes.
    HalfClose,
    /// All at once, then hold the connection open, silent.
    Hold,
    /// A few bytes at a time, `gap` apart, then hold.
    Trickle(Duration),
}

struct Case {
    kind: &'static str,
    bytes: Vec<u8>,
    send: Send,
}

#[derive(Debug)]
enum Outcome {
    /// Status and body (after the head; raw, possibly chunked).
    Answered(u16, Vec<u8>),
    /// Closed without a status line: acceptable for broken HTTP.
    Closed,
    Hang,
}

const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/route/explain"),
    ("GET", "/v1/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/admin/reload"),
    ("GET", "/v1/spend"),
    ("GET", "/v1/spend/requests"),
    ("POST", "/v1/feedback"),
    ("DELETE", "/v1/chat/completions"),
    ("GET", "/v1/nope"),
];

fn request(method: &str, target: &str, headers: &[(String, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n")
        .into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn json_headers(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
    ]
}

/// A query string for the spend endpoints, sometimes nonsense.
fn query(g: &mut Gen) -> String {
    let keys = [
        "from", "to", "group_by", "team", "key", "limit", "model", "cursor", "x",
    ];
    let values = [
        "0",
        "-1",
        "99999999999999999999999",
        "abc",
        "%ff%fe",
        "team",
        "model",
        "2026-01-01",
        "",
        "%00",
    ];
    let mut q = String::new();
    for i in 0..g.rng.usize(..4) {
        q.push(if i == 0 { '?' } else { '&' });
        q.push_str(g.pick::<&str>(&keys));
        q.push('=');
        q.push_str(g.pick::<&str>(&values));
    }
    q
}

/// Authorization headers: none, garbage, the admin key, invalid bytes.
fn authorization(g: &mut Gen) -> Option<Vec<u8>> {
    match g.rng.usize(..6) {
        0 => Some(b"Bearer \xff\xfe".to_vec()),
        1 => Some(format!("Bearer {ADMIN_KEY}").into_bytes()),
        2 => Some(format!("Bearer {}", "k".repeat(g.rng.usize(..9000))).into_bytes()),
        3 => Some(b"Basic Zm9vOmJhcg==".to_vec()),
        _ => None,
    }
}

/// A body for a JSON endpoint.
fn body(g: &mut Gen) -> (&'static str, Vec<u8>) {
    match g.rng.usize(..12) {
        0 => {
            let depth = g.rng.usize(100..20_000);
            ("deep_nesting", g.nested(depth).into_bytes())
        }
        1 => ("huge_numbers", format!(
            r#"{{"model":"auto","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{},"n":{},"temperature":1e999}}"#,
            "9".repeat(g.rng.usize(20..400)), g.pick(&["1e300", "-1", "18446744073709551616", "0.5"])).into_bytes()),
        2 => ("invalid_utf8", {
            let mut b = br#"{"model":"auto","messages":[{"role":"user","content":"#.to_vec();
            b.extend_from_slice(b"\"\xff\xfe\xed\xa0\x80\xc3\"}]}");
            b
        }),
        3 => ("noise", (0..g.rng.usize(..512)).map(|_| g.rng.u8(..)).collect()),
        4..=6 => {
            let body = g.chat_body().to_string();
            ("bad_json", g.mutate(body.as_bytes()))
        }
        7 => ("big_body", {
            let text = "x".repeat(g.rng.usize(1..6) * 1024 * 1024);
            json!({ "model": "auto", "messages": [{ "role": "user", "content": text }] }).to_string().into_bytes()
        }),
        8 => ("wrong_types", g.value(4).to_string().into_bytes()),
        9 => match g.rng.usize(..3) {
            0 => ("messages_body", g.messages_body().to_string().into_bytes()),
            1 => ("responses_body", g.responses_body().to_string().into_bytes()),
            _ => ("embeddings_body", g.embeddings_body().to_string().into_bytes()),
        },
        10 => {
            let body = g.messages_body().to_string();
            ("bad_messages_json", g.mutate(body.as_bytes()))
        }
        _ => ("chat_body", {
            let mut body = g.chat_body();
            if g.one_in(3) {
                body["stream"] = Value::Bool(true);
            }
            body.to_string().into_bytes()
        }),
    }
}

/// One hostile request.
fn case(g: &mut Gen) -> Case {
    let (method, path) = *g.pick(ENDPOINTS);
    let target = if path.starts_with("/v1/spend") {
        format!("{path}{}", query(g))
    } else {
        path.to_owned()
    };
    let mut headers = Vec::new();
    if let Some(auth) = authorization(g) {
        headers.push(("authorization".to_owned(), auth));
    }
    if g.one_in(4) {
        let value = g
            .pick(&[&b"no-cache"[..], b"no-store", b"\x01\x02", b"max-age=-1"])
            .to_vec();
        headers.push(("cache-control".into(), value));
    }
    let (kind, body) = if method == "POST" {
        body(g)
    } else {
        ("no_body", Vec::new())
    };
    match g.rng.usize(..20) {
        // Header abuse: huge values, many headers, bad bytes, conflicting framing.
        0 => {
            let mut h = json_headers(&body);
            match g.rng.usize(..6) {
                0 => h.push(("x-big".into(), vec![b'a'; g.rng.usize(8_000..200_000)])),
                1 => h.extend(
                    (0..g.rng.usize(100..2000)).map(|i| (format!("x-h{i}"), b"v".to_vec())),
                ),
                2 => h.push(("x-bad".into(), b"a\x00\x7f\xff".to_vec())),
                3 => h.push(("content-length".into(), b"7".to_vec())),
                4 => h.push(("transfer-encoding".into(), b"chunked".to_vec())),
                _ => h.push(("bad header name".into(), b"x".to_vec())),
            }
            Case {
                kind: "header_abuse",
                bytes: request(method, &target, &h, &body),
                send: Send::Whole,
            }
        }
        // Announced lengths that lie, both ways.
        1 => {
            let announced: &[u8] = g.pick::<&[u8]>(&[
                &b"99999999999"[..],
                b"18446744073709551616",
                b"-1",
                b"abc",
                b"4194305",
                b"1 2",
            ]);
            let h = vec![("content-length".into(), announced.to_vec())];
            Case {
                kind: "oversize_length",
                bytes: request(method, &target, &h, &body),
                send: Send::HalfClose,
            }
        }
        // The body stops halfway: connection half-closed, or held open and silent.
        2 => {
            let h = json_headers(&body);
            let mut bytes = request(method, &target, &h, &body);
            bytes.truncate(bytes.len() - body.len() / 2);
            let send = if g.bool() {
                Send::HalfClose
            } else {
                Send::Hold
            };
            Case {
                kind: "truncated_body",
                bytes,
                send,
            }
        }
        // A body that trickles in, then stalls.
        3 if g.one_in(4) => {
            let h = vec![("content-length".into(), b"100000".to_vec())];
            let bytes = request(method, &target, &h, b"{\"model\":\"auto\",");
            Case {
                kind: "slow_body",
                bytes,
                send: Send::Trickle(Duration::from_millis(100)),
            }
        }
        // Malformed chunked framing.
        4 => {
            let chunked = g
                .pick(&[
                    &b"fffffffffffffffffff\r\nx\r\n0\r\n\r\n"[..],
                    b"5\r\n{}\r\n0\r\n\r\n",
                    b"zz\r\n",
                    b"3;ext=\xff\r\nabc\r\n0\r\n\r\n",
                ])
                .to_vec();
            let h = vec![("transfer-encoding".into(), b"chunked".to_vec())];
            Case {
                kind: "bad_chunking",
                bytes: request(method, &target, &h, &chunked),
                send: Send::HalfClose,
            }
        }
        // Broken request lines.
        5 => {
            let line = g
                .pick(&[
                    &b"GET\r\n\r\n"[..],
                    b"\xff\xfe / HTTP/1.1\r\n\r\n",
                    b"GET /v1/models HTTP/9.9\r\n\r\n",
                    b"POST /v1/chat/completions HTTP/1.0\r\n\r\n",
                    b"GET /%%%% HTTP/1.1\r\nhost: x\r\n\r\n",
                    b"\r\n\r\n\r\n",
                ])
                .to_vec();
            let mut bytes = line;
            if g.bool() {
                bytes = g.mutate(&bytes);
            }
            Case {
                kind: "bad_request_line",
                bytes,
                send: Send::HalfClose,
            }
        }
        _ => Case {
            kind,
            bytes: request(method, &target, &json_headers(&body), &body),
            send: Send::Whole,
        },
    }
}

async fn run(addr: &str, case: &Case) -> Outcome {
    let attempt = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        match case.send {
            Send::Trickle(gap) => {
                for piece in case.bytes.chunks(case.bytes.len().div_ceil(4).max(1)) {
                    if tcp.write_all(piece).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(gap).await;
                }
            }
            _ => {
                // The server may answer (413) and close before the whole body is written.
                let _ = tcp.write_all(&case.bytes).await;
            }
        }
        if let Send::HalfClose = case.send {
            let _ = tcp.shutdown().await;
        }
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        Some(answer)
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, attempt).await {
        Err(_) => Outcome::Hang,
        Ok(None) => Outcome::Closed,
        Ok(Some(answer)) => parse_answer(&answer),
    }
}

fn parse_answer(answer: &[u8]) -> Outcome {
    let status = answer
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|rest| std::str::from_utf8(rest.get(..3)?).ok())
        .and_then(|code| code.parse().ok());
    match status {
        None => Outcome::Closed,
        Some(code) => {
            let Some(end) = memchr::memmem::find(answer, b"\r\n\r\n") else {
                return Outcome::Answered(code, Vec::new());
            };
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let mut body = &answer[end + 4..];
            // A mutated request line may hold two requests: keep the first answer's body.
            if let Some(length) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
            {
                body = &body[..length.min(body.len())];
            }
            Outcome::Answered(code, body.to_vec())
        }
    }
}

/// Whether a 4xx body, when it has one, is an error object: OpenAI's, or Anthropic's
/// (`"type": "error"`) from `/v1/messages`.
fn openai_error(body: &[u8]) -> bool {
    body.is_empty()
        || serde_json::from_slice::<Value>(body).is_ok_and(|v| v["error"]["message"].is_string())
}

/// Resident and peak memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_http_gets_4xx_never_5xx_panic_or_hang() {
    let total = super::hostile::env_usize("CROSSROADS_FUZZ_REQUESTS", 5000);
    // Upstreams answer streams with SSE and the rest with JSON: a 5xx here is the gateway's.
    let answer = |model: &str| {
        Scripted::ByStream(
            Box::new(Scripted::sse(
                chunks(model, &["f"], Some((3, 2))),
                StreamEnd::Done,
            )),
            Box::new(Scripted::json(completion(model, "f", 3, 2))),
        )
    };
    let local = Upstream::start(answer("local-model")).await;
    let frontier = Upstream::start(answer("gpt-4.1")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.toml");
    let stderr_path = dir.path().join("stderr.log");
    let toml = standard_config(
        &local.base_url(),
        &frontier.base_url(),
        &frontier.base_url(),
    )
    .replace(
        "request_timeout_ms = 5000",
        &format!("request_timeout_ms = {REQUEST_TIMEOUT_MS}"),
    );
    std::fs::write(
        &config,
        format!(
            "{toml}\n[cache]\nbackend = \"memory\"\n\n[ledger]\nurl = \"sqlite://{}\"\n",
            dir.path().join("ledger.db").display()
        ),
    )
    .unwrap();
    let served = serve_with(
        &config,
        free_port(),
        std::fs::File::create(&stderr_path).unwrap(),
    )
    .await;
    let pid = served.child.id();
    let addr = served.addr.trim_start_matches("http://").to_owned();
    let (rss_before, _) = memory_kib(pid);

    let seed = seed();
    let started = Instant::now();
    let outcomes: Vec<(&'static str, Outcome)> = futures_util::stream::iter(0..total)
        .map(|i| {
            let addr = addr.clone();
            async move {
                let c = case(&mut Gen::new(
                    seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ));
                (c.kind, run(&addr, &c).await)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();

    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for (kind, outcome) in &outcomes {
        let label = match outcome {
            Outcome::Answered(code, body) => {
                if *code >= 500 {
                    failures.push(format!("{kind}: {code} {}", String::from_utf8_lossy(body)));
                } else if (400..500).contains(code) && !openai_error(body) {
                    failures.push(format!(
                        "{kind}: {code} not an OpenAI error: {}",
                        String::from_utf8_lossy(body)
                    ));
                }
                code.to_string()
            }
            Outcome::Closed => "closed".into(),
            Outcome::Hang => {
                failures.push(format!("{kind}: no answer in {CLIENT_TIMEOUT:?}"));
                "hang".into()
            }
        };
        *by_status.entry(label).or_default() += 1;
    }

    // Still serving, and answering a plain request.
    let ok = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", served.addr))
        .json(&user("auto", "Tell me about Rome."))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.status(),
        200,
        "the gateway stopped serving after the fuzz run"
    );
    let (rss_after, rss_peak) = memory_kib(pid);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let panics = stderr.matches("panicked at").count();
    let hangs = by_status.get("hang").copied().unwrap_or(0);
    let five_xx: usize = by_status
        .iter()
        .filter(|(s, _)| s.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "http_fuzz: requests={total} seed={seed} elapsed={:.1}s panics={panics} 5xx={five_xx} hangs={hangs} \
         rss_kib_before={rss_before} rss_kib_after={rss_after} rss_kib_peak={rss_peak} by_status={by_status:?}",
        elapsed.as_secs_f64()
    );
    assert_eq!(panics, 0, "the gateway panicked:\n{stderr}");
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
