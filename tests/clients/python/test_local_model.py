"""The official Python SDK through Crossroads to a real local model: SmolLM2-135M
served by llama.cpp (scripts/local-model.sh).

The model's words vary between identical requests, even at temperature 0, so
these tests never assert text: they assert that real tokens came back, and that
the gateway routed, counted and priced them as it should (local tier, price 0,
the model's own usage when it reports it, an estimate when it does not).
Generation is kept short: the model writes ~45 tokens/s on one thread.
"""

from __future__ import annotations

from support import GPT41_INPUT_PUSD, GPT41_OUTPUT_PUSD, metric

MAX_TOKENS = 24
PROMPT = [{"role": "user", "content": "Say hello and name one colour."}]


def assert_local_row(row: dict, stream: bool) -> None:
    assert row["tier"] == "local"
    assert row["deployment"] == "local-smollm2"
    assert row["upstream_model"] == "smollm2"
    assert row["status"] == 200
    assert row["stream"] == int(stream)
    assert row["output_tokens"] > 0
    assert row["cost_pusd"] == 0  # the local deployment's price is 0
    # Savings: what the same tokens would have cost on the reference (gpt-4.1).
    assert row["reference_cost_pusd"] == (
        row["input_tokens"] * GPT41_INPUT_PUSD + row["output_tokens"] * GPT41_OUTPUT_PUSD
    )


def test_non_stream_uses_the_models_usage(client, ledger, metrics):
    before = metrics()
    raw = client.chat.completions.with_raw_response.create(
        model="local", messages=PROMPT, max_tokens=MAX_TOKENS
    )
    completion = raw.parse()

    assert completion.choices[0].message.content.strip(), "no generated text"
    usage = completion.usage
    assert 0 < usage.completion_tokens <= MAX_TOKENS and usage.prompt_tokens > 0
    assert raw.headers["x-crossroads-tier"] == "local"
    assert raw.headers["x-crossroads-deployment"] == "local-smollm2"
    assert float(raw.headers["x-crossroads-cost-usd"]) == 0

    row = ledger.row(raw.headers["x-crossroads-request-id"])
    assert_local_row(row, stream=False)
    # llama.cpp reports usage on non-streamed replies: the ledger has exactly it.
    assert row["usage_estimated"] == 0
    assert (row["input_tokens"], row["output_tokens"]) == (
        usage.prompt_tokens, usage.completion_tokens)

    after = metrics()
    labels = {"deployment": "local-smollm2", "tier": "local", "status_class": "2xx"}
    assert metric(after, "crossroads_requests_total", **labels) == (
        metric(before, "crossroads_requests_total", **labels) + 1)
    assert metric(after, "crossroads_tokens_total", kind="output", tier="local") == (
        metric(before, "crossroads_tokens_total", kind="output", tier="local")
        + usage.completion_tokens)


def stream_local(client, **options):
    raw = client.chat.completions.with_raw_response.create(
        model="local", messages=PROMPT, max_tokens=MAX_TOKENS, stream=True, **options
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return raw.headers, chunks, text


def test_stream_is_counted_by_estimate(client, ledger):
    headers, chunks, text = stream_local(client)

    assert text.strip(), "no generated text"
    assert headers["x-crossroads-tier"] == "local"
    assert all(c.usage is None for c in chunks), "a usage chunk the client did not ask for"

    row = ledger.row(headers["x-crossroads-request-id"])
    assert_local_row(row, stream=True)
    # llama.cpp never reports usage in a stream (it ignores stream_options), so
    # Crossroads counts the tokens itself and says so.
    assert row["usage_estimated"] == 1
    assert row["input_tokens"] > 0


def test_stream_with_include_usage(client, ledger):
    headers, chunks, text = stream_local(client, stream_options={"include_usage": True})

    assert text.strip(), "no generated text"
    row = ledger.row(headers["x-crossroads-request-id"])
    assert_local_row(row, stream=True)
    assert row["usage_estimated"] == 1
    # The client asked for usage and the upstream sent none: at most one usage
    # chunk, last, and if the gateway sends its estimate it matches the ledger.
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) <= 1
    if with_usage:
        assert with_usage[0] is chunks[-1]
        assert (with_usage[0].usage.prompt_tokens, with_usage[0].usage.completion_tokens) == (
            row["input_tokens"], row["output_tokens"])


def test_auto_sends_coding_to_the_local_model(client, ledger):
    coding = [{"role": "user", "content": "Write a Rust function that reverses a string"}]
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=coding, max_tokens=MAX_TOKENS
    )
    assert raw.parse().choices[0].message.content.strip(), "no generated text"
    assert raw.headers["x-crossroads-class"] == "coding"
    assert raw.headers["x-crossroads-rule"] == "code-local"
    assert raw.headers["x-crossroads-tier"] == "local"
    assert_local_row(ledger.row(raw.headers["x-crossroads-request-id"]), stream=False)
