"""Loopback OpenAI-compatible HTTP server for the test-suite.

It answers ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/responses``
(streamed as server-sent events or as plain JSON), records every request it receives and
replays queued behaviours to inject faults: HTTP error statuses, redirects and non-JSON pages
(``Status`` with any code and body), errors in the middle of a stream, connections cut mid-stream
or just after the finish, and streams that end without finishing. It also notes when a client
goes away in the middle of a stream (``wait_for_client_gone``). ``script`` picks a behaviour from
each request's body, for concurrent requests whose order is not known.

    with FakeServer() as server:
        server.queue(Status(429, headers={"Retry-After": "1"}), Reply("Hi there"))
        ...  # point the client at server.base_url
        assert len(server.posts()) == 2
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable
from urllib.parse import urlsplit

MODELS = {
    "object": "list",
    "data": [
        {"id": "fake-model", "object": "model", "owned_by": "test", "shutdown_date": None},
        {"id": "old-model", "object": "model", "owned_by": "test", "shutdown_date": "2026-10-23"},
    ],
}
NOT_FOUND = {"error": {"message": "not found", "type": "invalid_request_error", "code": None}}
CHUNK_PATTERN = re.compile(r"\S+\s*|\s+")
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass
class Recorded:
    """One request received by the server."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


@dataclass
class Reply:
    """A normal answer."""

    text: str | None = None
    delay: float | None = None
    usage: bool = True
    done: bool = True
    finish: str = "stop"
    cut_at_end: bool = False  # after the finish (and usage) frames, close the TCP connection without ending the body
    hold: float = 0.0  # seconds to wait after the last delta before the finish, as a model does before its usage frame
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers, such as a provider's x-ratelimit-*
    reasoning: int = 0  # reasoning tokens: added to the output tokens and reported in the usage details, as OpenAI does


@dataclass
class Status:
    """An error answer sent before any streaming."""

    code: int
    body: str | bytes | dict = ""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass
class MidStreamError:
    """Streams `text`, then an error payload, then ends the body cleanly."""

    text: str
    message: str = "upstream model crashed"


@dataclass
class Cut:
    """Streams `text`, then closes the TCP connection without terminating the body."""

    text: str


@dataclass
class NoEnd:
    """Streams `text`, then ends the body cleanly without any finish marker."""

    text: str


@dataclass
class Call:
    """One function call the model makes; `arguments` is sent as is, so it may be invalid JSON."""

    name: str
    arguments: str
    id: str | None = None


@dataclass
class ToolCalls:
    """Streams `text`, then the calls in the exact chunk shapes of each API.

    Each call's arguments go out in `pieces` fragments; `interleave` sends the fragments of
    parallel calls in turn, by index (Chat) or by item (Responses). `byte_size` writes the whole
    stream in pieces of that many bytes, so that chunk boundaries fall inside UTF-8 characters.
    """

    calls: list[Call]
    text: str = ""
    pieces: int = 1
    interleave: bool = False
    byte_size: int | None = None
    delay: float = 0.0


@dataclass
class Refuse:
    """A refusal streamed as `delta.refusal` (Chat) or `response.refusal.delta` (Responses)."""

    text: str


Behaviour = Reply | Status | MidStreamError | Cut | NoEnd | ToolCalls | Refuse


def pieces(text: str, count: int) -> list[str]:
    """`text` in `count` nearly equal pieces (fewer when it is shorter), none empty."""
    count = max(1, min(count, len(text)))
    size = -(-len(text) // count)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def round_robin(lists: list[list[Any]]) -> list[Any]:
    """The items of several lists taken one from each in turn."""
    out = []
    for row in range(max((len(x) for x in lists), default=0)):
        out += [x[row] for x in lists if row < len(x)]
    return out


def split_text(text: str) -> list[str]:
    """Split text into words that keep their trailing whitespace."""
    return CHUNK_PATTERN.findall(text)


def count_words(value: Any) -> int:
    """Count whitespace-separated words in message content, however it is nested."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        return count_words(value.get("content")) + count_words(value.get("text"))
    return 0


def error_body(message: str, kind: str) -> dict[str, Any]:
    """Build an OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "code": None}}


