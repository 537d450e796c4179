#!/usr/bin/env python3
"""Streaming time to first token through Crossroads against the same model
server called directly, in the same run.

Alternates the two (gateway, direct, gateway, ...) with the same prompt and
max_tokens, so drift in the model server (warm caches, CPU contention) hits both
sides alike, and reports median, p90 and the paired difference. SmolLM2's own
time to first token jitters by tens of milliseconds on this machine, far more
than a gateway should add, so the same comparison is also made against the
scripted upstream (when given), whose answer is immediate: there the
difference is the gateway's own overhead.

Run it against a stack that scripts/test-clients.sh started:
    scripts/test-clients.sh ttft
or by hand: CROSSROADS_URL=... CROSSROADS_LLAMA_URL=... python3 scripts/ttft.py
The load benchmark (benches/load.rs) runs it with --scripted only, against its own
scripted upstream, and --markdown to print its table rows.

Standard library only; one kept-alive HTTP connection per side, so neither
pays a TCP connect per request (the scripted upstream closes each stream's
connection, so against it both sides pay one connect per request).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from urllib.parse import urlsplit

PROMPT = "Say hello and name one colour."


class Side:
    """One way to reach the model: a base URL and the model name to ask for."""

    def __init__(self, name: str, base_url: str, model: str) -> None:
        self.name = name
        self.model = model
        url = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        self.samples_ms: list[float] = []
        self.first_byte_ms: list[float] = []

    def once(self, max_tokens: int) -> tuple[float, float]:
        """One streamed request: ms to the first body byte and to the first
        chunk carrying generated text. Reads the stream to its end."""
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "stream": True,
        })
        start = time.perf_counter()
        self.conn.request("POST", "/v1/chat/completions", body,
                          {"content-type": "application/json"})
        response = self.conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"{self.name}: HTTP {response.status}: {response.read()[:500]!r}")
        first_byte = first_token = None
        while True:
            line = response.readline()
            if not line:
                break
            if first_byte is None:
                first_byte = time.perf_counter()
            if first_token is None and line.startswith(b"data: {"):
                event = json.loads(line[6:])
                choices = event.get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    first_token = time.perf_counter()
        # A body sent with Content-Length is not marked done by readline alone; read()
        # closes the response so the kept-alive connection can carry the next request.
        response.read()
        if first_token is None:
            raise SystemExit(f"{self.name}: the stream carried no text")
        return (first_byte - start) * 1e3, (first_token - start) * 1e3


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def compare(title: str, gateway: Side, direct: Side, n: int, max_tokens: int, warmup: int,
            markdown: bool = False) -> None:
    for _ in range(warmup):
        gateway.once(max_tokens)
        direct.once(max_tokens)
    pairs = []
    for i in range(n):
        # Alternate which side goes first, so neither always follows the other.
        order = (gateway, direct) if i % 2 == 0 else (direct, gateway)
        got = {}
        for side in order:
            byte_ms, token_ms = side.once(max_tokens)
            side.first_byte_ms.append(byte_ms)
            side.samples_ms.append(token_ms)
            got[side.name] = token_ms
        pairs.append(got["crossroads"] - got["direct"])

    g, d = gateway.samples_ms, direct.samples_ms
    if markdown:
        print(f"| {title} | {n} | {statistics.median(g):.3f} / {pct(g, 90):.3f} / {pct(g, 99):.3f} "
              f"| {statistics.median(d):.3f} / {pct(d, 90):.3f} / {pct(d, 99):.3f} "
              f"| {statistics.median(g) - statistics.median(d):+.3f} | {statistics.median(pairs):+.3f} |")
        return
    print(f"\n{title}: streaming TTFT, {n} requests per side, alternating, max_tokens={max_tokens}")
    print(f"{'':12} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}   first byte median ms")
    for side in (gateway, direct):
        s = side.samples_ms
        print(f"{side.name:12} {statistics.median(s):10.2f} {pct(s, 90):8.2f} {min(s):8.2f}"
              f"   {statistics.median(side.first_byte_ms):.2f}")
    print(f"{title}: crossroads - direct: median {statistics.median(gateway.samples_ms) - statistics.median(direct.samples_ms):+.2f} ms, "
          f"p90 {pct(gateway.samples_ms, 90) - pct(direct.samples_ms, 90):+.2f} ms, "
          f"median of paired differences {statistics.median(pairs):+.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description="streaming TTFT: gateway vs direct")
    parser.add_argument("--gateway", default=os.environ.get("CROSSROADS_URL"))
    parser.add_argument("--direct", default=os.environ.get("CROSSROADS_LLAMA_URL"),
                        help="the model server (llama.cpp) the gateway's `local` alias uses")
    parser.add_argument("--scripted", default=os.environ.get("CROSSROADS_UPSTREAM_URL"),
                        help="optional: the scripted upstream behind the `frontier` alias, "
                             "to see the gateway's overhead without the model's jitter")
    parser.add_argument("-n", type=int, default=20, help="requests per side")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="uncounted requests per side")
    parser.add_argument("--markdown", action="store_true",
                        help="print a Markdown table (TTFT median / p90 / p99 in ms) instead")
    args = parser.parse_args()
    if not args.gateway or not (args.direct or args.scripted):
        parser.error("need --gateway and --direct or --scripted "
                     "(or CROSSROADS_URL, CROSSROADS_LLAMA_URL, CROSSROADS_UPSTREAM_URL)")

    if args.markdown:
        print("| upstream | requests per side | through Crossroads median / p90 / p99 ms "
              "| direct median / p90 / p99 ms | difference of medians ms "
              "| median of paired differences ms |")
        print("|---|---|---|---|---|---|")
    if args.direct:
        compare("llama.cpp", Side("crossroads", args.gateway, "local"),
                Side("direct", args.direct, "smollm2"), args.n, args.max_tokens, args.warmup,
                args.markdown)
    if args.scripted:
        # The scripted upstream answers in well under a millisecond, so what is
        # left of the difference is the gateway itself.
        compare("scripted", Side("crossroads", args.gateway, "frontier"),
                Side("direct", args.scripted, "gpt-4.1"), args.n, args.max_tokens, args.warmup,
                args.markdown)


if __name__ == "__main__":
    sys.exit(main())
