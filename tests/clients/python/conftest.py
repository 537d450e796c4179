"""Fixtures for the Python client suite: the official `openai` SDK pointed at a
running Crossroads, plus readers for its ledger, its metrics and what the
scripted frontier upstream received.

scripts/test-clients.sh starts the gateway, llama.cpp (SmolLM2) and the scripted
upstream and exports where they are; run it rather than pytest directly.
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from openai import OpenAI

from support import Ledger, scrape


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run scripts/test-clients.sh", returncode=2)
    return value


@pytest.fixture(scope="session")
def gateway_url() -> str:
    return _env("CROSSROADS_URL")


@pytest.fixture(scope="session")
def client(gateway_url: str) -> OpenAI:
    # The generated config does not require keys: the SDK insists on one, and a
    # placeholder that is not a Crossroads `ck-` key passes as anonymous.
    # max_retries=0: the SDK retries 429 and 5xx by default, which would only
    # slow the error tests down and add ledger rows. The timeout is generous
    # because the local model answers one request at a time, ~45 tokens/s.
    return OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return Ledger(_env("CROSSROADS_LEDGER"))


@pytest.fixture(scope="session")
def metrics():
    """Calling it scrapes /metrics now."""
    url = _env("CROSSROADS_METRICS_URL")
    return lambda: scrape(url)


@pytest.fixture(scope="session")
def upstream_received():
    """Calling it returns every body the scripted frontier upstream received."""
    url = _env("CROSSROADS_UPSTREAM_URL") + "/scripted/requests"

    def fetch() -> list:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    return fetch
