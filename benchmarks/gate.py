"""Rows 14–16: what the one gate costs (off switch, replay, budget hold, ledger) and `--map` throughput with a budget set.

14. A streamed answer of 60 chunks through `Gate.send` (budget set, so each request is estimated, held and
    metered chunk by chunk) against `Client.stream` alone, over the same in-memory `httpx.MockTransport`;
    the extra CPU a request, median of five alternating runs of 2,000 requests.
15. The same for many-row runs: `Gate.hold` + `Gate.complete` against `AsyncClient.complete` alone.
16. `Chat.map` over 1,000 rows against the loopback rate-limited server (`tests/support/rate_limited.py`,
    R = 50 requests/s, 429s, 2% 500s, cut streams) with a budget set that it never reaches, against the
    same run with no budget.

    python -m benchmarks.gate
"""

from __future__ import annotations

import asyncio
import time

import httpx

from benchmarks.sse import BASE_URL, Pieces
from benchmarks.table import Row, emit, median
from nano_magic import Chat
from nano_magic.client import AsyncClient, Client
from nano_magic.config import Backend
from nano_magic.gate import MAP_LABEL, Gate
from nano_magic.wire import Options, build_request
from tests.support.rate_limited import RateLimitedServer
from tests.support.tiktoken_offline import use_offline_o200k

MODEL = "gpt-4.1-nano"
REQUESTS = 2_000
REPEATS = 5
CHUNKS = 60
R = 50
ROWS = 1_000
BUDGET = 100.0  # dollars: set, never reached


def answer_body(chunks: int = CHUNKS) -> bytes:
    """A streamed Chat Completions answer of `chunks` text chunks, a finish and a usage chunk."""
    head = '{"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-nano",'
    frames = [head + f'"choices":[{{"index":0,"delta":{{"content":"word{i} "}},"finish_reason":null}}]}}' for i in range(chunks)]
    frames.append(head + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    frames.append(head + f'"choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":{chunks},"total_tokens":{chunks + 12}}}}}')
    return "".join(f"data: {frame}\n\n" for frame in frames).encode() + b"data: [DONE]\n\n"


def transports(body: bytes) -> tuple[httpx.MockTransport, httpx.MockTransport]:
    """A sync and an async transport answering every request with `body`."""
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Pieces([body]))

    async def arespond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx.MockTransport(respond), httpx.MockTransport(arespond)


def sync_run(transport: httpx.MockTransport, gated: bool) -> float:
    """CPU seconds for REQUESTS streamed answers, through the gate or through the client alone."""
    backend = Backend("bench", BASE_URL, MODEL)
    request = build_request(backend, MODEL, None, [{"role": "user", "content": "Explain heat in one paragraph."}], Options(max_tokens=200))
    gate = Gate(env={}, transport=transport)
    gate.configure({"base_url": BASE_URL, "model": MODEL})
    gate.budget = BUDGET
    client = Client(backend, transport=transport)
    started = time.process_time()
    for _ in range(REQUESTS):
        for _event in gate.send(request, "default", 200) if gated else client.stream(request):
            pass
    elapsed = time.process_time() - started
    client.close()
    gate.close()
    return elapsed


def async_run(transport: httpx.MockTransport, gated: bool) -> float:
    """CPU seconds for REQUESTS whole answers, each held and settled by the gate, or sent by the client alone."""
    backend = Backend("bench", BASE_URL, MODEL)
    request = build_request(backend, MODEL, None, [{"role": "user", "content": "Classify: fine"}], Options(max_tokens=200))
    gate = Gate(env={})
    gate.configure({"base_url": BASE_URL, "model": MODEL})
    gate.budget = BUDGET

    async def main() -> float:
        client = AsyncClient(backend, transport=transport)
        started = time.process_time()
        for _ in range(REQUESTS):
            if gated:
                hold = gate.hold(MODEL, 12, 200, MAP_LABEL, strict=False)
                assert hold is not None
                await gate.complete(client, request, hold)
                hold.release()
            else:
                await client.complete(request)
        elapsed = time.process_time() - started
        await client.aclose()
        return elapsed

    return asyncio.run(main())


def per_request(run: object, transport: httpx.MockTransport) -> tuple[float, float]:
    """Milliseconds of CPU a request, gated and not, medians of alternating runs."""
    gated, bare = [], []
    for _ in range(REPEATS):
        gated.append(run(transport, True))  # type: ignore[operator]
        bare.append(run(transport, False))  # type: ignore[operator]
    return median(gated) / REQUESTS * 1000, median(bare) / REQUESTS * 1000


def throughput(budget: float | None, count: int = ROWS) -> tuple[float, int, int]:
    """Rows a second over R, rows lost, and ledger entries, for `Chat.map` against the rate-limited server."""
    rows = [f"review {i}: it arrived {'late' if i % 3 else 'on time'}" for i in range(count)]
    with RateLimitedServer(rate=R) as server:
        chat = Chat(MODEL, base_url=server.base_url, env={})
        chat.budget = budget
        started = time.perf_counter()
        result = chat.map(rows, "Classify the sentiment of this review: {item}", concurrency=8, cache=False, progress=False)
        seconds = time.perf_counter() - started
    return result.done / seconds / R, count - result.done, len(chat.ledger)


def measure() -> list[Row]:
    """The three rows."""
    sync_transport, async_transport = transports(answer_body())
    sync_gated, sync_bare = per_request(sync_run, sync_transport)
    async_gated, async_bare = per_request(async_run, async_transport)
    throughput(None, 100)  # the first run in a process pays for imports and the tokenizer: not counted
    budgeted, lost, entries = throughput(BUDGET)
    free, free_lost, _ = throughput(None)
    sync_cost, async_cost = sync_gated - sync_bare, async_gated - async_bare
    return [
        Row(f"14. gate cost of a streamed answer ({CHUNKS} chunks, budget set: estimate, hold, meter, ledger)",
            f"+{sync_cost:.3f} ms CPU a request", f"Client.stream alone: {sync_bare:.3f} ms", f"{sync_gated / sync_bare:.2f}",
            "< 0.2 ms a request", sync_cost < 0.2),
        Row("15. gate cost of a --map item (hold, complete, settle)",
            f"+{async_cost:.3f} ms CPU a request", f"AsyncClient.complete alone: {async_bare:.3f} ms", f"{async_gated / async_bare:.2f}",
            "< 0.2 ms a request", async_cost < 0.2),
        Row(f"16. --map, {ROWS:,} rows at R = {R}/s (429s, 2% 500s, cut streams) with a ${BUDGET:g} budget set",
            f"{budgeted:.2f} R · {lost} lost · {entries:,} ledger entries", f"no budget: {free:.2f} R · {free_lost} lost",
            f"{budgeted / free:.2f}", "≥ 0.9 R", budgeted >= 0.9 and lost == 0),
    ]


def main() -> None:
    """Print the rows (as JSON lines with --json)."""
    use_offline_o200k()
    emit(measure())


if __name__ == "__main__":
    main()
