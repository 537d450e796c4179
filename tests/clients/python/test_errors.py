"""Crossroads' errors as the official Python SDK sees them: the SDK must raise its
own exception class for each status, carrying the message Crossroads wrote.
"""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

HELLO = [{"role": "user", "content": "hello"}]


def test_unknown_virtual_key_401(gateway_url):
    # The generated config does not require keys (other tests send a placeholder),
    # but a key in Crossroads' own `ck-` format that it does not know is refused.
    stranger = OpenAI(base_url=f"{gateway_url}/v1", api_key="ck-not-a-key-of-this-gateway",
                      max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.chat.completions.create(model="frontier", messages=HELLO)
    error = caught.value
    assert error.status_code == 401
    assert error.code == "invalid_api_key"
    assert error.body["message"] == "the API key is invalid or revoked"


def test_bad_request_400(client, ledger):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=[])
    error = caught.value
    assert error.status_code == 400
    assert error.body["message"] == "`messages` must not be empty"
    assert error.param == "messages"
    assert "`messages` must not be empty" in str(error)
    assert ledger.row(error.response.headers["x-crossroads-request-id"])["status"] == 400


def test_unknown_model_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert "no-such-model" in error.body["message"]


def test_rule_rejection_429(client, ledger):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="blocked", messages=HELLO)
    error = caught.value
    assert error.status_code == 429
    assert error.body["message"] == "the blocked alias is rejected by the test config"
    row = ledger.row(error.response.headers["x-crossroads-request-id"])
    assert (row["status"], row["rule"], row["cost_pusd"]) == (429, "blocked", 0)


def test_streamed_rule_rejection_429(client):
    # A stream that is refused before it starts is a plain HTTP error, not SSE.
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="blocked", messages=HELLO, stream=True)
    assert caught.value.body["message"] == "the blocked alias is rejected by the test config"


def test_unreachable_upstream_502(client, ledger):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="broken", messages=HELLO)
    error = caught.value
    assert isinstance(error, openai.InternalServerError)  # the SDK's class for every 5xx
    assert error.status_code == 502
    # Crossroads names the deployment it tried, never its URL.
    assert "broken" in error.body["message"]
    assert "127.0.0.1" not in error.body["message"]
    row = ledger.row(error.response.headers["x-crossroads-request-id"])
    assert (row["status"], row["deployment"]) == (502, "broken")


def test_streamed_unreachable_upstream_502(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="broken", messages=HELLO, stream=True)
    assert caught.value.status_code == 502
