"""End to end in a real JupyterLab and Chromium: a `%%nano` cell streams, typesets, stays safe and saves.

A script in the page records every frame of a streaming answer: its outputs' height, the text and formulas they show,
the kernel status JupyterLab shows, and the time between frames; none of those may drop, from the first token to
the saved answer, whether the answer ends, is interrupted or is run again.

Needs JupyterLab, Playwright (Python) and Debian's Chromium; Playwright never downloads
a browser here: it launches `NANO_CHROMIUM` (default /usr/bin/chromium). Run it alone with

    python -m pytest tests/test_browser.py -q

and with NANO_SCREENSHOT=1 it also refreshes docs/screenshot.png.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from itertools import pairwise
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.parts import missing

CHROMIUM = os.environ.get("NANO_CHROMIUM", "/usr/bin/chromium")
MISSING = [
    part for part, present in (
        ("Playwright", find_spec("playwright") is not None),
        ("JupyterLab", find_spec("jupyterlab") is not None),
        (f"Chromium at {CHROMIUM} (set NANO_CHROMIUM)", os.access(CHROMIUM, os.X_OK)),
    ) if not present
]
if MISSING:
    missing(f"the browser test needs {', '.join(MISSING)}; scripts/test installs them", module=True)

from playwright import sync_api  # after the check, so that a missing Playwright skips

from tests.support.fake_server import FakeServer, Reply
from tests.support.jupyter_lab import jupyter_lab, tree_url

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
NOTEBOOK = "pythagoras.ipynb"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PROMPT = "Explain the Pythagorean theorem."
XSS = '<img src=x onerror="window.__pwned=1">'
REPLY = (
    "The **Pythagorean theorem** says that in a right triangle with legs $a$ and $b$ and "
    "hypotenuse $c$, the squares of the legs add up to the square of the hypotenuse: "
    "$a^2+b^2=c^2$. Solving for the hypotenuse gives\n\n"
    "$$c=\\sqrt{a^2+b^2}$$\n\n"
    "Key facts:\n\n"
    "- It holds only for right triangles.\n"
    "- Its converse is true as well.\n"
    "- The classic example is the 3-4-5 triangle.\n\n"
    "A ticket costs $5, and a circle's area is $\\pi r^2$. "
    f"A model might even echo raw HTML such as {XSS}, which must stay inert. "
    "The theorem is named after Pythagoras, though Babylonian scribes used it long before him."
)
CHUNK_DELAY = 0.06  # about 85 word chunks: the answer streams for about 5 s
# One answer per class of markup that once got through, each in a cell of its own after the demo cell.
HOSTILE = [
    f"A code span `a\n\n{XSS}\n\n` runs across a blank line.",
    f"Display math $$\na\n\n{XSS}\n\n$$ runs across a blank line.",
    f"Inline math \\(a\n\n{XSS}\n\nb\\) runs across a blank line.",
    f"\\begin{{align}}\na &= b\n\n{XSS}\n\n\\end{{align}}",
    f"A fence indented four spaces:\n\n    ```\n{XSS}\n    ```\n\nafter",
    f"> ```\n> quoted fence\n\n{XSS}\n\n```",
    "A [link][a] whose definition has its URL on the next line.\n\n[a]:\njavascript:window.__pwned=1",
    "> [b]: javascript:window.__pwned=1\n\n- [c]: javascript:window.__pwned=1\n\nSee [b] and [c].",
    "[escaped scheme](javascript\\:window.__pwned=1) and [d]\n\n[d]: javascript\\:window.__pwned=1",
    '[title](https://example.com "$a" onmouseover="window.__pwned=1$") and [dest]($a"onmouseover="window.__pwned=1$)',
    "MathJax links: $\\href{javascript:window.__pwned=1}{click}$ and $\\class{x}{y}$",
]

KERNEL_IDLE = """name => {
    const widget = window.jupyterapp?.shell.currentWidget;
    const kernel = widget?.sessionContext?.session?.kernel;
    return widget?.context?.path === name && kernel?.connectionStatus === 'connected'
        && kernel?.status === 'idle';
}"""
# The answer's outputs: every HTML output of the cell but the header (a lone <b>) and the status line or footer (a lone <small>).
ANSWER_OUTPUTS = """cell => [...cell.querySelectorAll('.jp-OutputArea-output[data-mime-type="text/html"]')]
    .filter(o => !(o.children.length === 1 && ['B', 'SMALL'].includes(o.firstElementChild.tagName)))"""
OUTPUT_STATE = f"""cell => {{
    const answer = ({ANSWER_OUTPUTS})(cell);
    const running = cell.querySelector('.jp-InputPrompt').innerText.includes('*');
    return {{
        length: answer.reduce((n, o) => n + o.innerText.length, 0),
        live: running && answer.length > 0,
        final: !running && answer.length > 0,
        liveMath: running ? answer.reduce((n, o) => n + o.querySelectorAll('mjx-container').length, 0) : 0,
        pwned: typeof window.__pwned,
        images: cell.querySelectorAll('.jp-OutputArea img').length,
        text: answer.map(o => o.innerText).join(' '),
        formulas: [...cell.querySelectorAll('.jp-OutputArea mjx-container')].map(math => math.innerText),
    }};
}}"""
# Every element of every output: anything that runs script, loads a resource or posts data.
SCRIPT_BEARING = """() => {
    const bad = [];
    for (const element of document.querySelectorAll('.jp-OutputArea *')) {
        const tag = element.tagName.toLowerCase();
        if (['script', 'iframe', 'object', 'embed', 'img', 'form', 'frame', 'base', 'meta', 'link'].includes(tag)) {
            bad.push(tag);
        }
        for (const attribute of element.attributes) {
            const value = attribute.value.replace(/[\\x00-\\x20]/g, '').toLowerCase();
            if (attribute.name.toLowerCase().startsWith('on')
                || /^(javascript|vbscript|data):/.test(value) && /href|src|action|data/.test(attribute.name)) {
                bad.push(`${tag} ${attribute.name}=${attribute.value}`);
            }
        }
    }
    return {bad, pwned: typeof window.__pwned};
}"""



def _notebook(path: Path) -> None:
    """Write an nbformat 4.5 notebook (cell ids included): the extension, the demo cell, one cell per hostile answer."""
    v4 = nbformat.v4
    hostile = [v4.new_code_cell(f"%%nano --once\nHostile answer {i}") for i in range(len(HOSTILE))]
    notebook = v4.new_notebook(
        cells=[v4.new_code_cell("%load_ext nano_magic"), v4.new_code_cell(f"%%nano\n{PROMPT}"), *hostile],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    nbformat.validate(notebook)
    nbformat.write(notebook, path)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A fresh 1100x800 page in the system Chromium, launched headless and offline-friendly."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1100, "height": 800})
        finally:
            browser.close()


def _assert_inert(page: Any, when: str) -> None:
    """No output holds script-bearing markup, and no payload has run."""
    found = page.evaluate(SCRIPT_BEARING)
    assert found == {"bad": [], "pwned": "undefined"}, f"{when}: {found}"


def _sample_stream(page: Any, cell: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Sample the cell every ~300 ms until its answer has ended; scan every output each time."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _assert_inert(page, "mid-stream")
        state = cell.evaluate(OUTPUT_STATE)
        samples.append(state)
        if state["final"]:
            return samples
        time.sleep(0.3)
    raise AssertionError(f"the answer did not finish in {timeout} s; last state: {samples[-1]}")


def _saved_cell(path: Path, index: int = 1, timeout: float = 10.0) -> Any:
    """A %%nano cell of the saved notebook, once the save has written its final answer."""
    deadline = time.monotonic() + timeout
    while True:
        cell = nbformat.read(path, as_version=4).cells[index]
        if any("nano_magic" in out.get("metadata", {}) for out in cell.outputs) or time.monotonic() > deadline:
            return cell
        time.sleep(0.2)


def _screenshot(page: Any, cell: Any, tmp_path: Path) -> None:
    """Picture the lab down to just below the answer: docs/screenshot.png with NANO_SCREENSHOT set."""
    shot = SCREENSHOT if os.environ.get("NANO_SCREENSHOT") else tmp_path / "screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    cell.scroll_into_view_if_needed()
    page.evaluate("cell => cell.scrollIntoView({block: 'end'})", cell.element_handle())
    box = cell.bounding_box()
    height = min(800, int(box["y"] + box["height"]) + 24) if box else 800
    page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": 1100, "height": height})


def _open(page: Any, lab_url: str, name: str) -> None:
    """Open a notebook in the lab and wait for its kernel."""
    page.goto(tree_url(lab_url, name))
    page.wait_for_function(KERNEL_IDLE, arg=name, timeout=60_000)
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")


def test_nano_cell_streams_typesets_and_saves(tmp_path: Path, chromium: Any) -> None:
    """Live growth, typeset math, no script execution, portable saved output, one request."""
    root = tmp_path / "lab"
    root.mkdir()
    _notebook(root / NOTEBOOK)
    page = chromium
    with FakeServer() as server:
        server.reply, server.chunk_delay = REPLY, CHUNK_DELAY
        server.queue(Reply(), *(Reply(text=text, delay=0.01) for text in HOSTILE))
        env = {"NANO_BASE_URL": server.base_url}
        with jupyter_lab(root, env) as lab_url:
            _open(page, lab_url, NOTEBOOK)
            # Not awaited: the command's promise settles only when every cell has run.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
            output = cell.locator(".jp-OutputArea")

            samples = _sample_stream(page, cell)
            live = [s for s in samples if s["live"]]
            growth = [s["length"] for s in live]
            rises = [b for a, b in zip([0, *growth], growth) if b > a]
            assert len(rises) >= 3, f"the live output grew only at {rises} (samples: {growth})"
            assert max(s["liveMath"] for s in live) > 0, "the live view never typeset any math"
            assert all(s["pwned"] == "undefined" for s in samples), "the XSS payload ran mid-stream"
            assert all(s["images"] == 0 for s in samples), "raw HTML from the model became an element"

            final_math = output.locator(".jp-RenderedHTML mjx-container")
            final_math.first.wait_for(timeout=15_000)
            display_math = output.locator('.jp-RenderedHTML mjx-container[display="true"]')
            display_math.first.wait_for(timeout=15_000)
            assert final_math.count() == 6  # a, b, c, a^2+b^2=c^2 and pi r^2 inline, c=sqrt(...) displayed
            assert XSS in output.inner_text(), "the raw HTML shows as text in the final answer"
            _assert_live_matches_final(live[-1], cell.evaluate(OUTPUT_STATE))

            last_cell = page.locator(".jp-Notebook .jp-Cell").nth(len(HOSTILE) + 1)
            deadline = time.monotonic() + 60
            while not last_cell.evaluate(OUTPUT_STATE)["final"]:
                assert time.monotonic() < deadline, "the hostile cells did not finish"
                _assert_inert(page, "while the hostile cells stream")
                time.sleep(0.3)
            page.wait_for_timeout(1_000)  # MathJax typesets the last outputs
            _assert_inert(page, "at the end")

            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            saved = _saved_cell(root / NOTEBOOK)
            _screenshot(page, cell, tmp_path)
            page.reload()
            page.wait_for_function(KERNEL_IDLE, arg=NOTEBOOK, timeout=60_000)
            page.locator(".jp-RenderedHTML mjx-container").first.wait_for(timeout=15_000)
            page.wait_for_timeout(1_000)
            _assert_inert(page, "after save and reload")
            reloaded = page.locator(".jp-Notebook .jp-Cell").nth(len(HOSTILE) + 1).locator(".jp-OutputArea-output")
            assert reloaded.count() == 3  # header, answer, footer

        posts = server.posts()

    answers = [out for out in saved.outputs if "nano_magic" in out.metadata]
    assert len(answers) == 1, f"expected one output carrying the turn, got {saved.outputs}"
    answer = answers[0]
    assert "\\(a^2+b^2=c^2\\)" in answer.data["text/html"], "math is left for MathJax"
    assert "&lt;img src=x" in answer.data["text/html"] and "<img" not in answer.data["text/html"]
    assert answer.data["text/plain"] == REPLY
    turn = answer.metadata["nano_magic"]
    assert turn["prompt"] == PROMPT
    assert turn["thread"] == "default"
    assert not any(WIDGET_MIME in out.get("data", {}) for out in saved.outputs), "no widget in the saved notebook"

    assert len(posts) == 1 + len(HOSTILE), [post.path for post in posts]
    assert posts[0].body["messages"][-1]["content"] == PROMPT


def _assert_live_matches_final(live: dict[str, Any], final: dict[str, Any]) -> None:
    """The last live view shows the final answer's words and formulas, up to the text that had not arrived yet."""
    def words(state: dict[str, Any]) -> list[str]:
        text = state["text"]
        for formula in state["formulas"]:
            text = text.replace(formula, " ", 1)
        return text.split()

    live_words, final_words = words(live), words(final)
    assert live_words and live_words[:-1] == final_words[: len(live_words) - 1], (live, final)
    assert live["formulas"] == final["formulas"][: len(live["formulas"])] and len(live["formulas"]) >= 5
    assert "𝜋" in final["formulas"][-1] and "$5, and" in final["text"]  # the currency stays text, only pi r^2 is math


