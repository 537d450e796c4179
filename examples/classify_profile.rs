//! A fixed amount of classification work for instruction-level profiling, where
//! criterion's adaptive iteration counts get in the way:
//!
//! ```text
//! cargo build --release --example classify_profile
//! valgrind --tool=callgrind target/release/examples/classify_profile short 200
//! ```
//!
//! Arguments: `short` (the 500-token prompt of `benches/classify.rs`) or `long` (8k
//! tokens), then the number of classifications (0 measures loading alone; the
//! difference between two runs divided by the count is the cost of one). It prints the
//! wall time per classification.

use std::path::Path;
use std::process::ExitCode;

use crossroads::classify::{Classifier, LinearClassifier, Prompt};

include!("../benches/common/prompts.rs");

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "short".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let text = match which.as_str() {
        "short" => prompt_500_tokens(),
        "long" => prompt_8k_tokens(),
        other => {
            eprintln!("unknown prompt `{other}`: use short or long");
            return ExitCode::from(2);
        }
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
    for _ in 0..count {
        difficulty += model
            .classify(std::hint::black_box(&Prompt::user(&text)))
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
