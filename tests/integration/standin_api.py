"""A scripted stand-in for the Anthropic Messages API, for driving the real Claude Code CLI in tests.

Usage: standin_api.py PORT SCRIPT_JSON LOG_JSONL (standard library only). It serves 127.0.0.1:PORT (0: a free
port) and prints "listening on 127.0.0.1:<port>" once it accepts requests.

SCRIPT_JSON: [{"marker": "TASK-1", "steps": [STEP, ...]}, ...]. A request of the main conversation (one with
tools) is answered by the script whose marker occurs last in the user's text (of two found at one place, the
longer: "T10" over "T1"), with step number N = the tool_result blocks in its messages: step 0 answers the
prompt, step 1 the first tool result, ... A STEP is {"text": "..."} (ends the turn) or {"tool_use": {"name":
"Write", "input": {...}}}, optionally with a "text" said before the call. Any tool name passes through, MCP
tools too ("mcp__<server>__<tool>"; Claude Code 2.1 defers them: they are not in the request's tools until a
{"name": "ToolSearch", "input": {"query": "select:mcp__..."}} step loads them, but it runs them either way).
Side requests (no tools: titles, topics, quota checks) and requests past a script's end get a short text and
use no step. Non-streaming requests get the message as JSON. The CLI's other calls are answered too: its probe
HEAD /api/hello (and any GET) with 200, POST /v1/messages/count_tokens with an estimate.
Every request is appended to LOG_JSONL as a JSON line: method, path, time, headers, parsed body.
"""

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIDE_ANSWER = "OK"
LOCK = threading.Lock()


def user_text(messages):
    """The text the user wrote (prompt and reminders, not tool results), oldest first."""
    parts = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        parts.extend(block.get("text", "") for block in content or [] if block.get("type") == "text")
    return "\n".join(parts)


def tool_results(messages):
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for block in m["content"] if block.get("type") == "tool_result")


def choose_step(scripts, body):
    """The scripted step answering ``body``, or None for a side request (or one past its script's end)."""
    messages = body.get("messages") or []
    if not body.get("tools"):
        return None
    text = user_text(messages)
    found = [(text.rfind(s["marker"]), len(s["marker"]), s) for s in scripts if s["marker"] in text]
    if not found:
        return None
    steps = max(found, key=lambda found: found[:2])[2]["steps"]  # the latest marker; of two there, the longer
    index = tool_results(messages)
    return steps[index] if index < len(steps) else None


def content_blocks(step):
    """The assistant's content blocks for a step, and its stop reason."""
    step = step or {"text": SIDE_ANSWER}
    blocks = [{"type": "text", "text": step["text"]}] if step.get("text") else []
    if "tool_use" in step:
        call = step["tool_use"]
        blocks.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": call["name"],
                       "input": call.get("input", {})})
        return blocks, "tool_use"
    return blocks, "end_turn"


def sse_events(message, blocks):
    """The stream the real API sends for ``message`` with ``blocks``."""
    yield "message_start", {"type": "message_start", "message": dict(message, content=[], stop_reason=None)}
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            start, delta = dict(block, text=""), {"type": "text_delta", "text": block["text"]}
        else:
            start, delta = dict(block, input={}), {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": {"output_tokens": message["usage"]["output_tokens"]}}
    yield "message_stop", {"type": "message_stop"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    scripts = []
    log_path = ""

    def log_message(self, *args):  # the JSON log is the record; keep stderr quiet
        pass

    def record(self, body):
        entry = {"method": self.command, "path": self.path, "time": time.time(), "headers": dict(self.headers.items()),
                 "body": body}
        with LOCK, open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")

    def read_body(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def reply(self, status, payload, content_type="application/json"):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self):  # http.server's naming
        self.record(None)
        self.reply(200, b"")

    def do_GET(self):
        self.record(None)
        self.reply(200, {"data": [], "has_more": False} if self.path.startswith("/v1/models") else {})

    def do_POST(self):
        body = self.read_body()
        self.record(body)
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            return self.reply(200, {"input_tokens": len(json.dumps(body)) // 4})
        if path != "/v1/messages" or not isinstance(body, dict):
            return self.reply(404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
        blocks, stop = content_blocks(choose_step(self.scripts, body))
        message = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                   "model": body.get("model", "standin"), "content": blocks, "stop_reason": stop, "stop_sequence": None,
                   "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0}}
        if not body.get("stream"):
            return self.reply(200, message)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for event, data in sse_events(message, blocks):
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True
        return None


def main():
    port, script_path, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(script_path, encoding="utf-8") as script:
        Handler.scripts = json.load(script)
    Handler.log_path = log_path
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"stand-in API listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