# --- A long answer, frame by frame --------------------------------------------------------------------------

LONG_NOTEBOOK = "long.ipynb"
LONG_PROMPT = "Prove the odd-number identity, part by part."
RATE = 150  # tokens a second, as a fast model streams
HOLD = 6.0  # seconds between the last token and the finish: the last live frame shows all the text


def _long_answer(parts: int = 12) -> str:
    """Markdown with LaTeX that never shrinks as it streams: headings, paragraphs, lists, quotes, code, inline and display math.

    Each formula has no space in it, so it arrives in one chunk (the renderer hides a formula still being typed).
    """
    blocks = []
    for i in range(1, parts + 1):
        blocks += [
            f"## Part {i}: the sum of odd numbers",
            f"For $n={i}$ the **sum** of the first $n$ odd numbers is $n^2$, so $\\sum_{{k=1}}^{{{i}}}(2k-1)={i * i}$. "
            + "We check it term by term, and the pattern holds in every case we try. " * 3,
            f"$$\\int_0^{{{i}}}2x\\,dx={i * i}$$",
            "- the base case is immediate;\n- the step adds $2n+1$ to $n^2$;\n- so the claim holds for all $n$.",
            f"> Part {i} in one line: induction is a ladder with $\\infty$ rungs.",
            f"```python\ndef odd_sum_{i}(n: int) -> int:\n    return sum(2 * k - 1 for k in range(1, n + 1))\n```",
        ]
    return "\n\n".join(blocks) + "\n"


