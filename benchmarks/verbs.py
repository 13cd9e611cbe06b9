"""Rows 18–21: the data verbs (`Chat.filter`, `Chat.classify`, `Chat.reduce`) and dedupe, against the rate-limited server.

18–19. Throughput: `Chat.filter` and `Chat.classify` over 1,000 rows against the loopback rate-limited
   server (`tests/support/rate_limited.py`: a token bucket of R = 50 requests/s with 429s,
   x-ratelimit-* headers, 2% injected 500s and a few streams cut), concurrency 8, against `Chat.map`
   over the same rows on a fresh server in the same run. Rows/s over R, rows lost (no decision), rows answered twice.
20. Reduce: `Chat.reduce` over 100,000 short rows (default --chunk-tokens) against the server at a limit it
   never reaches, in a child process: peak RSS over the input, and the process's CPU time outside the
   requests (packing, token counts, keys, the cache and combining: total CPU minus the CPU of the
   runs that send the requests), against the CPU of `Chat.map`'s own planning of the same 100,000 rows.
21. Dedupe: `Chat.map` over 1,000 rows made of 50 distinct texts: requests answered by the server.

    python -m benchmarks.verbs
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.batch import CONCURRENCY, MODEL, ROWS, R, describe, reviews
from benchmarks.table import Row, emit
from nano_magic import Chat
from tests.support.rate_limited import RateLimitedServer
from tests.support.tiktoken_offline import use_offline_o200k

BIG = 100_000
DISTINCT = 50
LABELS = ["positive", "negative", "mixed"]


def decision(prompt: str) -> str:
    """A filter answer: keep the late deliveries."""
    return json.dumps({"answer": "late" in prompt})


def label(prompt: str) -> str:
    """A classify answer."""
    return json.dumps({"label": LABELS[len(prompt) % 3]})


def summary(prompt: str) -> str:
    """A short partial answer, as a model would write over a chunk."""
    return f"Most of these {prompt.count(chr(10)) + 1} lines say the delivery was late; a few praise the product."


def throughput(answer: Callable[[str], str], run: Callable[[Chat, list[str]], Any]) -> dict[str, float]:
    """One verb over ROWS rows at R: rows/s over R, 429s, lost (no answer) and twice."""
    rows = reviews(ROWS)
    with RateLimitedServer(rate=R, answer=answer) as server:
        chat = Chat(MODEL, base_url=server.base_url, env={})
        started = time.perf_counter()
        result = run(chat, rows)
        seconds = time.perf_counter() - started
        answered = len(result.answers) - int(result.answers.isna().sum())
        return {"share": answered / seconds / R, "throttled": server.throttled, "requests": server.requests,
                "lost": ROWS - answered, "twice": len(server.twice())}


@contextmanager
def short_server() -> Iterator[str]:
    """The rate-limited server in a child process at a limit it never reaches, answering chunks briefly; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.verbs", "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def serve() -> None:
    """Serve short partial answers until stdin closes."""
    with RateLimitedServer(rate=1e9, error_rate=0, cut_rate=0, latency=0, answer=summary) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


