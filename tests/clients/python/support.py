"""Helpers shared by the Python client tests: reading the gateway's ledger and
metrics, and the exact usage and prices of the scripted frontier upstream."""

from __future__ import annotations

import os
import re
import sqlite3
import time
import urllib.request

# Prices of the generated config, in pico-USD per token (gpt-4.1: $2 / $8 per 1M).
GPT41_INPUT_PUSD = 2_000_000
GPT41_OUTPUT_PUSD = 8_000_000


class Ledger:
    """Reads the gateway's SQLite ledger while the gateway runs."""

    def __init__(self, path: str) -> None:
        self.path = path

    def row(self, request_id: str, timeout: float = 5.0) -> dict:
        """The record of `request_id`, waiting for the writer thread to flush it
        (milliseconds normally; a streamed record lands after the stream ends)."""
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(self.path):
                conn = sqlite3.connect(self.path, timeout=5)
                conn.row_factory = sqlite3.Row
                try:
                    row = conn.execute(
                        "SELECT * FROM requests WHERE request_id = ?", (request_id,)
                    ).fetchone()
                except sqlite3.OperationalError:
                    row = None  # the table is created on the first write
                finally:
                    conn.close()
                if row is not None:
                    return dict(row)
            if time.monotonic() > deadline:
                raise AssertionError(f"no ledger record for {request_id} after {timeout} s")
            time.sleep(0.02)



_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict:
    """Prometheus text as {(name, frozenset of (label, value)): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scripted_usage(messages: list, reply: str) -> tuple[int, int]:
    """The usage the scripted upstream reports (see its docstring)."""
    prompt = sum(len(m["content"].split()) + 4 for m in messages)
    return prompt, len(reply.split())


def gpt41_cost_pusd(prompt_tokens: int, completion_tokens: int) -> int:
    return prompt_tokens * GPT41_INPUT_PUSD + completion_tokens * GPT41_OUTPUT_PUSD