def status_payload(status: Status) -> tuple[bytes, str]:
    """Return the encoded body of a Status and its content type."""
    if isinstance(status.body, dict):
        return json.dumps(status.body).encode(), status.content_type or "application/json"
    data = status.body.encode() if isinstance(status.body, str) else status.body
    default = "text/html" if data.lstrip().startswith(b"<") else "text/plain"
    return data, status.content_type or default


class ChatApi:
    """Builds Chat Completions payloads and SSE frames for one request."""

    def __init__(self, body: dict[str, Any]) -> None:
        """Remember the request body, its model and the creation time."""
        self.body = body
        self.model = body.get("model")
        self.created = int(time.time())

    def usage(self, completion_tokens: int, reasoning: int = 0) -> dict[str, Any]:
        """Build the usage object; reasoning tokens are part of the completion tokens."""
        prompt_tokens = max(1, count_words(self.body.get("messages")))
        completion_tokens += reasoning
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        if reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    def opening(self) -> list[str]:
        """Frames sent before the text."""
        return [self._chunk(self._choices({"role": "assistant", "content": ""}))]

    def delta(self, chunk: str) -> str:
        """Frame carrying one piece of text."""
        return self._chunk(self._choices({"content": chunk}))

    def closing(self, reply: Reply, text: str, completion_tokens: int) -> list[str]:
        """Frames sent after the text of a normal answer."""
        frames = [self._chunk(self._choices({}, reply.finish))]
        if reply.usage and (self.body.get("stream_options") or {}).get("include_usage"):
            frames.append(self._chunk([], self.usage(completion_tokens, reply.reasoning)))
        if reply.done:
            frames.append("data: [DONE]\n\n")
        return frames

    def error(self, message: str) -> str:
        """Frame reporting an error mid-stream."""
        return f"data: {json.dumps(error_body(message, 'server_error'))}\n\n"

    def calls(self, script: ToolCalls) -> list[str]:
        """Frames of the calls: a first fragment with id and name, then argument pieces, then the finish."""
        per_call = []
        for index, call in enumerate(script.calls):
            head = {"index": index, "id": call.id or f"call_{index}", "type": "function",
                    "function": {"name": call.name, "arguments": ""}}
            rest = [{"index": index, "function": {"arguments": piece}} for piece in pieces(call.arguments, script.pieces)]
            per_call.append([head, *rest])
        fragments = round_robin(per_call) if script.interleave else [f for frags in per_call for f in frags]
        frames = [self._chunk(self._choices({"tool_calls": [fragment]})) for fragment in fragments]
        frames.append(self._chunk(self._choices({}, "tool_calls")))
        if (self.body.get("stream_options") or {}).get("include_usage"):
            frames.append(self._chunk([], self.usage(len(fragments))))
        return frames + ["data: [DONE]\n\n"]

    def refusal(self, text: str) -> list[str]:
        """Frames of a refusal, then the finish."""
        frames = [self._chunk(self._choices({"refusal": piece})) for piece in split_text(text)]
        return frames + [self._chunk(self._choices({}, "stop")), self._chunk([], self.usage(len(frames))), "data: [DONE]\n\n"]

    def whole_calls(self, script: ToolCalls) -> dict[str, Any]:
        """A non-streamed chat.completion asking for the calls."""
        calls = [{"id": c.id or f"call_{i}", "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                 for i, c in enumerate(script.calls)]
        message = {"role": "assistant", "content": script.text or None, "tool_calls": calls}
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}], "usage": self.usage(len(calls))}

    def whole(
        self, text: str, finish: str | None, usage: bool, completion_tokens: int, reasoning: int = 0
    ) -> dict[str, Any]:
        """Build a non-streamed chat.completion object."""
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": self.usage(completion_tokens, reasoning) if usage else None,
        }

    @staticmethod
    def _choices(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        """Build the choices list of a streamed chunk."""
        return [{"index": 0, "delta": delta, "finish_reason": finish}]

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        """Frame one chat.completion.chunk."""
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }
        return f"data: {json.dumps(chunk)}\n\n"