def reduce_figures() -> dict[str, float]:
    """In this (child) process: peak RSS and CPU outside the requests of `Chat.reduce` over 100,000 rows."""
    import pandas as pd

    from nano_magic import verbs
    from nano_magic.batch import plan_map
    from nano_magic.tokens import count_tokens
    from nano_magic.wire import Options

    count_tokens("load the tokenizer before the baseline")
    frame = pd.DataFrame({"text": reviews(BIG)})
    sending = [0.0]
    real_runs = verbs.run_rounds

    def timed_rounds(rounds: Any, run: Callable[[Any], Any]) -> bool:
        def measured(plan: Any) -> Any:
            before = time.process_time()
            try:
                return run(plan)
            finally:
                sending[0] += time.process_time() - before
        return real_runs(rounds, measured)

    verbs.run_rounds = timed_rounds  # the rounds' runs are the requests; everything else is bookkeeping
    with short_server() as url, tempfile.TemporaryDirectory() as tmp:
        chat = Chat(MODEL, base_url=url, env={})
        before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu, wall = time.process_time(), time.perf_counter()
        result = chat.reduce(frame, "What do these reviews complain about?\n- {text}", cache=Path(tmp) / "a.sqlite3", progress=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        baseline = time.process_time()
        plan_map(chat.gate, frame, "Classify: {text}", Options(model=MODEL), cache_path=None).close()
        baseline = time.process_time() - baseline
    return {"over": peak - before_rss, "cpu": cpu, "outside": cpu - sending[0], "wall": wall, "rounds": len(result.rounds),
            "requests": result.requests, "map_plan": baseline, "final": len(result.text)}


def dedupe() -> dict[str, float]:
    """`Chat.map` over 1,000 rows of 50 distinct texts: requests the server answered, and rows answered."""
    rows = [f"review {i % DISTINCT}: the parcel came late" for i in range(ROWS)]
    with RateLimitedServer(rate=R) as server:
        chat = Chat(MODEL, base_url=server.base_url, env={})
        result = chat.map(rows, "Summarise: {item}", concurrency=CONCURRENCY, cache=False, progress=False, temperature=0.7)
        return {"answered": len(server.completed), "distinct": len(set(server.completed)), "done": result.done}


def measure() -> list[Row]:
    """The four rows."""
    mapped = throughput(lambda prompt: f"Answer to: {prompt}",
                        lambda chat, rows: chat.map(rows, "Classify: {item}", concurrency=CONCURRENCY, cache=False, progress=False))
    kept = throughput(decision, lambda chat, rows: chat.filter(rows, "Was it late? {item}", concurrency=CONCURRENCY, cache=False, progress=False))
    labelled = throughput(label, lambda chat, rows: chat.classify(rows, "Label: {item}", LABELS, concurrency=CONCURRENCY, cache=False,
                                                                 progress=False))
    child = subprocess.run([sys.executable, "-m", "benchmarks.verbs", "--reduce"], capture_output=True, text=True, check=True)
    reduced = json.loads(child.stdout.splitlines()[-1])
    once = dedupe()

    def met(f: dict[str, float]) -> bool:
        return f["share"] >= 0.9 and f["lost"] == 0 and f["twice"] == 0

    return [
        Row(f"18. --filter, {ROWS:,} rows at R = {R}/s (429s, 2% 500s, cut streams), concurrency {CONCURRENCY}", describe(kept),
            f"--map, same rows: {describe(mapped)}", f"{kept['share'] / mapped['share']:.2f} of --map", "≥ 0.9 R, 0 lost", met(kept)),
        Row(f"19. --classify, {ROWS:,} rows at R = {R}/s, concurrency {CONCURRENCY}", describe(labelled),
            f"--map, same rows: {describe(mapped)}", f"{labelled['share'] / mapped['share']:.2f} of --map", "≥ 0.9 R, 0 lost", met(labelled)),
        Row(f"20. --reduce over {BIG:,} short rows (chunks of 4,000 tokens, fast limit)",
            f"{reduced['over']:.0f} MB peak over the input; {reduced['outside']:.2f} s CPU outside requests",
            f"--map's planning of the same rows: {reduced['map_plan']:.2f} s CPU",
            f"{reduced['rounds']:.0f} rounds, {reduced['requests']:.0f} requests, {reduced['cpu']:.1f} s CPU in all, {reduced['wall']:.0f} s",
            "< 300 MB, < 5 s CPU", reduced["over"] < 300 and reduced["outside"] < 5),
        Row(f"21. dedupe: --map over {ROWS:,} rows of {DISTINCT} distinct texts (-t 0.7)",
            f"{once['answered']:.0f} requests answered ({once['distinct']:.0f} distinct)", f"{DISTINCT} distinct prompts",
            f"{once['done']:,.0f} rows answered", "requests = distinct prompts",
            once["answered"] == DISTINCT == once["distinct"] and once["done"] == ROWS),
    ]


def main() -> None:
    """Rows; `--reduce` prints the reduce figures alone as JSON (in a fresh child), `--serve` runs the short-answer server."""
    use_offline_o200k()
    if "--serve" in sys.argv:
        serve()
    elif "--reduce" in sys.argv:
        print(json.dumps(reduce_figures()))
    else:
        emit(measure())


if __name__ == "__main__":
    main()
