//! End-to-end load benchmark: the same fast scripted upstream called directly (the
//! floor) and through `crossroads serve` with every stage on (classification, routing,
//! accounting, SQLite ledger, metrics), in one run, with `wrk` as the load generator.
//!
//! Run: `cargo bench --bench load` (needs `wrk`: `apt-get install wrk`).
//! Options (environment): LOAD_SECONDS (default 10), LOAD_CONNECTIONS (default "16,64"),
//! LOAD_LITELLM=1 adds LiteLLM's proxy (installed by scripts/bench-litellm.sh into its
//! own virtual environment) on the same upstream, at the same concurrencies.
//!
//! Reports requests/s, latency p50/p99, added latency over the floor, the gateway's CPU
//! time per request (its CPU seconds / requests served: the figure that survives a noisy
//! shared machine) and its peak RSS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::post;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32}}"#;

const REQUEST: &str = r#"{"model":"auto","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France? Answer in one sentence."}],"temperature":0.2,"max_tokens":64}"#;

/// The upstream: answers every POST with the same completion, on its own thread.
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
            let app = Router::new().route(
                "/v1/chat/completions",
                post(|| async {
                    ([("content-type", "application/json")], COMPLETION).into_response()
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    port
}

fn config(upstream: u16, port: u16, dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
config_poll_ms = 0

[accounting]
reference_model = "gpt-4.1"

[ledger]
url = "sqlite://{ledger}"

[[deployments]]
id = "bench-upstream"
provider = "openai_compatible"
base_url = "http://127.0.0.1:{upstream}/v1"
model = "gpt-4.1"
tier = "frontier"

[[pools]]
id = "frontier"
deployments = ["bench-upstream"]

[[rules]]
id = "pii-local"
when = {{ alias = ["*"], pii = true }}
pool = "frontier"

[[rules]]
id = "code"
when = {{ label = ["coding"], min_confidence = 0.6 }}
pool = "frontier"

[[rules]]
id = "default"
pool = "frontier"

[[prices]]
model = "gpt-4.1"
input = 2.00
cached_input = 0.50
output = 8.00
source = "https://openai.com/api/pricing"
as_of = "2026-06-21"
"#,
        ledger = dir.join("ledger.db").display()
    )
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

/// Runs wrk against `url` and parses its summary.
fn wrk(url: &str, connections: usize, seconds: u64, script: &std::path::Path) -> Run {
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
    if text.contains("Non-2xx") {
        panic!("errors during the run:\n{text}");
    }
    Run {
        requests,
        rps,
        p50_ms: ms("50%"),
        p99_ms: ms("99%"),
    }
}

fn main() {
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let connections: Vec<usize> = std::env::var("LOAD_CONNECTIONS")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("post.lua");
    std::fs::File::create(&script)
        .unwrap()
        .write_all(
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{REQUEST}'\n"
            )
            .as_bytes(),
        )
        .unwrap();

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
    let litellm = std::env::var("LOAD_LITELLM")
        .is_ok_and(|v| v == "1")
        .then(|| start_litellm(upstream));
    let port = free_port();
    let config_path = dir.path().join("routes.toml");
    std::fs::write(&config_path, config(upstream, port, dir.path())).unwrap();
    let mut gateway: Child = Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = gateway.id();
    std::thread::sleep(Duration::from_millis(500));

    let direct_url = format!("http://127.0.0.1:{upstream}/v1/chat/completions");
    let gateway_url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    println!(
        "| target | connections | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms | gateway CPU ms/request |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &c in &connections {
        // Warm both paths (connection pools, page cache) before measuring.
        wrk(&direct_url, c, 1, &script);
        wrk(&gateway_url, c, 1, &script);
        let direct = wrk(&direct_url, c, seconds, &script);
        let cpu_before = cpu_seconds(pid);
        let through = wrk(&gateway_url, c, seconds, &script);
        let cpu = cpu_seconds(pid) - cpu_before;
        println!(
            "| direct (floor) | {c} | {:.0} | {:.3} | {:.3} | | | |",
            direct.rps, direct.p50_ms, direct.p99_ms
        );
        println!(
            "| crossroads | {c} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.4} |",
            through.rps,
            through.p50_ms,
            through.p99_ms,
            through.p50_ms - direct.p50_ms,
            through.p99_ms - direct.p99_ms,
            cpu * 1000.0 / through.requests
        );
        if let Some((pid, url)) = &litellm {
            wrk(url, c, 2, &litellm_script);
            let (before, _) = tree_usage(*pid);
            let run = wrk(url, c, seconds, &litellm_script);
            let (after, _) = tree_usage(*pid);
            println!(
                "| litellm | {c} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.4} |",
                run.rps,
                run.p50_ms,
                run.p99_ms,
                run.p50_ms - direct.p50_ms,
                run.p99_ms - direct.p99_ms,
                (after - before) * 1000.0 / run.requests
            );
        }
    }
    println!("\ncrossroads peak RSS: {:.1} MB", peak_rss_mb(pid));
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
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = gateway.wait();
}