class ResponsesApi:
    """Builds Responses API payloads and SSE frames for one request."""

    def __init__(self, body: dict[str, Any]) -> None:
        """Remember the request body and its model."""
        self.body = body
        self.model = body.get("model")

    def usage(self, output_tokens: int, reasoning: int = 0) -> dict[str, Any]:
        """Build the usage object; reasoning tokens are part of the output tokens."""
        words = count_words(self.body.get("instructions")) + count_words(self.body.get("input"))
        input_tokens = max(1, words)
        output_tokens += reasoning
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": reasoning},
        }

    def opening(self) -> list[str]:
        """Frames sent before the text."""
        response = {"id": "resp_fake", "status": "in_progress", "model": self.model}
        return [self._event({"type": "response.created", "response": response})]

    def delta(self, chunk: str) -> str:
        """Frame carrying one piece of text."""
        payload = {"type": "response.output_text.delta", "delta": chunk, **self._location()}
        return self._event(payload)

    def closing(self, reply: Reply, text: str, output_tokens: int) -> list[str]:
        """Frames sent after the text of a normal answer."""
        response = self.whole(text, reply.finish, reply.usage, output_tokens, reply.reasoning)
        return [
            self._event({"type": "response.output_text.done", "text": text, **self._location()}),
            self._event({"type": f"response.{response['status']}", "response": response}),
        ]

    def error(self, message: str) -> str:
        """Frame reporting an error mid-stream."""
        return self._event({"type": "error", "message": message, "code": "server_error"})

    def calls(self, script: ToolCalls) -> list[str]:
        """Frames of the calls: each function_call item added, its argument deltas, `.done`, the item done, then completed."""
        offset = 1 if script.text else 0
        items = [self._call_item(script, index) for index in range(len(script.calls))]
        frames = []
        if script.text:
            frames.append(self._event({"type": "response.output_text.done", "text": script.text, **self._location()}))
        frames += [self._event({"type": "response.output_item.added", "output_index": offset + i, "item": {**item, "arguments": "", "status": "in_progress"}})
                   for i, item in enumerate(items)] if script.interleave else []
        per_call = []
        for i, item in enumerate(items):
            added = [] if script.interleave else [self._event({"type": "response.output_item.added", "output_index": offset + i,
                                                              "item": {**item, "arguments": "", "status": "in_progress"}})]
            deltas = [self._event({"type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": offset + i, "delta": piece})
                      for piece in pieces(item["arguments"], script.pieces)]
            per_call.append(added + deltas)
        frames += round_robin(per_call) if script.interleave else [f for frames_ in per_call for f in frames_]
        for i, item in enumerate(items):
            frames.append(self._event({"type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": offset + i,
                                       "arguments": item["arguments"]}))
            frames.append(self._event({"type": "response.output_item.done", "output_index": offset + i, "item": item}))
        response = self.whole(script.text, "stop", True, len(items))
        response["output"] = (response["output"] if script.text else []) + items
        return frames + [self._event({"type": "response.completed", "response": response})]

    def refusal(self, text: str) -> list[str]:
        """Frames of a refusal, then completed."""
        frames = [self._event({"type": "response.refusal.delta", "delta": piece, **self._location()}) for piece in split_text(text)]
        frames.append(self._event({"type": "response.refusal.done", "refusal": text, **self._location()}))
        response = self.whole("", "stop", True, len(frames))
        response["output"][0]["content"] = [{"type": "refusal", "refusal": text}]
        return frames + [self._event({"type": "response.completed", "response": response})]

    def whole_calls(self, script: ToolCalls) -> dict[str, Any]:
        """A non-streamed response asking for the calls."""
        response = self.whole(script.text, "stop", True, len(script.calls))
        response["output"] = (response["output"] if script.text else []) + [self._call_item(script, i) for i in range(len(script.calls))]
        return response

    @staticmethod
    def _call_item(script: ToolCalls, index: int) -> dict[str, Any]:
        call = script.calls[index]
        return {"type": "function_call", "id": f"fc_{index}", "call_id": call.id or f"call_{index}", "name": call.name,
                "arguments": call.arguments, "status": "completed"}

    def whole(
        self, text: str, finish: str | None, usage: bool, output_tokens: int, reasoning: int = 0
    ) -> dict[str, Any]:
        """Build a response object; `finish` None means still in progress."""
        response: dict[str, Any] = {
            "id": "resp_fake",
            "status": "completed",
            "model": self.model,
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text}],
                }
            ],
            "usage": self.usage(output_tokens, reasoning) if usage else None,
        }
        if finish is None:
            response["status"] = "in_progress"
        elif finish in INCOMPLETE_REASONS:
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": INCOMPLETE_REASONS[finish]}
        return response

    @staticmethod
    def _location() -> dict[str, Any]:
        """Fields locating the single output text."""
        return {"output_index": 0, "content_index": 0, "item_id": "msg_fake"}

    @staticmethod
    def _event(payload: dict[str, Any]) -> str:
        """Frame one named SSE event."""
        return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


