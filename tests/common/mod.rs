//! Test harness: boots the gateway on 127.0.0.1:0 with a config, next to scripted
//! OpenAI-wire upstreams that record what they receive.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crossroads::app;
use crossroads::ledger::LedgerWriter;
use crossroads::state::AppState;

pub mod redis_server;
pub mod served;

/// A canned upstream reply.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// A JSON body with a status, after a delay.
    Json {
        status: u16,
        body: Value,
        delay: Duration,
        headers: Vec<(&'static str, String)>,
    },
    /// SSE events (each a `data:` payload), `gap` apart, then how the stream ends.
    Sse {
        events: Vec<String>,
        gap: Duration,
        end: StreamEnd,
    },
    /// Accepts the request and never answers.
    Hang,
    /// A body sent as is (malformed JSON, say), with a status and content type.
    Raw {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Drops the connection before any byte of an answer.
    Reset,
    /// One of several replies, each with a weight, picked per request from a fixed
    /// pseudo-random sequence: faults mixed at set rates, the same in every run.
    Mix(Vec<(u32, Scripted)>),
    /// The first reply for requests with `"stream": true`, the second for the others.
    ByStream(Box<Scripted>, Box<Scripted>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// `data: [DONE]` then close.
    Done,
    /// Close without `[DONE]`.
    Close,
    /// Abort the connection (the body errors).
    Abort,
    /// Go silent and keep the connection open.
    Stall,
}

impl Scripted {
    pub fn json(body: Value) -> Self {
        Scripted::Json {
            status: 200,
            body,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn status(status: u16, body: Value) -> Self {
        Scripted::Json {
            status,
            body,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn delayed(delay: Duration, body: Value) -> Self {
        Scripted::Json {
            status: 200,
            body,
            delay,
            headers: Vec::new(),
        }
    }

    pub fn sse(events: Vec<Value>, end: StreamEnd) -> Self {
        Scripted::Sse {
            events: events.iter().map(Value::to_string).collect(),
            gap: Duration::from_millis(5),
            end,
        }
    }
}

impl Scripted {
    /// The plain reply this one stands for, for the `n`-th request (streamed or not).
    fn resolve(self, stream: bool, n: u64) -> Scripted {
        match self {
            Scripted::ByStream(streamed, plain) => {
                if stream { *streamed } else { *plain }.resolve(stream, n)
            }
            Scripted::Mix(choices) => {
                let total: u64 = choices.iter().map(|(w, _)| u64::from(*w)).sum();
                // splitmix64 of the request number: a fixed, well-spread sequence.
                let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                let mut pick = (z ^ (z >> 31)) % total.max(1);
                for (weight, reply) in choices {
                    if pick < u64::from(weight) {
                        return reply.resolve(stream, n);
                    }
                    pick -= u64::from(weight);
                }
                Scripted::Reset
            }
            other => other,
        }
    }
}

/// A chat.completion body with the given text and usage.
pub fn completion(model: &str, text: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text },
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

/// The chunks of a streamed completion of `words`, with a finish chunk and, when
/// `usage` is given, the final usage-only chunk OpenAI sends for `include_usage`.
pub fn chunks(model: &str, words: &[&str], usage: Option<(u64, u64)>) -> Vec<Value> {
    let mut out = vec![json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }]
    })];
    for w in words {
        out.push(json!({
            "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{ "index": 0, "delta": { "content": w }, "finish_reason": null }]
        }));
    }
    out.push(json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }]
    }));
    if let Some((p, c)) = usage {
        out.push(json!({
            "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [],
            "usage": { "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c }
        }));
    }
    out
}

/// What an upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct UpstreamState {
    queue: VecDeque<Scripted>,
    default: Option<Scripted>,
    received: Vec<Received>,
}

/// A scripted OpenAI-compatible server on 127.0.0.1:0.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<UpstreamState>>,
}

