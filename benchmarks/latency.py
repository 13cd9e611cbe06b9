"""Row 5: how long a delta waits before a widget message carries it out of the kernel.

`HtmlView` runs on the in-process kernel (see `benchmarks.inprocess`) with its real ticker at
the default 10 refreshes/s and the real clock. 300 deltas of the answer arrive with random gaps
of 5–50 ms. A `Probe` on the view's renderer notes when each refresh rendered and how many
deltas it had taken in; a delta's latency runs from its `HtmlView.delta` call to the first
IOPub frame sent after the render that first took it in. When that refresh sent nothing because
the view held the new text back (half a formula), the delta is counted apart, with its wait
for the next frame: that wait comes from the text, not from the refresh machinery.

    python -m benchmarks.latency
"""

from __future__ import annotations

import bisect
import math
import random
import time

from benchmarks.answer import prefix
from benchmarks.inprocess import HEADER, REFRESH_RATE, MeteredKernel, Probe
from benchmarks.table import Row, emit, median, ms, percentile

DELTAS = 300


def latencies(meter: MeteredKernel, deltas: list[str], seed: int = 3) -> tuple[list[float], list[float]]:
    """Seconds from each delta to the first IOPub frame after the render that took it in.

    Two lists: deltas whose refresh sent a message, and deltas whose refresh sent none because
    the view held their text back (half a formula, a half-typed marker) until a later refresh.
    """
    from nano_magic.display import Final, HtmlView

    rng = random.Random(seed)
    view = HtmlView(HEADER, REFRESH_RATE)
    probe = Probe(view)
    meter.reset(log=True)
    arrived = []
    for delta in deltas:
        time.sleep(rng.uniform(0.005, 0.050))
        arrived.append(time.perf_counter())
        view.delta(delta)
    while not probe.renders or probe.renders[-1][1] < len(deltas):
        time.sleep(0.01)
    view.finish(Final(None, "".join(deltas), "".join(deltas), {}, "done"))
    view.close()
    meter.flush()
    sent = list(meter.log or [])
    shown: list[float] = []
    held: list[float] = []
    taken = 0
    for k, (rendered, count) in enumerate(probe.renders):
        following = probe.renders[k + 1][0] if k + 1 < len(probe.renders) else math.inf
        first = sent[bisect.bisect_left(sent, rendered)]
        (shown if first < following else held).extend(first - arrived[i] for i in range(taken, count))
        taken = max(taken, count)
    return shown, held


def measure() -> list[Row]:
    """Median and p99 latency against one refresh interval."""
    shown, held = latencies(MeteredKernel(), prefix(DELTAS))
    interval = 1 / REFRESH_RATE
    p99 = percentile(shown, 99)
    held_note = f"; {len(held)} held back by the view (half formulas), p99 of all {ms(percentile(shown + held, 99))}" if held else ""
    return [Row(
        f"5. latency delta → widget comm frame, {DELTAS} deltas, 5–50 ms gaps, ticker {REFRESH_RATE:.0f}/s",
        f"median {ms(median(shown))}, p99 {ms(p99)}, max {ms(max(shown))} ({len(shown)} deltas){held_note}",
        f"refresh interval {ms(interval)}", f"p99/interval {p99 / interval:.2f}", "p99 ≤ 110 ms", p99 <= interval + 0.010,
    )]


if __name__ == "__main__":
    emit(measure())
