#!/usr/bin/env python3
"""A scripted OpenAI-wire upstream: the frontier side of the client suites.

This machine reaches no model API, so the SDK tests put this server where a
frontier deployment would be. It speaks the chat-completions wire format the way
OpenAI does, and it is deterministic: the same request always gets the same
answer, so tests can assert exact content, usage and cost.

- Plain request: the content is "scripted reply: " followed by the last user
  message's text.
- Request with `tools` whose last message is from the user: one tool call to the
  first tool, with arguments filled in from its JSON schema (see `tool_arguments`).
- Last message from a tool: a final answer quoting the tool's result, so a test
  sees that the result made the round trip through the gateway.
- `response_format: {"type": "json_object"}`: the content is a JSON object;
  `{"type": "json_schema"}`: an instance of the schema (placeholders by type).
- `stream: true`: SSE chunks; a final usage-only chunk (empty `choices`) and
  `"usage": null` on every other chunk only when `stream_options.include_usage`
  is true, as OpenAI does.
- Usage: prompt tokens = words in all messages + 4 per message; completion
  tokens = words in the reply (arguments for a tool call). Crude, but exact and
  known to the tests (`count_words`).

Every request body is recorded; GET /scripted/requests returns them, so a test
can check what the gateway actually forwarded (e.g. that `response_format`
passed through, or that the gateway asked for usage on a stream).

Run: python3 scripted_upstream.py --port 0   (prints "listening on PORT")
Standard library only: it runs before any dependency is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREATED = 1_700_000_000


def count_words(text: str) -> int:
    return len(text.split())


def message_text(message: dict) -> str:
    """The text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_tokens(messages: list) -> int:
    return sum(count_words(message_text(m)) + 4 for m in messages)


def tool_arguments(tool: dict) -> dict:
    """Arguments for `tool`: one placeholder value per property, by type."""
    return schema_instance(tool.get("function", {}).get("parameters") or {})


def schema_instance(schema: dict) -> dict:
    """An object for a JSON schema: one placeholder value per property, by type."""
    placeholders = {"string": "Paris", "integer": 1, "number": 1.5, "boolean": True}
    return {
        name: placeholders.get(spec.get("type"), None)
        for name, spec in sorted((schema.get("properties") or {}).items())
    }


def reply_for(body: dict) -> dict:
    """What to answer: {"content": str} or {"tool_call": {...}}, plus usage counts."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    tools = body.get("tools") or []
    response_format = body.get("response_format") or {}
    json_mode = response_format.get("type") == "json_object"
    schema = (response_format.get("json_schema") or {}).get("schema")

    if last.get("role") == "tool":
        text = f"The tool answered: {message_text(last)}"
    elif tools and last.get("role") == "user":
        tool = tools[0]
        arguments = json.dumps(tool_arguments(tool), separators=(",", ":"))
        call = {
            "id": "call_scripted_1",
            "type": "function",
            "function": {"name": tool["function"]["name"], "arguments": arguments},
        }
        return {
            "tool_call": call,
            "prompt_tokens": prompt_tokens(messages),
            "completion_tokens": count_words(arguments) + 1,
        }
    else:
        text = f"scripted reply: {message_text(last)}"

    if json_mode:
        text = json.dumps({"reply": text, "json_mode": True})
    elif response_format.get("type") == "json_schema" and isinstance(schema, dict):
        text = json.dumps(schema_instance(schema))
    return {
        "content": text,
        "prompt_tokens": prompt_tokens(messages),
        "completion_tokens": count_words(text),
    }


def usage_of(reply: dict) -> dict:
    p, c = reply["prompt_tokens"], reply["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "scripted-upstream"
    # Shared across handler threads.
    received: list = []
    lock = threading.Lock()
    counter = 0

    def log_message(self, fmt, *args):  # quiet: the test output is what matters
        pass

    def send_json(self, status: int, value) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": "gpt-4.1", "object": "model", "created": CREATED, "owned_by": "scripted"}]})
        elif self.path == "/scripted/requests":
            with self.lock:
                self.send_json(200, list(self.received))
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self.send_json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        with self.lock:
            self.received.append(body)
            Upstream.counter += 1
            completion_id = f"chatcmpl-scripted-{Upstream.counter}"
        reply = reply_for(body)
        model = body.get("model", "gpt-4.1")
        if body.get("stream"):
            self.stream(completion_id, model, body, reply)
        else:
            self.complete(completion_id, model, reply)

    def complete(self, completion_id: str, model: str, reply: dict) -> None:
        if "tool_call" in reply:
            message = {"role": "assistant", "content": None, "tool_calls": [reply["tool_call"]]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": reply["content"]}
            finish = "stop"
        self.send_json(200, {
            "id": completion_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage_of(reply),
        })

    def stream(self, completion_id: str, model: str, body: dict, reply: dict) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list, **extra) -> dict:
            out = {"id": completion_id, "object": "chat.completion.chunk", "created": CREATED,
                   "model": model, "system_fingerprint": "fp_scripted", "choices": choices}
            if include_usage:
                out["usage"] = None
            out.update(extra)
            return out

        def delta(d: dict, finish=None) -> dict:
            return {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}

        events = [chunk([delta({"role": "assistant", "content": ""})])]
        if "tool_call" in reply:
            call = reply["tool_call"]
            args = call["function"]["arguments"]
            events.append(chunk([delta({"tool_calls": [{
                "index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}]})]))
            # Arguments arrive in pieces, as they do from OpenAI.
            for i in range(0, len(args), 8):
                events.append(chunk([delta({"tool_calls": [{
                    "index": 0, "function": {"arguments": args[i:i + 8]}}]})]))
            events.append(chunk([delta({}, "tool_calls")]))
        else:
            words = reply["content"].split(" ")
            for i, word in enumerate(words):
                events.append(chunk([delta({"content": word if i == 0 else " " + word})]))
            events.append(chunk([delta({}, "stop")]))
        if include_usage:
            events.append(chunk([], usage=usage_of(reply)))

        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        # No content-length: the stream ends when the connection closes.
        self.send_header("connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Upstream)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
