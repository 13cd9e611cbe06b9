"""Hostile answers in a real JupyterLab and Chromium: nothing script-bearing, live, at the end, after save and reload.

One `%%nano` cell per class of answer that got script-bearing markup through JupyterLab's own readers (issue 18),
each streamed by the loopback server. Every element of every output is scanned at every tick while they stream, at
the end, and after save and reload; every payload would touch `window` (`window.__pwned`, `alert`) or load a URL from
an unroutable host, and the page records dialogs and requests. A demo cell's math must still typeset.

    python -m pytest tests/test_browser_inert.py -q
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.support.fake_server import FakeServer, Reply
from tests.support.jupyter_lab import jupyter_lab, tree_url
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, sync_api  # its check skips (or fails in CI) a missing part first

pytestmark = pytest.mark.browser

NOTEBOOK = "hostile.ipynb"
RUN = "window.__pwned=1"
IMG = f'<img src=x onerror="{RUN}">'
DEMO = "The theorem: $a^2+b^2=c^2$, so\n\n$$c=\\sqrt{a^2+b^2}$$\n\nand $\\pi r^2$ is an area."
# One answer per class of issue 18, each written as an attacker who has read render.py would.
HOSTILE = {
    "mdformat's `<<`": f"a << b <{IMG} and <<img src=x onerror={RUN}>",
    "autolink over a code span": f"see http://example.com`{IMG}` and www.example.com\\<img src=x onerror={RUN}>",
    "link text un-escaped": f"[\\[x\\](javascript:{RUN})](http://a.example) and [a\\]![x](http://evil.invalid/x.png)\\[b](http://a.example)",
    "math in attributes": f'[t](http://a.example "@@0\\@@") [u](http://a.example "$x" onmouseover="{RUN}$") <http://a.example/$x$>',
    "fence info string": f'```x" onmouseover="{RUN}" style="position:fixed;inset:0\ncode\n```',
    "removeMath openers": f"text \\\\( `code \\\\) {IMG}` and \\\\[ ```\n\\begin{{x}}\n```",
    "backtick in math": f"math $a`$ then `b{IMG}`",
    "emphasis in a code span": f"`a\\` _b `c_` and ~`d` {IMG}`",
    "math ending in a backslash": f"$a\\\\$ and $b{IMG}$",
    "tab in \\href": f"$\\href{{java\tscript:{RUN}}}{{click}}$ and \\(\\href{{java\nscript:{RUN}}}{{y}}\\)",
    "stray TeX": f"plain \\begin {{align}} \\href{{javascript:{RUN}}}{{x}} \\end {{align}} text",
    "placeholder collision": "@@1$x$ and @@0@@ $y$ @@9@@ and more",
    "bare CR": "line\rbreak\r\n$x$\r`code`\r done",
    "TeX that makes markup": f"$\\class{{x}}{{y}}$ $\\style{{background:url(http://evil.invalid/)}}{{y}}$ $\\def\\a{{\\href}}\\a{{javascript:{RUN}}}{{x}}$",
    "deep nesting": "".join("  " * i + f"- level {i}\n" for i in range(14)) + "\nlast words",
}

# Every element of every output: anything that runs script, loads a resource or posts data.
SCRIPT_BEARING = """() => {
    const bad = [];
    for (const element of document.querySelectorAll('.jp-OutputArea *')) {
        const tag = element.localName.toLowerCase();
        if (['script', 'iframe', 'object', 'embed', 'img', 'form', 'frame', 'base', 'meta', 'link', 'style'].includes(tag)) {
            bad.push(tag);
        }
        for (const attribute of element.attributes) {
            const name = attribute.name.toLowerCase();
            const value = attribute.value.replace(/[\\x00-\\x20]/g, '').toLowerCase();
            const url = ['href', 'src', 'action', 'formaction', 'xlink:href', 'data', 'srcset'].includes(name);
            if (name.startsWith('on') || url && !/^(https?|mailto):/.test(value)
                || name === 'style' && /url\\(|position:fixed/.test(value)) {
                bad.push(`${tag} ${attribute.name}=${attribute.value}`);
            }
        }
    }
    return {bad, pwned: typeof window.__pwned, alerts: window.__alerts || 0};
}"""
ALL_DONE = """count => {
    const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
    return cells.length === count && cells.every(cell => !cell.querySelector('.jp-InputPrompt').innerText.includes('*'))
        && cells.slice(1).every(cell => cell.querySelector('.jp-OutputArea-output'));
}"""
KERNEL_IDLE = """name => {
    const widget = window.jupyterapp?.shell.currentWidget;
    const kernel = widget?.sessionContext?.session?.kernel;
    return widget?.context?.path === name && kernel?.connectionStatus === 'connected' && kernel?.status === 'idle';
}"""
# Any dialog a payload opens is counted, then dismissed.
TRAP = "window.__alerts = 0; for (const name of ['alert', 'confirm', 'prompt']) window[name] = () => { window.__alerts++; };"


def _notebook(path: Path) -> None:
    v4 = nbformat.v4
    cells = [v4.new_code_cell("%load_ext nano_magic"), v4.new_code_cell("%%nano --once\nDemo")]
    cells += [v4.new_code_cell(f"%%nano --once\nHostile answer: {name}") for name in HOSTILE]
    notebook = v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(notebook)
    nbformat.write(notebook, path)


@pytest.fixture
def chromium() -> Iterator[tuple[Any, list[str]]]:
    """A fresh page in the system Chromium, and the list of requests it makes to hosts other than the lab's."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.add_init_script(TRAP)
            outside: list[str] = []
            page.on("request", lambda request: outside.append(request.url) if "127.0.0.1" not in request.url and "localhost" not in request.url else None)

            def dismissed(dialog: Any) -> None:
                outside.append(f"dialog: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", dismissed)
            yield page, outside
        finally:
            browser.close()


def _assert_inert(page: Any, outside: list[str], when: str) -> None:
    found = page.evaluate(SCRIPT_BEARING)
    assert found == {"bad": [], "pwned": "undefined", "alerts": 0} and not outside, f"{when}: {found} {outside}"


def test_hostile_answers_stay_inert_in_jupyterlab_live_at_the_end_and_after_reload(tmp_path: Path, chromium: Any) -> None:
    page, outside = chromium
    root = tmp_path / "lab"
    root.mkdir()
    _notebook(root / NOTEBOOK)
    cells = 2 + len(HOSTILE)
    with FakeServer() as server:
        server.queue(Reply(text=DEMO, delay=0.02), *(Reply(text=text, delay=0.03) for text in HOSTILE.values()))
        with jupyter_lab(root, {"NANO_BASE_URL": server.base_url}) as lab_url:
            page.goto(tree_url(lab_url, NOTEBOOK))
            page.wait_for_function(KERNEL_IDLE, arg=NOTEBOOK, timeout=60_000)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            ticks = 0
            deadline = time.monotonic() + 120
            while not page.evaluate(ALL_DONE, cells):
                assert time.monotonic() < deadline, "the hostile cells did not finish"
                _assert_inert(page, outside, f"mid-stream, tick {ticks}")
                ticks += 1
                time.sleep(0.2)
            assert ticks >= 10
            page.wait_for_timeout(1_500)  # MathJax typesets the last outputs
            _assert_inert(page, outside, "at the end")
            demo = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea mjx-container")
            assert demo.count() == 3, "the demo answer's three formulas did not typeset"
            text = page.locator(".jp-Notebook").inner_text()
            assert "last words" in text and "level 13" in text and "@@0@@" in text, "an answer lost its text"
            assert "Javascript Error" not in text

            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1_500)
            page.reload()
            page.wait_for_function(KERNEL_IDLE, arg=NOTEBOOK, timeout=60_000)
            page.locator(".jp-OutputArea mjx-container").first.wait_for(timeout=15_000)
            page.wait_for_timeout(1_500)
            _assert_inert(page, outside, "after save and reload")
            assert page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea mjx-container").count() == 3
        assert len(server.posts()) == 1 + len(HOSTILE)
