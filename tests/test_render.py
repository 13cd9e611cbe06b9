"""Markdown with LaTeX: math survives, code is never math, hostile answers stay inert, streaming is stable and linear."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from nano_magic import render
from nano_magic.render import MarkdownStream, StreamRenderer, escape_markdown, markdown_table, to_html, to_markdown

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


def test_dollars_in_code_are_not_math_and_code_is_saved_as_entities() -> None:
    text = "Use `$x$` or\n\n```bash\necho $HOME $PATH <b>\n```"
    html = to_html(text)
    assert "<code>$x$</code>" in html and "echo $HOME $PATH <b>" in visible(html)
    assert "\\(" not in html and '<span style="color:' in html  # highlighted, with inline styles
    assert to_markdown(text) == (
        "Use <code>&#36;x&#36;</code> or\n\n<pre><code>echo &#36;HOME &#36;PATH &#60;b&#62;</code></pre>"
    )


def test_currency_is_not_math_and_is_escaped_in_the_final_markdown() -> None:
    text = "It costs $5 and $10, or $5-$10 in total."
    dollar = "&#36;<span></span>"
    assert to_markdown(text) == f"It costs {dollar}5 and {dollar}10, or {dollar}5-{dollar}10 in total."
    assert "\\(" not in to_html(text)


def test_currency_next_to_a_formula_typesets_only_the_formula() -> None:
    text = "The ticket costs $5, and the area is $\\pi r^2$."
    html = to_html(text)
    assert re.findall(r"\\\((.*?)\\\)", html) == ["\\pi r^2"]
    assert to_markdown(text) == r"The ticket costs &#36;<span></span>5, and the area is $\pi r^2$."


def test_llm_display_layout_with_text_before_and_after() -> None:
    text = "The formula is:\n\\[\nx = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}\n\\]\nmore text"
    html = to_html(text)
    assert "<p>The formula is:</p>" in html and "<p>more text</p>" in html
    assert "\\[\nx = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}\n\\]" in html
    assert to_markdown(text) == "The formula is:\n\n$$x = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}$$\n\nmore text"


def test_math_never_spans_a_blank_line() -> None:
    for text in ("$a\n\nb$", "$$\na\n\nb\n$$", "\\(a\n\nb\\)", "\\[\na\n\nb\n\\]", "\\begin{align}\na\n\nb\n\\end{align}"):
        assert "\\(" not in to_html(text) and "\\[" not in to_html(text).replace("<span>\\</span>[", "")
        assert not re.search(r"(?<!\\)\$", to_markdown(text)), to_markdown(text)


def test_lists_nested_lists_tables_and_code_in_lists() -> None:
    text = (
        "Steps:\n1. First\n   - nested $x^2$\n   - other\n2. Second\n\n"
        "   ```python\n   print('hi')\n   ```\n\n"
        "| a | b |\n| --- | --- |\n| 1 | $y$ |\n"
    )
    html = to_html(text)
    assert re.search(r"<ol>\s*<li>", html) and "<ul>" in html
    assert "<table>" in html and f'<td><span class="{render.PROCESS_MATH}">\\(y\\)</span></td>' in html
    assert "print('hi')" in visible(html) and "<pre><code" in html


XSS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    "[click](javascript:window.__pwned=1)",
    "[click](JaVa&#115;cript:window.__pwned=1)",
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    "<svg onload=window.__pwned=1>",
    "[ref]: javascript:window.__pwned=1\n\nsee [x][ref]",
]
IMG = '<img src=x onerror="window.__pwned=1">'
HOSTILE = {
    "code span across a blank line": f"`a\n\n{IMG}\n\n`",
    "$$ across a blank line": f"$$\na\n\n{IMG}\n\n$$",
    "\\( across a blank line": f"\\(a\n\n{IMG}\n\nb\\)",
    "align across a blank line": f"\\begin{{align}}\na\n\n{IMG}\n\n\\end{{align}}",
    "fence indented four spaces": f"    ```\n{IMG}\n    ```",
    "fence indented in a list": f"- item\n\n      ```\n{IMG}\n      ```",
    "fence inside a quote": f"> ```\n> code\n\n{IMG}\n\n```",
    "link definition, URL on the next line": "[x]:\njavascript:window.__pwned=1\n\n[x]",
    "link definition inside a quote": "> [x]: javascript:window.__pwned=1\n\n[x]",
    "link definition inside a list item": "- [x]: javascript:window.__pwned=1\n\n[x]",
    "backslash inside the scheme": "[x](javascript\\:window.__pwned=1) and [y]\n\n[y]: javascript\\:window.__pwned=1",
    "math inside a link title": '[x](https://a.example "$a" onmouseover="window.__pwned=1$")',
    "math inside a link destination": '[x]($a"onmouseover="window.__pwned=1$)',
    "math with a tag in it": f"$a {IMG} b$ and $$\n{IMG}\n$$",
    "math with a link in it": "$[x](javascript:window.__pwned=1)$ and $$[y]: javascript:z$$",
}


class Text(HTMLParser):
    """The text a browser would show for some HTML."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.feed(html)
        self.close()

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible(html: str) -> str:
    return "".join(Text(html).parts)