APIS: dict[str, type[ChatApi] | type[ResponsesApi]] = {
    "/v1/chat/completions": ChatApi,
    "/v1/responses": ResponsesApi,
}
# Workers AI on loopback: CLOUDFLARE_ROOT stands for https://api.cloudflare.com/client/v4/accounts/{id}/ai, whose
# /v1/chat/completions is OpenAI's, whose /v1/models answers 405, and whose catalogue is GET /models/search.
CLOUDFLARE_ROOT = "/client/v4/accounts/acc-test/ai"
CLOUDFLARE_SEARCH = {"success": True, "errors": [], "messages": [], "result": [
    {"id": "u1", "name": "@cf/meta/llama-3.1-8b-instruct", "task": {"name": "Text Generation"}, "properties": []},
    {"id": "u2", "name": "@cf/baai/bge-m3", "task": {"name": "Text Embeddings"}, "properties": []},
    {"id": "u3", "name": "openai/gpt-5-nano", "task": {"name": "Text Generation"}, "properties": []},
    {"id": "u4", "name": "@cf/old/retiring-nano", "task": {"name": "Text Generation"},
     "properties": [{"property_id": "planned_deprecation_date", "value": "2027-01-31"}]},
]}
APIS[CLOUDFLARE_ROOT + "/v1/chat/completions"] = ChatApi


