"""HTTP to OpenAI-compatible servers: sending with retries, reading the stream, and failures as plain English."""

from __future__ import annotations

import html
import random
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO, Callable, Generator, Iterable, Iterator

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from .catalogue import CLOUDFLARE_TASK, cloudflare_entries
from .config import CLOUDFLARE, Backend
from .errors import NanoError, StreamError
from .jsontext import json_object, load_json
from .rejections import ModelMissing, OptionRejected, missing_model, rejected_option
from .usage import Usage
from .wire import (
    Delta,
    Event,
    Finish,
    Refusal,
    Request,
    Retry,
    UsageReport,
    chat_events,
    complete_events,
    error_message,
    responses_events,
)

__all__ = [
    "Client", "AsyncClient", "Completion", "AttemptFailed", "ApiRefused", "backoff", "completion_of", "describe_status",
    "server_message", "refusal",
]

RETRY_STATUSES = {408, 409, 429}
_NO_HEADERS = httpx.Headers()  # an answer read from a file came with no response headers of its own
MAX_WAIT = 60.0


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

    def stream(self, request: Request) -> Generator[Event, None, None]:
        """Send `request` and yield its events; retries show up as Retry events before any text."""
        response = yield from self._open(request)
        finished = False
        try:
            if not request.body.get("stream"):
                response.read()
                key = "output" if request.api == "responses" else "choices"
                yield from complete_events(_answer_object(response, self.backend, key), request.api)
                return
            sse = EventSource(response).iter_sse()
            for event in responses_events(sse) if request.api == "responses" else chat_events(sse):
                finished = finished or isinstance(event, Finish)
                yield event
            for _ in sse:  # read to the end of the body, so that the connection goes back to the pool
                pass
        except SSEError:
            response.read()
            raise NanoError(self.backend.scrub(describe_body(response, self.backend, "a stream of server-sent events"))) from None
        except httpx.TransportError as exc:
            if finished:
                return  # the model said it was done; only the close was unclean
            raise StreamError(self.backend.scrub(f"The connection was cut mid-answer ({_reason(exc)}).")) from None
        except StreamError as exc:  # an error event quotes the server, which may echo the key
            raise StreamError(self.backend.scrub(str(exc))) from None
        finally:
            response.close()

    def models(self) -> list[dict[str, Any]]:
        """The server's `GET /models` list; on Workers AI, whose /ai/v1/models answers 405, its model search."""
        if self.backend.name == CLOUDFLARE:
            return self.cloudflare_models()
        return list(self._get_json(f"{self.backend.base_url}/models", {}, "data")["data"] or [])

    def cloudflare_models(self) -> list[dict[str, Any]]:
        """Workers AI's catalogue (`GET /accounts/{id}/ai/models/search`) as `GET /models` entries, only the models /ai/v1 can call."""
        url = self.backend.base_url.removesuffix("/v1") + "/models/search"
        found = self._get_json(url, {"task": CLOUDFLARE_TASK, "per_page": 100}, "result")["result"]
        return cloudflare_entries(found if isinstance(found, list) else [])

    def _get_json(self, url: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        """GET a JSON object that must have `key`; NanoError in a plain sentence otherwise."""
        try:
            response = self._http.get(url, params=params, headers=self.backend.headers())
        except httpx.TransportError as exc:
            raise NanoError(self.backend.scrub(f"Could not reach {self.backend.base_url}: {_reason(exc)}.")) from None
        if response.is_redirect:
            raise NanoError(self.backend.scrub(describe_redirect(response, self.backend, url.removeprefix(self.backend.base_url))))
        if response.status_code >= 400:
            raise NanoError(self.backend.scrub(f"Listing the models failed: {describe_status(response, self.backend, '')}"))
        return _answer_object(response, self.backend, key)

    def api(self, method: str, path: str, *, json: dict[str, Any] | None = None,
            files: dict[str, tuple[str, BinaryIO, str]] | None = None, data: dict[str, str] | None = None) -> dict[str, Any]:
        """One call to a JSON endpoint under the base URL (Files, Batches): its object, or ApiRefused in one line.

        GETs are retried like answers; a POST is sent once, so that a lost reply never creates a second batch.
        """
        url = f"{self.backend.base_url}{path}"
        headers = {k: v for k, v in self.backend.headers().items() if k.lower() != "content-type"}  # httpx sets it
        attempts = max(self.max_retries, 0) if method == "GET" else 0
        for attempt in range(attempts + 1):
            try:
                response = self._http.request(method, url, headers=headers, json=json, files=files, data=data)
            except httpx.TransportError as exc:
                if attempt < attempts:
                    self._sleep(backoff(attempt))
                    continue
                raise NanoError(self.backend.scrub(_transport_failure(exc, self.backend.base_url, self._http.timeout))) from None
            if _retryable(response.status_code) and attempt < attempts:
                wait = _retry_after(response.headers)
                self._sleep(backoff(attempt) if wait is None else wait)
                continue
            break
        if response.is_redirect:
            raise NanoError(self.backend.scrub(describe_redirect(response, self.backend, path)))
        if response.status_code >= 400:
            raise ApiRefused(self.backend.scrub(describe_status(response, self.backend, "")), response.status_code,
                             self.backend.scrub(server_message(response)))
        found = json_object(response.text)
        if found is None:
            raise NanoError(self.backend.scrub(describe_body(response, self.backend, "a JSON answer")))
        return found

    def download(self, path: str) -> Iterator[str]:
        """The lines of a file the server holds (`GET /files/{id}/content`), read as they arrive."""
        url = f"{self.backend.base_url}{path}"
        try:
            with self._http.stream("GET", url, headers=self.backend.headers()) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiRefused(self.backend.scrub(describe_status(response, self.backend, "")), response.status_code,
                                     self.backend.scrub(server_message(response)))
                for line in response.iter_lines():
                    if line.strip():
                        yield line
        except httpx.TransportError as exc:
            raise NanoError(self.backend.scrub(_transport_failure(exc, self.backend.base_url, self._http.timeout))) from None

    def _open(self, request: Request) -> Generator[Event, None, httpx.Response]:
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
                    raise NanoError(self.backend.scrub(describe_redirect(response, self.backend, request.url.removeprefix(self.backend.base_url))))
                if response.status_code < 400:
                    return response
                response.read()
                response.close()
                failure = describe_status(response, self.backend, request.body.get("model", ""))
                if not _retryable(response.status_code):
                    raise refusal(response, request, self.backend)
                reason = _retry_reason(response.status_code)
                asked = _retry_after(response.headers)
                wait = backoff(attempt) if asked is None else asked
            if attempt == attempts:
                suffix = f" (after {attempts + 1} attempts)" if attempts else ""
                raise NanoError(self.backend.scrub(failure.rstrip(".") + suffix + "."))
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


class ApiRefused(NanoError):
    """The server answered a Files or Batches call with an error status; `reason` is its own words."""

    def __init__(self, message: str, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class AttemptFailed(NanoError):
    """One attempt failed; `retryable` says whether another may pass, `retry_after` is the server's requested wait."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None, headers: httpx.Headers | None = None, partial: str | None = None) -> None:
        super().__init__(message)
        self.partial = partial  # the text that arrived before the answer broke off; None when no answer began
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
                    raise AttemptFailed(backend.scrub(describe_redirect(response, backend, path)), retryable=False)
                if response.status_code >= 400:
                    await response.aread()
                    failure = describe_status(response, backend, request.body.get("model", ""))
                    if not _retryable(response.status_code):
                        failure = str(refusal(response, request, backend))
                    raise AttemptFailed(backend.scrub(failure), retryable=_retryable(response.status_code),
                                        status=response.status_code, retry_after=_retry_after(response.headers),
                                        headers=response.headers)
                if not request.body.get("stream"):
                    await response.aread()
                    key = "output" if request.api == "responses" else "choices"
                    return _collect(complete_events(_answer_object(response, backend, key), request.api), response.headers)
                sse: list[ServerSentEvent] = []
                try:
                    async for event in EventSource(response).aiter_sse():
                        sse.append(event)
                except httpx.TransportError:
                    pass  # what arrived decides: a finish then an unclean close is complete, anything less is cut
                except SSEError:
                    await response.aread()
                    raise AttemptFailed(backend.scrub(describe_body(response, backend, "a stream of server-sent events")),
                                        retryable=False) from None
                return _collect(responses_events(sse) if request.api == "responses" else chat_events(sse), response.headers)
        except AttemptFailed:
            raise
        except httpx.TransportError as exc:
            raise AttemptFailed(backend.scrub(_transport_failure(exc, backend.base_url, self._http.timeout)), retryable=True) from None
        except StreamError as exc:
            raise AttemptFailed(backend.scrub(str(exc)), retryable=True, partial=exc.partial) from None
        except NanoError as exc:
            raise AttemptFailed(str(exc), retryable=False) from None


def _answer_object(response: httpx.Response, backend: Backend, key: str) -> dict[str, Any]:
    """The JSON object with `key` that a 2xx answer must be; NanoError in a plain sentence when it is something else."""
    data = json_object(response.text)
    if data is None or key not in data:
        raise NanoError(backend.scrub(describe_body(response, backend, "a JSON answer", key)))
    return data


def completion_of(data: dict[str, Any], api: str) -> Completion:
    """A whole answer read from a non-streamed answer object (a Batch API output line's body)."""
    return _collect(complete_events(data, api), _NO_HEADERS)


def _collect(events: Iterable[Event], headers: httpx.Headers) -> Completion:
    parts: list[str] = []
    refusal: list[str] = []
    completion = Completion("", None, None, headers)
    try:
        for event in events:
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Refusal):
                refusal.append(event.text)
            elif isinstance(event, UsageReport):
                completion.usage = event.usage
            elif isinstance(event, Finish):
                completion.finish_reason = event.reason
    except StreamError as exc:  # the answer broke off: what arrived is charged
        exc.partial = "".join(parts + refusal)
        raise
    completion.text = "".join(parts)
    completion.refusal = "".join(refusal)
    return completion


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
        return f"{backend.name} reported an error: {error_message(parsed)}"
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
    if status == 404 or missing_model(status, json_object(response.text), message):
        return (
            f"{model_gone(model, where, status, message)} "
            "Choose another with -m NAME or %config NanoMagics.model = '...'; %nano models lists what the server offers."
        )
    if status == 400 and ("context_length" in lowered or "context length" in lowered or "maximum context" in lowered):
        return f"The conversation is longer than the model's context window ({message}). Start afresh with %nano reset or --new."
    if status == 429:
        return f"{where} is rate limiting requests (429: {message})."
    if status >= 500:
        return f"{where} failed with a server error ({status}: {message})."
    return f"{where} answered {status}: {message}."


def model_gone(model: str, where: str, status: int, message: str) -> str:
    """The one line that says a model is unknown or retired."""
    return f"The model '{model}' is unavailable or retired on {where} ({status}: {message})."


def refusal(response: httpx.Response, request: Request, backend: Backend) -> NanoError:
    """An error answer that no retry can pass, as the failure that says it best: a missing model, a refused option, or a sentence."""
    status, message, data = response.status_code, server_message(response), json_object(response.text)
    model = str(request.body.get("model", ""))
    if missing_model(status, data, message):
        return ModelMissing(backend.scrub(model_gone(model, backend.name, status, message)), model)
    line = rejected_option(status, data, message, request.body, request.api)
    if line is not None:
        return OptionRejected(backend.scrub(line))
    return NanoError(backend.scrub(describe_status(response, backend, model)))


def server_message(response: httpx.Response) -> str:
    """The server's own words from an error body: OpenAI, FastAPI, Cloudflare v4, HTML or text."""
    text = response.text
    data = json_object(text)
    if data is not None:
        return error_message(data)[:300]
    if "<" in text and ">" in text:
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        text = html.unescape(text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:300] or response.reason_phrase or "no details"
