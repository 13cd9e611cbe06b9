"""End to end in a real JupyterLab and Chromium: a `%%nano` cell streams, typesets, stays safe and saves.

Needs JupyterLab, ipywidgets, Playwright (Python) and Debian's Chromium; Playwright never downloads
a browser here: it launches `NANO_CHROMIUM` (default /usr/bin/chromium). Run it alone with

    python -m pytest tests/test_browser.py -q

and with NANO_SCREENSHOT=1 it also refreshes docs/screenshot.png.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import nbformat
import pytest

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
OUTPUT_STATE = """area => ({
    length: area.innerText.length,
    live: area.querySelector('.widget-htmlmath') !== null,
    final: area.querySelector('.jp-RenderedMarkdown') !== null,
    liveMath: area.querySelectorAll('.widget-htmlmath mjx-container').length,
    pwned: typeof window.__pwned,
    images: area.querySelectorAll('img').length,
    text: [...area.querySelectorAll('.widget-htmlmath, .jp-RenderedMarkdown')].map(e => e.innerText).join(' '),
    formulas: [...area.querySelectorAll('mjx-container')].map(math => math.innerText),
})"""
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


def _sample_stream(page: Any, output: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Sample the output area every ~300 ms until the live widget is swapped for the final Markdown; scan every output each time."""
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _assert_inert(page, "mid-stream")
        state = output.evaluate(OUTPUT_STATE)
        samples.append(state)
        if state["final"] and not state["live"]:
            return samples
        time.sleep(0.3)
    raise AssertionError(f"the answer did not finish in {timeout} s; last state: {samples[-1]}")


def _saved_cell(path: Path, timeout: float = 10.0) -> Any:
    """The %%nano cell of the saved notebook, once the save has written its final outputs."""
    deadline = time.monotonic() + timeout
    while True:
        cell = nbformat.read(path, as_version=4).cells[1]
        if any("text/markdown" in out.get("data", {}) for out in cell.outputs) or time.monotonic() > deadline:
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
            page.goto(tree_url(lab_url, NOTEBOOK))
            page.wait_for_function(KERNEL_IDLE, arg=NOTEBOOK, timeout=60_000)
            page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
            # Not awaited: the command's promise settles only when every cell has run.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
            output = cell.locator(".jp-OutputArea")

            samples = _sample_stream(page, output)
            live = [s for s in samples if s["live"]]
            growth = [s["length"] for s in live]
            rises = [b for a, b in zip([0, *growth], growth) if b > a]
            assert len(rises) >= 3, f"the live output grew only at {rises} (samples: {growth})"
            assert max(s["liveMath"] for s in live) > 0, "the live widget never typeset any math"
            assert all(s["pwned"] == "undefined" for s in samples), "the XSS payload ran mid-stream"
            assert all(s["images"] == 0 for s in samples), "raw HTML from the model became an element"

            final_math = output.locator(".jp-RenderedMarkdown mjx-container")
            final_math.first.wait_for(timeout=15_000)
            display_math = output.locator('.jp-RenderedMarkdown mjx-container[display="true"]')
            display_math.first.wait_for(timeout=15_000)
            assert final_math.count() == 6  # a, b, c, a^2+b^2=c^2 and pi r^2 inline, c=sqrt(...) displayed
            page.wait_for_function(
                "cell => !cell.querySelector('.jp-InputPrompt').innerText.includes('*')",
                arg=cell.element_handle(), timeout=15_000,
            )
            assert XSS in output.inner_text(), "the raw HTML should show as text in the final Markdown"
            _assert_live_matches_final(live[-1], output.evaluate(OUTPUT_STATE))

            last_output = page.locator(".jp-Notebook .jp-Cell").nth(len(HOSTILE) + 1).locator(".jp-OutputArea")
            deadline = time.monotonic() + 60
            while not last_output.evaluate(OUTPUT_STATE)["final"]:
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
            page.locator(".jp-RenderedMarkdown mjx-container").first.wait_for(timeout=15_000)
            page.wait_for_timeout(1_000)
            _assert_inert(page, "after save and reload")
            assert page.locator(".jp-Notebook .jp-Cell").nth(len(HOSTILE) + 1).locator(".jp-RenderedMarkdown").count() == 2  # answer, footer

        posts = server.posts()

    displays = [out for out in saved.outputs if out.output_type == "display_data"]
    answers = [out for out in displays if "text/markdown" in out.data and "nano_magic" in out.metadata]
    assert len(answers) == 1, f"expected one final answer output, got {saved.outputs}"
    answer = answers[0]
    assert "$a^2+b^2=c^2$" in answer.data["text/markdown"]
    assert "$$c=\\sqrt{a^2+b^2}$$" in answer.data["text/markdown"]
    assert "&lt;img src=x" in answer.data["text/markdown"]  # `<` an entity (issue 18)
    assert answer.data["text/plain"] == REPLY
    turn = answer.metadata["nano_magic"]
    assert turn["prompt"] == PROMPT
    assert turn["thread"] == "default"
    widget_outputs = [out for out in saved.outputs if WIDGET_MIME in out.get("data", {})]
    assert not widget_outputs, "the live widget is still in the saved notebook"

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
