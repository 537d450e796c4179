//! Criterion benches of the pure core on the request path: routing, request parsing,
//! the cache key and pricing (classification is in `benches/classify.rs`). Run:
//! `cargo bench --bench core`.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossroads::accounting::{Costing, Usage};
use crossroads::cache::CacheKey;
use crossroads::classify::Prompt;
use crossroads::config::Config;
use crossroads::request::Request;
use crossroads::route::{Condition, RouteInput, RouteTable};

/// About 500 tokens of a realistic coding question: prose, a code block, a stack trace.
/// About 8k tokens: the short prompt sixteen times.
fn prompt_8k_tokens() -> String {
    prompt_500_tokens().repeat(16)
}

fn prompt_500_tokens() -> String {
    let base = "I'm seeing a crash in our payment service when the retry queue fills up. \
        Here is the handler that drains it; the panic happens on the unwrap below when \
        the upstream returns a 503 and the body is empty. Can you explain why, and \
        propose a fix that keeps the retry semantics but never panics?\n\n```rust\n\
        async fn drain(queue: &mut VecDeque<Job>, client: &Client) -> Result<(), Error> {\n\
            while let Some(job) = queue.pop_front() {\n\
                let resp = client.post(&job.url).json(&job.body).send().await?;\n\
                let status = resp.status();\n\
                let body: Value = resp.json().await.unwrap();\n\
                if status.is_server_error() { queue.push_back(job); continue; }\n\
                record(&body)?;\n\
            }\n\
            Ok(())\n\
        }\n```\n\nthread 'tokio-runtime-worker' panicked at src/drain.rs:5:50: called \
        `Result::unwrap()` on an `Err` value: reqwest::Error { kind: Decode, source: \
        Error(\"EOF while parsing a value\", line: 1, column: 0) }\n\n";
    let mut text = String::new();
    while text.len() < 2_000 {
        text.push_str(base);
    }
    text.truncate(2_000);
    text
}

fn shipped_config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    match crossroads::config::load(&path) {
        Ok(config) => config,
        Err(e) => panic!("routes.toml: {e}"),
    }
}

fn route(c: &mut Criterion) {
    let config = shipped_config();
    let table: RouteTable = config.routes.clone();
    let classifier = config.classifier.as_ref();
    let text = prompt_500_tokens();
    let classification = classifier.classify(&Prompt::user(&text));
    let input = RouteInput {
        requested: crossroads::route::Requested::Auto,
        classification: &classification,
        headers: &crossroads::route::NoHeaders,
        key: None,
        team: None,
        budget_used: None,
    };
    let mut group = c.benchmark_group("route");
    group.bench_function("shipped_rules", |b| {
        b.iter(|| table.decide(black_box(&input)))
    });

    // 100 rules that do not match, then the default: the worst case of a long table.
    let mut long = table.clone();
    let last = long.rules.pop();
    let template = long.rules[2].clone();
    long.rules = (0..100)
        .map(|i| {
            let mut r = template.clone();
            r.id = format!("rule-{i}");
            // Before the token cap, where validation puts a minimum.
            let at = r
                .when
                .conditions
                .iter()
                .position(|c| matches!(c, Condition::MaxPromptTokens(_)))
                .unwrap_or(r.when.conditions.len());
            r.when
                .conditions
                .insert(at, Condition::MinPromptTokens(1_000_000));
            r
        })
        .chain(last)
        .collect();
    group.bench_function("100_rules", |b| b.iter(|| long.decide(black_box(&input))));
    group.finish();
}

/// A chat body: a system turn, a user turn of `prompt`, sampling and a tool (~2.3 KB
/// with the 500-token prompt).
fn chat_body(prompt: &str) -> String {
    serde_json::json!({
        "model": "auto",
        "messages": [
            { "role": "system", "content": "You are a careful senior engineer." },
            { "role": "user", "content": prompt }
        ],
        "temperature": 0.2,
        "stream": true,
        "tools": [{ "type": "function", "function": { "name": "search", "parameters": { "type": "object" } } }]
    })
    .to_string()
}

fn request(c: &mut Criterion) {
    let body = chat_body(&prompt_500_tokens());
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse", |b| {
        b.iter(|| Request::parse(black_box(body.as_bytes())))
    });
    let parsed = match Request::parse(body.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    };
    group.bench_function("upstream_body", |b| {
        b.iter(|| parsed.upstream_body(black_box("qwen"), None))
    });
    group.finish();
}

fn cache(c: &mut Criterion) {
    let models = ["gpt-4.1", "claude-sonnet-4-5", "gpt-4.1-mini"];
    let mut group = c.benchmark_group("cache");
    for (name, body) in [
        ("key", chat_body(&prompt_500_tokens())),
        ("key_long", chat_body(&prompt_8k_tokens())),
    ] {
        let parsed = match Request::parse(body.as_bytes()) {
            Ok(p) => p,
            Err(e) => panic!("{e:?}"),
        };
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                CacheKey::new(
                    None,
                    black_box("frontier"),
                    models,
                    None,
                    black_box(&parsed.body),
                )
            })
        });
    }
    group.finish();
}

fn accounting(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml");
    let config = match crossroads::config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let price = config.deployments[3].price;
    let usage = Usage {
        input: 1234,
        cached_input: 512,
        output: 321,
        reasoning: 64,
        ..Usage::default()
    };
    c.bench_function("accounting/cost", |b| {
        b.iter(|| Costing::of(black_box(&usage), &price, &config.reference.price))
    });
}

criterion_group!(benches, route, request, cache, accounting);
criterion_main!(benches);
