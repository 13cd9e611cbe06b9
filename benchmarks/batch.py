"""Rows 8–10: `Chat.map` (what `%%nano --map` runs) against a provider's rate limit, at scale, and resuming.

8. Throughput: 1,000 rows against the loopback rate-limited server (`tests/support/rate_limited.py`,
   a token bucket of R = 50 requests/s with 429s, x-ratelimit-* headers, 2% injected 500s and a few
   streams cut mid-answer), each contender against a fresh server in the same run:
   `Chat.map` at concurrency 8; (a) a sequential loop of `Chat.ask`; (b) openai-python's
   `AsyncOpenAI` with `asyncio.gather` and a semaphore of 8, at its default retries.
   Rows/s as a fraction of R, 429s received, rows lost, rows answered twice (the server's log).
9. Memory: peak RSS over the input (a 100,000-row DataFrame already in memory) for `Chat.map` over
   those rows against the server at a limit it never reaches, run in a child process.
10. Resume: `Chat.map` over 10,000 rows whose answers are all in the cache, against the first,
   uncached run of the same rows.

    python -m benchmarks.batch
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from benchmarks.table import Row, emit
from nano_magic import Chat
from tests.support.rate_limited import RateLimitedServer
from tests.support.tiktoken_offline import use_offline_o200k

R = 50
ROWS = 1_000
CONCURRENCY = 8
BIG = 100_000
RESUME = 10_000
TEMPLATE = "Classify the sentiment of this review: {item}"
MODEL = "gpt-4.1-nano"


def reviews(count: int) -> list[str]:
    """Distinct short reviews."""
    return [f"review {i}: the product arrived {'late' if i % 3 else 'on time'} and works {'well' if i % 2 else 'badly'}" for i in range(count)]


def figures(server: RateLimitedServer, answered: int, seconds: float) -> dict[str, float]:
    """Rows/s over R, 429s, lost and twice, from one contender's run."""
    return {"share": answered / seconds / R, "throttled": server.throttled, "requests": server.requests,
            "lost": ROWS - answered, "twice": len(server.twice())}


def with_map(rows: list[str]) -> dict[str, float]:
    """`Chat.map` at concurrency 8."""
    with RateLimitedServer(rate=R) as server:
        chat = Chat(MODEL, base_url=server.base_url, env={})
        started = time.perf_counter()
        result = chat.map(rows, TEMPLATE, concurrency=CONCURRENCY, cache=False, progress=False)
        return figures(server, result.done, time.perf_counter() - started)


def sequential(rows: list[str]) -> dict[str, float]:
    """One `Chat.ask` after another."""
    with RateLimitedServer(rate=R) as server:
        chat = Chat(MODEL, base_url=server.base_url, env={})
        started, answered = time.perf_counter(), 0
        for row in rows:
            try:
                chat.ask(TEMPLATE.format(item=row), once=True)
                answered += 1
            except Exception:  # a row the client gave up on counts as lost
                pass
        return figures(server, answered, time.perf_counter() - started)


def openai_gather(rows: list[str]) -> dict[str, float]:
    """`AsyncOpenAI` + `asyncio.gather` + a semaphore of 8, default retries."""
    from openai import AsyncOpenAI

    with RateLimitedServer(rate=R) as server:
        async def run() -> int:
            client = AsyncOpenAI(base_url=server.base_url, api_key="unused")
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(row: str) -> bool:
                async with gate:
                    try:
                        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": TEMPLATE.format(item=row)}])
                        return True
                    except Exception:  # retries exhausted: the row is lost
                        return False

            done = await asyncio.gather(*(one(row) for row in rows))
            await client.close()
            return sum(done)

        started = time.perf_counter()
        answered = asyncio.run(run())
        return figures(server, answered, time.perf_counter() - started)


