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
//! difference between two runs divided by the count is the cost of one).

use std::path::Path;
use std::process::ExitCode;

use crossroads::classify::{Classifier, LinearClassifier, Prompt};

/// The same text as `benches/classify.rs`.
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

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "short".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let text = match which.as_str() {
        "short" => prompt_500_tokens(),
        "long" => prompt_500_tokens().repeat(16),
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
    for _ in 0..count {
        difficulty += model
            .classify(std::hint::black_box(&Prompt::user(&text)))
            .difficulty;
    }
    println!(
        "{count} classifications, mean difficulty {:.4}",
        difficulty / count.max(1) as f32
    );
    ExitCode::SUCCESS
}
