"""OpenAI's Batch API: requests written as JSONL, uploaded and created, polled, and their output and error files read.

Limits, from OpenAI's API reference for creating a batch (https://platform.openai.com/docs/api-reference/batch/create):
the input file "can contain up to 50,000 requests, and can be up to 200 MB in size", uploaded with purpose `batch`;
`completion_window` is `24h`; the endpoint is `/v1/chat/completions` or `/v1/responses`. Each line's `custom_id`
is at most 64 characters (https://platform.openai.com/docs/api-reference/batch/request-input). Batch statuses:
validating, failed, in_progress, finalizing, completed, expired, cancelling, cancelled.

Cloudflare Workers AI's own batch queue (`queueRequest`, https://developers.cloudflare.com/workers-ai/features/batch-api/)
is not this API: it takes a `requests` array posted to `/ai/run/{model}?queueRequest=true`, for the models its catalogue
marks as batch-capable, which are `@cf/` models and not `openai/*`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .batch_records import BatchRecord
from .client import ApiRefused, Client, Completion, completion_of
from .config import Backend
from .errors import BatchUnavailable
from .jsontext import json_object
from .wire import Request, error_message

__all__ = [
    "MAX_REQUESTS", "MAX_BYTES", "TERMINAL", "Part", "Outcome", "unavailable", "check_offered", "batch_line", "write_parts",
    "upload_and_create", "retrieve", "cancel", "counts", "read_results", "refusal_lines", "progress_line", "endpoint_for",
]

MAX_REQUESTS = 50_000  # requests in one batch's input file
MAX_BYTES = 200_000_000  # bytes in one batch's input file (200 MB, read as the smaller decimal megabytes)
CUSTOM_ID_CHARS = 64
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
UNFINISHED = frozenset({"batch_expired", "batch_cancelled"})  # error codes of requests the batch never ran
SHOWN_ERRORS = 5
_TRANSPORT_ONLY = ("stream", "stream_options")  # a batch answers whole: how a live answer travels does not apply
_ABSENT = (404, 405, 501)


def endpoint_for(api: str) -> str:
    """The batch `endpoint` (and each line's `url`) of `chat` or `responses`."""
    return "/v1/responses" if api == "responses" else "/v1/chat/completions"


def unavailable(backend: Backend) -> str | None:
    """Why `backend` has no OpenAI Batch API, known without asking it; None when it may have one."""
    if backend.name == "Cloudflare Workers AI":
        return ("--batch: Cloudflare Workers AI has no Files/Batches API (its queueRequest batches take only some @cf/ models, "
                "not openai/*); nothing was sent. Run without --batch, or use OpenAI or an AI Gateway's OpenAI route.")
    return None


def check_offered(client: Client) -> None:
    """Ask the server for its batches before anything is uploaded; BatchUnavailable in one line when it has no such API."""
    try:
        client.api("GET", "/batches?limit=1")
    except ApiRefused as exc:
        backend = client.backend
        if exc.status in _ABSENT:
            raise BatchUnavailable(f"--batch: {backend.name} at {backend.shown_url()} has no Batch API (GET /batches answered "
                                   f"{exc.status}); nothing was sent. Run without --batch.") from None
        raise BatchUnavailable(f"--batch: {backend.name} refused the Batch API ({exc.status}: {exc.reason}); nothing was sent.") from None


def batch_line(custom_id: str, request: Request) -> bytes:
    """One JSONL line: the live request's body without its streaming fields, and the custom id that finds its answer."""
    if len(custom_id) > CUSTOM_ID_CHARS:
        raise ValueError(f"custom_id {custom_id[:20]}… is longer than {CUSTOM_ID_CHARS} characters")
    body = {k: v for k, v in request.body.items() if k not in _TRANSPORT_ONLY}
    line = {"custom_id": custom_id, "method": "POST", "url": endpoint_for(request.api), "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass
class Part:
    """One batch's input file on disk and the custom ids in it."""

    path: Path
    custom_ids: list[str] = field(default_factory=list)
    size: int = 0


def write_parts(requests: Iterable[tuple[str, Request]], folder: Path, max_requests: int, max_bytes: int = MAX_BYTES) -> Iterator[Part]:
    """Write the requests as JSONL files in `folder`, each within both limits; yield each file once it is full.

    One file is open at a time, so that the caller can upload it and delete it before the next is written.
    """
    part: Part | None = None
    handle = None
    try:
        for custom_id, request in requests:
            line = batch_line(custom_id, request)
            if len(line) > max_bytes:
                raise BatchUnavailable(f"--batch: one request is {len(line):,} bytes, more than a batch file may hold ({max_bytes:,}).")
            if part is not None and handle is not None and (len(part.custom_ids) >= max_requests or part.size + len(line) > max_bytes):
                handle.close()
                yield part
                part = None
            if part is None:
                part = Part(folder / f"nano-batch-{time.time_ns()}.jsonl")
                handle = part.path.open("wb")
            assert handle is not None
            handle.write(line)
            part.custom_ids.append(custom_id)
            part.size += len(line)
        if part is not None and handle is not None:
            handle.close()
            yield part
    finally:
        if handle is not None and not handle.closed:
            handle.close()


def upload_and_create(client: Client, part: Part, endpoint: str, label: str) -> dict[str, Any]:
    """Upload one input file (`POST /files`, purpose batch) and create its batch (`POST /batches`): the one place a batch is sent."""
    with part.path.open("rb") as handle:
        uploaded = _refused_in_one_line(client, "POST /files", lambda: client.api(
            "POST", "/files", files={"file": (part.path.name, handle, "application/jsonl")}, data={"purpose": "batch"}))
    if not isinstance(uploaded.get("id"), str):
        raise BatchUnavailable(f"--batch: {client.backend.name} accepted the file but gave it no id; nothing more was sent.")
    body = {"input_file_id": uploaded["id"], "endpoint": endpoint, "completion_window": "24h", "metadata": {"nano_magic": label[:500]}}
    created = _refused_in_one_line(client, "POST /batches", lambda: client.api("POST", "/batches", json=body))
    if not isinstance(created.get("id"), str):
        raise BatchUnavailable(f"--batch: {client.backend.name} answered the new batch without an id.")
    return created


def _refused_in_one_line(client: Client, what: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return call()
    except ApiRefused as exc:
        name = client.backend.name
        raise BatchUnavailable(f"--batch: {name} refused {what} ({exc.status}: {exc.reason}); nothing more was sent.") from None


def retrieve(client: Client, batch_id: str) -> dict[str, Any]:
    """The batch object as the provider has it now (`GET /batches/{id}`)."""
    return client.api("GET", f"/batches/{batch_id}")


def cancel(client: Client, batch_id: str) -> dict[str, Any]:
    """Ask the provider to cancel a batch (`POST /batches/{id}/cancel`); what finished stays in its output file."""
    return client.api("POST", f"/batches/{batch_id}/cancel")


def counts(batch: dict[str, Any]) -> tuple[int, int]:
    """(completed, failed) from a batch object's `request_counts`."""
    found = batch.get("request_counts") or {}
    return int(found.get("completed") or 0), int(found.get("failed") or 0)


@dataclass(slots=True)
class Outcome:
    """What a batch did with one request: an answer, or a one-line reason it has none (`unfinished`: never ran)."""

    custom_id: str
    completion: Completion | None = None
    error: str | None = None
    unfinished: bool = False


def read_results(client: Client, batch: dict[str, Any], api: str) -> Iterator[Outcome]:
    """Every line of the batch's output and error files (`GET /files/{id}/content`), read as it arrives."""
    for key in ("output_file_id", "error_file_id"):
        file_id = batch.get(key)
        if isinstance(file_id, str) and file_id:
            for line in client.download(f"/files/{file_id}/content"):
                outcome = outcome_of(line, api, client.backend)
                if outcome is not None:
                    yield outcome


def outcome_of(line: str, api: str, backend: Backend) -> Outcome | None:
    """One output or error line; None for a line with no custom id (not ours to place)."""
    data = json_object(line)
    if data is None or not isinstance(data.get("custom_id"), str):
        return None
    custom_id = data["custom_id"]
    error, response = data.get("error"), data.get("response")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        message = error_message({"error": error})
        return Outcome(custom_id, error=_one_line(backend, f"{code}: {message}" if code else message), unfinished=code in UNFINISHED)
    response = response if isinstance(response, dict) else {}
    status, body = response.get("status_code"), response.get("body")
    if not isinstance(status, int) or not 200 <= status < 300:
        said = error_message(body) if isinstance(body, dict) else "no details"
        return Outcome(custom_id, error=_one_line(backend, f"The provider answered {status}: {said}"))
    if not isinstance(body, dict):
        return Outcome(custom_id, error="The provider's answer line holds no answer object.")
    return Outcome(custom_id, completion=completion_of(body, api))


def _one_line(backend: Backend, text: str) -> str:
    return backend.scrub(" ".join(text.split()))[:300]


def refusal_lines(batch: dict[str, Any], max_requests: int, backend: Backend) -> list[str]:
    """Why a batch failed validation: the queued-token limit in one line, or the provider's errors one a line (at most 5)."""
    errors = [e for e in ((batch.get("errors") or {}).get("data") or []) if isinstance(e, dict)]
    queued = next((e for e in errors if e.get("code") == "token_limit_exceeded"), None)
    if queued is not None:
        said = _one_line(backend, str(queued.get("message") or "token_limit_exceeded"))
        line = (f"Batch {batch.get('id')} was refused: the provider's queue of batch tokens for this model is full ({said}). "
                f"Set a smaller NanoMagics.batch_max_requests (now {max_requests:,}) or wait for running batches to finish, "
                "then run the cell again.")
        return [line]
    lines = [f"Batch {batch.get('id')} failed validation:"]
    for error in errors[:SHOWN_ERRORS]:
        where = f"line {error['line']}: " if isinstance(error.get("line"), int) else ""
        lines.append("  " + _one_line(backend, f"{where}{error.get('code') or 'error'}: {error.get('message') or ''}"))
    if len(errors) > SHOWN_ERRORS:
        lines.append(f"  … and {len(errors) - SHOWN_ERRORS:,} more")
    return lines


def progress_line(record: BatchRecord, now: float | None = None) -> str:
    """One line per batch: id, status, completed/failed/total and age."""
    age = (time.time() if now is None else now) - record.created
    return (f"{record.id}: {record.status} · {record.completed:,} completed, {record.failed:,} failed of {record.total:,} "
            f"· {_age(age)} old")


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"
