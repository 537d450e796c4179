//! Criterion benches of the classifiers on the request path, PII scan included:
//! `classify/short` is a 500-token prompt, `classify/long` an 8k-token one.
//! Run: `cargo bench --bench classify`.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossroads::classify::{Classifier, HeuristicClassifier, LinearClassifier, Prompt};

/// About 500 tokens (2,000 characters) of a realistic question: prose, a code block, a
/// stack trace, and a few sentences of context.
fn prompt_500_tokens() -> String {
    let base = "I'm seeing a crash in our payment service when the retry queue fills up. \
        Here is the handler that drains it; the panic happens on the unwrap below when \
        the upstream returns a 503 and the body is empty. Can you explain why, and \
        propose a fix that keeps the retry semantics but never panics?\n\n```rust\n\
        async fn drain(queue: &mut VecDeque<Job>, client: &Client) -> Result<(), Error> {\n\
            while let Some(job) = queue.pop_front() {\n\
                let resp = client.post(&job.url).json(&job.body).send().await?;\n\
                let body: Value = resp.json().await.unwrap();\n\
                record(&body)?;\n\
            }\n\
            Ok(())\n\
        }\n```\n\nthread 'tokio-runtime-worker' panicked at src/drain.rs:5:50: called \
        `Result::unwrap()` on an `Err` value: reqwest::Error { kind: Decode }\n\n\
        We run this on three replicas behind a load balancer, and the queue is shared \
        through Redis. The failure started after we raised the retry limit from three to \
        ten, which makes me think the backoff interacts badly with the upstream's own \
        rate limiting. ";
    let mut text = String::new();
    while text.len() < 2_000 {
        text.push_str(base);
    }
    text.truncate(2_000);
    text
}

/// About 8,000 tokens: a long document pasted with a question.
fn prompt_8k_tokens() -> String {
    prompt_500_tokens().repeat(16)
}

fn shipped_model() -> LinearClassifier {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossroads-linear.bin");
    let started = Instant::now();
    let model = match LinearClassifier::load(&path) {
        Ok(m) => m,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    eprintln!("loaded {} in {:?}", path.display(), started.elapsed());
    model
}

fn classify(c: &mut Criterion) {
    let linear = shipped_model();
    let heuristic = HeuristicClassifier::default();
    let mut group = c.benchmark_group("classify");
    for (name, text) in [("short", prompt_500_tokens()), ("long", prompt_8k_tokens())] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| linear.classify(black_box(&Prompt::user(&text))))
        });
        group.bench_function(format!("{name}_heuristic"), |b| {
            b.iter(|| heuristic.classify(black_box(&Prompt::user(&text))))
        });
    }
    group.finish();
}

fn load(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossroads-linear.bin");
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    group.bench_function("load", |b| {
        b.iter(|| LinearClassifier::load(black_box(&path)))
    });
    group.finish();
}

criterion_group!(benches, classify, load);
criterion_main!(benches);
