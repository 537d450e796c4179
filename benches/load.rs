//! End-to-end load benchmark: the same fast scripted upstream called directly (the
//! floor) and through `crossroads serve` with every stage on (classification, routing,
//! accounting, SQLite ledger, metrics), in one run, on the same machine.
//!
//! Run: `cargo bench --bench load`. Load generators: `wrk` (closed loop:
//! `apt-get install wrk`) and `oha` (fixed rate: `cargo install oha --locked`);
//! `scripts/load-tools.sh` installs whichever is missing.
//!
//! Sections, each measured against the floor in the same run:
//! 1. closed loop (wrk, `LOAD_CONNECTIONS` connections): requests/s, latency p50/p99,
//!    added latency, the gateway's CPU time per request (its CPU seconds / requests
//!    served: the figure that survives a noisy shared machine). Gateways: `crossroads`
//!    (heuristic classifier), `crossroads (shipped classifier)` (the learned linear
//!    model `routes.toml` ships), `crossroads (cache hit)` (cache on, the same request
//!    repeated; every answer is checked to be a hit), and LiteLLM's proxy with
//!    `LOAD_LITELLM=1` (installed by scripts/bench-litellm.sh into its own venv).
//! 2. fixed rate (oha `-q`, open loop, corrected for coordinated omission): added
//!    latency p50/p99 at `LOAD_RATE` requests/s (default 2000; 0 skips), in
//!    `LOAD_RATE_ROUNDS` interleaved rounds of floor and gateways (default 3), with
//!    the median round.
//! 3. streaming time to first token: scripts/ttft.py alternates streamed requests
//!    through the gateway and directly (`LOAD_TTFT_N` per side, default 200; 0 skips).
//!
//! Other options (environment): LOAD_SECONDS (default 10) per measured run.
//! Prints the machine, the date and the load average beside the tables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32}}"#;

/// The streamed form of [`COMPLETION`], sent at once: what is measured is the time
/// the gateway takes to pass the first content chunk on.
const STREAM: &str = concat!(
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1","choices":[{"index":0,"delta":{"content":"Paris is the capital of France."},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32}}"#,
    "\n\n",
    "data: [DONE]\n\n"
);

const REQUEST: &str = r#"{"model":"auto","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one sentence."}],"temperature":0.2,"max_tokens":64}"#;

/// [`REQUEST`] as the Responses API and Anthropic's Messages API ask it.
const RESPONSES_REQUEST: &str = r#"{"model":"auto","instructions":"You are a helpful assistant.","input":"What is the capital of France? Answer in one sentence.","temperature":0.2,"max_output_tokens":64}"#;
/// The question embedded (the embeddings row answers a 1,536-float vector).
const EMBEDDINGS_REQUEST: &str =
    r#"{"model":"embed","input":"What is the capital of France? Answer in one sentence."}"#;
/// The same as the official `openai` SDKs send it when the caller names no
/// `encoding_format`: they ask for base64 and decode it themselves.
const EMBEDDINGS_BASE64_REQUEST: &str = r#"{"model":"embed","input":"What is the capital of France? Answer in one sentence.","encoding_format":"base64"}"#;
const MESSAGES_REQUEST: &str = r#"{"model":"auto","system":"You are a helpful assistant.","messages":[{"role":"user","content":"What is the capital of France? Answer in one sentence."}],"temperature":0.2,"max_tokens":64}"#;

