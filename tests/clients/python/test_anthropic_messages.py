"""The official Anthropic Python SDK against Crossroads' `/v1/messages`: a team that
points the Anthropic SDK (or a coding agent built on it) at the gateway gets
Messages back, streamed or not, with tools, from the real local model or the
scripted frontier upstream, priced in the ledger like the chat request it is.
"""

from __future__ import annotations

import anthropic
import pytest
from anthropic import Anthropic

from support import gpt41_cost_pusd, scripted_usage

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def claude(gateway_url: str) -> Anthropic:
    # The generated config does not require keys: a placeholder passes as anonymous.
    return Anthropic(base_url=gateway_url, api_key="unused", max_retries=0, timeout=180)


def test_a_message_from_the_frontier_upstream_is_exact(claude, ledger):
    text = "Name three primary colours, anthropic sdk"
    raw = claude.messages.with_raw_response.create(
        model="frontier", max_tokens=200, messages=[{"role": "user", "content": text}]
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == f"scripted reply: {text}"
    assert message.stop_reason == "end_turn"
    prompt, output = scripted_usage([{"role": "user", "content": text}], message.content[0].text)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, output)

    row = ledger.row(raw.headers["x-crossroads-request-id"])
    assert row["endpoint"] == "messages"
    assert row["deployment"] == "frontier-scripted"
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, output)
    assert row["cost_pusd"] == gpt41_cost_pusd(prompt, output)


def test_a_streamed_message_from_the_local_model(claude, ledger):
    with claude.messages.stream(
        model="local", max_tokens=24, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-crossroads-request-id"]
    assert text and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    row = ledger.row(request_id)
    assert row["endpoint"] == "messages" and row["stream"] == 1
    assert row["deployment"] == "local-smollm2" and row["status"] == 200
    assert row["output_tokens"] == final.usage.output_tokens
    assert row["cost_pusd"] == 0


def test_a_streamed_message_from_the_frontier_upstream_is_priced_exactly(claude, ledger):
    text = "Stream me something, anthropic sdk"
    with claude.messages.stream(
        model="frontier", max_tokens=200, messages=[{"role": "user", "content": text}]
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["x-crossroads-request-id"]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.content[0].text == f"scripted reply: {text}"
    prompt, output = scripted_usage([{"role": "user", "content": text}], final.content[0].text)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (prompt, output)
    assert ledger.row(request_id)["cost_pusd"] == gpt41_cost_pusd(prompt, output)


def test_tools_round_trip(claude, upstream_received):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = claude.messages.create(
        model="frontier", max_tokens=200, tools=[WEATHER_TOOL], messages=[question]
    )
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    sent = upstream_received()[-1]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]

    second = claude.messages.create(
        model="frontier",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"},
            ]},
        ],
    )
    assert second.content[0].text == "The tool answered: sunny, 21 C"
    sent = upstream_received()[-1]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}


def test_streamed_tool_use(claude):
    with claude.messages.stream(
        model="frontier",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Paris, streamed"}],
    ) as stream:
        final = stream.get_final_message()
    call = next(block for block in final.content if block.type == "tool_use")
    assert call.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_errors_are_the_sdks_own_exceptions(claude, gateway_url):
    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 404
    assert caught.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="frontier", max_tokens=10, messages=[])
    assert "messages" in caught.value.body["error"]["message"]

    stranger = Anthropic(base_url=gateway_url, api_key="ck-not-a-key-of-this-gateway",
                         max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        stranger.messages.create(
            model="frontier", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )

    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model="blocked", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
