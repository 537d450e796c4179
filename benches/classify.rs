//! Criterion benches of the classifiers on the request path, PII scan included:
//! `classify/short` is a 500-token prompt, `classify/long` an 8k-token one.
//! Run: `cargo bench --bench classify`.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossroads::classify::{Classifier, HeuristicClassifier, LinearClassifier, Prompt};

include!("common/prompts.rs");

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