# Installed before the cell runs: one record per animation frame of the cell's outputs and of the kernel status shown.
FRAME_PROBE = f"""cell => {{
    const answerOutputs = {ANSWER_OUTPUTS};
    const visible = node => {{  // characters shown outside formulas, whitespace aside
        let count = 0;
        const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT, {{acceptNode: text =>
            text.parentElement.closest('mjx-container') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT}});
        while (walker.nextNode()) count += walker.currentNode.data.replace(/\\s/g, '').length;
        return count;
    }};
    const probe = window.__probe = {{frames: [], stop: false}};
    const frame = t => {{
        const answer = answerOutputs(cell);
        const session = window.jupyterapp.shell.currentWidget.sessionContext.session;
        const bar = document.querySelector('#jp-main-statusbar')?.textContent.match(/\\|\\s*(Idle|Busy|Starting|Restarting|Connecting|Unknown|Dead)/);
        probe.frames.push({{
            t,
            height: cell.querySelector('.jp-OutputArea').getBoundingClientRect().height,
            text: answer.reduce((n, o) => n + visible(o), 0),
            math: answer.reduce((n, o) => n + o.querySelectorAll('mjx-container').length, 0),
            outputs: answer.length,
            running: cell.querySelector('.jp-InputPrompt').innerText.includes('*'),
            kernel: session?.kernel?.status,
            shown: bar ? bar[1] : null,
        }});
        if (!probe.stop) requestAnimationFrame(frame);
    }};
    requestAnimationFrame(frame);
}}"""
ENDED = "cell => !cell.querySelector('.jp-InputPrompt').innerText.includes('*') && window.__probe.frames.length > 0"


