// The classifier's benchmark prompts, shared by `benches/classify.rs` and
// `examples/classify_profile.rs` (which counts instructions on the same work) through
// `include!`.

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
