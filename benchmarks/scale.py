"""Row 6: does the cost per token of `HtmlView` + renderer stay flat from 1k to 64k tokens?

Each answer streams paced (15 deltas per refresh, see `benchmarks.inprocess.run_view`) on the
in-process kernel. The figures are process CPU and IOPub bytes per 1,000 tokens (medians of 3
runs at 1k and 8k, one run at 64k), then one more 64k run under `tracemalloc` for the peak
memory while streaming and the memory still held after `finish` and a garbage collection.

    python -m benchmarks.scale
"""

from __future__ import annotations

import gc
import tracemalloc

from benchmarks.answer import SIZES, answer, tokens
from benchmarks.inprocess import PER_REFRESH, MeteredKernel, run_view
from benchmarks.table import Row, emit, median, size

FLAT = 1.25  # per-token cost may grow this much from 1k to a larger answer


def measure() -> list[Row]:
    """CPU and bytes per 1k tokens at each size, and memory at 64k."""
    meter = MeteredKernel()
    run_view(meter, tokens(answer(1_000)))  # warm-up: imports and first-use caches
    per_k: dict[str, tuple[float, float]] = {}
    for name, n in SIZES.items():
        deltas = tokens(answer(n))
        runs = [run_view(meter, deltas) for _ in range(3 if n < 64_000 else 1)]
        thousands = len(deltas) / 1000
        per_k[name] = median([r.cpu for r in runs]) / thousands, median([r.bytes for r in runs]) / thousands
    rows = []
    base_cpu, base_bytes = per_k["1k"]
    for name in ("8k", "64k"):
        cpu_k, bytes_k = per_k[name]
        rows.append(Row(
            f"6. CPU per 1k tokens at {name} (paced {PER_REFRESH}/refresh, in-process kernel)",
            f"{cpu_k * 1000:.0f} ms", f"at 1k: {base_cpu * 1000:.0f} ms", f"{cpu_k / base_cpu:.2f}",
            f"flat (≤ {FLAT})", cpu_k / base_cpu <= FLAT,
        ))
        rows.append(Row(
            f"6. IOPub bytes per 1k tokens at {name}", size(bytes_k), f"at 1k: {size(base_bytes)}",
            f"{bytes_k / base_bytes:.2f}", f"flat (≤ {FLAT})", bytes_k / base_bytes <= FLAT,
        ))
    peak, kept = memory(meter, tokens(answer(64_000)))
    text = len(answer(64_000).encode())
    rows.append(Row(
        "6. memory streaming 64k tokens (tracemalloc): peak; held after finish + gc",
        f"peak {size(peak)}; held {size(kept)}", f"answer text {size(text)}", f"peak/text {peak / text:.0f}", "—",
    ))
    return rows


def memory(meter: MeteredKernel, deltas: list[str]) -> tuple[int, int]:
    """Peak traced bytes during one paced run, and traced bytes left over after it."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    run_view(meter, deltas)
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before, current - before


if __name__ == "__main__":
    emit(measure())
