"""The official Python SDK through Crossroads to the scripted frontier upstream.

The upstream is deterministic (tests/clients/scripted_upstream.py), so these
tests assert exact content, usage and cost: what the SDK parses must be what
the upstream sent, and the ledger must price exactly the usage it reported.
"""

from __future__ import annotations

import json

from support import gpt41_cost_pusd, scripted_usage

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_models_lists_auto_and_the_aliases(client):
    ids = {m.id for m in client.models.list()}
    assert {"auto", "local", "frontier", "blocked", "broken"} <= ids


def test_named_alias_with_raw_response_headers(client, ledger):
    messages = [{"role": "user", "content": "Name three primary colours, python raw"}]
    raw = client.chat.completions.with_raw_response.create(model="frontier", messages=messages)
    completion = raw.parse()

    assert completion.choices[0].message.content == f"scripted reply: {messages[0]['content']}"
    assert completion.choices[0].finish_reason == "stop"
    prompt, output = scripted_usage(messages, completion.choices[0].message.content)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, output)

    headers = raw.headers
    assert headers["x-crossroads-rule"] == "alias"
    assert headers["x-crossroads-pool"] == "frontier"
    assert headers["x-crossroads-deployment"] == "frontier-scripted"
    assert headers["x-crossroads-tier"] == "frontier"
    assert headers["x-crossroads-class"]
    cost = gpt41_cost_pusd(prompt, output)
    assert float(headers["x-crossroads-cost-usd"]) == cost / 1e12

    row = ledger.row(headers["x-crossroads-request-id"])
    assert row["requested_model"] == "frontier"
    assert row["deployment"] == "frontier-scripted"
    assert row["status"] == 200 and row["stream"] == 0 and row["usage_estimated"] == 0
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, output)
    assert row["cost_pusd"] == cost
    # The reference model is gpt-4.1 too: nothing saved, nothing lost.
    assert row["reference_cost_pusd"] == cost


def test_auto_routes_by_rules(client):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is a good name for a cat?"}]
    )
    assert raw.parse().choices[0].message.content.startswith("scripted reply: ")
    assert raw.headers["x-crossroads-rule"] == "default"
    assert raw.headers["x-crossroads-tier"] == "frontier"


def test_stream_without_include_usage_has_no_usage_chunk(client, ledger, upstream_received):
    messages = [{"role": "user", "content": "Stream me something, python no-usage"}]
    raw = client.chat.completions.with_raw_response.create(
        model="frontier", messages=messages, stream=True
    )
    chunks = list(raw.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"scripted reply: {messages[0]['content']}"
    assert all(c.usage is None for c in chunks), "a usage chunk the client did not ask for"
    assert all(c.choices for c in chunks), "an empty-choices (usage) chunk leaked"
    assert chunks[-1].choices[0].finish_reason == "stop"

    # The gateway asks the upstream for usage anyway, so it can price the stream
    # exactly, and strips that chunk before the client sees it.
    sent = [b for b in upstream_received() if b["messages"] == messages]
    assert sent and sent[-1]["stream_options"]["include_usage"] is True

    row = ledger.row(raw.headers["x-crossroads-request-id"])
    prompt, output = scripted_usage(messages, text)
    assert row["stream"] == 1 and row["usage_estimated"] == 0
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, output)
    assert row["cost_pusd"] == gpt41_cost_pusd(prompt, output)


def test_stream_with_include_usage_ends_with_the_usage_chunk(client, ledger):
    messages = [{"role": "user", "content": "Stream me something, python with usage"}]
    raw = client.chat.completions.with_raw_response.create(
        model="frontier", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())

    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    prompt, output = scripted_usage(messages, text)
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        prompt, output, prompt + output)

    row = ledger.row(raw.headers["x-crossroads-request-id"])
    assert (row["input_tokens"], row["output_tokens"], row["usage_estimated"]) == (prompt, output, 0)


def test_tool_call_round_trip(client, upstream_received):
    messages = [{"role": "user", "content": "What is the weather in Paris? (python)"}]
    first = client.chat.completions.create(
        model="frontier", messages=messages, tools=[WEATHER_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # The SDK's own message object goes back as the assistant turn.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"})
    second = client.chat.completions.create(
        model="frontier", messages=messages, tools=[WEATHER_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The tool answered: sunny, 21 C"

    # The tool call and its result reached the upstream as the SDK sent them.
    forwarded = upstream_received()[-1]["messages"]
    assert forwarded[1]["tool_calls"][0]["id"] == call.id
    assert forwarded[2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}


def test_streamed_tool_call(client):
    stream = client.chat.completions.create(
        model="frontier",
        messages=[{"role": "user", "content": "Weather in Paris, streamed (python)"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                name += delta.function.name or ""
                arguments += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")


def test_json_mode_passes_through(client, upstream_received):
    messages = [{"role": "user", "content": "Reply in JSON please (python)"}]
    completion = client.chat.completions.create(
        model="frontier", messages=messages, response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content)["json_mode"] is True
    sent = [b for b in upstream_received() if b["messages"] == messages]
    assert sent[-1]["response_format"] == {"type": "json_object"}
