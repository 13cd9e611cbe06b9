"""Row 17: `Chat.map(batch=True)` over 100,000 rows against the loopback Batch API (`tests/support/batch_server.py`,
in a child process): submitting (plan, JSONL, upload, create) and collecting (download, cache, result).

Wall time includes the stand-in's own work in its process (parsing the upload; not writing the output files, which
it does when its clock moves on, as the provider does before it says completed); the CPU figure is this process's alone.
Baselines in the same process: planning the same rows alone (what a live run also does before sending), and the
rerun once everything is collected (every row from the cache). Peak RSS over the RSS with the input loaded.

    python -m benchmarks.batch_api
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from benchmarks.table import Row, emit
from nano_magic import Chat
from nano_magic.batch import plan_map
from nano_magic.wire import Options
from tests.support.tiktoken_offline import use_offline_o200k

ROWS = 100_000
TEMPLATE = "Classify the sentiment of this review: {item}"
MODEL = "gpt-4.1-nano"


def reviews(count: int) -> list[str]:
    """Distinct short reviews."""
    return [f"review {i}: the product arrived {'late' if i % 3 else 'on time'} and works {'well' if i % 2 else 'badly'}" for i in range(count)]


@contextmanager
def stand_in() -> Iterator[tuple[str, IO[str], IO[str]]]:
    """The Batch API stand-in in a child process: its URL and its command pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.batch_server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield proc.stdout.readline().strip(), proc.stdin, proc.stdout
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def rss_mb() -> float:
    """This process's peak RSS so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure() -> list[Row]:
    """Submit and collect 100,000 rows."""
    import pandas as pd

    from nano_magic.tokens import count_tokens

    count_tokens("load the tokenizer before the baseline")
    frame = pd.DataFrame({"item": reviews(ROWS)})
    with stand_in() as (url, commands, replies), tempfile.TemporaryDirectory() as tmp:
        chat = Chat(MODEL, base_url=url, env={})
        before = rss_mb()
        started = time.perf_counter()
        plan = plan_map(chat.gate, frame, TEMPLATE, Options(max_tokens=20), cache_path=None)
        planned = time.perf_counter() - started
        del plan
        cache = Path(tmp) / "answers.sqlite3"
        started, cpu = time.perf_counter(), time.process_time()
        pending = chat.map(frame, TEMPLATE, cache=cache, progress=False, batch=True, max_tokens=20)
        submitted, submit_cpu = time.perf_counter() - started, time.process_time() - cpu
        peak = rss_mb()
        commands.write("advance 100000\n")
        commands.flush()
        replies.readline()
        started, cpu = time.perf_counter(), time.process_time()
        result = chat.map(frame, TEMPLATE, cache=cache, progress=False, batch=True, max_tokens=20)
        collected, collect_cpu = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        again = chat.map(frame, TEMPLATE, cache=cache, progress=False, batch=True, max_tokens=20)
        rerun = time.perf_counter() - started
    done = getattr(result, "done", 0)
    batches = len(getattr(pending, "batches", []))
    return [
        Row(f"17a. --batch submit of {ROWS:,} rows ({batches} batches: JSONL written, uploaded, created)",
            f"{submitted:.1f} s ({submit_cpu:.1f} s CPU), {peak - before:.0f} MB over the input", f"planning alone: {planned:.1f} s",
            f"{submitted / planned:.2f}", "< 30 s, < 300 MB", submitted < 30 and peak - before < 300 and batches == 2),
        Row(f"17b. --batch collect of {ROWS:,} answers (download, cache, result)", f"{collected:.1f} s ({collect_cpu:.1f} s CPU), {done:,} answered",
            f"rerun from the cache: {rerun:.1f} s ({again.cached:,} cached)", f"{collected / rerun:.2f}", "< 30 s",
            collected < 30 and done == ROWS),
    ]


def main() -> None:
    """Print the rows."""
    use_offline_o200k()
    emit(measure())


if __name__ == "__main__":
    main()
