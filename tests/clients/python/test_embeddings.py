"""POST /v1/embeddings with the official Python SDK, through Crossroads, to a real
local embeddings server: SmolLM2-135M on llama.cpp in embeddings mode
(scripts/local-model.sh start-embeddings), behind the alias `embed`.

The vectors must be the ones the model server returns for the same input, and the
request must be priced from the server's own usage into the ledger.
"""

from __future__ import annotations

import json
import math
import os
import urllib.request

import openai
import pytest

from support import metric

# The generated config prices the local embeddings deployment at $0.10 per 1M input
# tokens: 100,000 pico-USD a token.
EMBED_INPUT_PUSD = 100_000
TEXTS = ["The cat sat on the mat.", "Quarterly revenue grew by twelve percent."]


def direct(texts: list[str]) -> dict:
    """What the embeddings server answers for `texts` when asked directly."""
    url = os.environ["CROSSROADS_LLAMA_EMBED_URL"] + "/v1/embeddings"
    request = urllib.request.Request(
        url,
        data=json.dumps({"input": texts}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_vectors_are_the_models_and_priced_from_its_usage(client, ledger, metrics):
    before = metrics()
    raw = client.embeddings.with_raw_response.create(model="embed", input=TEXTS)
    result = raw.parse()

    assert [d.index for d in result.data] == [0, 1]
    expected = direct(TEXTS)
    for got, want in zip(result.data, expected["data"]):
        assert len(got.embedding) == len(want["embedding"]) == 576  # SmolLM2's width
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
                   for a, b in zip(got.embedding, want["embedding"]))
    assert result.usage.prompt_tokens == expected["usage"]["prompt_tokens"] > 0

    assert raw.headers["x-crossroads-pool"] == "embed"
    assert raw.headers["x-crossroads-deployment"] == "local-smollm2-embed"
    row = ledger.row(raw.headers["x-crossroads-request-id"])
    assert row["endpoint"] == "embeddings"
    assert row["status"] == 200
    assert row["input_tokens"] == result.usage.prompt_tokens
    assert row["output_tokens"] == 0
    assert row["usage_estimated"] == 0
    assert row["cost_pusd"] == result.usage.prompt_tokens * EMBED_INPUT_PUSD
    # Embeddings claim no savings against the chat reference model.
    assert row["reference_cost_pusd"] == row["cost_pusd"]
    labels = {"deployment": "local-smollm2-embed", "tier": "local", "status_class": "2xx"}
    assert metric(metrics(), "crossroads_requests_total", **labels) == \
        metric(before, "crossroads_requests_total", **labels) + 1


def test_float_encoding_and_a_single_string(client):
    result = client.embeddings.create(model="embed", input="hello", encoding_format="float")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 576
    assert all(math.isfinite(x) for x in result.data[0].embedding)


def test_a_chat_model_or_an_empty_input_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="local", input="hello")
    assert caught.value.param == "model"
    assert "embeddings model" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="embed", input="")
    assert caught.value.param == "input"


def test_models_lists_the_embeddings_alias(client):
    assert "embed" in {m.id for m in client.models.list()}