class Handler(BaseHTTPRequestHandler):
    """Serves one connection, possibly several keep-alive requests."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: LoopbackServer

    def handle(self) -> None:
        """Serve requests, ignoring clients that hang up mid-response."""
        try:
            super().handle()
        except ConnectionError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        """Answer the model list; anything else is not found."""
        self._record(None)
        path = urlsplit(self.path).path
        if path == "/v1/models":
            self._send_json(200, MODELS)
        elif path == CLOUDFLARE_ROOT + "/v1/models":
            self._send_json(405, {"success": False, "errors": [{"code": 7001, "message": "Method not allowed"}]})
        elif path == CLOUDFLARE_ROOT + "/models/search":
            self._send_json(200, CLOUDFLARE_SEARCH)
        else:
            self._send_json(404, NOT_FOUND)

    def do_POST(self) -> None:
        """Answer an API call with the next queued behaviour."""
        body = self._read_body()
        self._record(body)
        api_class = APIS.get(urlsplit(self.path).path)
        if api_class is None:
            self._send_json(404, NOT_FOUND)
            return
        behaviour = self.server.fake._next_behaviour(body or {})
        if isinstance(behaviour, Status):
            self._send_bytes(behaviour.code, *status_payload(behaviour), behaviour.headers)
            return
        api = api_class(body or {})
        if isinstance(behaviour, (ToolCalls, Refuse)):
            self._scripted(api, behaviour)
            return
        text = self.server.fake.reply if behaviour.text is None else behaviour.text
        if api.body.get("stream"):
            self._stream(api, behaviour, text)
        else:
            self._answer_whole(api, behaviour, text)

    def _read_body(self) -> dict | None:
        """Read the request body and parse it as a JSON object."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _record(self, body: dict | None) -> None:
        """Record the current request."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.fake._record(Recorded(self.command, self.path, headers, body))

    def _stream(self, api: ChatApi | ResponsesApi, behaviour: Behaviour, text: str) -> None:
        """Stream the answer as chunked server-sent events."""
        delay = self.server.fake.chunk_delay
        if isinstance(behaviour, Reply) and behaviour.delay is not None:
            delay = behaviour.delay
        chunks = split_text(text)
        headers = {"Cache-Control": "no-cache", "Transfer-Encoding": "chunked", **getattr(behaviour, "headers", {})}
        self._send_head(200, "text/event-stream", headers)
        self._send_frames(api.opening())
        try:
            for chunk in chunks:
                time.sleep(delay)
                self._send_frames([api.delta(chunk)])
                self.server.fake.last_delta_at = time.time()
        except ConnectionError:
            self.server.fake._client_gone()
            raise
        if isinstance(behaviour, Cut):
            self._cut()
            return
        if isinstance(behaviour, Reply):
            time.sleep(behaviour.hold)
            self._send_frames(api.closing(behaviour, text, len(chunks)))
            if behaviour.cut_at_end:
                self._cut()
                return
        elif isinstance(behaviour, MidStreamError):
            self._send_frames([api.error(behaviour.message)])
        self.wfile.write(b"0\r\n\r\n")

    def _scripted(self, api: ChatApi | ResponsesApi, script: ToolCalls | Refuse) -> None:
        """Stream (or answer whole) scripted tool calls or a refusal."""
        if not api.body.get("stream"):
            if isinstance(script, Refuse):
                self._send_json(400, error_body("non-streamed refusals are not scripted", "invalid_request_error"))
            else:
                self._send_json(200, api.whole_calls(script))
            return
        if isinstance(script, Refuse):
            frames = api.opening() + api.refusal(script.text)
        else:
            frames = api.opening() + [api.delta(chunk) for chunk in split_text(script.text)] + api.calls(script)
        self._send_head(200, "text/event-stream", {"Cache-Control": "no-cache", "Transfer-Encoding": "chunked"})
        size = getattr(script, "byte_size", None)
        if size:
            data = "".join(frames).encode()
            frames_bytes = [data[i : i + size] for i in range(0, len(data), size)]
        else:
            frames_bytes = [frame.encode() for frame in frames]
        for piece in frames_bytes:
            time.sleep(getattr(script, "delay", 0.0))
            self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _answer_whole(self, api: ChatApi | ResponsesApi, behaviour: Behaviour, text: str) -> None:
        """Answer with one JSON document; stream faults get their nearest equivalent."""
        if isinstance(behaviour, MidStreamError):
            self._send_json(500, error_body(behaviour.message, "server_error"))
            return
        finish: str | None = None
        usage = False
        reasoning = 0
        if isinstance(behaviour, Reply):
            finish, usage, reasoning = behaviour.finish, behaviour.usage, behaviour.reasoning
        payload = api.whole(text, finish, usage, len(split_text(text)), reasoning)
        if isinstance(behaviour, Cut):
            data = json.dumps(payload).encode()
            self._send_head(200, "application/json", {"Content-Length": str(len(data))})
            self.wfile.write(data[: len(data) // 2])
            self._cut()
        else:
            self._send_bytes(200, json.dumps(payload).encode(), "application/json", getattr(behaviour, "headers", {}))

    def _send_head(self, code: int, content_type: str, headers: dict[str, str]) -> None:
        """Send the status line and headers."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_bytes(
        self, code: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """Send a complete response with a Content-Length."""
        self._send_head(code, content_type, {**(headers or {}), "Content-Length": str(len(data))})
        self.wfile.write(data)

    def _send_json(self, code: int, payload: dict[str, Any]) -> None:
        """Send a complete JSON response."""
        self._send_bytes(code, json.dumps(payload).encode(), "application/json")

    def _send_frames(self, frames: list[str]) -> None:
        """Send each SSE frame as its own HTTP chunk, flushed at once."""
        for frame in frames:
            data = frame.encode()
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def _cut(self) -> None:
        """Close the TCP connection abruptly."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()


class LoopbackServer(ThreadingHTTPServer):
    """Threading HTTP server that reports its connections to a FakeServer."""

    daemon_threads = True

    def __init__(self, fake: FakeServer) -> None:
        """Bind to a free loopback port."""
        super().__init__(("127.0.0.1", 0), Handler)
        self.fake = fake

    def process_request(self, request: Any, client_address: Any) -> None:
        """Count the accepted connection, then serve it in a thread."""
        self.fake._opened(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection, then close it."""
        self.fake._closed(request)
        super().shutdown_request(request)


