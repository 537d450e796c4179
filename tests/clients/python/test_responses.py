"""The official OpenAI Python SDK's Responses API (`client.responses`) against
Crossroads' `/v1/responses`: text, streaming with the typed events, function tools
and their outputs, structured output, from the real local model and the scripted
frontier upstream, priced in the ledger like the chat request it is.
"""

from __future__ import annotations

import openai
import pytest
from pydantic import BaseModel

from support import gpt41_cost_pusd, scripted_usage

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


class City(BaseModel):
    name: str
    population: int


def test_a_response_from_the_frontier_upstream_is_exact(client, ledger):
    text = "Name three primary colours, responses api"
    raw = client.responses.with_raw_response.create(model="frontier", input=text)
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == f"scripted reply: {text}"
    prompt, output = scripted_usage([{"role": "user", "content": text}], response.output_text)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (prompt, output)
    row = ledger.row(raw.headers["x-crossroads-request-id"])
    assert row["endpoint"] == "responses" and row["deployment"] == "frontier-scripted"
    assert row["cost_pusd"] == gpt41_cost_pusd(prompt, output)


def test_a_response_from_the_local_model(client, ledger):
    raw = client.responses.with_raw_response.create(
        model="local", instructions="Answer in one short sentence.", input="Say hello.",
        max_output_tokens=24,
    )
    response = raw.parse()
    assert response.output_text
    assert response.status in ("completed", "incomplete")
    row = ledger.row(raw.headers["x-crossroads-request-id"])
    assert row["endpoint"] == "responses" and row["deployment"] == "local-smollm2"
    assert row["output_tokens"] == response.usage.output_tokens
    assert row["cost_pusd"] == 0


def test_a_streamed_response_has_the_typed_events(client, ledger):
    text = "Stream me something, responses api"
    with client.responses.stream(model="frontier", input=text) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == f"scripted reply: {text}"
    prompt, output = scripted_usage([{"role": "user", "content": text}], final.output_text)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (prompt, output)


def test_a_streamed_response_from_the_local_model(client):
    events = list(client.responses.create(model="local", input="Count to three.",
                                          max_output_tokens=24, stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    last = events[-1]
    # Cut at max_output_tokens, a response ends `incomplete`, as OpenAI's do.
    assert last.type in ("response.completed", "response.incomplete")
    assert deltas and last.response.output[0].content[0].text == deltas
    assert last.response.usage.output_tokens > 0


def test_function_tools_round_trip(client, upstream_received):
    first = client.responses.create(
        model="frontier", input="What is the weather in Paris?", tools=[WEATHER_TOOL]
    )
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and call.arguments == '{"city":"Paris"}'
    sent = upstream_received()[-1]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER_TOOL["parameters"]

    second = client.responses.create(
        model="frontier",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
    )
    assert second.output_text == "The tool answered: sunny, 21 C"
    assert upstream_received()[-1]["messages"][-1] == {
        "role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"}


def test_structured_output_parses_into_the_model(client, upstream_received):
    parsed = client.responses.parse(model="frontier", input="The largest city in France",
                                    text_format=City)
    assert parsed.output_parsed == City(name="Paris", population=1)
    sent = upstream_received()[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "City"


def test_state_the_gateway_does_not_keep_is_refused(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="frontier", input="again", previous_response_id="resp_1")
    assert caught.value.param == "previous_response_id"
