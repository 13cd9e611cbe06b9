"""A loopback Chat Completions server with a provider's rate limit, injected failures and a log of answered rows.

A token bucket admits `rate` requests a second (bursts up to `burst`). Every answer carries
OpenAI's `x-ratelimit-*` headers; a request over the limit gets a 429 with `retry-after-ms`,
`Retry-After` and the same headers. A seeded share of the admitted requests fail with a 500 or
have their stream cut mid-answer. `completed` lists the prompt of every answer sent to its end,
so a test can see whether any row was answered twice, and `streamed` whether each was streamed.

    with RateLimitedServer(rate=50) as server:
        ...  # point a client at server.base_url
        assert server.throttled == 0
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable

from tests.support.fake_server import ChatApi, Handler, Reply, split_text

__all__ = ["RateLimitedServer", "go_duration", "echo"]


def go_duration(seconds: float) -> str:
    """A reset duration as OpenAI writes it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 1)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


def echo(prompt: str) -> str:
    """The default answer: the prompt, quoted back."""
    return f"Answer to: {prompt}"


class _Bucket:
    """A token bucket: `rate` tokens a second, at most `burst` held."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> tuple[bool, float]:
        """Take one token if there is one; return whether it was taken and the tokens left."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, self.tokens
        return False, self.tokens

    def headers(self, left: float) -> dict[str, str]:
        """OpenAI's rate-limit headers for `left` tokens."""
        return {
            "x-ratelimit-limit-requests": str(self.burst),
            "x-ratelimit-remaining-requests": str(int(left)),
            "x-ratelimit-reset-requests": go_duration((self.burst - left) / self.rate),
        }


class _Handler(Handler):
    """The fake server's handler, answering chat completions under the rate limit."""

    server: _Loopback  # type: ignore[assignment]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        owner = self.server.owner
        admitted, left, headers, fault = owner._admit()
        if not admitted:
            wait = (1 - left) / owner.rate
            headers |= {"retry-after-ms": str(max(math.ceil(wait * 1000), 1)), "Retry-After": str(max(math.ceil(wait), 1))}
            self._json(429, {"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}, headers)
            return
        if fault == "500":
            self._json(500, {"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}, headers)
            return
        prompt = body["messages"][-1]["content"]
        text = owner.answer(prompt)
        if owner.latency:
            time.sleep(owner.latency)
        api = ChatApi(body)
        pieces = split_text(text)
        if not body.get("stream"):
            self._json(200, api.whole(text, "stop", True, len(pieces)), headers)
            owner._completed(prompt, False)
            return
        self._send_head(200, "text/event-stream", {**headers, "Transfer-Encoding": "chunked"})
        if fault == "cut":
            self._send_frames(["".join([*api.opening(), *(api.delta(p) for p in pieces[: max(len(pieces) // 2, 1)])])])
            self._cut()
            return
        self._send_frames(["".join([*api.opening(), *(api.delta(p) for p in pieces), *api.closing(Reply(), text, len(pieces))])])
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        owner._completed(prompt, True)

    def _json(self, code: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        self._send_bytes(code, json.dumps(payload).encode(), "application/json", headers)


class _Loopback(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, owner: RateLimitedServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class RateLimitedServer:
    """The rate-limited loopback server; `completed`, `throttled`, `errors`, `cuts` and `requests` tell what happened."""

    def __init__(self, rate: float = 50, burst: int | None = None, *, error_rate: float = 0.02, cut_rate: float = 0.006,
                 latency: float = 0.02, seed: int = 7, answer: Callable[[str], str] = echo) -> None:
        self.rate, self.latency, self.answer = rate, latency, answer
        self.error_rate, self.cut_rate = error_rate, cut_rate
        self.completed: list[str] = []
        self.streamed: list[bool] = []  # whether each completed answer was streamed
        self.requests = self.throttled = self.errors = self.cuts = 0
        self._bucket = _Bucket(rate, burst or max(int(rate), 1))
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd: _Loopback | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The API root."""
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def twice(self) -> list[str]:
        """Prompts answered more than once."""
        with self._lock:
            return [prompt for prompt, n in Counter(self.completed).items() if n > 1]

    def _admit(self) -> tuple[bool, float, dict[str, str], str | None]:
        with self._lock:
            self.requests += 1
            admitted, left = self._bucket.take()
            headers = self._bucket.headers(left)
            if not admitted:
                self.throttled += 1
                return False, left, headers, None
            draw = self._random.random()
            fault = "500" if draw < self.error_rate else "cut" if draw < self.error_rate + self.cut_rate else None
            self.errors += fault == "500"
            self.cuts += fault == "cut"
            return True, left, headers, fault

    def _completed(self, prompt: str, streamed: bool) -> None:
        with self._lock:
            self.completed.append(prompt)
            self.streamed.append(streamed)

    def __enter__(self) -> RateLimitedServer:
        self._httpd = _Loopback(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def main() -> None:
    """`python -m tests.support.rate_limited --rate N`: serve until stdin closes, after printing the base URL."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--cut-rate", type=float, default=0.0)
    args = parser.parse_args()
    with RateLimitedServer(args.rate, error_rate=args.error_rate, cut_rate=args.cut_rate, latency=args.latency) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
