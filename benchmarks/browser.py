"""Row 22: what the browser pays while an answer streams into JupyterLab, against a naive re-display.

A real JupyterLab in headless Chromium (`tests/support/jupyter_lab.py`), with JupyterLab's default windowing,
runs two cells against the fake server, which streams at 150 deltas/s: a `%%nano` cell, given a 2k, an 8k and a
32k answer in turn, and a naive cell that reads the 8k stream with httpx and updates one `text/markdown` display
with the whole text on every delta. For each, over the stream:
- the main thread's busy time: Chromium's own `TaskDuration` (`Performance.getMetrics` over CDP), as a share of
  the wall time and per 1k tokens;
- the longest gap between animation frames (a `requestAnimationFrame` loop in the page);
- the time from the server's last delta to the final, typeset output (ours: the footer shows; naive: the last
  words show, typeset, and the cell has ended).
Needs what the browser test needs (JupyterLab, Playwright, Debian's Chromium). About 8 minutes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from playwright import sync_api

from benchmarks.answer import answer, tokens
from benchmarks.table import Row, emit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.fake_server import FakeServer
from tests.support.jupyter_lab import jupyter_lab, tree_url

__all__ = ["lab_page", "measure", "run_cell"]

RATE = 150  # deltas a second
CATCH_UP = 60.0  # seconds after the last delta that the naive view gets to show the final answer
SIZE = 8_000
SIZES = (2_000, SIZE, 32_000)  # for the cost per 1k tokens
CHROMIUM = os.environ.get("NANO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
NAIVE = '''import json, os, httpx
from IPython.display import Markdown, display
shown, text = display(Markdown(""), display_id=True), ""
body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "Explain."}]}
with httpx.stream("POST", os.environ["NANO_BASE_URL"] + "/chat/completions", json=body, timeout=300) as response:
    for line in response.iter_lines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                if choice["delta"].get("content"):
                    text += choice["delta"]["content"]
                    shown.update(Markdown(text))'''
# Each animation frame: the longest gap so far, and the first frame in which the cell's final output shows: the cell
# has ended and its last words are on the page (ours: and the footer). JupyterLab typesets an output in the same
# task that renders it, so what shows is typeset.
FRAMES = """([index, words, footer]) => {
    const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
    const probe = window.__frames = {last: performance.now(), longest: 0, done: null};
    const frame = t => {
        probe.longest = Math.max(probe.longest, t - probe.last);
        probe.last = t;
        const ended = !cell.querySelector('.jp-InputPrompt').textContent.includes('*');
        const text = ended ? cell.querySelector('.jp-OutputArea').textContent : '';  // read only once it ended
        if (text.includes(words) && (!footer || text.includes('out tokens'))) {
            probe.done = performance.timeOrigin + t;
        } else {
            requestAnimationFrame(frame);
        }
    };
    requestAnimationFrame(frame);
}"""
IDLE = """name => {
    const widget = window.jupyterapp?.shell.currentWidget;
    const kernel = widget?.sessionContext?.session?.kernel;
    return widget?.context?.path === name && kernel?.connectionStatus === 'connected' && kernel?.status === 'idle';
}"""


def _metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def run_cell(page: Any, index: int) -> None:
    """Select cell `index` and run it, as a user does (not awaited)."""
    page.evaluate(f"""() => {{
        window.jupyterapp.shell.currentWidget.content.activeCellIndex = {index};
        window.jupyterapp.commands.execute('notebook:run-cell');
    }}""")


@contextmanager
def lab_page(cells: list[str], env: dict[str, str]) -> Iterator[tuple[Any, Any, Callable[[], None]]]:
    """A notebook of `cells` open in JupyterLab (its default windowing) in headless Chromium: the page, a CDP session
    with the performance counters on, and a function that waits until the kernel is idle."""
    with tempfile.TemporaryDirectory() as tmp:
        root, v4 = Path(tmp), nbformat.v4
        nbformat.write(v4.new_notebook(cells=[v4.new_code_cell(c) for c in cells],
                                       metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}),
                       root / "bench.ipynb")
        with jupyter_lab(root, env, windowing="contentVisibility") as url, sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(tree_url(url, "bench.ipynb"))

            def idle() -> None:
                page.wait_for_function(IDLE, arg="bench.ipynb", timeout=120_000)

            idle()
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            try:
                yield page, cdp, idle
            finally:
                browser.close()


@dataclass
class Measured:
    """The main thread's busy share and seconds, the longest frame gap (s), and last delta to final output (s; None: never)."""

    busy: float
    seconds: float
    gap: float
    end: float | None


