"""The OpenAI wire format, without I/O: request bodies for both APIs, and streamed events read from server-sent events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from httpx_sse import ServerSentEvent

from .config import Backend
from .errors import StreamError
from .images import shorten_data_urls
from .jsontext import json_object
from .schema import OutputSchema
from .tools import Toolbox, ToolCall
from .usage import Usage

__all__ = [
    "Options", "Request", "Delta", "Refusal", "ToolCall", "Finish", "UsageReport", "Retry", "Event",
    "build_request", "tool_choice", "chat_events", "responses_events", "complete_events", "error_message",
]

JSON_INSTRUCTION = "Answer with a single JSON object."


@dataclass(frozen=True)
class Options:
    """Per-request choices; None leaves a field out of the request."""

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | None = None
    json: bool = False
    stream: bool = True
    api: str = "chat"
    tool_choice: str | None = None
    max_steps: int = 8
    reasoning_effort: str | None = None

    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults."""
        default = Options()
        return {k: v for k, v in self.__dict__.items() if v != getattr(default, k)}


@dataclass(frozen=True)
class Request:
    """One HTTP request, ready to send or to show."""

    url: str
    body: dict[str, Any]
    backend: Backend = field(repr=False)

    @property
    def api(self) -> str:
        """`chat` or `responses`."""
        return "responses" if self.url.endswith("/responses") else "chat"

    def describe(self) -> str:
        """The request as text, with every secret masked and each picture's data URL cut to 40 characters and its size."""
        headers = "\n".join(f"{k}: {v}" for k, v in self.backend.masked_headers().items())
        body = json.dumps(shorten_data_urls(self.body), indent=2, ensure_ascii=False)
        return self.backend.scrub(f"POST {self.url}\n{headers}\n\n{body}")


@dataclass(slots=True)
class Delta:
    """A piece of answer text."""

    text: str


@dataclass(slots=True)
class Refusal:
    """A piece of the model's refusal to answer in the schema."""

    text: str


@dataclass(slots=True)
class Finish:
    """Why the model stopped: stop, length, content_filter, ..."""

    reason: str


@dataclass(slots=True)
class UsageReport:
    """Token counts from the server."""

    usage: Usage


@dataclass(slots=True)
class Retry:
    """A failed attempt that will be retried after `wait` seconds."""

    reason: str
    attempt: int
    attempts: int
    wait: float

    def __str__(self) -> str:
        return f"{self.reason}, retrying in {self.wait:.0f} s ({self.attempt}/{self.attempts})"


Event = Delta | Refusal | ToolCall | Finish | UsageReport | Retry


def build_request(
    backend: Backend, model: str, system: str | None, messages: list[dict[str, Any]], options: Options,
    tools: Toolbox | None = None, schema: OutputSchema | None = None,
) -> Request:
    """The request for a conversation, in the dialect of `options.api`, with the tools and the answer schema if any."""
    if options.json:
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
    if options.api == "responses":
        body = _responses_body(model, system, messages, options)
        if schema is not None:
            body["text"] = {"format": schema.responses_format()}
        url = f"{backend.base_url}/responses"
    else:
        body = _chat_body(model, system, messages, options, compatible=backend.compatible)
        if schema is not None:
            body["response_format"] = schema.chat_format()
        url = f"{backend.base_url}/chat/completions"
    if tools:
        body["tools"] = tools.specs(options.api)
    if options.tool_choice is not None:
        body["tool_choice"] = tool_choice(options.tool_choice, options.api)
    return Request(url, body, backend)


def tool_choice(choice: str, api: str) -> str | dict[str, Any]:
    """`auto`, `required` and `none` as they are; any other word names the one function the model must call."""
    if choice in ("auto", "required", "none"):
        return choice
    if api == "responses":
        return {"type": "function", "name": choice}
    return {"type": "function", "function": {"name": choice}}


