"""How often the live view may redraw: a budget of the browser's main thread that each output message spends."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BrowserBudget", "browser_ms"]

# What JupyterLab 4.6 in Chromium spends on the main thread to show one output message, in ms: a fixed part (the
# output area's re-render, a forced layout, then style and paint of the page) and a part per 1,000 characters of
# HTML (parsing, MathJax, layout). Fitted to `benchmarks/browser_cost.py` on a 2-core machine that renders in
# software, so a user's laptop pays less than this: the estimate errs on the side of refreshing less.
MESSAGE_MS = 20.0
MS_PER_KCHAR = 12.0


def browser_ms(html: str) -> float:
    """The estimated main-thread time, in ms, that the browser spends to show an output of this HTML."""
    return MESSAGE_MS + MS_PER_KCHAR * len(html) / 1000


class BrowserBudget:
    """A leaky bucket of browser time: each message spends its estimate, and the bucket refills at `share` of the
    wall clock, up to `burst_ms`. A short answer refreshes at the full rate; a long one as often as `share` of the
    browser's main thread pays for, however large its live output grows."""

    def __init__(self, share: float, burst_ms: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self._share = share
        self._burst = burst_ms
        self._credit = burst_ms
        self._clock = clock
        self._at = clock()

    def spend(self, ms: float) -> float:
        """Take `ms` from the bucket; the seconds to wait before the bucket is out of debt."""
        now = self._clock()
        self._credit = min(self._burst, self._credit + (now - self._at) * 1000 * self._share) - ms
        self._at = now
        return max(0.0, -self._credit / (1000 * self._share))