# MathJax loads a font the first time a symbol needs it, and the page reflows when it arrives. The first cell
# typesets the answer's symbols, so that the frames recorded show the answer alone.
WARM_UP = r"""%load_ext nano_magic
from IPython.display import HTML
HTML(r"<p>\(n^2\) \(\sum_{k=1}^{1}(2k-1)=1\) \(\infty\)</p><div>\[\int_0^{1}2x\,dx=1\]</div>")"""
FONTS_LOADED = "() => document.querySelectorAll('mjx-container').length === 4 && document.fonts.status === 'loaded'"


def _long_notebook(path: Path) -> None:
    v4 = nbformat.v4
    notebook = v4.new_notebook(
        cells=[v4.new_code_cell(WARM_UP), v4.new_code_cell(f"%%nano\n{LONG_PROMPT}")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
                  "language_info": {"name": "python"}},
    )
    nbformat.write(notebook, path)


@contextmanager
def _streaming_long_answer(page: Any, root: Path, *replies: Reply) -> Iterator[Any]:
    """The long notebook in a lab at `root`, its warm-up run and the frame probe on: yields the nano cell, which has
    just been run against a server streaming the long answer at RATE with `replies` queued."""
    root.mkdir()
    _long_notebook(root / LONG_NOTEBOOK)
    with FakeServer() as server:
        server.reply, server.chunk_delay = _long_answer(), 1 / RATE
        server.queue(*replies)
        with jupyter_lab(root, {"NANO_BASE_URL": server.base_url}) as lab_url:
            _open(page, lab_url, LONG_NOTEBOOK)
            _run_cell(page, 0)
            page.wait_for_function(KERNEL_IDLE, arg=LONG_NOTEBOOK, timeout=30_000)
            page.wait_for_function(FONTS_LOADED, timeout=30_000)
            cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
            page.evaluate(FRAME_PROBE, cell.element_handle())
            _run_cell(page, 1)
            yield cell


