//! A fixed amount of classification work for instruction-level profiling, where
//! criterion's adaptive iteration counts get in the way:
//!
//! ```text
//! cargo build --release --example classify_profile
//! valgrind --tool=callgrind target/release/examples/classify_profile short 200
//! ```
//!
//! Arguments: `short` (the 500-token prompt of `benches/classify.rs`), `long` (8k
//! tokens) or the path of a JSONL file (its rows' `text`s joined into different
//! prompts of about 2,000 bytes, classified in turn), then the number of
//! classifications (0 measures loading alone; the difference between two runs divided
//! by the count is the cost of one). It prints the wall time per classification.

use std::path::Path;
use std::process::ExitCode;

use crossroads::classify::{Classifier, LinearClassifier, Prompt};

include!("../benches/common/prompts.rs");

/// Prompts of about 2,000 bytes, each made of consecutive `text`s of a JSONL file: a
/// stream of different prompts, whose weight rows are mostly not in the cache yet.
fn corpus(path: &Path) -> std::io::Result<Vec<String>> {
    let mut prompts: Vec<String> = Vec::new();
    for line in std::fs::read_to_string(path)?.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(line).map_err(std::io::Error::other)?;
        let Some(text) = row.get("text").and_then(|t| t.as_str()) else {
            continue;
        };
        match prompts.last_mut() {
            Some(prompt) if prompt.len() < 2_000 => prompt.push_str(text),
            _ => prompts.push(text.to_owned()),
        }
        if let Some(prompt) = prompts.last_mut() {
            prompt.push('\n');
        }
    }
    Ok(prompts)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "short".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let texts = match which.as_str() {
        "short" => vec![prompt_500_tokens()],
        "long" => vec![prompt_8k_tokens()],
        path => match corpus(Path::new(path)) {
            Ok(texts) if !texts.is_empty() => texts,
            Ok(_) => {
                eprintln!("{path}: no rows with a `text`");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("{path}: {e} (use short, long or a JSONL file)");
                return ExitCode::from(2);
            }
        },
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crossroads-linear.bin");
    let model = match LinearClassifier::load(&path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let mut difficulty = 0.0;
    let started = std::time::Instant::now();
    for text in texts.iter().cycle().take(count) {
        difficulty += model
            .classify(std::hint::black_box(&Prompt::user(text)))
            .difficulty;
    }
    let each = started.elapsed().as_secs_f64() / count.max(1) as f64;
    println!(
        "{count} classifications, {:.2} µs each, mean difficulty {:.4}",
        each * 1e6,
        difficulty / count.max(1) as f32
    );
    ExitCode::SUCCESS
}
