"""Differential test: what we write, read by the real readers JupyterLab 4.6 bundles, holds nothing script-bearing.

tests/js/readers.mjs renders each output in jsdom through removeMath, marked (with JupyterLab's extensions and
options) and replaceMath for Markdown, straight into the page for HTML, then MathJax set up as JupyterLab sets it
up, and scans every element: script-bearing or loading elements, `on*` attributes, URLs other than http, https or
mailto, and a reader that throws. Thousands of seeded answers rich in the characters and shapes that once got
through go in as the final HTML, the Markdown, every Markdown-view snapshot, every live block and tail, and the
Markdown of the subcommands. `scripts/test` installs node and `npm ci`s tests/js.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from nano_magic.render import (
    MarkdownStream,
    StreamRenderer,
    escape_markdown,
    markdown_table,
    to_html,
    to_markdown,
)
from tests.support.parts import missing

JS = Path(__file__).parent / "js"
SEED = 18
ANSWERS = 1000

# One piece per class of answer that got script-bearing markup through a reader (issue 18), plus the old ones.
HOSTILE = [
    "a << b <<img src=x onerror=alert(1)>",
    "see http://example.com`<img src=x onerror=alert(1)>` and www.example.com\\<img src=x onerror=alert(1)>",
    "[\\[x\\](javascript:alert(1))](http://a.b) and [a\\]![x](http://evil.example/x.png)\\[b](http://a.b)",
    '[t](http://a.b "@@0\\@@") [u](http://a.b "$x" onmouseover="alert(1)$") <http://a.b/$x$> ![i](http://a.b/$y$)',
    '```x" onmouseover="alert(1)\ncode\n```',
    "text \\\\( `code \\\\) <img src=x onerror=alert(1)>` and \\\\[ ```\n\\begin{x}\n```",
    "math $a`$ then `b<img src=x onerror=alert(1)>`",
    "`a\\` _b `c_` and ~`d` <img src=x onerror=alert(1)>`",
    "$a\\\\$ and $b<img src=x onerror=alert(1)>$",
    "$\\href{java\tscript:alert(1)}{x}$ and \\(\\href{java\nscript:alert(1)}{y}\\)",
    "plain \\begin {align} \\href{javascript:alert(1)}{x} \\end {align} text",
    "@@1$x$ and @@0@@ $y$ @@9@@",
    "line\rbreak\r\n$x$\r`code`\r",
    "$\\url{javascript:alert(1)}$ $\\class{x}{y}$ $\\cssId{x}{y}$ $\\style{background:url(http://e.x/)}{y}$",
    "$\\data{onclick=alert(1)}{x}$ $\\unicode{x}$ $\\require{action}$ $\\mmlToken{mi}[href=javascript:1]{x}$",
    "$\\def\\a{\\href}\\a{javascript:alert(1)}{x}$ $\\newcommand{\\b}{\\href}\\b{javascript:1}{y}$ $\\let\\c\\href$",
    "$\\bbox[background:url(http://e.x/)]{x}$ $\\texttip{x}{y}$ $\\eqref{a}$ $\\ref{b}$",
    "<script>alert(1)</script> <iframe src=javascript:alert(1)> [x](javascript:alert(1)) ![y](http://e.x/i.png)",
    "[a][r]\n\n[r]: javascript:alert(1)",
    "\\begin{align}a\\href{javascript:alert(1)}{x}\\end{align}",
    "| a | b |\n| --- | --- |\n| `x|y` | $a|b$ |",
]
PIECES = [
    *"`$\\<>[]()\"'~_*@|#!{}&%^:./-+=",
    "http://", "https://e.x/p?q=1&r=$2", "www.", "javascript:", "mailto:a@b.c", "@@", "@@1@@", "@@0",
    "```", "~~~", "```py", '```x" onclick="alert(1)', "\\(", "\\)", "\\[", "\\]", "\\\\(", "\\\\)", "$$",
    "\\begin{align}", "\\end{align}", "\\begin {align}", "\\href{javascript:alert(1)}{x}", "\\url{javascript:1}",
    "\\class{a}{b}", "\\style{color:red}{c}", "\\def\\x{\\href}", "\\unicode{65}", "\\require{html}", "\t",
    "\r", "\r\n", "\0", "\ud800", "<img src=x onerror=alert(1)>", "<script>", "</code>", "[x](javascript:1)",
    "![i](http://e.x/i.png)", "[a](http://a.b \"t\")", "<http://a.b>", "x", "word", " ", "  ", "\n", "\n\n",
    "- ", "> ", "1. ", "    ", "| a | b |\n| --- | --- |\n", "# ", "$x^2$", "$$y$$",
]


def _answer(rng: random.Random) -> str:
    parts = [rng.choice(HOSTILE)] if rng.random() < 0.3 else []
    if rng.random() < 0.1:  # deep nesting
        marker = rng.choice(["- ", "> ", "1. ", "> - "])
        parts += [" " * (2 * i) * (marker != "> ") + marker * (1 + i * (marker == "> ")) + "level " + str(i) + "\n" for i in range(rng.randint(8, 25))]
    parts += [rng.choice(PIECES) for _ in range(rng.randint(5, 60))]
    rng.shuffle(parts)
    return "".join(parts)


def _streamed(text: str, rng: random.Random) -> tuple[list[str], list[str]]:
    """Every live block and tail of the widget view, and every snapshot of the Markdown view, fed in random deltas."""
    live, snapshots = StreamRenderer(rng.choice([0, 40])), MarkdownStream()
    html: list[str] = []
    markdown: list[str] = []
    i = 0
    while i < len(text):
        step = rng.randint(1, 12)
        live.feed(text[i : i + step])
        snapshots.feed(text[i : i + step])
        i += step
        frozen, tail = live.render()
        html += [*([frozen] if frozen else []), tail]
        markdown.append(snapshots.render())
    return html, markdown


def _outputs(rng: random.Random) -> list[dict[str, str]]:
    items: list[dict[str, str]] = []
    for n in range(ANSWERS):
        text = _answer(rng)
        items += [{"kind": "html", "text": to_html(text)}, {"kind": "markdown", "text": to_markdown(text)}]
        if n % 8 == 0:  # the streams cost one render per delta: an eighth of the answers stream
            html, markdown = _streamed(text, rng)
            items += [{"kind": "html", "text": h} for h in html] + [{"kind": "markdown", "text": m} for m in markdown]
        if n % 4 == 0:  # history, threads, export, step lines and the Markdown view's title and footer
            line = text.replace("\n", " ")[:200]
            items += [
                {"kind": "markdown", "text": escape_markdown(text)},
                {"kind": "markdown", "text": markdown_table(["thread", line[:20]], [[line, n], [text[:50], line]])},
                {"kind": "markdown", "text": f"**{escape_markdown(line)}**\n\n- {escape_markdown(line)}\n"},
                {"kind": "markdown", "text": f"<sub>{escape_markdown(line)}</sub>"},
            ]
    return items


def _read(items: list[dict[str, str]]) -> list[dict[str, object]]:
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "marked").is_dir():
        missing("the reader test needs node and `npm ci` in tests/js; scripts/test installs them")
    payload = json.dumps(items)
    done = subprocess.run([node, str(JS / "readers.mjs")], input=payload, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_harness_finds_what_it_looks_for() -> None:
    """The scan is live: unescaped payloads, the `@@` collision and a tab in \\href are each found."""
    items = [
        {"kind": "markdown", "text": "<img src=x onerror=alert(1)>"},
        {"kind": "markdown", "text": "[a](javascript:alert(1))"},
        {"kind": "markdown", "text": "@@1$x$"},
        {"kind": "html", "text": "<p>\\(\\href{java\tscript:alert(1)}{x}\\)</p>"},
        {"kind": "markdown", "text": '```x" onclick="alert(1)\ncode\n```'},
        {"kind": "markdown", "text": "a << b <<img src=x onerror=alert(1)>"},
    ]
    found: dict[int, list[str]] = {int(str(result["index"])): list(result["findings"]) for result in _read(items)}  # type: ignore[call-overload]
    assert sorted(found) == list(range(len(items))), found
    assert any("threw" in f for f in found[2])


@pytest.mark.parametrize("piece", HOSTILE)
def test_each_known_class_is_inert_in_every_reader(piece: str) -> None:
    rng = random.Random(piece)
    html, markdown = _streamed(piece, rng)
    items = [{"kind": "html", "text": to_html(piece)}, {"kind": "markdown", "text": to_markdown(piece)}]
    items += [{"kind": "html", "text": h} for h in html] + [{"kind": "markdown", "text": m} for m in markdown]
    items += [{"kind": "markdown", "text": escape_markdown(piece)}, {"kind": "markdown", "text": markdown_table([piece], [[piece]])}]
    assert _read(items) == []


def test_thousands_of_generated_answers_are_inert_in_every_reader() -> None:
    items = _outputs(random.Random(SEED))
    assert len(items) > 10_000
    findings = _read(items)
    shown = [{**f, "output": items[int(f["index"])]["text"][:300]} for f in findings[:5]]  # type: ignore[call-overload]
    assert findings == [], json.dumps(shown, indent=1)
