"""HTTP for OpenAI-compatible servers: requests, streamed events, retries and plain-English errors."""

from __future__ import annotations

import html
import json
import random
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from .config import Backend, mask
from .errors import NanoError, StreamError
from .jsontext import load_json
from .schema import OutputSchema
from .tools import ToolCall, Toolbox
from .usage import Usage

__all__ = [
    "Client", "AsyncClient", "Completion", "AttemptFailed", "Options", "Request", "Delta", "Refusal", "ToolCall", "Finish",
    "UsageReport", "Retry", "Event", "NanoError", "StreamError", "build_request", "chat_events", "responses_events", "backoff",
]

RETRY_STATUSES = {408, 409, 429}
MAX_WAIT = 60.0
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
        """The request as text, with every secret masked."""
        headers = "\n".join(f"{k}: {v}" for k, v in self.backend.masked_headers().items())
        return _scrub(f"POST {self.url}\n{headers}\n\n{json.dumps(self.body, indent=2, ensure_ascii=False)}", self.backend)


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


Event = Union[Delta, Refusal, ToolCall, Finish, UsageReport, Retry]


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
    if compatible and o.max_tokens is not None:
        body["max_tokens"] = o.max_tokens  # llama.cpp and other servers ignore max_completion_tokens
    if o.json:
        body["response_format"] = {"type": "json_object"}
    return body


def _responses_body(model: str, system: str | None, messages: list[dict[str, Any]], o: Options) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": messages, "stream": o.stream, "store": False}
    _put(body, instructions=system, temperature=o.temperature, top_p=o.top_p, max_output_tokens=o.max_tokens)
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
        data = _json_or_none(sse.data)
        if data is None:
            continue
        if sse.event == "error" or data.get("error"):
            raise StreamError(f"The server reported an error mid-answer: {_message(data)}")
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
        data = _json_or_none(sse.data)
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
            raise StreamError(f"The server reported an error mid-answer: {_message(data)}")
    raise StreamError("The stream ended before the answer was finished.")


def _call_from_item(item: Mapping[str, Any]) -> ToolCall:
    return ToolCall(str(item.get("call_id") or item.get("id") or ""), str(item.get("name") or ""), str(item.get("arguments") or ""))


def _responses_end(response: Mapping[str, Any]) -> Iterator[Event]:
    if response.get("usage"):
        yield UsageReport(Usage.from_responses(response["usage"]))
    reason = (response.get("incomplete_details") or {}).get("reason")
    yield Finish({"max_output_tokens": "length", None: "stop"}.get(reason, reason or "stop"))


def _complete_events(data: Mapping[str, Any], api: str) -> Iterator[Event]:
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