def _run_cell(page: Any, index: int) -> None:
    """Run one cell as a user does: select it, then Run (not awaited: the promise settles when the cell ends)."""
    page.evaluate(f"""() => {{
        const panel = window.jupyterapp.shell.currentWidget;
        panel.content.activeCellIndex = {index};
        window.jupyterapp.commands.execute('notebook:run-cell');
    }}""")


def _frames(page: Any, cell: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The probe's frames, from before the cell ran until 1.5 s after it ended."""
    page.wait_for_function(ENDED, arg=cell.element_handle(), timeout=timeout * 1000)
    page.wait_for_timeout(1_500)
    return page.evaluate("() => { window.__probe.stop = true; return window.__probe.frames; }")


def _assert_never_less(frames: list[dict[str, Any]]) -> None:
    """From the first token on, no frame shows less text, fewer formulas or a shorter output than the frame before."""
    start = next(i for i, f in enumerate(frames) if f["text"] > 0)
    for before, after in zip(frames[start:], frames[start + 1 :]):
        when = f"at {after['t'] - frames[start]['t']:.0f} ms (running: {after['running']})"
        assert after["text"] >= before["text"], f"the text shrank {when}: {before} -> {after}"
        assert after["math"] >= before["math"], f"a formula went {when}: {before} -> {after}"
        assert after["height"] >= before["height"] - 0.5, f"the output got shorter {when}: {before} -> {after}"


def _assert_busy_while_running(frames: list[dict[str, Any]]) -> None:
    """JupyterLab shows the kernel busy in every frame in which the cell is running and its answer is showing, until
    the kernel's idle: it may reach the page a moment before the reply that ends the cell."""
    streaming = [f for f in frames if f["running"] and f["text"] > 0]
    assert streaming, "no frame caught the answer streaming"
    ended = next((f["t"] for f in frames if f["t"] > streaming[0]["t"] and not f["running"]), frames[-1]["t"])
    assert {(f["kernel"], f["shown"]) for f in streaming if f["t"] < ended - 300} <= {("busy", "Busy")}
    assert ("busy", "Busy") in {(f["kernel"], f["shown"]) for f in streaming}


def _assert_the_end_costs_no_more_than_a_refresh(frames: list[dict[str, Any]]) -> None:
    """No gap between frames around the end (0.5 s before the cell ended to 1 s after) over 100 ms, or over the longest
    gap while the answer streamed: on a loaded machine an ordinary refresh can take longer, and that is not the end's doing."""
    end = next(f["t"] for f in frames if f["text"] > 0 and not f["running"])
    start = next(f["t"] for f in frames if f["text"] > 0)
    gap = {"stream": 0.0, "end": 0.0}
    for before, after in pairwise(frames):
        if start <= before["t"] and after["t"] < end - 500:
            gap["stream"] = max(gap["stream"], after["t"] - before["t"])
        elif end - 500 <= before["t"] and after["t"] <= end + 1_000:
            gap["end"] = max(gap["end"], after["t"] - before["t"])
    assert gap["end"] <= max(100.0, gap["stream"]), f"the longest frame as the answer ended took {gap['end']:.0f} ms ({gap})"


# The notebook's toolbar and the status bar float over an output taller than the window, and they show the kernel status.
OVERLAYS_HIDDEN = ".jp-NotebookPanel-toolbar, #jp-main-statusbar, .jp-Toolbar { visibility: hidden !important; }"


def _answer_shots(cell: Any) -> tuple[str, list[bytes]]:
    """The answer's text and a picture of each of its outputs."""
    outputs = cell.evaluate_handle(ANSWER_OUTPUTS)
    count = outputs.evaluate("list => list.length")
    shots = [outputs.evaluate_handle(f"list => list[{i}]").as_element().screenshot(animations="disabled", style=OVERLAYS_HIDDEN)
             for i in range(count)]
    return outputs.evaluate("list => list.map(o => o.innerText).join('\\n')"), shots


def test_a_long_answer_never_shrinks_keeps_the_kernel_busy_and_ends_without_a_swap(tmp_path: Path, chromium: Any) -> None:
    """Frame by frame: no less text, no shorter output, busy shown, no long frame at the end; the last live frame is the final one."""
    root = tmp_path / "lab"
    text = _long_answer()
    page = chromium
    page.set_viewport_size({"width": 1100, "height": 1800})  # each output fits in the window, for its picture
    with _streaming_long_answer(page, root, Reply(hold=HOLD)) as cell:
        page.wait_for_function(
            "cell => [...cell.querySelectorAll('code')].some(c => c.innerText.includes('odd_sum_12(n'))",
            arg=cell.element_handle(), timeout=60_000,
        )
        page.wait_for_timeout(2_500)  # the last paced refresh lands (MAX_WAIT apart at most); the server holds the finish for HOLD seconds
        live_text, live_shots = _answer_shots(cell)
        assert cell.evaluate("cell => cell.querySelector('.jp-InputPrompt').innerText.includes('*')"), "still live"
        frames = _frames(page, cell)
        final_text, final_shots = _answer_shots(cell)

        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        saved_path = root / LONG_NOTEBOOK
        saved = _saved_cell(saved_path)

    _assert_never_less(frames)
    _assert_busy_while_running(frames)
    _assert_the_end_costs_no_more_than_a_refresh(frames)
    assert max(f["outputs"] for f in frames) >= 3, "the answer was long enough to fill pages"
    assert final_text == live_text, "the final answer reads as the last live frame did"
    assert len(final_shots) == len(live_shots) and final_shots == live_shots, "and looks the same, pixel for pixel"

    assert [out.output_type for out in saved.outputs] == ["display_data"] * len(saved.outputs)
    answer = [out for out in saved.outputs if "nano_magic" in out.metadata]
    assert len(answer) == 1 and answer[0] is saved.outputs[-2], "the turn rides on the answer's last output, above the footer"
    assert "".join(out.data["text/plain"] for out in saved.outputs[1:-1]) == text, "each output keeps its part of the text"
    notebook = nbformat.read(saved_path, as_version=4)
    assert "widgets" not in notebook.metadata and WIDGET_MIME not in saved_path.read_text()
    resumed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%load_ext nano_magic"),
                                              nbformat.v4.new_code_cell(f"%nano load {saved_path}\n%nano history")])
    NotebookClient(resumed, timeout=60, kernel_name="python3").execute()
    shown = "".join(out.get("data", {}).get("text/markdown", "") + out.get("text", "") for out in resumed.cells[1].outputs)
    assert "Loaded 1 turns in 1 threads" in shown and LONG_PROMPT in shown


