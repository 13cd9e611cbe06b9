"""Markdown with LaTeX from an untrusted model: safe live HTML and portable saved Markdown, from one token stream.

markdown-it-py parses CommonMark with raw HTML off (it stays text), links allowed only to http, https and
mailto, and mdit-py-plugins' dollarmath and amsmath rules plus one rule of our own for `\\(…\\)` and `\\[…\\]`.
The live HTML (markdown-it's renderer, then nh3) and the saved Markdown (mdformat's renderer) are written
from the same tokens, so they agree on what is text, code, math and link, and neither patches source text.
Every rule here looks at a bounded stretch of text per position, so any input renders in linear time.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.ruler import RuleOptionsType
    from markdown_it.rules_block import StateBlock
    from markdown_it.rules_inline import StateInline
    from markdown_it.token import Token
    from mdformat.renderer import RenderContext, RenderTreeNode

__all__ = ["to_html", "to_markdown", "first_code_block", "tidy_tail", "StreamRenderer", "MarkdownStream", "escape_markdown", "markdown_table", "MAX_PENDING_MATH"]

SAFE_SCHEMES = ("http:", "https:", "mailto:")
MAX_PENDING_MATH = 40  # characters of an unclosed inline formula hidden while it streams

_HALF_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)]?|#{1,6}|>|\|)[ \t]*$")
_ENV = re.compile(r"\\begin\{([A-Za-z]+\*?)\}")
_DISPLAY_OPENER = re.compile(r"[ \t>]*(?:[-*+]|\d{1,9}[.)])?[ \t]*(\$\$|\\\[|\\begin\{([A-Za-z]+\*?)\})")
_CODE_BLOCKS = ("fence", "code_block")
_MATH = ("math_inline", "math_inline_double", "math_block", "amsmath")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _collector_paused(render: Callable[_P, _R]) -> Callable[_P, _R]:
    """`render` with Python's cycle collector paused while it runs, unless it was already off.

    A render's tokens all live until it returns, so a collection in the middle frees nothing but walks all of them,
    and thousands of new tokens start one often: on a 400-row table that doubled the CPU of every render. The tokens
    hold no cycles, so they are freed when the render returns; the few cycles mdformat's tree makes wait for the
    collector's next run.
    """

    @wraps(render)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if not gc.isenabled():
            return render(*args, **kwargs)
        gc.disable()
        try:
            return render(*args, **kwargs)
        finally:
            gc.enable()

    return paused


# --- The tokenizer -------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    """CommonMark + tables + strikethrough, raw HTML as text, safe links only, and the math rules."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.amsmath import amsmath_block, amsmath_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.dollarmath.index import math_block_dollar

    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    # Pandoc's currency rule: no space inside either dollar and no digit after the closer, so "$5 and $10" is text.
    md.use(dollarmath_plugin, allow_labels=False, allow_space=False, allow_digits=False, allow_blank_lines=False, double_inline=True)
    md.use(amsmath_plugin)
    # Both plugins search for a closer to the end of the container, blank lines included: bound that search.
    md.block.ruler.at("math_block", _bounded(math_block_dollar(False, None, False), "$$"))
    interrupts: RuleOptionsType = {"alt": ["paragraph", "reference", "blockquote", "list"]}
    md.block.ruler.at("amsmath", _bounded(amsmath_block, "\\begin{"), interrupts)
    # texmath's "brackets" rules would do this, but they slice the rest of the source at every opener (quadratic)
    # and let `\[…\]` run across blank lines, so these two small rules replace them.
    md.block.ruler.before("fence", "math_bracket", _bounded(_bracket_block, "\\["), interrupts)
    md.inline.ruler.before("escape", "math_backslash", _backslash_inline)
    md.core.ruler.push("images_as_links", _images_as_links)
    md.validateLink = _safe_link  # type: ignore[method-assign]
    return md


def _safe_link(url: str) -> bool:
    """http, https and mailto only: anything else, relative links included, stays text."""
    return url.strip().lower().startswith(SAFE_SCHEMES)


def _bounded(rule: Callable[[StateBlock, int, int, bool], bool], opener: str) -> Callable[[StateBlock, int, int, bool], bool]:
    """A display-math block rule that looks for its closer only up to a blank line, the container's end or the next
    line that opens the same way; so each line is searched by at most two openers, and math never spans a blank line."""

    def bounded(state: StateBlock, start: int, end: int, silent: bool) -> bool:
        first = state.bMarks[start] + state.tShift[start]
        if not state.src.startswith(opener, first):
            return False
        head = state.src[first : state.src.find("}", first) + 1] if opener == "\\begin{" else opener
        stop = start + 1
        while stop < end and not state.isEmpty(stop) and state.sCount[stop] >= state.blkIndent:
            stop += 1
            if state.src.startswith(head, state.bMarks[stop - 1] + state.tShift[stop - 1]):
                break
        return rule(state, start, stop, silent)

    return bounded