def _chat_body(model: str, system: str | None, messages: list[dict[str, Any]], o: Options, compatible: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": ([{"role": "system", "content": system}] if system else []) + messages}
    body["stream"] = o.stream
    if o.stream:
        body["stream_options"] = {"include_usage": True}
    _put(body, temperature=o.temperature, top_p=o.top_p, max_completion_tokens=o.max_tokens, seed=o.seed, stop=o.stop)
    _put(body, reasoning_effort=o.reasoning_effort)
    if compatible and o.max_tokens is not None:
        body["max_tokens"] = o.max_tokens  # llama.cpp and other servers ignore max_completion_tokens
    if o.json:
        body["response_format"] = {"type": "json_object"}
    return body


def _responses_body(model: str, system: str | None, messages: list[dict[str, Any]], o: Options) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": messages, "stream": o.stream, "store": False}
    _put(body, instructions=system, temperature=o.temperature, top_p=o.top_p, max_output_tokens=o.max_tokens)
    if o.reasoning_effort is not None:
        body["reasoning"] = {"effort": o.reasoning_effort}
    if o.json:
        body["text"] = {"format": {"type": "json_object"}}
    return body


def _put(body: dict[str, Any], **fields: Any) -> None:
    body.update({k: v for k, v in fields.items() if v is not None})


def chat_events(events: Iterable[ServerSentEvent]) -> Iterator[Event]:
    """Chat Completions SSE events as answer events; raise StreamError if the stream was cut."""
    finished = False
    calls = _ChatCalls()
    for sse in events:
        if sse.data == "[DONE]":
            return
        data = json_object(sse.data)
        if data is None:
            continue
        if sse.event == "error" or data.get("error"):
            raise StreamError(f"The server reported an error mid-answer: {error_message(data)}")
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                yield Delta(delta["content"])
            if delta.get("refusal"):
                yield Refusal(delta["refusal"])
            if delta.get("tool_calls"):
                calls.add(delta["tool_calls"])
            if choice.get("finish_reason"):
                finished = True
                yield from calls.done()
                yield Finish(choice["finish_reason"])
        if data.get("usage"):
            yield UsageReport(Usage.from_chat(data["usage"]))
    if not finished:
        raise StreamError("The stream ended before the answer was finished.")


class _ChatCalls:
    """Tool calls assembled from `delta.tool_calls` fragments, which may interleave by index."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[ToolCall, list[str]]] = {}

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for position, fragment in enumerate(fragments):
            index = fragment.get("index", position)
            call, pieces = self._calls.setdefault(index, (ToolCall("", "", ""), []))
            function = fragment.get("function") or {}
            call.id = call.id or fragment.get("id") or ""
            call.name = call.name or function.get("name") or ""
            if function.get("arguments"):
                pieces.append(function["arguments"])

    def done(self) -> Iterator[ToolCall]:
        for index in sorted(self._calls):
            call, pieces = self._calls[index]
            call.id = call.id or f"call_{index}"  # some local servers send no id, and the results must name one
            call.arguments = "".join(pieces)
            yield call
        self._calls.clear()


def responses_events(events: Iterable[ServerSentEvent]) -> Iterator[Event]:
    """Responses API SSE events as answer events; raise StreamError if the stream was cut."""
    calls: dict[str, tuple[ToolCall, list[str]]] = {}  # by item id: the call and its argument pieces
    for sse in events:
        data = json_object(sse.data)
        if data is None:
            continue
        kind = sse.event or data.get("type", "")
        if kind == "response.output_text.delta" and data.get("delta"):
            yield Delta(data["delta"])
        elif kind == "response.refusal.delta" and data.get("delta"):
            yield Refusal(data["delta"])
        elif kind == "response.output_item.added" and (data.get("item") or {}).get("type") == "function_call":
            item = data["item"]
            calls[item.get("id") or ""] = (_call_from_item(item), [])
        elif kind == "response.function_call_arguments.delta" and data.get("item_id") in calls:
            calls[data["item_id"]][1].append(data.get("delta") or "")
        elif kind == "response.function_call_arguments.done" and data.get("item_id") in calls:
            calls[data["item_id"]][1][:] = [data.get("arguments") or ""]
        elif kind == "response.output_item.done" and (data.get("item") or {}).get("type") == "function_call":
            item = data["item"]
            call, pieces = calls.pop(item.get("id") or "", (_call_from_item(item), []))
            call.arguments = item.get("arguments") or "".join(pieces)
            yield call
        elif kind in ("response.completed", "response.incomplete"):
            yield from _responses_end(data.get("response") or {})
            return
        elif kind in ("error", "response.failed"):
            raise StreamError(f"The server reported an error mid-answer: {error_message(data)}")
    raise StreamError("The stream ended before the answer was finished.")


def _call_from_item(item: Mapping[str, Any]) -> ToolCall:
    return ToolCall(str(item.get("call_id") or item.get("id") or ""), str(item.get("name") or ""), str(item.get("arguments") or ""))


def _responses_end(response: Mapping[str, Any]) -> Iterator[Event]:
    if response.get("usage"):
        yield UsageReport(Usage.from_responses(response["usage"]))
    reason = (response.get("incomplete_details") or {}).get("reason")
    yield Finish({"max_output_tokens": "length", None: "stop"}.get(reason, reason or "stop"))


def complete_events(data: Mapping[str, Any], api: str) -> Iterator[Event]:
    """Events for a non-streamed answer."""
    if api == "responses":
        for item in data.get("output") or []:
            if item.get("type") == "function_call":
                yield _call_from_item(item)
            for part in item.get("content") or []:
                if part.get("type") == "output_text" and part.get("text"):
                    yield Delta(part["text"])
                elif part.get("type") == "refusal" and part.get("refusal"):
                    yield Refusal(part["refusal"])
        yield from _responses_end(data)
        return
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    if message.get("content"):
        yield Delta(message["content"])
    if message.get("refusal"):
        yield Refusal(message["refusal"])
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        yield ToolCall(str(call.get("id") or ""), str(function.get("name") or ""), str(function.get("arguments") or ""))
    if data.get("usage"):
        yield UsageReport(Usage.from_chat(data["usage"]))
    yield Finish(choice.get("finish_reason") or "stop")


def error_message(data: Mapping[str, Any]) -> str:
    """The human message inside any of the error shapes servers send."""
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    if isinstance(error, str):
        return data.get("message") or error
    detail = data.get("detail")
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    if detail:
        return str(detail)
    errors = data.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
    if data.get("response", {}).get("error"):
        return error_message(data["response"])
    return str(data.get("message") or json.dumps(data)[:300])