def test_an_interrupted_answer_and_a_rerun_end_the_same_way(tmp_path: Path, chromium: Any) -> None:
    """Interrupted mid-stream, the answer keeps what arrived with nothing dropped; run again, all its old outputs go."""
    page = chromium
    with _streaming_long_answer(page, tmp_path / "lab", Reply(), Reply(text="A short answer the second time, $x^2$.", delay=0.01)) as cell:
        page.wait_for_function(f"cell => ({ANSWER_OUTPUTS})(cell).length >= 3", arg=cell.element_handle(), timeout=60_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
        frames = _frames(page, cell)
        interrupted = cell.locator(".jp-OutputArea").inner_text()

        page.evaluate(FRAME_PROBE, cell.element_handle())
        _run_cell(page, 1)
        rerun = _frames(page, cell)
        outputs = cell.locator(".jp-OutputArea-output")
        page.wait_for_function("cell => cell.querySelectorAll('.jp-OutputArea mjx-container').length === 1", arg=cell.element_handle())
        rerun_text = cell.locator(".jp-OutputArea").inner_text()
        rerun_outputs = outputs.count()

    _assert_never_less(frames)
    _assert_busy_while_running(frames)
    _assert_the_end_costs_no_more_than_a_refresh(frames)
    assert "Stopped by you; the partial answer is kept." in interrupted and "Part 1:" in interrupted
    assert "Part 12:" not in interrupted, "the interrupt came mid-answer"
    assert rerun_outputs == 3, "the header, the new answer and its footer: every old page went"
    assert "A short answer the second time" in rerun_text and "Part 1" not in rerun_text and "Stopped" not in rerun_text
    _assert_busy_while_running(rerun)