def _bracket_block(state: StateBlock, start: int, end: int, silent: bool) -> bool:
    """`\\[ … \\]` as display math, the closer ending a line."""
    if state.sCount[start] - state.blkIndent >= 4:
        return False
    for line in range(start, end):
        text = state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]].rstrip()
        if text.endswith("\\]") and (line > start or len(text) >= 4):
            break
    else:
        return False
    if not silent:
        token = state.push("math_block", "math", 0)
        token.block = True
        token.content = state.getLines(start, line + 1, state.sCount[start], False).strip()[2:-2]
        token.markup = "\\["
        token.map = [start, line + 1]
    state.line = line + 1
    return True


def _backslash_inline(state: StateInline, silent: bool) -> bool:
    """`\\(…\\)` inline, `\\[…\\]` and `\\begin{env}…\\end{env}` displayed, inside a paragraph."""
    src, pos = state.src, state.pos
    if not src.startswith("\\", pos):
        return False
    opener, env = src[pos : pos + 2], None
    if opener in ("\\(", "\\["):
        closer, start = ("\\)" if opener == "\\(" else "\\]"), pos + 2
    elif env := _ENV.match(src, pos):
        closer, start = f"\\end{{{env.group(1)}}}", env.end()
    else:
        return False
    end = _find_closer(state, closer, start)
    if end == -1 or end + len(closer) > state.posMax or not src[start:end].strip():
        return False
    if not silent:
        token = state.push("math_inline" if opener == "\\(" else "math_inline_double", "math", 0)
        token.content = src[pos : end + len(closer)] if env else src[start:end]
        token.markup = opener
    state.pos = end + len(closer)
    return True


def _find_closer(state: StateInline, closer: str, start: int) -> int:
    """The first `closer` at or after `start`, remembering the last search so that many openers cost one scan."""
    memo = state.env.setdefault("closers", {})
    src = state.src
    seen = memo.get(closer)
    if seen is not None and seen[0] is src and seen[1] <= start and (seen[2] == -1 or seen[2] >= start):
        return seen[2]
    found = src.find(closer, start)
    memo[closer] = (src, start, found)
    return found


def _images_as_links(state: Any) -> None:
    """A model's image becomes a link: an image would load its URL unasked, and the URL can carry data out."""
    from markdown_it.token import Token

    for block in state.tokens:
        if block.type != "inline" or not block.children or not any(t.type == "image" for t in block.children):
            continue
        children: list[Token] = []
        for token in block.children:
            if token.type != "image":
                children.append(token)
                continue
            attrs = {"href": token.attrs["src"], **({"title": token.attrs["title"]} if token.attrs.get("title") else {})}
            children += [Token("link_open", "a", 1, attrs=attrs), *(token.children or []), Token("link_close", "a", -1)]
        block.children = children


def _tokens(text: str) -> list[Token]:
    return _parser().parse(text, {})


# --- Live HTML -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _html_renderer() -> Any:
    """markdown-it's HTML renderer, with math left for MathJax and text kept out of MathJax's reach."""
    from markdown_it.common.utils import escapeHtml
    from markdown_it.renderer import RendererHTML

    def math(tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        tex = escapeHtml(token.content)
        if token.type == "amsmath" or token.markup.startswith("\\b"):
            source = tex
        elif token.type == "math_inline":
            source = f"\\({tex}\\)"
        else:
            source = f"\\[{tex}\\]"
        return f"<div>{source}</div>\n" if token.block else source

    def text(tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        # MathJax scans text nodes for delimiters; a `$` or `\` in its own element cannot start a formula.
        return _MATHJAX_TRIGGERS.sub(r"<span>\g<0></span>", escapeHtml(tokens[idx].content))

    renderer = RendererHTML()
    for name in _MATH:
        renderer.rules[name] = math  # type: ignore[assignment]  # markdown-it types its rules as bound methods; it calls any function
    renderer.rules["text"] = text  # type: ignore[assignment]
    return renderer


_MATHJAX_TRIGGERS = re.compile(r"[$\\]")


def _html(tokens: list[Token]) -> str:
    import nh3

    rendered = _html_renderer().render(tokens, _parser().options, {})
    return nh3.clean(rendered, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes={s[:-1] for s in SAFE_SCHEMES}).strip()


_TAGS = {
    "a", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "span", "div",
}
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}, "code": {"class"}}


