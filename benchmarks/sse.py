"""Row 1: SSE throughput of `Client.stream` against a bare `httpx_sse` + `json.loads` loop.

100,000 `chat.completion.chunk` events (then a finish chunk, a usage chunk and `[DONE]`) come from
an in-memory `httpx.MockTransport` in 4–16 KB pieces, as a socket would hand them over. Both
sides read the same bytes through the same transport; the figure is events per CPU second,
the median of five alternating runs.

    python -m benchmarks.sse
"""

from __future__ import annotations

import json
import random
import time
from typing import Iterator

import httpx
from httpx_sse import EventSource

from benchmarks.answer import answer, tokens
from benchmarks.table import Row, emit, median
from nano_magic.client import Client
from nano_magic.config import Backend
from nano_magic.wire import Options, build_request

EVENTS = 100_000
REPEATS = 5
BASE_URL = "http://bench.invalid/v1"


class Pieces(httpx.SyncByteStream):
    """A response body handed over in fixed pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces


def body_pieces(events: int = EVENTS, seed: int = 1) -> list[bytes]:
    """The SSE body of `events` text chunks plus the closing frames, cut into 4–16 KB pieces."""
    words = tokens(answer(64_000))
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "bench"}
    frames = [
        json.dumps({**head, "choices": [{"index": 0, "delta": {"content": words[i % len(words)]}, "finish_reason": None}], "usage": None})
        for i in range(events)
    ]
    frames.append(json.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}))
    usage = {"prompt_tokens": 10, "completion_tokens": events, "total_tokens": events + 10}
    frames.append(json.dumps({**head, "choices": [], "usage": usage}))
    body = "".join(f"data: {frame}\n\n" for frame in frames).encode() + b"data: [DONE]\n\n"
    rng = random.Random(seed)
    pieces, at = [], 0
    while at < len(body):
        step = rng.randint(4_096, 16_384)
        pieces.append(body[at : at + step])
        at += step
    return pieces


def transport_for(pieces: list[bytes]) -> httpx.MockTransport:
    """A transport that answers every request with the given SSE body."""
    return httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Pieces(pieces))
    )


def ours(transport: httpx.MockTransport) -> float:
    """CPU seconds for `Client.stream` to yield every event."""
    backend = Backend("bench", BASE_URL, "bench")
    client = Client(backend, transport=transport)
    request = build_request(backend, "bench", None, [{"role": "user", "content": "hi"}], Options())
    started = time.process_time()
    for _ in client.stream(request):
        pass
    elapsed = time.process_time() - started
    client.close()
    return elapsed


def bare(transport: httpx.MockTransport) -> float:
    """CPU seconds for `EventSource(response).iter_sse()` plus `json.loads` of each event."""
    with httpx.Client(transport=transport) as http:
        started = time.process_time()
        with http.stream("POST", f"{BASE_URL}/chat/completions", json={"stream": True}) as response:
            for sse in EventSource(response).iter_sse():
                if sse.data != "[DONE]":
                    json.loads(sse.data)
        return time.process_time() - started


def measure() -> list[Row]:
    """Events per CPU second for both readers, medians of alternating runs."""
    pieces = body_pieces()
    transport = transport_for(pieces)
    ours_runs, bare_runs = [], []
    for _ in range(REPEATS):
        ours_runs.append(ours(transport))
        bare_runs.append(bare(transport))
    events = EVENTS + 3
    ours_rate, bare_rate = events / median(ours_runs), events / median(bare_runs)
    size = sum(len(p) for p in pieces) / 1e6
    return [Row(
        f"1. SSE throughput, 100k chat chunks ({size:.0f} MB in 4–16 KB pieces, MockTransport)",
        f"{ours_rate:,.0f} events/s", f"{bare_rate:,.0f} events/s (iter_sse + json.loads)",
        f"{ours_rate / bare_rate:.2f}", "≥ 0.80 of bare", ours_rate / bare_rate >= 0.8,
    )]


if __name__ == "__main__":
    emit(measure())