/// The gateway config the integration tests use too; every deployment points at the
/// bench upstream.
const TEMPLATE: &str = include_str!("../tests/fixtures/gateway.toml");

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The upstream: answers every POST with the same completion (or its stream, when the
/// request asks for one), on its own thread.
fn start_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let floats = embedding_list(false);
            let base64 = embedding_list(true);
            let app = Router::new()
                .route(
                    "/v1/chat/completions",
                    post(|body: Bytes| async move { answer(&body) }),
                )
                .route(
                    "/v1/embeddings",
                    post(move |body: Bytes| async move {
                        let asked = b"\"encoding_format\":\"base64\"";
                        let list = if body.windows(asked.len()).any(|w| w == asked) {
                            base64
                        } else {
                            floats
                        };
                        ([("content-type", "application/json")], list).into_response()
                    }),
                );
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

fn answer(body: &[u8]) -> Response {
    // Compact (the gateway's) or spaced (Python's json.dumps) serialization.
    let streamed = [&b"\"stream\":true"[..], b"\"stream\": true"]
        .iter()
        .any(|needle| body.windows(needle.len()).any(|w| w == *needle));
    if streamed {
        ([("content-type", "text/event-stream")], STREAM).into_response()
    } else {
        ([("content-type", "application/json")], COMPLETION).into_response()
    }
}

/// An embeddings list of one vector of `LOAD_EMBEDDING_DIMS` floats (default 1,536,
/// text-embedding-3-small's size): JSON numbers, or with `base64` the little-endian
/// f32 bytes in base64, as OpenAI answers `"encoding_format": "base64"`.
fn embedding_list(base64: bool) -> Bytes {
    let dims: usize = env_or("LOAD_EMBEDDING_DIMS", 1536);
    let vector: Vec<f32> = (0..dims)
        .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let embedding = if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
        format!("\"{}\"", base64_encode(&bytes))
    } else {
        let numbers: Vec<String> = vector.iter().map(|f| format!("{f:.8}")).collect();
        format!("[{}]", numbers.join(","))
    };
    Bytes::from(format!(
        r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":{embedding}}}],"model":"text-embedding-3-small","usage":{{"prompt_tokens":12,"total_tokens":12}}}}"#
    ))
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `crossroads serve` process, stopped (SIGTERM) when dropped.
struct Gateway {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Gateway {
    /// Starts the gateway on the shared template changed by `edit`, with its own ledger.
    fn start(name: &'static str, upstream: u16, dir: &Path, edit: Edit) -> Gateway {
        Gateway::start_under(name, upstream, dir, edit, &[], &[])
    }

    /// The same, with the gateway run by `wrapper` (e.g. valgrind and its options) and
    /// `env` set (e.g. `CROSSROADS__LEDGER__DURABILITY`).
    fn start_under(
        name: &'static str,
        upstream: u16,
        dir: &Path,
        edit: Edit,
        wrapper: &[String],
        env: &[(&str, &str)],
    ) -> Gateway {
        let url = format!("http://127.0.0.1:{upstream}/v1");
        let file = name.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
        let config = format!(
            "{}\n[ledger]\nurl = \"sqlite://{}\"\n",
            edit(
                TEMPLATE
                    .replace("@LOCAL_URL@", &url)
                    .replace("@FRONTIER_A_URL@", &url)
                    .replace("@FRONTIER_B_URL@", &url)
            ),
            dir.join(format!("{file}.db")).display()
        );
        let path = dir.join(format!("{file}.toml"));
        std::fs::write(&path, config).unwrap();
        let port = free_port();
        let bin = env!("CARGO_BIN_EXE_crossroads");
        let (program, before) = match wrapper.split_first() {
            Some((program, rest)) => (program.as_str(), [rest, &[bin.to_owned()]].concat()),
            None => (bin, Vec::new()),
        };
        let child = Command::new(program)
            .args(before)
            .args(["serve", "--config"])
            .arg(&path)
            .env("CROSSROADS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("CROSSROADS__SERVER__CONFIG_POLL_MS", "0")
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = Gateway { name, child, port };
        // Under valgrind, startup (the classifier model's load) takes seconds.
        for _ in 0..1200 {
            if http(port, "GET", "/readyz", &[], "").is_some_and(|r| r.status == 200) {
                return gateway;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{name} did not become ready");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.url())
    }

    /// The value of one metrics series, `0` when absent.
    fn metric(&self, series: &str) -> f64 {
        let r = http(self.port, "GET", "/metrics", &[], "").unwrap();
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

/// A one-shot HTTP/1.1 request to 127.0.0.1:`port`; `None` if it cannot connect.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(HttpResponse {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap();
    kb / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Run {
    requests: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// CPU seconds and summed peak RSS (MB) of a process and all its descendants.
fn tree_usage(root: u32) -> (f64, f64) {
    let stat_fields = |pid: u32| -> Vec<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rfind(')')
            .map(|i| {
                stat[i + 2..]
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>()
            && let Some(ppid) = stat_fields(pid).get(1).and_then(|p| p.parse::<u32>().ok())
        {
            parent.insert(pid, ppid);
        }
    }
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parent.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    let (mut cpu, mut rss) = (0.0, 0.0);
    for &pid in parent.keys().filter(|p| in_tree(**p)) {
        let f = stat_fields(pid);
        if f.len() > 12 {
            cpu +=
                (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        rss += status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0;
    }
    (cpu, rss)
}

const LITELLM_KEY: &str = "sk-crossroads-bench";

/// LiteLLM's proxy on the same upstream: (pid, chat URL).
fn start_litellm(upstream: u16) -> (u32, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-litellm.sh");
    assert!(
        Command::new(script)
            .arg("install")
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new(script)
        .args([
            "start",
            &format!("http://127.0.0.1:{upstream}/v1"),
            &free_port().to_string(),
        ])
        .env("LITELLM_MASTER_KEY", LITELLM_KEY)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "LiteLLM did not start");
    let line = String::from_utf8(out.stdout).unwrap();
    let (pid, url) = line.trim().split_once(' ').unwrap();
    (pid.parse().unwrap(), format!("{url}/v1/chat/completions"))
}

/// Fails with how to install `tool` unless it runs.
fn require(tool: &str, install: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!(
            "error: the load generator `{tool}` is not installed.\n  install it with: {install}\n  or run scripts/load-tools.sh, which installs every load generator this bench uses"
        );
        std::process::exit(2);
    }
}

/// Runs wrk against `url` and parses its summary.
fn wrk(url: &str, connections: usize, seconds: u64, script: &Path) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "30s",
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk is not installed: apt-get install wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = |label: &str| -> f64 {
        let value = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(label).map(str::trim))
            .unwrap_or_else(|| panic!("no {label} in wrk output:\n{text}"));
        if let Some(v) = value.strip_suffix("us") {
            v.parse::<f64>().unwrap() / 1000.0
        } else if let Some(v) = value.strip_suffix("ms") {
            v.parse().unwrap()
        } else if let Some(v) = value.strip_suffix('s') {
            v.parse::<f64>().unwrap() * 1000.0
        } else {
            panic!("unknown unit in {value}")
        }
    };
    let requests = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse::<f64>().unwrap())
        })
        .unwrap();
    let rps = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Requests/sec:")
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap();
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        panic!("errors during the run:\n{text}");
    }
    Run {
        requests,
        rps,
        p50_ms: ms("50%"),
        p99_ms: ms("99%"),
    }
}

/// Runs oha at a fixed `rate` against `url` (open loop: latency counted from when each
/// request was due, not when it was sent) and parses its JSON summary.
fn oha(url: &str, rate: u32, seconds: u64) -> Run {
    let out = Command::new("oha")
        .args([
            "-z",
            &format!("{seconds}s"),
            "-q",
            &rate.to_string(),
            "-c",
            "32",
            "--latency-correction",
            // Requests due before the end are finished, not counted as aborted.
            "--wait-ongoing-requests-after-deadline",
            "--no-tui",
            "--output-format",
            "json",
            "-m",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            REQUEST,
        ])
        .arg(url)
        .output()
        .expect("oha is not installed: cargo install oha --locked");
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "oha printed no JSON ({e}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let codes = &json["statusCodeDistribution"];
    let ok = codes["200"].as_f64().unwrap_or(0.0);
    let all: f64 = codes
        .as_object()
        .map(|m| m.values().filter_map(serde_json::Value::as_f64).sum())
        .unwrap_or(0.0);
    if ok == 0.0
        || all != ok
        || json["errorDistribution"]
            .as_object()
            .is_some_and(|e| !e.is_empty())
    {
        panic!("errors during the fixed-rate run:\n{text}");
    }
    let seconds_at = |p: &str| json["latencyPercentiles"][p].as_f64().unwrap() * 1000.0;
    Run {
        requests: ok,
        rps: json["summary"]["requestsPerSec"].as_f64().unwrap(),
        p50_ms: seconds_at("p50"),
        p99_ms: seconds_at("p99"),
    }
}

/// Sends the bench request until the cache answers it, so the measured run sees hits only.
fn warm_cache(gateway: &Gateway) {
    for _ in 0..100 {
        let r = http(gateway.port, "POST", "/v1/chat/completions", &[], REQUEST).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        if r.head.contains("x-crossroads-cache: hit") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the cache never answered the repeated request");
}

/// One table row: `load` is the connections or the offered rate; the added latency is
/// over `floor`, the CPU time (seconds, over the run) is per request served.
fn row(name: &str, load: &str, run: &Run, floor: Option<&Run>, cpu: Option<f64>) {
    let added = floor.map_or_else(
        || " | ".to_owned(),
        |f| {
            format!(
                "{:.3} | {:.3}",
                run.p50_ms - f.p50_ms,
                run.p99_ms - f.p99_ms
            )
        },
    );
    let cpu = cpu.map_or_else(String::new, |c| format!("{:.4}", c * 1000.0 / run.requests));
    println!(
        "| {name} | {load} | {:.0} | {:.3} | {:.3} | {added} | {cpu} |",
        run.rps, run.p50_ms, run.p99_ms
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `LOAD_PROFILE=1`: counts the instructions the gateway spends per non-streaming
/// request under callgrind (stable on a noisy machine), with the heuristic and with the
/// shipped classifier, and writes `callgrind_annotate --inclusive=yes` reports to
/// `target/`. `LOAD_PROFILE=apis`: the same for the same question through each inbound
/// API (heuristic classifier). `LOAD_PROFILE_ONLY` (comma-separated row names) keeps
/// some rows only.
fn profile(upstream: u16, dir: &Path, script: &Path, seconds: u64, apis: bool) {
    require("valgrind", "apt-get install valgrind");
    let chat = "/v1/chat/completions";
    let targets: Vec<(&str, Edit, &str, PathBuf)> = if apis {
        vec![
            ("chat", with_embeddings as Edit, chat, script.to_owned()),
            (
                "responses",
                with_embeddings,
                "/v1/responses",
                lua(dir, "responses.lua", RESPONSES_REQUEST),
            ),
            (
                "messages",
                with_embeddings,
                "/v1/messages",
                lua(dir, "messages.lua", MESSAGES_REQUEST),
            ),
            (
                "embeddings",
                with_embeddings,
                "/v1/embeddings",
                lua(dir, "embeddings.lua", EMBEDDINGS_REQUEST),
            ),
            (
                "embeddings-base64",
                with_embeddings,
                "/v1/embeddings",
                lua(dir, "embeddings-base64.lua", EMBEDDINGS_BASE64_REQUEST),
            ),
        ]
    } else {
        vec![
            ("crossroads", as_is as Edit, chat, script.to_owned()),
            (
                "crossroads (shipped classifier)",
                shipped_classifier,
                chat,
                script.to_owned(),
            ),
        ]
    };
    // `LOAD_PROFILE_ONLY=chat,responses`: only these rows.
    let only = std::env::var("LOAD_PROFILE_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    for (name, edit, path, script) in targets.into_iter().filter(|t| wanted(t.0)) {
        let script = script.as_path();
        let file = name.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
        let out = PathBuf::from(ROOT).join(format!("target/callgrind.{file}.out"));
        let wrapper = [
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            "--instr-atstart=no".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let gateway = Gateway::start_under(name, upstream, dir, edit, &wrapper, &[]);
        let url = format!("{}{path}", gateway.url());
        wrk(&url, 2, 2, script);
        let control = |on: &str| {
            let status = Command::new("callgrind_control")
                .args(["-i", on, &gateway.pid().to_string()])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "callgrind_control -i {on} failed");
        };
        control("on");
        let run = wrk(&url, 2, seconds, script);
        control("off");
        drop(gateway);
        let report = PathBuf::from(ROOT).join(format!("target/callgrind.{file}.txt"));
        let annotated = Command::new("callgrind_annotate")
            .args(["--inclusive=yes", "--threshold=99"])
            .arg(&out)
            .output()
            .unwrap();
        std::fs::write(&report, &annotated.stdout).unwrap();
        let text = String::from_utf8_lossy(&annotated.stdout);
        let total: f64 = text
            .lines()
            .find(|l| l.contains("PROGRAM TOTALS"))
            .and_then(|l| l.split_whitespace().next())
            .map(|n| n.replace(',', "").parse().unwrap())
            .unwrap_or_else(|| panic!("no PROGRAM TOTALS in {}", report.display()));
        println!(
            "\n{name}: {:.0} requests, {:.0} instructions per request; inclusive report: {}",
            run.requests,
            total / run.requests,
            report.display()
        );
        for line in text
            .lines()
            .skip_while(|l| !l.contains("file:function"))
            .skip(2)
            .take(40)
        {
            println!("{line}");
        }
    }
}

/// A wrk script that POSTs `body` as JSON.
fn lua(dir: &Path, name: &str, body: &str) -> PathBuf {
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{body}'\n"
        ),
    )
    .unwrap();
    script
}

/// A change to the gateway config template.
type Edit = fn(String) -> String;

fn as_is(config: String) -> String {
    config
}

/// The template plus an embeddings deployment on the same upstream, behind the alias
/// `embed`, for the inbound API rows.
fn with_embeddings(config: String) -> String {
    let url = config
        .lines()
        .find_map(|l| l.strip_prefix("base_url = "))
        .unwrap_or("\"http://127.0.0.1:9/v1\"")
        .to_owned();
    config
        + &format!(
            "\n[[deployments]]\nid = \"embed-a\"\nprovider = \"openai_compatible\"\n\
             api = \"embeddings\"\nbase_url = {url}\nmodel = \"text-embedding-3-small\"\n\
             tier = \"frontier\"\nprice = {{ input = 0.02, output = 0 }}\n\n\
             [[pools]]\nid = \"embed\"\ndeployments = [\"embed-a\"]\n\n\
             [[aliases]]\nname = \"embed\"\npool = \"embed\"\n"
        )
}

/// The shipped `routes.toml`'s classifier, the learned linear model, whose task head
/// the code rule matches as the shipped rule does.
fn shipped_classifier(config: String) -> String {
    format!(
        "{}\n[classifier]\nkind = \"linear\"\nmodel = \"{ROOT}/models/crossroads-linear.bin\"\n",
        config.replace(
            "label = [\"coding\"], min_confidence = 0.5",
            "task = [\"coding\"], max_prompt_tokens = 12000"
        )
    )
}

/// The memory cache on, as `[cache]`'s defaults have it.
fn cache_on(config: String) -> String {
    format!("{config}\n[cache]\nbackend = \"memory\"\n")
}

fn main() {
    let seconds: u64 = env_or("LOAD_SECONDS", 10);
    let connections: Vec<usize> = std::env::var("LOAD_CONNECTIONS")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let rate: u32 = env_or("LOAD_RATE", 2000);
    let profiling = std::env::var("LOAD_PROFILE").is_ok_and(|v| v == "1" || v == "apis");
    let ttft_n: u32 = env_or("LOAD_TTFT_N", 200);
    require("wrk", "apt-get install wrk");
    if rate > 0 && !profiling {
        require(
            "oha",
            "cargo install oha --locked   (or LOAD_RATE=0 to skip the fixed-rate run)",
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let script = lua(dir.path(), "post.lua", REQUEST);
    let litellm_script = dir.path().join("post-litellm.lua");
    std::fs::write(
        &litellm_script,
        format!(
            "{}wrk.headers[\"Authorization\"] = \"Bearer {LITELLM_KEY}\"\n",
            std::fs::read_to_string(&script).unwrap()
        ),
    )
    .unwrap();

    let upstream = start_upstream();
    if profiling {
        let apis = std::env::var("LOAD_PROFILE").is_ok_and(|v| v == "apis");
        profile(upstream, dir.path(), &script, seconds, apis);
        return;
    }
    let litellm = std::env::var("LOAD_LITELLM")
        .is_ok_and(|v| v == "1")
        .then(|| start_litellm(upstream));
    let plain = Gateway::start("crossroads", upstream, dir.path(), with_embeddings);
    let shipped = Gateway::start(
        "crossroads (shipped classifier)",
        upstream,
        dir.path(),
        shipped_classifier,
    );
    let cached = Gateway::start("crossroads (cache hit)", upstream, dir.path(), cache_on);
    warm_cache(&cached);
    // What the default `durability = "commit"` costs: the same gateway, records batched.
    let batched = Gateway::start_under(
        "crossroads (ledger batched)",
        upstream,
        dir.path(),
        as_is,
        &[],
        &[("CROSSROADS__LEDGER__DURABILITY", "batched")],
    );
    let gateways = [&plain, &batched, &shipped, &cached];

    println!("machine: {}; {}", machine(), utc_now());
    println!(
        "gateway: {} (every stage on: classification with PII scan, rules, accounting, SQLite ledger, metrics)",
        env!("CARGO_BIN_EXE_crossroads")
    );
    println!("\n## Closed loop (wrk -t2, {seconds} s per run)\n");
    println!("load average before: {}\n", load_average());
    println!(
        "| target | connections | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU ms/request |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let direct_url = format!("http://127.0.0.1:{upstream}/v1/chat/completions");
    for &c in &connections {
        // Warm every path (connection pools, page cache) before measuring.
        wrk(&direct_url, c, 1, &script);
        for g in gateways {
            wrk(&g.chat_url(), c, 1, &script);
        }
        let direct = wrk(&direct_url, c, seconds, &script);
        let load = c.to_string();
        row("direct (floor)", &load, &direct, None, None);
        for g in gateways {
            let hits = "crossroads_cache_requests_total{result=\"hit\"}";
            let misses = "crossroads_cache_requests_total{result=\"miss\"}";
            let (hits_before, misses_before) = (g.metric(hits), g.metric(misses));
            let cpu_before = cpu_seconds(g.pid());
            let run = wrk(&g.chat_url(), c, seconds, &script);
            let cpu = cpu_seconds(g.pid()) - cpu_before;
            if std::ptr::eq(g, &cached) {
                // Every request of the run was answered from the cache.
                let (hit, missed) = (
                    g.metric(hits) - hits_before,
                    g.metric(misses) - misses_before,
                );
                assert!(
                    missed == 0.0 && hit >= run.requests,
                    "cache-hit run: {hit} hits, {missed} misses for {} requests",
                    run.requests
                );
            }
            row(g.name, &load, &run, Some(&direct), Some(cpu));
        }
        if let Some((pid, url)) = &litellm {
            wrk(url, c, 2, &litellm_script);
            let (before, _) = tree_usage(*pid);
            let run = wrk(url, c, seconds, &litellm_script);
            let (after, _) = tree_usage(*pid);
            row("litellm", &load, &run, Some(&direct), Some(after - before));
        }
    }
    println!("\nload average after: {}", load_average());

    // The same question through each inbound API of one gateway (heuristic
    // classifier), interleaved: what each front-end's translation adds.
    let rounds: usize = env_or("LOAD_API_ROUNDS", 2).max(1);
    println!(
        "\n## Inbound APIs (wrk, 16 connections, {seconds} s per run, {rounds} interleaved rounds)\n"
    );
    println!("| endpoint | round | requests/s | p50 ms | p99 ms | CPU ms/request |");
    println!("|---|---|---|---|---|---|");
    // (row, path, script): the embeddings row as floats, and as the SDKs ask for it.
    let apis = [
        (
            "/v1/chat/completions",
            "/v1/chat/completions",
            script.clone(),
        ),
        (
            "/v1/responses",
            "/v1/responses",
            lua(dir.path(), "responses.lua", RESPONSES_REQUEST),
        ),
        (
            "/v1/messages",
            "/v1/messages",
            lua(dir.path(), "messages.lua", MESSAGES_REQUEST),
        ),
        (
            "/v1/embeddings (floats)",
            "/v1/embeddings",
            lua(dir.path(), "embeddings.lua", EMBEDDINGS_REQUEST),
        ),
        (
            "/v1/embeddings (base64)",
            "/v1/embeddings",
            lua(
                dir.path(),
                "embeddings-base64.lua",
                EMBEDDINGS_BASE64_REQUEST,
            ),
        ),
    ];
    for (_, path, api_script) in &apis {
        wrk(&format!("{}{path}", plain.url()), 16, 1, api_script);
    }
    for round in 1..=rounds {
        for (row, path, api_script) in &apis {
            let cpu_before = cpu_seconds(plain.pid());
            let run = wrk(&format!("{}{path}", plain.url()), 16, seconds, api_script);
            let cpu = cpu_seconds(plain.pid()) - cpu_before;
            println!(
                "| {row} | {round} | {:.0} | {:.3} | {:.3} | {:.4} |",
                run.rps,
                run.p50_ms,
                run.p99_ms,
                cpu * 1000.0 / run.requests
            );
        }
    }

    if rate > 0 {
        // The tail at a fixed rate moves with whatever else the 2 cores do, so the
        // floor and the gateways are measured in interleaved rounds, each gateway
        // against its own round's floor, and the summary is the median round.
        let rounds: usize = env_or("LOAD_RATE_ROUNDS", 3).max(1);
        println!(
            "\n## Fixed rate (oha -q {rate} -c 32 --latency-correction, {seconds} s per run, {rounds} interleaved rounds)\n"
        );
        println!("load average before: {}\n", load_average());
        println!(
            "| target | offered req/s | achieved req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU ms/request |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        oha(&direct_url, rate, 1);
        for g in [&plain, &shipped] {
            oha(&g.chat_url(), rate, 1);
        }
        let load = rate.to_string();
        let mut added: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for round in 1..=rounds {
            let direct = oha(&direct_url, rate, seconds);
            row(
                &format!("direct (floor), round {round}"),
                &load,
                &direct,
                None,
                None,
            );
            for (i, g) in [&plain, &shipped].into_iter().enumerate() {
                let cpu_before = cpu_seconds(g.pid());
                let run = oha(&g.chat_url(), rate, seconds);
                let cpu = cpu_seconds(g.pid()) - cpu_before;
                row(
                    &format!("{}, round {round}", g.name),
                    &load,
                    &run,
                    Some(&direct),
                    Some(cpu),
                );
                added[i].push((run.p50_ms - direct.p50_ms, run.p99_ms - direct.p99_ms));
            }
        }
        println!("\nload average after: {}", load_average());
        println!("\nAdded latency, median of the {rounds} rounds:\n");
        println!("| target | added p50 ms | added p99 ms |");
        println!("|---|---|---|");
        for (g, added) in [&plain, &shipped].into_iter().zip(&added) {
            let median = |f: fn(&(f64, f64)) -> f64| {
                let mut v: Vec<f64> = added.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "| {} | {:.3} | {:.3} |",
                g.name,
                median(|a| a.0),
                median(|a| a.1)
            );
        }
    }

    if ttft_n > 0 {
        println!(
            "\n## Streaming time to first token (scripts/ttft.py, {ttft_n} requests per side)\n"
        );
        println!("load average before: {}", load_average());
        let status = Command::new("python3")
            .arg(PathBuf::from(ROOT).join("scripts/ttft.py"))
            .args(["--gateway", &plain.url()])
            .args(["--scripted", &format!("http://127.0.0.1:{upstream}")])
            .args(["-n", &ttft_n.to_string(), "--warmup", "20", "--markdown"])
            .status()
            .expect("python3 is needed for the streaming run (LOAD_TTFT_N=0 skips it)");
        assert!(status.success(), "scripts/ttft.py failed");
        println!("\nload average after: {}", load_average());
    }

    println!();
    for g in gateways {
        println!("{} peak RSS: {:.1} MB", g.name, peak_rss_mb(g.pid()));
    }
    if let Some((litellm_pid, _)) = litellm {
        println!(
            "litellm peak RSS: {:.1} MB (summed over its processes)",
            tree_usage(litellm_pid).1
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-litellm.sh");
        let _ = Command::new(script)
            .args(["stop", &litellm_pid.to_string()])
            .status();
    }
}
