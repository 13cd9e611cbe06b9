"""Row 23: what one output message costs JupyterLab in Chromium, against the estimate that paces the live view.

A real JupyterLab in headless Chromium (JupyterLab's default windowing) runs cells that each update one `text/html`
output 40 times, 5 times a second, with the answer's own HTML (`to_html` of 0 to 4,800 Markdown characters of the 8k
answer, formulas and code included). Chromium's `TaskDuration` over each cell, less what the page spends while a
cell only sleeps as long, divided by the updates, is the main-thread time per message. A least-squares line through
those points is set against `nano_magic.pacing.browser_ms`, which must not be far below it: an estimate that is too
low would let the view refresh more often than its budget. About 2 minutes; the page grows by each cell's output, as
a notebook does.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.answer import answer
from benchmarks.browser import _metrics, lab_page, run_cell
from benchmarks.table import Row, emit
from nano_magic.pacing import browser_ms
from nano_magic.render import to_html

__all__ = ["measure"]

ROOT = Path(__file__).resolve().parent.parent
UPDATES, RATE = 40, 5.0
SIZES = (0, 300, 600, 1_200, 2_400, 4_800)  # Markdown characters of the answer, from its 5,000th on
SETUP = f"""import sys, time
sys.path.insert(0, {str(ROOT)!r})
from IPython.display import display
from benchmarks.answer import answer
from nano_magic.render import to_html
text = answer(8000)
def updates(html):
    handle = display({{"text/html": ""}}, raw=True, display_id=True)
    for i in range({UPDATES}):
        handle.update({{"text/html": html + f"<p>{{i}}</p>"}}, raw=True)
        time.sleep(1 / {RATE})"""
SLEEP = f"time.sleep({UPDATES / RATE})"


def _cell(size: int) -> str:
    return f"updates(to_html(text[5000:{5000 + size}]))"


def _busy(page: Any, cdp: Any, idle: Callable[[], None], index: int) -> float:
    """Run cell `index` until the kernel is idle; the main thread's busy seconds over it."""
    before = _metrics(cdp)
    run_cell(page, index)
    page.wait_for_timeout(500)
    idle()
    return _metrics(cdp)["TaskDuration"] - before["TaskDuration"]


def measure() -> list[Row]:
    """Milliseconds per message at each size, the line through them, and the estimate at 2k characters of HTML."""
    text = answer(8000)
    chars = [len(to_html(text[5000 : 5000 + size])) + len(f"<p>{UPDATES}</p>") for size in SIZES]
    with lab_page([SETUP, SLEEP, *map(_cell, SIZES), SLEEP], {}) as (page, cdp, idle):
        _busy(page, cdp, idle, 0)
        asleep = _busy(page, cdp, idle, 1)
        busy = [_busy(page, cdp, idle, 2 + i) for i in range(len(SIZES))]
        asleep = min(asleep, _busy(page, cdp, idle, 2 + len(SIZES)))
    per_message = [max(0.0, (b - asleep) * 1000 / UPDATES) for b in busy]
    slope, intercept = statistics.linear_regression([c / 1000 for c in chars], per_message)
    fitted, estimated = intercept + slope * 2.0, browser_ms("x" * 2_000)
    rows = [Row(f"23. one output message, {c:,} chars of HTML", f"{m:.0f} ms", f"estimate: {browser_ms('x' * c):.0f} ms",
                f"{browser_ms('x' * c) / m:.2f}" if m else "", "") for c, m in zip(chars, per_message)]
    rows.append(Row("23. per message, a line through them", f"{intercept:.0f} ms + {slope:.1f} ms per 1k chars",
                    f"estimate: {browser_ms(''):.0f} ms + {browser_ms('x' * 1000) - browser_ms(''):.0f} ms per 1k",
                    f"{estimated / fitted:.2f}", "estimate ≥ 0.8 × the line at 2k chars", estimated >= 0.8 * fitted))
    return rows


if __name__ == "__main__":
    emit(measure())
