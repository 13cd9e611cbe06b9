"""Row 3: CPU and IOPub bytes of `HtmlView` + `StreamRenderer` against a naive per-token re-render.

Both views run in one process on an in-process ipykernel (see `benchmarks.inprocess`): real
ipywidgets, real comms, every IOPub frame counted. CPU is `time.process_time` over the whole
process (all threads: the feeder, which also refreshes the view when paced, the view's ticker
when not, and the IOPub thread), from creating the view to the last frame of `finish`.

Ours is fed two ways:
  paced      15 deltas per refresh, what a ~150 deltas/s model causes at the default
             10 refreshes/s, on a virtual clock (see `run_view`), so the renders and messages
             of a one-minute stream take only as long as the work;
  at once    all deltas as fast as possible with the real ticker at 10/s: the stream ends
             before the second tick, so this mostly measures `finish`.
The naive view (`to_html` of the whole text on every delta, into one `HTMLMath`) is quadratic:
it is measured on the first 1k and 2k tokens and its 8k figure is extrapolated with the
quadratic through those two points (`c·n + d·n²`), as the rows say.

    python -m benchmarks.view_cpu
"""

from __future__ import annotations

from benchmarks.answer import answer, prefix, tokens
from benchmarks.inprocess import PER_REFRESH, MeteredKernel, Run, run_naive, run_view
from benchmarks.table import Row, cpu, emit, median, size

REPEATS = 3


def fit_quadratic(n1: int, y1: float, n2: int, y2: float, n: int) -> float:
    """y(n) for the curve c·n + d·n² through (n1, y1) and (n2, y2)."""
    d = (y2 / n2 - y1 / n1) / (n2 - n1)
    c = y1 / n1 - d * n1
    return c * n + d * n * n


def refreshes(count: float) -> str:
    """`1 refresh`, `538 refreshes`."""
    return f"{count:.0f} refresh{'' if count == 1 else 'es'}"


def median_run(runs: list[Run]) -> Run:
    """The median of each figure."""
    return Run(*(median(  # type: ignore[arg-type]  # the median of an even count may fall between two counts
        [getattr(r, f) for r in runs]) for f in ("cpu", "bytes", "messages", "refreshes")))


def measure() -> list[Row]:
    """CPU and bytes at 2k (both measured) and 8k (naive extrapolated), paced and at once."""
    meter = MeteredKernel()
    run_view(meter, prefix(1_000))  # warm-up: imports and first-use caches
    d2k, d8k = prefix(2_000), tokens(answer(8_000))
    paced_2k = median_run([run_view(meter, d2k) for _ in range(REPEATS)])
    paced_8k = median_run([run_view(meter, d8k) for _ in range(REPEATS)])
    at_once = median_run([run_view(meter, d8k, paced=False) for _ in range(REPEATS)])
    naive_1k, naive_2k = run_naive(meter, prefix(1_000)), run_naive(meter, d2k)
    naive_cpu = fit_quadratic(1_000, naive_1k.cpu, 2_000, naive_2k.cpu, len(d8k))
    naive_bytes = fit_quadratic(1_000, naive_1k.bytes, 2_000, naive_2k.bytes, len(d8k))
    extrapolated = "naive, extrapolated from 1k+2k"
    paced = f"paced {PER_REFRESH} deltas/refresh"
    return [
        Row(
            f"3. view CPU, 2k tokens, {paced} ({refreshes(paced_2k.refreshes)}), in-process kernel",
            cpu(paced_2k.cpu), f"naive, measured: {cpu(naive_2k.cpu)}",
            f"1/{naive_2k.cpu / paced_2k.cpu:.0f}", "≤ 1/50 of naive", paced_2k.cpu * 50 <= naive_2k.cpu,
        ),
        Row(
            f"3. view CPU, 8k tokens, {paced} ({refreshes(paced_8k.refreshes)})",
            cpu(paced_8k.cpu), f"{extrapolated}: {cpu(naive_cpu)}",
            f"1/{naive_cpu / paced_8k.cpu:.0f}", "≤ 1/50 of naive", paced_8k.cpu * 50 <= naive_cpu,
        ),
        Row(
            f"3. view CPU, 8k tokens fed at once, ticker 10/s ({refreshes(at_once.refreshes)})",
            cpu(at_once.cpu), f"{extrapolated}: {cpu(naive_cpu)}",
            f"1/{naive_cpu / at_once.cpu:.0f}", "≤ 1/50 of naive", at_once.cpu * 50 <= naive_cpu,
        ),
        Row(
            f"3. IOPub bytes (ZMQ frames), 8k tokens, {paced}",
            f"{size(paced_8k.bytes)} in {paced_8k.messages:.0f} msgs", f"{extrapolated}: {size(naive_bytes)}",
            f"1/{naive_bytes / paced_8k.bytes:.0f}", "≤ 1 MB", paced_8k.bytes <= 1e6,
        ),
        Row(
            "3. IOPub bytes (ZMQ frames), 8k tokens fed at once, ticker 10/s",
            f"{size(at_once.bytes)} in {at_once.messages:.0f} msgs", f"{extrapolated}: {size(naive_bytes)}",
            f"1/{naive_bytes / at_once.bytes:.0f}", "≤ 1 MB", at_once.bytes <= 1e6,
        ),
    ]


if __name__ == "__main__":
    emit(measure())