@_collector_paused
def to_html(text: str) -> str:
    """Safe HTML for finished Markdown with LaTeX, math left for MathJax."""
    return _html(_tokens(text))


# --- Saved Markdown ------------------------------------------------------------------------------------------


class _MathWriter:
    """An mdformat extension: math as `$…$`/`$$…$$`, and text escaped for JupyterLab's math pass too."""

    @staticmethod
    def inline(node: RenderTreeNode, context: RenderContext) -> str:
        return f"${_inert_tex(node.content)}$"

    @staticmethod
    def display(node: RenderTreeNode, context: RenderContext) -> str:
        return f"$${_inert_tex(node.content)}$$"

    @staticmethod
    def text(text: str, node: RenderTreeNode, context: RenderContext) -> str:
        # mdformat doubled every backslash, so each `$` and `~~` here is a real one. A dollar is written `\\$`: the page
        # gets `\$`, which MathJax shows as `$`. JupyterLab 4.6 pairs a plain `\$` with the next dollar (measured).
        text = text.replace("$", "\\\\$").replace("~~", "\\~~")
        following = node.next_sibling
        if text.endswith("\\\\") and following is not None and following.type in (*_MATH, "code_inline"):
            # JupyterLab's math pass takes a backslash before "$" or "`" as an escape, whatever precedes it.
            text = text[:-2] + "&#92;"
        return text

    @staticmethod
    def plain(node: RenderTreeNode, context: RenderContext) -> str:
        # mdformat's text renderer costs ~40 µs a node even with nothing to escape; skip it when that is so. It changes
        # only tabs, runs of spaces, line breaks and the characters left out below; `$` and `~~` are for `text` either way.
        if _NOTHING_TO_ESCAPE.fullmatch(node.content):
            return node.content
        from mdformat.renderer import DEFAULT_RENDERERS

        return DEFAULT_RENDERERS["text"](node, context)

    @staticmethod
    def strikethrough(node: RenderTreeNode, context: RenderContext) -> str:
        return "~~" + "".join(child.render(context) for child in node.children) + "~~"

    @staticmethod
    def list_item(node: RenderTreeNode, context: RenderContext) -> str:
        # mdformat's own asks the whole list whether it is tight for every item (quadratic): ask once per list.
        tight = context.env.setdefault("tight_lists", {})
        if id(node.parent) not in tight:
            items = node.parent.children  # type: ignore[union-attr]
            tight[id(node.parent)] = all(p.hidden for item in items for p in item.children if p.type == "paragraph")
        text = ("\n" if tight[id(node.parent)] else "\n\n").join(child.render(context) for child in node.children)
        return text if text.strip() else ""

    RENDERERS = {
        "math_inline": inline, "math_inline_double": display, "math_block": display, "amsmath": display,
        "text": plain, "s": strikethrough, "list_item": list_item,
    }
    POSTPROCESSORS = {"text": text}


_NOTHING_TO_ESCAPE = re.compile(r"(?: ?[^\s\\*_\[\]<`&!])* ?")


def _joined(tokens: list[Token]) -> list[Token]:
    """Runs of text and soft line breaks as one text token each, as mdformat writes them the same: fewer nodes."""
    from markdown_it.token import Token

    for block in tokens:
        if block.children and any(child.type == "softbreak" for child in block.children):
            children: list[Token] = []
            for child in block.children:
                if child.type in ("text", "softbreak") and children and children[-1].type == "text":
                    extra = "\n" if child.type == "softbreak" else child.content
                    children[-1] = Token("text", "", 0, content=children[-1].content + extra)
                else:
                    children.append(child if child.type != "softbreak" else Token("text", "", 0, content="\n"))
            block.children = children
    return tokens


def _inert_tex(tex: str) -> str:
    """TeX that no Markdown reader can take for HTML or a link: spaces, which math mode ignores, after `<` and `]`."""
    tex = re.sub(r"<(?=\S)", "< ", tex.strip())
    tex = re.sub(r"\](?=[(\[:])", "] ", tex)
    return re.sub(r"(?<!\\)\$", r"\\$", tex)


@lru_cache(maxsize=1)
def _tree_class() -> type[RenderTreeNode]:
    from mdformat.renderer import RenderTreeNode

    class Tree(RenderTreeNode):
        """mdformat's tree, with each node's next sibling found in constant time.

        mdformat's text renderer asks every text node for it, and the stock lookup searches the parent's children,
        which makes a paragraph of many short pieces quadratic.
        """

        @property
        def next_sibling(self) -> Tree | None:
            parent = self.parent
            if parent is None:
                return None
            index = parent.__dict__.get("sibling_index")
            if index is None:
                index = parent.__dict__["sibling_index"] = {id(child): i for i, child in enumerate(parent.children)}
            following = index[id(self)] + 1
            return parent.children[following] if following < len(parent.children) else None

    return Tree