impl Upstream {
    /// Starts a server answering every request with `default` unless replies are queued.
    pub async fn start(default: Scripted) -> Upstream {
        let state = Arc::new(Mutex::new(UpstreamState {
            default: Some(default),
            ..UpstreamState::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler_state = state.clone();
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = handler_state.clone();
                async move { answer(state, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Upstream { addr, state }
    }

    /// `http://ADDR/v1`, the base URL a deployment points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a reply for the next request.
    pub fn push(&self, reply: Scripted) {
        self.state.lock().unwrap().queue.push_back(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }
}

async fn answer(
    state: Arc<Mutex<UpstreamState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (reply, stream, n) = {
        let mut s = state.lock().unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let stream = body["stream"] == true;
        s.received.push(Received {
            method,
            path: uri.path().to_owned(),
            headers,
            body,
        });
        let reply = s.queue.pop_front().or_else(|| s.default.clone());
        (reply, stream, s.received.len() as u64)
    };
    match reply.map(|r| r.resolve(stream, n)) {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Scripted::Json {
            status,
            body,
            delay,
            headers,
        }) => {
            tokio::time::sleep(delay).await;
            let mut response = (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body.to_string(),
            )
                .into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Some(Scripted::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(Scripted::Raw {
            status,
            content_type,
            body,
        }) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type)],
            body,
        )
            .into_response(),
        Some(Scripted::Reset) => {
            // A body that fails at once: hyper drops the connection before the head.
            let stream = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("reset"))
            });
            Body::from_stream(stream).into_response()
        }
        Some(Scripted::Mix(_) | Scripted::ByStream(..)) => unreachable!("resolved above"),
        Some(Scripted::Sse { events, gap, end }) => {
            let stream = async_stream(events, gap, end);
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

fn async_stream(
    events: Vec<String>,
    gap: Duration,
    end: StreamEnd,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let mut items: VecDeque<Option<String>> = events.into_iter().map(Some).collect();
    if end == StreamEnd::Done {
        items.push_back(Some("[DONE]".into()));
    }
    items.push_back(None);
    futures_util::stream::unfold(items, move |mut items| async move {
        let next = items.pop_front()?;
        tokio::time::sleep(gap).await;
        match next {
            Some(data) => Some((Ok(Bytes::from(format!("data: {data}\n\n"))), items)),
            None => match end {
                StreamEnd::Done | StreamEnd::Close => None,
                StreamEnd::Abort => Some((Err(std::io::Error::other("abort")), items)),
                StreamEnd::Stall => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    None
                }
            },
        }
    })
}

/// A URL where nothing listens: connections are refused.
pub async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

/// The standard test config (`tests/fixtures/gateway.toml`): one local deployment and
/// two frontier ones.
///
/// - pool `local` → `local-a`, falls back to pool `frontier`
/// - pool `frontier` → `frontier-a` (priced as gpt-4.1), then `frontier-b` (gpt-4.1-mini)
/// - rules: PII → local (any alias); coding → local; default → frontier
/// - aliases: `frontier`, `local`
pub fn standard_config(local: &str, frontier_a: &str, frontier_b: &str) -> String {
    include_str!("../fixtures/gateway.toml")
        .replace("@LOCAL_URL@", local)
        .replace("@FRONTIER_A_URL@", frontier_a)
        .replace("@FRONTIER_B_URL@", frontier_b)
}

/// A running gateway with its own ledger file.
pub struct Gateway {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    pub ledger_path: PathBuf,
    pub config_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    writer: Option<LedgerWriter>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Boots the gateway with `toml` written to a temp file (with a `[ledger]` section
    /// pointing at a temp database appended). Secrets: `ADMIN_KEY_ENV` holds [`ADMIN_KEY`].
    pub async fn start(toml: &str) -> Gateway {
        Self::start_with_ledger(toml, None).await
    }

    /// Like [`Gateway::start`], with `ledger` as the `[ledger]` section instead of a
    /// temp SQLite file.
    pub async fn start_with_ledger(toml: &str, ledger: Option<&str>) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let ledger_path = dir.path().join("ledger.db");
        let config_path = dir.path().join("routes.toml");
        match ledger {
            Some(section) => std::fs::write(&config_path, format!("{toml}\n{section}\n")).unwrap(),
            None => write_config(&config_path, &ledger_path, toml),
        }
        let env = test_env();
        let config = crossroads::config::load_with_env(&config_path, env.as_ref())
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let app = app::build(config, env).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crossroads::server::run(listener, app.router, async {
            let _ = stopped.await;
        }));
        Gateway {
            addr,
            client: reqwest::Client::new(),
            state: app.state,
            ledger_path,
            config_path,
            stop: Some(stop),
            server: Some(server),
            writer: Some(app.ledger_writer),
            _dir: dir,
        }
    }

    /// Replaces the config file (the ledger section is kept).
    pub fn rewrite_config(&self, toml: &str) {
        write_config(&self.config_path, &self.ledger_path, toml);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a JSON body to /v1/chat/completions.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// POSTs a chat body to /v1/route/explain, as the holder of `key` when given: the
    /// status and the JSON answer.
    pub async fn explain(&self, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self.client.post(self.url("/v1/route/explain")).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// POSTs raw bytes to /v1/chat/completions.
    pub async fn chat_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Waits until every record queued so far is in the ledger file.
    pub async fn flush_ledger(&self) {
        self.state.ledger.flush().await;
    }

    /// Ledger rows as JSON objects, oldest first.
    pub async fn ledger_rows(&self) -> Vec<Map<String, Value>> {
        self.flush_ledger().await;
        read_ledger(&self.ledger_path)
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// Stops serving, drains the ledger writer and returns every ledger row.
    pub async fn stop(mut self) -> Vec<Map<String, Value>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        if let Some(writer) = self.writer.take() {
            writer.shutdown().await;
        }
        if self.ledger_path.exists() {
            read_ledger(&self.ledger_path)
        } else {
            Vec::new()
        }
    }
}

/// The variable the test configs name in `server.admin_key_env`, and its value.
pub const ADMIN_KEY_ENV: &str = "CROSSROADS_TEST_ADMIN_KEY";
pub const ADMIN_KEY: &str = "admin-secret";

/// The variable the test configs name in `server.console_key_env`, and its value.
pub const CONSOLE_KEY_ENV: &str = "CROSSROADS_TEST_CONSOLE_KEY";
pub const CONSOLE_KEY: &str = "console-secret";

/// The variable test configs name for an Anthropic key, and its value.
pub const ANTHROPIC_KEY_ENV: &str = "CROSSROADS_TEST_ANTHROPIC_KEY";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-key";

fn test_env() -> crossroads::config::EnvLookup {
    std::sync::Arc::new(|name| match name {
        ADMIN_KEY_ENV => Some(ADMIN_KEY.to_owned()),
        CONSOLE_KEY_ENV => Some(CONSOLE_KEY.to_owned()),
        ANTHROPIC_KEY_ENV => Some(ANTHROPIC_KEY.to_owned()),
        _ => None,
    })
}

fn write_config(path: &Path, ledger: &Path, toml: &str) {
    let text = format!(
        "{toml}\n[ledger]\nurl = \"sqlite://{}\"\n",
        ledger.display()
    );
    // Write then rename, as deploy tools do, so a watcher never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `check` holds, polling every 20 ms, and fails naming `what` after 5 s:
/// for effects that land off the request path (records, settlements, counters), instead
/// of a sleep that guesses how long they take.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every ledger row of a SQLite ledger file.
pub fn read_ledger(path: &Path) -> Vec<Map<String, Value>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT * FROM requests ORDER BY ts_ms, rowid")
        .unwrap();
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    stmt.query_map([], |row| {
        let mut map = Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = match row.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(n) => json!(n),
                rusqlite::types::ValueRef::Real(f) => json!(f),
                rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                rusqlite::types::ValueRef::Blob(_) => Value::Null,
            };
            map.insert(name.clone(), value);
        }
        Ok(map)
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The hex SHA-256 of a key, as `[[keys]] sha256` takes it.
pub fn sha(key: &str) -> String {
    crossroads::auth::hex(&crossroads::auth::hash_key(key))
}

/// Runs the `crossroads` binary.
pub fn crossroads<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(args)
        .output()
        .unwrap()
}

/// The standard output of a command that must have succeeded.
pub fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A user message body for `model`.
pub fn user(model: &str, text: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

/// The error object of an OpenAI error response.
pub async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].is_string(),
        "not an OpenAI error: {body}"
    );
    (status, body["error"].clone())
}

/// Reads an SSE body of named events (Anthropic's, the Responses API's) into
/// (event, data) pairs.
pub async fn named_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            (name, data)
        })
        .collect()
}

/// Reads an SSE body into its `data:` payloads.
pub async fn sse_data(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").map(str::to_owned))
        })
        .collect()
}

/// Tokens of `text` in tiktoken's `encoding` (`o200k_base` or `cl100k_base`), straight
/// from the tokenizer library: what the gateway's counts must equal.
pub fn tiktoken(encoding: &str, text: &str) -> u64 {
    let bpe = match encoding {
        "o200k_base" => tiktoken_rs::o200k_base(),
        "cl100k_base" => tiktoken_rs::cl100k_base(),
        other => panic!("no encoding {other}"),
    }
    .unwrap();
    bpe.encode_ordinary(text).len() as u64
}

/// Prompt tokens of one-text messages as OpenAI's chat format frames them: the text,
/// three tokens a message and three to prime the reply.
pub fn tiktoken_prompt(encoding: &str, messages: &[&str]) -> u64 {
    messages.iter().map(|m| tiktoken(encoding, m)).sum::<u64>() + 3 * messages.len() as u64 + 3
}