def describe(f: dict[str, float]) -> str:
    """`0.96 R · 3 × 429 (0.3%) · 0 lost · 0 twice`."""
    share = 100 * f["throttled"] / max(f["requests"], 1)
    return f"{f['share']:.2f} R · {f['throttled']:.0f} × 429 ({share:.1f}%) · {f['lost']:.0f} lost · {f['twice']:.0f} twice"


@contextmanager
def fast_server() -> Iterator[str]:
    """The rate-limited server in a child process, at a limit that is never reached; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.rate_limited", "--rate", "1e9"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def peak_memory() -> dict[str, float]:
    """In this (child) process: RSS peak of `Chat.map` over 100,000 rows, over the RSS with the input loaded."""
    import pandas as pd

    from nano_magic.tokens import count_tokens

    count_tokens("load the tokenizer before the baseline")
    frame = pd.DataFrame({"item": reviews(BIG)})
    with fast_server() as url, tempfile.TemporaryDirectory() as tmp:
        chat = Chat(MODEL, base_url=url, env={})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        result = chat.map(frame, TEMPLATE, concurrency=CONCURRENCY, cache=Path(tmp) / "answers.sqlite3", progress=False)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"over": peak - before, "before": before, "done": result.done, "seconds": seconds}


def resume() -> tuple[float, float, int]:
    """Seconds for the first run of 10,000 rows and for the rerun that the cache answers; requests of the rerun."""
    rows = reviews(RESUME)
    with fast_server() as url, tempfile.TemporaryDirectory() as tmp:
        chat = Chat(MODEL, base_url=url, env={})
        cache = Path(tmp) / "answers.sqlite3"
        started = time.perf_counter()
        chat.map(rows, TEMPLATE, concurrency=CONCURRENCY, cache=cache, progress=False)
        first = time.perf_counter() - started
        started = time.perf_counter()
        again = chat.map(rows, TEMPLATE, concurrency=CONCURRENCY, cache=cache, progress=False)
        return first, time.perf_counter() - started, RESUME - again.cached


def measure() -> list[Row]:
    """The three rows."""
    rows = reviews(ROWS)
    ours, loop, gathered = with_map(rows), sequential(rows), openai_gather(rows)
    met = ours["share"] >= 0.9 and ours["throttled"] <= 0.02 * ours["requests"] and ours["lost"] == 0 and ours["twice"] == 0
    child = subprocess.run([sys.executable, "-m", "benchmarks.batch", "--memory"], capture_output=True, text=True, check=True)
    memory = json.loads(child.stdout.splitlines()[-1])
    first, resumed, sent = resume()
    return [
        Row(f"8. --map, {ROWS:,} rows at R = {R} requests/s (429s, 2% 500s, cut streams), concurrency {CONCURRENCY}",
            describe(ours), f"(a) sequential Chat.ask: {describe(loop)}; (b) AsyncOpenAI + gather + semaphore: {describe(gathered)}",
            f"{ours['share'] / gathered['share']:.2f} of (b)", "≥ 0.9 R, 429s ≤ 2%, 0 lost, 0 twice", met),
        Row(f"9. peak memory of --map over {BIG:,} rows (fast limit)", f"{memory['over']:.0f} MB over the input",
            f"{memory['before']:.0f} MB with the input loaded", f"{memory['done']:,.0f} rows in {memory['seconds']:.0f} s",
            "≤ 200 MB", memory["over"] <= 200 and memory["done"] == BIG),
        Row(f"10. rerun of {RESUME:,} cached rows", f"{resumed:.2f} s, {sent} requests", f"first run: {first:.1f} s",
            f"{resumed / first:.3f}", "≤ 2 s", resumed <= 2 and sent == 0),
    ]


def main() -> None:
    """Rows, or with `--memory` the memory figures alone as JSON (run in a fresh child process)."""
    use_offline_o200k()
    if "--memory" in sys.argv:
        print(json.dumps(peak_memory()))
    else:
        emit(measure())


if __name__ == "__main__":
    main()