class Tags(HTMLParser):
    """The tags and attributes a browser would build from some HTML."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def assert_inert_html(html: str) -> None:
    """No element or attribute that runs script, loads a resource or posts data."""
    for tag, attrs in Tags(html).found:
        assert tag not in ("script", "iframe", "object", "embed", "img", "form", "style", "svg", "math"), html
        for name, value in attrs:
            assert not name.startswith("on") and name != "srcdoc", html
            bare = re.sub(r"[\x00-\x20]", "", value or "").lower()
            assert not bare.startswith(("javascript:", "vbscript:", "data:")), html


REREAD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


OUR_HTML = re.compile(r"<pre><code>[^<]*</code></pre>\s*|</?span>|</?code>")


def assert_inert_markdown(markdown: str) -> None:
    """Read back by a CommonMark parser WITH raw HTML on: no HTML but ours (code, empty spans), links only to http,
    https or mailto."""
    for token in REREAD.parse(markdown):
        assert token.type != "html_block" or OUR_HTML.fullmatch(token.content), markdown
        for child in token.children or []:
            assert child.type != "html_inline" or OUR_HTML.fullmatch(child.content), markdown
            if child.type in ("link_open", "image"):
                url = str(child.attrs.get("href", child.attrs.get("src", "")))
                assert url.lower().startswith(("http:", "https:", "mailto:")), markdown


def live_html(text: str, step: int = 7) -> list[str]:
    """Every frozen block and every tail a stream of `text` in `step`-character deltas shows."""
    renderer, shown = StreamRenderer(), []
    for i in range(0, len(text), step):
        renderer.feed(text[i : i + step])
        block, tail = renderer.render()
        shown += [tail] + ([block] if block is not None else [])
    return shown


@pytest.mark.parametrize("payload", XSS + list(HOSTILE.values()), ids=[f"xss{i}" for i in range(len(XSS))] + list(HOSTILE))
def test_hostile_answers_are_inert_live_and_saved(payload: str) -> None:
    text = f"Answer\n\n{payload}\n\nend"
    assert_inert_html(to_html(text))
    for shown in live_html(text):
        assert_inert_html(shown)
    assert_inert_markdown(to_markdown(text))


def test_raw_html_shows_as_text() -> None:
    text = f"Look: {IMG}"
    assert "&lt;img src=x onerror=" in to_html(text)
    assert "&lt;img src=x onerror=" in to_markdown(text)


def test_relative_and_unsafe_links_become_text() -> None:
    html = to_html("[a](/etc/passwd) [b](javascript:x) [c](https://ok.example) <mailto:me@x.example>")
    assert [attrs for tag, attrs in Tags(html).found if tag == "a"] == [
        [("href", "https://ok.example"), ("rel", "noopener noreferrer nofollow")],
        [("href", "mailto:me@x.example"), ("rel", "noopener noreferrer nofollow")],
    ]


def test_images_from_the_model_become_links_so_nothing_loads_unasked() -> None:
    text = "See ![chart](https://evil.example/?q=secret) and `![kept](in code)`"
    assert "<img" not in to_html(text) and '<a href="https://evil.example/?q=secret"' in to_html(text)
    assert to_markdown(text) == "See [chart](https://evil.example/?q=secret) and <code>&#33;&#91;kept&#93;&#40;in code&#41;</code>"


def test_code_text_survives_sanitizing() -> None:
    html = to_html("```html\n<script>alert('x') && a < b</script>\n```")
    assert "<script>alert('x') && a < b</script>" in visible(html) and "<script" not in html


PIECES = [
    *"`$\\<>[]()\"':!|-* \n0123456789", "\n> ", "\n\n", "\n- ", "\n1. ", "    ", "```", "$$", "\\(", "\\)", "\\[", "\\]",
    "javascript", "onerror", "img", "href", "begin{align}", "end{align}", "\\begin{align}", "http://x.example", "data:",
    "vbscript:", "&#115;", "a", "b", "x",
]
ANSWERS = st.lists(st.sampled_from(PIECES), max_size=120).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS)
def test_any_answer_saves_as_markdown_without_html_or_unsafe_links(text: str) -> None:
    assert_inert_markdown(to_markdown(text))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS, st.integers(1, 9))
def test_any_answer_shows_as_html_without_script(text: str, step: int) -> None:
    assert_inert_html(to_html(text))
    for shown in live_html(text, step):
        assert_inert_html(shown)


def _render_all(text: str) -> float:
    """CPU seconds to write the Markdown and HTML of `text` and to stream it in 2,000-character deltas."""
    started = time.process_time()
    to_markdown(text)
    to_html(text)
    renderer = StreamRenderer(400)
    for i in range(0, len(text), 2_000):
        renderer.feed(text[i : i + 2_000])
        renderer.render()
    return time.process_time() - started


# derandomize: CI runs the same examples every time; the case below is the one known blow-up, kept apart.
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=40).map("".join).filter(str.strip))
def test_any_20000_character_answer_renders_in_linear_time(unit: str) -> None:
    # The figures are measured in benchmarks/adversarial.py; this bound is generous, only a blow-up fails it.
    assert _render_all((unit * (20_000 // len(unit) + 1))[:20_000]) < 3.0


@pytest.mark.xfail(strict=True, reason="markdown-it-py's own block rules are quadratic on list items inside quotes with lazy lines "
                   "(plain MarkdownIt().parse: 0.09 s at 2.5k, 0.33 s at 5k, 1.17 s at 10k characters); not fixed yet")
def test_lazy_quoted_list_items_render_in_linear_time() -> None:
    unit = "*\nvbscript:43\n> "
    assert _render_all((unit * (20_000 // len(unit) + 1))[:20_000]) < 3.0



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
        assert piece in whole or piece in visible(whole)


def test_unclosed_fence_and_display_math_show_as_code_until_they_close() -> None:
    renderer = StreamRenderer()
    renderer.feed("Look:\n\n$$\n\\frac{a}{b")
    _, tail = renderer.render()
    assert "<code" in tail and "\\frac{a}{b" in tail and "\\[" not in tail
    renderer.feed("}\n$$\n")
    block, tail = renderer.render()
    assert "\\[\n\\frac{a}{b}\n\\]" in (block or "") + tail
    renderer.feed("\n```python\nx = '$a$ <b>'")
    _, tail = renderer.render()
    assert "<pre><code" in tail and "$a$ &lt;b&gt;" in tail and "\\(" not in tail


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
        assert re.sub(r"<[^>]+>", "", tail).strip() == shown


def test_finished_blocks_are_rendered_once() -> None:
    renderer = StreamRenderer()
    renderer.feed("First paragraph.\n\nSecond")
    block, tail = renderer.render()
    wrapped = '<div class="mathjax_ignore tex2jax_ignore">{}</div>'.format
    assert block == wrapped("<p>First paragraph.</p>") and tail == wrapped("<p>Second</p>")
    renderer.feed(" grows.")
    block, tail = renderer.render()
    assert block is None and tail == wrapped("<p>Second grows.</p>")


def test_ordered_lists_split_across_blocks_keep_their_numbers() -> None:
    renderer = StreamRenderer()
    renderer.feed("1. one\n\n2. two\n\n3. three")
    block, tail = renderer.render()
    assert 'start="3"' in tail and "<ol>" in (block or "")


def test_live_and_final_html_agree_on_words_and_formulas() -> None:
    shown = live_html(LONG, 5)
    renderer = StreamRenderer()
    parts = []
    for i in range(0, len(LONG), 5):
        renderer.feed(LONG[i : i + 5])
        block, tail = renderer.render()
        parts += [block] if block else []
    live = "".join(parts) + tail
    assert shown and _words_and_formulas(live) == _words_and_formulas(to_html(LONG))


def _words_and_formulas(html: str) -> tuple[list[str], list[str]]:
    text = re.sub(r"<[^>]+>", " ", html)
    return re.findall(r"[A-Za-z]{3,}", re.sub(r"\\[(\[].*?\\[)\]]", " ", text, flags=re.S)), re.findall(r"\\[(\[](.*?)\\[)\]]", text, re.S)


@pytest.mark.parametrize("value", ["# not a heading", "- not a list", "<img src=x onerror=alert(1)>", "$5 and $6", "`tick` *star* _u_",
                                   "[x](javascript:alert(1))", "1. one\n\n    code?", "> quote", "a\\b | c", "---"])
def test_escape_markdown_shows_any_string_literally(value: str) -> None:
    escaped = escape_markdown(value)
    assert_inert_markdown(escaped)
    tokens = REREAD.parse(escaped)
    assert [t.type for t in tokens if t.level == 0 and t.nesting >= 0] == ["paragraph_open"] * (value.count("\n\n") + 1)
    inlines = [t.children or [] for t in tokens if t.type == "inline"]
    shown = "\n".join("".join(c.content if c.type == "text" else "\n" * (c.type != "html_inline") for c in children) for children in inlines)
    assert shown.split() == value.replace("\n\n", "\n").split()


def test_markdown_table_cells_are_escaped() -> None:
    table = markdown_table(["name", "value"], [["a|b", "<img src=x onerror=alert(1)>"], ["$5", "line\nbreak"]])
    assert_inert_markdown(table)
    cells = ["".join(c.content for c in t.children if c.type == "text") for t in REREAD.parse(table) if t.type == "inline" and t.children]
    assert cells == ["name", "value", "a|b", "<img src=x onerror=alert(1)>", "$5", "line break"]


HOSTILE_NAME = '<img src=x onerror="window.__pwned=1"> [x](javascript:alert(1)) `| $5 and $6 |`'


def _shown(cell) -> tuple[str, str]:  # noqa: ANN001 - a tests.conftest.CellRun
    assert not cell.failed, cell.shown
    return cell.outputs[-1].data["text/markdown"], cell.outputs[-1].data["text/plain"]


def test_history_threads_and_export_escape_a_shared_notebooks_metadata(run, tmp_path) -> None:
    import nbformat

    saved = {"thread": HOSTILE_NAME, "system": f"Be {IMG}", "prompt": f"Tell me\n# {IMG}", "answer": f"Sure {IMG}",
             "model": f"m{IMG}", "turn": 0}
    output = nbformat.v4.new_output("display_data", data={"text/plain": "x"}, metadata={"nano_magic": saved})
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%%nano\nTell me", outputs=[output])])
    nbformat.write(notebook, tmp_path / "shared.ipynb")
    assert "Loaded 1 turns" in run(f"%nano load {tmp_path / 'shared.ipynb'}").shown
    for command in ("history", "threads", f"export {tmp_path / 'out.md'}"):
        markdown, text = _shown(run(f"%nano {command}"))
        assert_inert_markdown(markdown)
        assert "\\" not in text.replace("\\$", "")
    markdown, text = _shown(run("%nano threads"))
    assert HOSTILE_NAME in text and f"Be {IMG}" in text
    history_markdown, history_text = _shown(run("%nano history"))
    assert f"# {IMG}" in history_text and f"m{IMG}:" in history_text
    exported = (tmp_path / "out.md").read_text()
    assert_inert_markdown(exported)
    assert exported.count("\n# ") == 0 and exported.startswith("# Thread: ")  # the prompt's "#" is not a heading


def test_models_escape_what_the_server_lists(run, fake, monkeypatch) -> None:
    from tests.support import fake_server

    monkeypatch.setattr(fake_server, "MODELS", {"object": "list", "data": [{"id": HOSTILE_NAME, "owned_by": IMG}]})
    markdown, text = _shown(run("%nano models"))
    assert_inert_markdown(markdown)
    rows = [t for t in REREAD.parse(markdown) if t.type == "inline"]
    assert [r.content for r in rows][:3] == ["model", "owner", "shutdown date"] and len(rows) == 6
    assert HOSTILE_NAME in text and IMG in text


def test_the_markdown_stream_writes_what_the_final_markdown_says() -> None:
    stream = MarkdownStream()
    for i in range(0, len(LONG), 9):
        stream.feed(LONG[i : i + 9])
        shown = stream.render()
        assert_inert_markdown(shown)
        assert "**" not in shown.splitlines()[-1] or shown.splitlines()[-1].count("**") % 2 == 0
    assert REREAD.render(stream.render()) == REREAD.render(to_markdown(LONG))


NESTED = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from(["- ", "> ", "+ ", "> - ", "* "]), st.text("abc xyz 123 $`*_\\", max_size=30)),
    min_size=1, max_size=60,
).map(lambda lines: "".join(" " * (2 * depth) + marker * (1 + depth * (marker == "> ")) + f"w{n} {words}\n" for n, (depth, marker, words) in enumerate(lines)))


def _words(text: str) -> str:
    """The runs of letters and digits, in order; joined, as markup such as `a*b*` shows two runs as one word."""
    return "".join(re.findall(r"[A-Za-z0-9]+", text))


def _markdown_words(markdown: str) -> str:
    """The words of saved Markdown once a reader parses it back: text, code and math, in order."""
    shown = [
        child.content for token in REREAD.parse(markdown) if token.type in ("inline", "html_block")
        for child in (token.children or [token]) if child.type in ("text", "html_block", "code_inline", "html_inline")
    ]
    return _words(visible(" ".join(shown)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NESTED)
def test_every_word_survives_any_nesting_live_and_saved(text: str) -> None:
    words = _words(text)
    assert _words(visible(to_html(text))) == words
    assert _markdown_words(to_markdown(text)) == words
    renderer, shown = StreamRenderer(), []
    for i in range(0, len(text), 50):
        renderer.feed(text[i : i + 50])
        block, _ = renderer.render()
        shown += [block] if block else []
    renderer.feed("\n\nend")
    block, tail = renderer.render()
    assert _words(visible("".join(shown) + (block or "") + tail)) == words + "end"


def test_the_22k_character_answer_nested_ten_deep_keeps_every_word() -> None:
    text = "".join("  " * (i % 12) + f"- item {i} with $x_{{{i}}}$ and more words\n" for i in range(600))
    assert len(text) > 22_000
    assert _words(visible(to_html(text))) == _words(text)
    assert _markdown_words(to_markdown(text)) == _words(text)
    assert "<pre><code>" in to_html(text)  # past five list levels, the rest of the item is indented text


@pytest.mark.parametrize("text", ["a\rb", "a\r\nb\r\n", "\r", "- a\r  - b\r\r$$\rx\r$$\r", "x\x00y", "a\ud800b\udfffc", "`a\r`\r\n\r```\rcode\r```"])
def test_bare_carriage_returns_nul_and_lone_surrogates_never_break_a_renderer(text: str) -> None:
    for step in (1, 2, 3):
        live, view = StreamRenderer(), MarkdownStream()
        for i in range(0, len(text), step):
            live.feed(text[i : i + step])
            view.feed(text[i : i + step])
            live.render()
            view.render()
    words = _words(text.replace("\x00", " ").replace("\ud800", " ").replace("\udfff", " "))
    assert _words(visible(to_html(text))) == words and _markdown_words(to_markdown(text)) == words
    for markdown in (escape_markdown(text), to_markdown(text), view.render()):
        markdown.encode("utf-8")  # no lone surrogate left to fail the notebook's JSON


@pytest.mark.parametrize("command", ["href", "url", "class", "cssId", "style", "data", "unicode", "require", "mmlToken", "html", "def", "newcommand", "renewcommand", "let", "bbox"])
def test_tex_commands_that_make_links_or_markup_show_as_text(command: str) -> None:
    text = f"$\\{command}{{javascript:alert(1)}}{{x}}$ and \\\\{command} stays"
    for out in (to_html(text), to_markdown(text)):
        assert f"\\{command}{{" not in out and f"\\backslash\\mathrm{{{command}}}" in out


def test_text_never_reaches_mathjax_as_tex() -> None:
    html = to_html("plain \\begin {align} x \\end {align} and \\(y\\) costs $5")
    assert html.startswith(f'<div class="{render.IGNORE_MATH}">')
    assert [m.group(1) for m in re.finditer(rf'<span class="{render.PROCESS_MATH}">(.*?)</span>', html)] == ["\\(y\\)"]


def test_flush_renders_the_whole_rest_even_when_a_large_tail_was_held_back() -> None:
    # A 3,000-character table tail is redrawn only when it grows by a quarter; the last rows must still be in the answer,
    # and a half-typed marker at the very end is part of the answer once it has ended.
    text = "| a | b |\n| --- | --- |\n" + "".join(f"| row {i} | $x_{{{i}}}$ |\n" for i in range(150)) + "| last | **bold"
    live, view = StreamRenderer(), MarkdownStream()
    blocks: list[str] = []
    for i in range(0, len(text), 5):
        live.feed(text[i : i + 5])
        view.feed(text[i : i + 5])
        block, tail = live.render()
        blocks += [block] if block else []
        view.render()
    assert "last" not in visible(tail)  # held back, then hidden while typed
    _, rest = live.flush()
    final = visible("".join(blocks) + rest)
    assert "row 149" in final and "last" in final and "**bold" in final
    saved = to_markdown(text)  # what the Markdown view keeps once the answer has ended
    assert "row 149" in saved and "bold" in saved