def _run(page: Any, cdp: Any, server: FakeServer, index: int, words: str, footer: bool) -> Measured:
    """Run cell `index` and measure the page until its final output shows (end None: not within CATCH_UP seconds)."""
    page.evaluate(FRAMES, [index, words, footer])
    before, started = _metrics(cdp), time.time()
    run_cell(page, index)
    while server.last_delta_at < started or time.time() - server.last_delta_at < 1.0:  # until the stream ended
        page.wait_for_timeout(100)
    deadline = server.last_delta_at + CATCH_UP
    while page.evaluate("() => window.__frames.done") is None and time.time() < deadline:
        page.wait_for_timeout(100)
    after = _metrics(cdp)
    longest, done = page.evaluate("() => [window.__frames.longest, window.__frames.done]")
    busy = after["TaskDuration"] - before["TaskDuration"]
    return Measured(busy / (after["Timestamp"] - before["Timestamp"]), busy, longest / 1000,
                    None if done is None else done / 1000 - server.last_delta_at)


def _seconds(end: float | None) -> str:
    return f"not within {CATCH_UP:.0f} s: it never caught up" if end is None else f"{end * 1000:.0f} ms"


def _last_words(text: str) -> str:
    """The last three words of `text` that show as typed."""
    plain = text.split()
    last = max(i for i in range(len(plain) - 2) if all(word.isalpha() for word in plain[i : i + 3]))
    return " ".join(plain[last : last + 3])


def measure() -> list[Row]:
    """Ours at three lengths, then the naive cell at 8k, in one lab, one after the other."""
    ours: dict[int, Measured] = {}
    counts: dict[int, int] = {}
    with FakeServer() as server, lab_page(["%load_ext nano_magic", "%%nano --once\nExplain.", NAIVE],
                                          {"NANO_BASE_URL": server.base_url}) as (page, cdp, idle):
        server.chunk_delay = 1 / RATE
        run_cell(page, 0)
        idle()
        for size in SIZES:
            server.reply = text = answer(size)
            counts[size] = len(tokens(text))
            ours[size] = _run(page, cdp, server, 1, _last_words(text), True)
            time.sleep(2)
        server.reply = text = answer(SIZE)
        naive = _run(page, cdp, server, 2, _last_words(text), False)
    mine = ours[SIZE]
    per_k = {size: ours[size].seconds * 1000 / (counts[size] / 1000) for size in SIZES}
    what = f"22. JupyterLab + Chromium, {counts[SIZE]} deltas at {RATE}/s"
    return [
        Row(f"{what}: main thread busy", f"{mine.busy:.0%}", f"naive re-display: {naive.busy:.0%}",
            f"{mine.busy / naive.busy:.2f}", "< 15%", mine.busy < 0.15),
        Row(f"{what}: longest frame gap", f"{mine.gap * 1000:.0f} ms", f"naive: {naive.gap * 1000:.0f} ms",
            f"{mine.gap / naive.gap:.2f}", "≤ 100 ms", mine.gap <= 0.1),
        Row(f"{what}: last delta → final typeset output", _seconds(mine.end), f"naive: {_seconds(naive.end)}",
            f"{mine.end / naive.end:.3f}" if mine.end and naive.end else "", "≤ 200 ms (two refreshes)",
            mine.end is not None and mine.end <= 0.2),
        Row("22. main thread per 1k tokens, 2k / 8k / 32k tokens", " / ".join(f"{per_k[size]:.0f} ms" for size in SIZES),
            f"2k: {per_k[SIZES[0]]:.0f} ms", f"{per_k[SIZES[-1]] / per_k[SIZES[0]]:.2f}", "flat: 32k ≤ 1.25 × 2k",
            per_k[SIZES[-1]] <= 1.25 * per_k[SIZES[0]]),
        Row("22. 32k tokens: busy / longest frame gap", f"{ours[SIZES[-1]].busy:.0%} / {ours[SIZES[-1]].gap * 1000:.0f} ms",
            f"2k: {ours[SIZES[0]].busy:.0%} / {ours[SIZES[0]].gap * 1000:.0f} ms", "", "< 15% / ≤ 100 ms",
            ours[SIZES[-1]].busy < 0.15 and ours[SIZES[-1]].gap <= 0.1),
    ]

if __name__ == "__main__":
    emit(measure())