def _json_or_none(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        data = load_json(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


class Client:
    """Sends requests to one backend over one kept-alive connection pool."""

    def __init__(
        self,
        backend: Backend,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.backend = backend
        self.max_retries = max_retries
        self._sleep = sleep
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def stream(self, request: Request) -> Iterator[Event]:
        """Send `request` and yield its events; retries show up as Retry events before any text."""
        response = yield from self._open(request)
        finished = False
        try:
            if not request.body.get("stream"):
                response.read()
                key = "output" if request.api == "responses" else "choices"
                yield from _complete_events(_answer_object(response, self.backend, key), request.api)
                return
            sse = EventSource(response).iter_sse()
            for event in responses_events(sse) if request.api == "responses" else chat_events(sse):
                finished = finished or isinstance(event, Finish)
                yield event
            for _ in sse:  # read to the end of the body, so that the connection goes back to the pool
                pass
        except SSEError:
            response.read()
            raise NanoError(_scrub(describe_body(response, self.backend, "a stream of server-sent events"), self.backend)) from None
        except httpx.TransportError as exc:
            if finished:
                return  # the model said it was done; only the close was unclean
            raise StreamError(_scrub(f"The connection was cut mid-answer ({_reason(exc)}).", self.backend)) from None
        except StreamError as exc:  # an error event quotes the server, which may echo the key
            raise StreamError(_scrub(str(exc), self.backend)) from None
        finally:
            response.close()

    def models(self) -> list[dict[str, Any]]:
        """The server's `GET /models` list."""
        try:
            response = self._http.get(f"{self.backend.base_url}/models", headers=self.backend.headers())
        except httpx.TransportError as exc:
            raise NanoError(_scrub(f"Could not reach {self.backend.base_url}: {_reason(exc)}.", self.backend)) from None
        if response.is_redirect:
            raise NanoError(_scrub(describe_redirect(response, self.backend, "/models"), self.backend))
        if response.status_code >= 400:
            raise NanoError(_scrub(describe_status(response, self.backend, ""), self.backend))
        return list(_answer_object(response, self.backend, "data")["data"] or [])

    def _open(self, request: Request) -> Iterator[Event]:
        """Open the response, retrying what may pass; a generator so that retries are visible."""
        attempts = max(self.max_retries, 0)
        for attempt in range(attempts + 1):
            try:
                req = self._http.build_request("POST", request.url, json=request.body, headers=request.backend.headers())
                response = self._http.send(req, stream=True)
            except httpx.TransportError as exc:
                failure = _transport_failure(exc, self.backend.base_url, self._http.timeout)
                reason, wait = "connection failed", backoff(attempt)
            else:
                if response.is_redirect:
                    response.close()
                    raise NanoError(_scrub(describe_redirect(response, self.backend, request.url.removeprefix(self.backend.base_url)), self.backend))
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
                failure = describe_status(response, self.backend, request.body.get("model", ""))
                if not _retryable(response.status_code):
                    raise NanoError(_scrub(failure, self.backend))
                reason = _retry_reason(response.status_code)
                wait = _retry_after(response.headers)
                wait = backoff(attempt) if wait is None else wait
            if attempt == attempts:
                suffix = f" (after {attempts + 1} attempts)" if attempts else ""
                raise NanoError(_scrub(failure.rstrip(".") + suffix + ".", self.backend))
            yield Retry(reason, attempt + 1, attempts, wait)
            self._sleep(wait)
        raise NanoError("No request was attempted.")  # not reached: the last attempt returns or raises


@dataclass(slots=True)
class Completion:
    """A whole answer to one request, with the response headers (rate-limit budget)."""

    text: str
    usage: Usage | None
    finish_reason: str | None
    headers: httpx.Headers
    refusal: str = ""


class AttemptFailed(NanoError):
    """One attempt failed; `retryable` says whether another may pass, `retry_after` is the server's requested wait."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None, headers: httpx.Headers | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        self.headers = headers


class AsyncClient:
    """The async counterpart of Client for many one-shot requests over one connection pool: one attempt per call."""

    def __init__(
        self,
        backend: Backend,
        *,
        connections: int = 8,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.backend = backend
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(read_timeout, connect=connect_timeout), limits=limits, transport=transport)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def complete(self, request: Request) -> Completion:
        """Send `request` once and read its whole answer; AttemptFailed says what went wrong."""
        backend = self.backend
        try:
            async with self._http.stream("POST", request.url, json=request.body, headers=backend.headers()) as response:
                if response.is_redirect:
                    path = request.url.removeprefix(backend.base_url)
                    raise AttemptFailed(_scrub(describe_redirect(response, backend, path), backend), retryable=False)
                if response.status_code >= 400:
                    await response.aread()
                    failure = describe_status(response, backend, request.body.get("model", ""))
                    raise AttemptFailed(_scrub(failure, backend), retryable=_retryable(response.status_code),
                                        status=response.status_code, retry_after=_retry_after(response.headers),
                                        headers=response.headers)
                if not request.body.get("stream"):
                    await response.aread()
                    key = "output" if request.api == "responses" else "choices"
                    return _collect(_complete_events(_answer_object(response, backend, key), request.api), response.headers)
                sse: list[ServerSentEvent] = []
                try:
                    async for event in EventSource(response).aiter_sse():
                        sse.append(event)
                except httpx.TransportError:
                    pass  # what arrived decides: a finish then an unclean close is complete, anything less is cut
                except SSEError:
                    await response.aread()
                    raise AttemptFailed(_scrub(describe_body(response, backend, "a stream of server-sent events"), backend),
                                        retryable=False) from None
                return _collect(responses_events(sse) if request.api == "responses" else chat_events(sse), response.headers)
        except AttemptFailed:
            raise
        except httpx.TransportError as exc:
            raise AttemptFailed(_scrub(_transport_failure(exc, backend.base_url, self._http.timeout), backend), retryable=True) from None
        except StreamError as exc:
            raise AttemptFailed(_scrub(str(exc), backend), retryable=True) from None
        except NanoError as exc:
            raise AttemptFailed(str(exc), retryable=False) from None


def _answer_object(response: httpx.Response, backend: Backend, key: str) -> dict[str, Any]:
    """The JSON object with `key` that a 2xx answer must be; NanoError in a plain sentence when it is something else."""
    data = _json_or_none(response.text)
    if data is None or key not in data:
        raise NanoError(_scrub(describe_body(response, backend, "a JSON answer", key), backend))
    return data


def _collect(events: Iterable[Event], headers: httpx.Headers) -> Completion:
    parts: list[str] = []
    refusal: list[str] = []
    completion = Completion("", None, None, headers)
    for event in events:
        if isinstance(event, Delta):
            parts.append(event.text)
        elif isinstance(event, Refusal):
            refusal.append(event.text)
        elif isinstance(event, UsageReport):
            completion.usage = event.usage
        elif isinstance(event, Finish):
            completion.finish_reason = event.reason
    completion.text = "".join(parts)
    completion.refusal = "".join(refusal)
    return completion


def _scrub(text: str, backend: Backend) -> str:
    """`text` with every secret masked, also as a repr quotes it (h11 shows a header it refuses as `b'Bearer sk-…\\n'`)."""
    for secret in backend.secrets():
        for form in {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}:
            text = text.replace(form, mask(secret))
    return text


def _retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def _retry_reason(status: int) -> str:
    if status == 429:
        return "rate limited"
    if status == 408:
        return "request timed out"
    if status == 409:
        return "server busy"
    return f"server error {status}"


def _retry_after(headers: httpx.Headers) -> float | None:
    """The server's requested wait: `retry-after-ms`, then `Retry-After` in seconds or as an HTTP date."""
    seconds = _seconds(headers.get("retry-after-ms"), scale=1000)
    if seconds is None:
        seconds = _seconds(headers.get("retry-after"))
    return None if seconds is None else min(max(seconds, 0.0), MAX_WAIT)


def _seconds(value: str | None, scale: float = 1.0) -> float | None:
    """A header's number of seconds (or milliseconds, with `scale`), or the time until its HTTP date."""
    if not value:
        return None
    try:
        return float(value) / scale
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.5, 1, 2, 4 s, capped at 8 s."""
    return min(0.5 * 2**attempt, 8.0) * random.uniform(0.5, 1.0)


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"\s+", " ", text).strip()[:200]


def _transport_failure(exc: httpx.TransportError, base_url: str, timeout: httpx.Timeout) -> str:
    """A connection that failed, in words that point at the right cause."""
    if isinstance(exc, httpx.ReadTimeout):
        return (f"{base_url} accepted the connection but sent no answer within {timeout.read:g} s "
                "(NanoMagics.read_timeout); the server may be busy or the timeout too short.")
    if isinstance(exc, httpx.ConnectTimeout):
        return f"Could not reach {base_url}: no connection within {timeout.connect:g} s (NanoMagics.connect_timeout)."
    return f"Could not reach {base_url}: {_reason(exc)}."


def describe_redirect(response: httpx.Response, backend: Backend, path: str) -> str:
    """A 3xx answer: where the server points, and that address as the base URL to use."""
    location = response.headers.get("location")
    if not location:
        return f"{backend.name} answered {response.status_code} (a redirect) without saying where to; check the base URL {backend.base_url}."
    target = str(response.url.join(location))
    base = target.removesuffix(path) if path and target.endswith(path) else target
    return (f"{backend.name} redirects ({response.status_code}) to {target}. If that is the right server, "
            f"use it as the base URL: %config NanoMagics.base_url = '{base}'")


def describe_body(response: httpx.Response, backend: Backend, expected: str, key: str | None = None) -> str:
    """A successful status whose body is not what the request asked for (`key`: the field a JSON answer needs)."""
    text = response.text
    kind = response.headers.get("content-type", "no content type").split(";")[0].strip()
    try:
        parsed, is_json = load_json(text), True
    except ValueError:
        parsed, is_json = None, False
    if isinstance(parsed, dict) and (parsed.get("error") or parsed.get("errors") or parsed.get("detail")):
        return f"{backend.name} reported an error: {_message(parsed)}"
    if isinstance(parsed, dict) and key is None and ("choices" in parsed or "output" in parsed):
        return f"{backend.name} answered with one JSON answer instead of {expected}; try --no-stream."
    if "html" in kind or text.lstrip()[:1] == "<":
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        name = " ".join(html.unescape(title.group(1)).split())[:120] if title else ""
        what = f"an HTML page ({name})" if name else "an HTML page"
    elif isinstance(parsed, dict):
        what = f"a JSON object without '{key}'" if key else f"a JSON object ({kind})"
    elif is_json:
        what = "JSON that is not an object"
    elif not text.strip():
        what = f"an empty body ({kind})"
    else:
        what = f"text that is not JSON ({kind})"
    return (f"{backend.name} answered with {what} instead of {expected}; "
            f"check that {backend.base_url} is the base URL of an OpenAI-compatible API.")


def describe_status(response: httpx.Response, backend: Backend, model: str) -> str:
    """An HTTP error answer as one or two plain sentences."""
    status, message = response.status_code, server_message(response)
    where = backend.name
    if status in (401, 403):
        if backend.key_source is None:
            return f"{where} needs an API key ({status}: {message}). Set NANO_API_KEY or %config NanoMagics.api_key."
        return f"{where} refused the key from {backend.key_source} ({status}: {message}). Check {backend.key_source}."
    lowered = message.lower()
    if status == 404 or (status == 400 and "model" in lowered and any(w in lowered for w in ("not found", "deprecat", "does not exist", "retired", "shut down"))):
        return (
            f"The model '{model}' is unavailable or retired on {where} ({status}: {message}). "
            "Choose another with -m NAME or %config NanoMagics.model = '...'; %nano models lists what the server offers."
        )
    if status == 400 and ("context_length" in lowered or "context length" in lowered or "maximum context" in lowered):
        return f"The conversation is longer than the model's context window ({message}). Start afresh with %nano reset or --new."
    if status == 429:
        return f"{where} is rate limiting requests (429: {message})."
    if status >= 500:
        return f"{where} failed with a server error ({status}: {message})."
    return f"{where} answered {status}: {message}."


def server_message(response: httpx.Response) -> str:
    """The server's own words from an error body: OpenAI, FastAPI, Cloudflare v4, HTML or text."""
    text = response.text
    data = _json_or_none(text)
    if data is not None:
        return _message(data)[:300]
    if "<" in text and ">" in text:
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        text = html.unescape(text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:300] or response.reason_phrase or "no details"


def _message(data: Mapping[str, Any]) -> str:
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
        return _message(data["response"])
    return str(data.get("message") or json.dumps(data)[:300])
