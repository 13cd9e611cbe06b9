"""A loopback stand-in for OpenAI's Batch API, following its documented shapes, lifecycle and limits.

Live requests (`POST /v1/chat/completions`, `/v1/responses`) get the answer a batch line gets, for comparing the two.
`POST /v1/files` (multipart, purpose `batch`), `POST /v1/batches`, `GET /v1/batches[/{id}]`,
`POST /v1/batches/{id}/cancel` and `GET /v1/files/{id}/content`. A batch is `validating` for `validate_s`
seconds, then fails validation (over `max_requests`, `max_bytes`, the queued-token limit `token_limit`, or a bad
line) or goes `in_progress`, answering `rate` requests a second, then `finalizing` for `finalize_s`, then
`completed`. After `expire_s` an unfinished batch is `expired`; a cancelled one is `cancelled` at once. What finished
is in the output file, failures (`fail`) in the error file or, with `in_output`, as non-2xx lines of the output
file. Unfinished requests of an expired or cancelled batch are listed in the error file when `list_unfinished`.

Time is the real clock plus `advance()`, so a test can move a batch along without waiting; with `manual`, only `advance()`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlsplit

from tests.support.fake_server import ChatApi, Reply, ResponsesApi, count_words, error_body, split_text

ENDPOINTS = ("/v1/chat/completions", "/v1/responses")


def answer_for(body: dict[str, Any]) -> str:
    """The answer the stand-ins give a request: the same for a live request and a batch line."""
    items = body.get("messages") or body.get("input") or [{}]
    return f"Answer to: {items[-1].get('content')}"


@dataclass
class Fail:
    """How a request fails: an `error` object (status None), or a response with a non-2xx status (in the output file with `in_output`)."""

    message: str
    status: int | None = None
    code: str = "server_error"
    in_output: bool = False


@dataclass
class Batch:
    """One batch and the requests of its input file."""

    id: str
    input_file_id: str
    endpoint: str
    created: float
    lines: list[dict[str, Any]]
    size: int
    metadata: dict[str, Any]
    cancelled_at: float | None = None
    validated: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    files: tuple[str | None, str | None] | None = None  # output and error file ids, once made


class BatchServer:
    """The Batch API on a free loopback port; `uploads` holds every uploaded file's bytes and the headers it came with."""

    def __init__(self, *, max_requests: int = 50_000, max_bytes: int = 200_000_000, token_limit: int | None = None,
                 validate_s: float = 0.0, rate: float = 1e9, finalize_s: float = 0.0, expire_s: float | None = None,
                 fail: Callable[[dict[str, Any]], Fail | None] | None = None, list_unfinished: bool = True,
                 has_batches: bool = True, manual: bool = False, answer: Callable[[dict[str, Any]], str] = answer_for) -> None:
        self.answer = answer  # the text a request gets, from its body, live or batched
        self.max_requests, self.max_bytes, self.token_limit = max_requests, max_bytes, token_limit
        self.validate_s, self.rate, self.finalize_s, self.expire_s = validate_s, rate, finalize_s, expire_s
        self.fail, self.list_unfinished, self.has_batches = fail, list_unfinished, has_batches
        self.files: dict[str, bytes] = {}
        self.uploads: list[tuple[dict[str, str], bytes]] = []
        self.batches: dict[str, Batch] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.live: list[dict[str, Any]] = []  # bodies of live (not batched) requests
        self.offset = 0.0
        self.manual, self.started = manual, time.time()
        self._lock = threading.RLock()
        self._count = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.stand_in = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The API root."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> BatchServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def now(self) -> float:
        """The stand-in's clock: real time plus `advance`, or (`manual`) only `advance`."""
        return (self.started if self.manual else time.time()) + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock on, as if `seconds` had passed."""
        self.offset += seconds

    def new_id(self, prefix: str) -> str:
        with self._lock:
            self._count += 1
            return f"{prefix}-{self._count:06d}"

    def sent(self, method: str, prefix: str) -> list[str]:
        """The paths of requests with this method under this path."""
        return [path for m, path, _ in self.requests if m == method and path.startswith(prefix)]

    # The lifecycle, computed from the clock whenever a batch is read.
    def view(self, batch: Batch) -> dict[str, Any]:
        """The batch object as OpenAI shows it now."""
        age = self.now() - batch.created
        total = len(batch.lines)
        obj: dict[str, Any] = {
            "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": None, "input_file_id": batch.input_file_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": int(batch.created), "metadata": batch.metadata, "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        if age < self.validate_s and batch.cancelled_at is None:
            return obj
        if not batch.validated:
            batch.errors, batch.validated = self._validate(batch), True
        if batch.errors:
            obj.update(status="failed", errors={"object": "list", "data": batch.errors}, failed_at=int(batch.created + self.validate_s))
            return obj
        stop = batch.cancelled_at if batch.cancelled_at is not None else self.now()
        if self.expire_s is not None:
            stop = min(stop, batch.created + self.expire_s)
        done = min(total, max(0, int((stop - batch.created - self.validate_s) * self.rate)))
        failed = sum(1 for line in batch.lines[:done] if self._failure(line) is not None)
        obj["request_counts"] = {"total": total, "completed": done - failed, "failed": failed}
        ended = None
        if batch.cancelled_at is not None:
            ended = "cancelled"
        elif self.expire_s is not None and age >= self.expire_s and done < total:
            ended = "expired"
        elif done < total:
            obj["status"] = "in_progress"
            return obj
        elif age < self.validate_s + total / self.rate + self.finalize_s:
            obj["status"] = "finalizing"
            return obj
        else:
            ended = "completed"
        if batch.files is None:
            batch.files = self._results(batch, done, ended)
        obj.update(status=ended, output_file_id=batch.files[0], error_file_id=batch.files[1])
        return obj

    def _validate(self, batch: Batch) -> list[dict[str, Any]]:
        if len(batch.lines) > self.max_requests:
            return [{"code": "too_many_requests", "message": f"The batch has {len(batch.lines)} requests; the limit is {self.max_requests}.",
                     "line": None}]
        if batch.size > self.max_bytes:
            return [{"code": "file_too_large", "message": f"The file is {batch.size} bytes; the limit is {self.max_bytes}.", "line": None}]
        errors, seen = [], set()
        for number, line in enumerate(batch.lines, 1):
            cid = line.get("custom_id")
            problem = None
            if not isinstance(cid, str) or len(cid) > 64:
                problem = "custom_id must be a string of at most 64 characters"
            elif cid in seen:
                problem = f"custom_id {cid} is not unique"
            elif line.get("method") != "POST" or line.get("url") != batch.endpoint:
                problem = f"method and url must be POST {batch.endpoint}"
            elif not isinstance(line.get("body"), dict) or "stream" in line["body"]:
                problem = "body must be an object without stream"
            seen.add(cid)
            if problem:
                errors.append({"code": "invalid_request", "message": problem, "line": number})
        if errors:
            return errors
        if self.token_limit is not None:
            queued = sum(self._tokens(b) for b in self.batches.values() if b is not batch and b.files is None and not b.errors)
            if queued + self._tokens(batch) > self.token_limit:
                model = batch.lines[0]["body"].get("model")
                return [{"code": "token_limit_exceeded", "line": None, "message": (
                    f"Enqueued token limit reached for {model} in organization org-test. Limit: {self.token_limit:,} enqueued tokens. "
                    "Please try again once some in_progress batches have been completed.")}]
        return []

    @staticmethod
    def _tokens(batch: Batch) -> int:
        return sum(max(1, count_words(line["body"].get("messages") or line["body"].get("input"))) for line in batch.lines)

    def _failure(self, line: dict[str, Any]) -> Fail | None:
        return self.fail(line["body"]) if self.fail is not None else None

    def _results(self, batch: Batch, done: int, ended: str) -> tuple[str | None, str | None]:
        output, errors = [], []
        for index, line in enumerate(batch.lines):
            record: dict[str, Any] = {"id": f"batch_req_{index}", "custom_id": line["custom_id"], "response": None, "error": None}
            if index >= done:
                if self.list_unfinished:
                    code = "batch_expired" if ended == "expired" else "batch_cancelled"
                    record["error"] = {"code": code, "message": f"This request could not be executed before the batch {ended}."}
                    errors.append(record)
                continue
            failure = self._failure(line)
            if failure is None:
                record["response"] = {"status_code": 200, "request_id": f"req_{index}", "body": self._answer(batch.endpoint, line["body"], self.answer)}
                output.append(record)
            elif failure.status is None:
                record["error"] = {"code": failure.code, "message": failure.message}
                errors.append(record)
            else:
                record["response"] = {"status_code": failure.status, "request_id": f"req_{index}",
                                      "body": error_body(failure.message, "invalid_request_error")}
                (output if failure.in_output else errors).append(record)
        return self._file(output), self._file(errors)

    @staticmethod
    def _answer(endpoint: str, body: dict[str, Any], answer: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
        text = answer(body)
        api = ResponsesApi(body) if endpoint == "/v1/responses" else ChatApi(body)
        return api.whole(text, "stop", True, len(split_text(text)))

    def _file(self, records: list[dict[str, Any]]) -> str | None:
        if not records:
            return None
        file_id = self.new_id("file-out")
        self.files[file_id] = "".join(json.dumps(r) + "\n" for r in records).encode()
        return file_id


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    @property
    def stand_in(self) -> BatchServer:
        return self.server.stand_in  # type: ignore[attr-defined]

    def _record(self) -> str:
        path = urlsplit(self.path).path
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.stand_in._lock:
            self.stand_in.requests.append((self.command, path, headers))
        return path

    def _send(self, code: int, payload: dict[str, Any] | bytes, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        path, stand_in = self._record(), self.stand_in
        if not stand_in.has_batches:
            self._send(404, error_body("Not Found", "invalid_request_error"))
        elif path == "/v1/batches":
            with stand_in._lock:
                data = [stand_in.view(b) for b in stand_in.batches.values()]
            self._send(200, {"object": "list", "data": data[-1:], "has_more": False})
        elif path.startswith("/v1/batches/") and path.count("/") == 3:
            with stand_in._lock:
                batch = stand_in.batches.get(path.rsplit("/", 1)[1])
                view = stand_in.view(batch) if batch else None
            self._send(200, view) if view else self._send(404, error_body("No such batch", "invalid_request_error"))
        elif path.startswith("/v1/files/") and path.endswith("/content"):
            content = stand_in.files.get(path.split("/")[3])
            self._send(200, content, "application/octet-stream") if content is not None else self._send(404, error_body("No such file", "invalid_request_error"))
        else:
            self._send(404, error_body("Not Found", "invalid_request_error"))

    def do_POST(self) -> None:
        path, stand_in = self._record(), self.stand_in
        raw = self._body()
        if not stand_in.has_batches:
            self._send(404, error_body("Not Found", "invalid_request_error"))
        elif path in ENDPOINTS:
            self._live(path, json.loads(raw))
        elif path == "/v1/files":
            fields = _multipart(self.headers.get("Content-Type", ""), raw)
            if fields.get("purpose") != b"batch" or "file" not in fields:
                self._send(400, error_body("purpose must be batch and a file is required", "invalid_request_error"))
                return
            file_id = stand_in.new_id("file-in")
            with stand_in._lock:
                stand_in.files[file_id] = fields["file"]
                stand_in.uploads.append(({k.lower(): v for k, v in self.headers.items()}, fields["file"]))
            self._send(200, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": int(stand_in.now()),
                             "filename": "input.jsonl", "purpose": "batch"})
        elif path == "/v1/batches":
            self._create(json.loads(raw or b"{}"))
        elif path.startswith("/v1/batches/") and path.endswith("/cancel"):
            with stand_in._lock:
                batch = stand_in.batches.get(path.split("/")[3])
                if batch is not None and batch.cancelled_at is None and batch.files is None and not batch.errors:
                    batch.cancelled_at = stand_in.now()
                view = stand_in.view(batch) if batch else None
            self._send(200, view) if view else self._send(404, error_body("No such batch", "invalid_request_error"))
        else:
            self._send(404, error_body("Not Found", "invalid_request_error"))

    def _live(self, path: str, body: dict[str, Any]) -> None:
        """A live request, answered as the batch would answer it: streamed as server-sent events, or whole."""
        with self.stand_in._lock:
            self.stand_in.live.append(body)
        text = self.stand_in.answer(body)
        api = ResponsesApi(body) if path == "/v1/responses" else ChatApi(body)
        chunks = split_text(text)
        if not body.get("stream"):
            self._send(200, api.whole(text, "stop", True, len(chunks)))
            return
        frames = api.opening() + [api.delta(chunk) for chunk in chunks] + api.closing(Reply(text), text, len(chunks))
        self._send(200, "".join(frames).encode(), "text/event-stream")

    def _create(self, body: dict[str, Any]) -> None:
        stand_in = self.stand_in
        data = stand_in.files.get(body.get("input_file_id") or "")
        if data is None:
            self._send(400, error_body("No such input file", "invalid_request_error"))
            return
        if body.get("endpoint") not in ENDPOINTS or body.get("completion_window") != "24h":
            self._send(400, error_body("endpoint or completion_window is not supported", "invalid_request_error"))
            return
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        batch = Batch(stand_in.new_id("batch"), body["input_file_id"], body["endpoint"], stand_in.now(), lines, len(data),
                      body.get("metadata") or {})
        with stand_in._lock:
            stand_in.batches[batch.id] = batch
            view = stand_in.view(batch)
        self._send(200, view)


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body, by name."""
    boundary = content_type.split("boundary=", 1)[-1].strip('"').encode()
    fields = {}
    for part in raw.split(b"--" + boundary)[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[-1].split(b'"', 1)[0].decode()
        fields[name] = value.removesuffix(b"\r\n")
    return fields


def main() -> None:
    """Serve in this process for a benchmark: print the base URL, then `advance SECONDS` lines from stdin until it closes."""
    import sys

    with BatchServer(manual=True) as server:
        print(server.base_url, flush=True)
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["advance"]:
                server.advance(float(words[1]))
                with server._lock:  # the provider writes a finished batch's files before it says completed
                    for batch in server.batches.values():
                        server.view(batch)
                print("ok", flush=True)


if __name__ == "__main__":
    main()