def _markdown(tokens: list[Token]) -> str:
    import mdformat.plugins
    from mdformat.renderer import MDRenderer

    extensions = [_MathWriter, mdformat.plugins.PARSER_EXTENSIONS["tables"]]
    options = {**_parser().options, "parser_extension": extensions, "mdformat": {"wrap": "keep", "number": False}}
    return MDRenderer().render_tree(_tree_class()(_joined(tokens)), options, {}).rstrip("\n")


@_collector_paused
def to_markdown(text: str) -> str:
    """The portable Markdown to save: math as `$`/`$$`, code as written, everything else escaped as text."""
    return _markdown(_tokens(text))


def first_code_block(text: str) -> str | None:
    """The code of the answer's first fenced block, as the parser sees it (a fence inside a list or quote too)."""
    return next((t.content.rstrip("\n") for t in _tokens(text) if t.type == "fence"), None)


def escape_markdown(text: str) -> str:
    """Any string (a prompt, a name, an error) as Markdown that shows it literally, line breaks kept."""
    from markdown_it.token import Token

    tokens: list[Token] = []
    for paragraph in re.split(r"\n[ \t]*\n", text.strip("\n")):
        children: list[Token] = []
        for i, line in enumerate(paragraph.split("\n")):
            if i:
                children.append(Token("hardbreak", "br", 0))
            children.append(Token("text", "", 0, content=line.strip()))
        tokens += [Token("paragraph_open", "p", 1), Token("inline", "", 0, children=children), Token("paragraph_close", "p", -1)]
    return _markdown(tokens) if text.strip() else ""


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table whose cells show their text literally."""

    def cell(value: object) -> str:
        return escape_markdown(" ".join(str(value).split())).replace("|", "\\|") or " "

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- Streaming -----------------------------------------------------------------------------------------------


class _Stream:
    """A growing answer cut into finished blocks and a live tail, for a view that redraws only the tail.

    Only the text after the last finished block is kept, so each refresh costs the size of the tail,
    not of the answer. `min_block_chars` gathers small finished blocks into fewer, larger groups.
    A single block can grow without end (a 400-row table, a list with no blank line): once the tail
    passes LIVE_TAIL_CHARS it is redrawn only after it grows by a quarter, so the work over a whole
    answer stays linear in its length.
    """

    LIVE_TAIL_CHARS = 2_000

    def __init__(self, min_block_chars: int = 0) -> None:
        self._parts: list[str] = []
        self._min = min_block_chars
        self._drawn_chars = 0

    def feed(self, delta: str) -> None:
        """Add received text."""
        self._parts.append(delta)

    def _advance(self) -> tuple[str | None, str, list[Token]] | None:
        """The blocks finished since the last call, the tail and its tokens; None while an oversized tail waits."""
        tail = "".join(self._parts)
        self._parts = [tail]
        if self._drawn_chars and self.LIVE_TAIL_CHARS < len(tail) < self._drawn_chars * 5 // 4:
            return None
        tokens = _tokens(tail)
        boundary = _last_boundary(tail, tokens)
        finished = None
        if boundary >= max(self._min, 1):
            finished, tail = tail[:boundary], tail[boundary:]
            tokens = _tokens(tail)
            self._parts = [tail]
        self._drawn_chars = len(tail)
        return finished, tail, tokens


class StreamRenderer(_Stream):
    """The live HTML of a growing answer: finished blocks once, and only the tail on each refresh."""

    def __init__(self, min_block_chars: int = 0) -> None:
        super().__init__(min_block_chars)
        self._shown = ""
        self.finished_text = ""  # the Markdown of the blocks that the last `render` returned

    @_collector_paused
    def render(self) -> tuple[str | None, str]:
        """HTML of the blocks finished since the last call (None if none), and of the live tail."""
        advanced = self._advance()
        self.finished_text = ""
        if advanced is None:
            return None, self._shown
        finished, tail, tokens = advanced
        self.finished_text = finished or ""
        self._shown = _live_html(tail, tokens)
        return (None if finished is None else to_html(finished)), self._shown

    def flush(self) -> tuple[str, str]:
        """The Markdown and HTML of all the text not yet returned as finished, as one finished block; the stream empties."""
        rest = "".join(self._parts)
        self._parts, self._shown, self._drawn_chars = [], "", 0
        return rest, to_html(rest)


class MarkdownStream(_Stream):
    """The Markdown of a growing answer, for a frontend that shows `text/markdown`: finished blocks written once."""

    def __init__(self) -> None:
        super().__init__()
        self._written: list[str] = []
        self._tail = ""

    @_collector_paused
    def render(self) -> str:
        """The whole answer so far as Markdown, half-typed markers on the last line hidden."""
        advanced = self._advance()
        if advanced is not None:
            finished, tail, tokens = advanced
            if finished is not None:
                self._written.append(to_markdown(finished))
            self._tail = to_markdown(tidy_tail(tail, tokens))
        return "\n\n".join([*self._written, self._tail])


def _line_starts(text: str) -> list[int]:
    return [0, *(m.end() for m in re.finditer("\n", text))]


def _last_boundary(text: str, tokens: list[Token]) -> int:
    """Where the last top-level block (or top-level list item) starts, if a blank line comes before it."""
    starts = _line_starts(text)
    best = 0
    for token in tokens:
        top = token.level == 0 or (token.type == "list_item_open" and token.level == 1)
        if not top or token.nesting == -1 or token.map is None or token.map[0] == 0:
            continue
        line = token.map[0]
        if not text[starts[line - 1] : starts[line]].strip():
            best = max(best, starts[line])
    return best


def _live_html(tail: str, tokens: list[Token]) -> str:
    """The tail as shown mid-stream: half-typed markers hidden, an unclosed display formula shown as code."""
    tidied = tidy_tail(tail, tokens)
    if tidied != tail:
        tail, tokens = tidied, _tokens(tidied)
    opened = _unclosed_display(tail, tokens)
    if opened is None:
        return _html(tokens)
    from markdown_it.common.utils import escapeHtml

    head = _html(_tokens(tail[:opened])) if tail[:opened].strip() else ""
    return head + f'<pre><code class="language-latex">{escapeHtml(tail[opened:].lstrip(" >"))}</code></pre>'


def _unclosed_display(tail: str, tokens: list[Token]) -> int | None:
    """Where a display formula opens in the last block without a closer yet, outside code."""
    starts = _line_starts(tail)
    covered = {line for t in tokens if t.map and (t.type in _CODE_BLOCKS or t.type in _MATH) for line in range(*t.map)}
    last_closer: dict[str, int] = {}
    last_blank = max((i for i in range(len(starts)) if not _line(tail, starts, i).strip()), default=-1)
    for i in range(last_blank + 1, len(starts)):
        opener = _DISPLAY_OPENER.match(_line(tail, starts, i))
        if i in covered or opener is None:
            continue
        closer = {"$$": "$$", "\\[": "\\]"}.get(opener.group(1), f"\\end{{{opener.group(2)}}}")
        if closer not in last_closer:
            last_closer[closer] = tail.rfind(closer)
        if last_closer[closer] < starts[i] + opener.end(1):
            return starts[i] + opener.start(1)
    return None


def _line(text: str, starts: list[int], i: int) -> str:
    return text[starts[i] : starts[i + 1] if i + 1 < len(starts) else len(text)].rstrip("\n")


def tidy_tail(tail: str, tokens: list[Token] | None = None) -> str:
    """Hide half-typed markers and formulas on the unfinished last line, so nothing flashes."""
    tokens = _tokens(tail) if tokens is None else tokens
    last_line = tail.count("\n")
    if any(t.type in _CODE_BLOCKS and t.map and t.map[1] > last_line for t in tokens):
        return tail  # the last line is code: it shows as typed
    head, sep, last = tail.rpartition("\n")
    if _HALF_MARKER.match(last):
        return head + sep
    if last.count("**") % 2:
        i = last.rfind("**")
        last = last[:i] + last[i + 2 :]
    if last.count("`") % 2 and "```" not in last:
        i = last.rfind("`")
        last = last[:i] + last[i + 1 :]
    if (start := _unclosed_inline_math(last)) is not None:
        last = last[:start]
    return head + sep + last


def _unclosed_inline_math(text: str) -> int | None:
    """Where a formula starts that is still being typed, if any: a short stretch after `\\(` or `$`.

    A dollar before a digit is taken for currency, and a long stretch for text, so that neither hides the line.
    """
    for opener in ("\\(", "$"):
        i = text.rfind(opener)
        if i == -1 or (i and text[i - 1] == "\\") or len(text) - i > MAX_PENDING_MATH:
            continue
        after = text[i + len(opener) : i + len(opener) + 1]
        if opener == "$" and (not after or after in " \t$" or after.isdigit()):
            continue
        if opener == "$" and text.count("$", 0, i) % 2:
            continue  # the closer of a formula on this line
        return i
    return None