class FakeServer:
    """Loopback OpenAI-compatible server that records requests and replays behaviours."""

    reply: str = "Hello from the fake server."
    chunk_delay: float = 0.0
    last_delta_at: float = 0.0  # wall-clock time the last streamed delta went out, for browser benchmarks
    script: Callable[[dict[str, Any]], Behaviour | None] | None = None  # when the queue is empty: the body's behaviour, or None for the default

    def __init__(self) -> None:
        """Create a stopped server."""
        self.requests: list[Recorded] = []
        self.connections = 0
        self._gone = threading.Event()
        self._queue: deque[Behaviour] = deque()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._httpd: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def base_url(self) -> str:
        """API root URL; it stays valid after stop() so tests can hit a dead port."""
        if self._port is None:
            raise RuntimeError("FakeServer has not been started")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> FakeServer:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("FakeServer is already running")
        self._httpd = LoopbackServer(self)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        if self._httpd is None or self._thread is None:
            return
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def queue(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each API POST consumes the next one."""
        with self._lock:
            self._queue.extend(behaviours)

    def reset(self) -> None:
        """Clear requests, queue, connection count and hang-ups; restore reply and chunk_delay."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self._gone.clear()
            self.connections = 0
            self.reply = type(self).reply
            self.chunk_delay = type(self).chunk_delay
            self.script = None

    def posts(self) -> list[Recorded]:
        """Return only the POST requests."""
        with self._lock:
            return [request for request in self.requests if request.method == "POST"]

    def wait_for_client_gone(self, timeout: float = 5.0) -> bool:
        """Wait until a client hangs up in the middle of a streamed answer; False if none did in time."""
        return self._gone.wait(timeout)

    def _client_gone(self) -> None:
        """Note that a client closed its connection while text was still streaming."""
        self._gone.set()

    def _next_behaviour(self, body: dict[str, Any]) -> Behaviour:
        """Pop the next queued behaviour, or the script's for this body, or a default Reply."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            script = self.script
        return (script(body) if script is not None else None) or Reply()

    def _record(self, request: Recorded) -> None:
        """Record a received request."""
        with self._lock:
            self.requests.append(request)

    def _opened(self, connection: socket.socket) -> None:
        """Count and track an accepted connection."""
        with self._lock:
            self.connections += 1
            self._open.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        """Stop tracking a finished connection."""
        with self._lock:
            self._open.discard(connection)

    def __enter__(self) -> FakeServer:
        """Start the server for a with-block."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server at the end of a with-block."""
        self.stop()
