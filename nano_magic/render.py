"""Markdown with LaTeX from an untrusted model: safe live HTML and portable saved Markdown, from one token stream.

markdown-it-py parses CommonMark with raw HTML off (it stays text), links allowed only to http, https and
mailto, and mdit-py-plugins' dollarmath and amsmath rules plus one rule of our own for `\\(…\\)` and `\\[…\\]`.
The HTML (markdown-it's renderer, then nh3) is what every view shows and what the notebook keeps: text sits in an
element MathJax ignores, math in one it processes, TeX commands that make links or markup are shown as text
(`tex.py`), code is highlighted with inline styles. The Markdown (mdformat's renderer, for frontends that show
`text/markdown`) is written from the same tokens so that no reader can take it for other structure: every ASCII
punctuation mark in text is escaped, code is entity-escaped HTML, and math is written only where JupyterLab's
removeMath, marked and MathJax delimit it alike (see `_MarkdownWriter`).
Every rule here looks at a bounded stretch of text per position, so any input renders in linear time.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .tex import inert_tex

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.ruler import RuleOptionsType
    from markdown_it.rules_block import StateBlock
    from markdown_it.rules_inline import StateInline
    from markdown_it.token import Token
    from mdformat.renderer import RenderContext, RenderTreeNode

__all__ = ["to_html", "answer_html", "to_markdown", "first_code_block", "tidy_tail", "StreamRenderer", "MarkdownStream", "escape_markdown", "markdown_table", "MAX_PENDING_MATH"]

SAFE_SCHEMES = ("http:", "https:", "mailto:")
MAX_PENDING_MATH = 40  # characters of an unclosed inline formula hidden while it streams

_HALF_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)]?|#{1,6}|>|\|)[ \t]*$")
_ENV = re.compile(r"\\begin\{([A-Za-z]+\*?)\}")
_DISPLAY_OPENER = re.compile(r"[ \t>]*(?:[-*+]|\d{1,9}[.)])?[ \t]*(\$\$|\\\[|\\begin\{([A-Za-z]+\*?)\})")
_CODE_BLOCKS = ("fence", "code_block")
# Block nesting (a list level counts two, a quote one) past which the rest of a container is kept as indented text.
# markdown-it drops everything past its maxNesting (20). 12 keeps five list levels or eleven quotes as structure, more
# than a reader follows as indentation on a notebook's width; each level costs every line under it a parse, so this
# also keeps a deeply nested answer within 2x the cost of a flat one (benchmarks/adversarial.py).
MAX_BLOCK_NESTING = 12
IGNORE_MATH = "mathjax_ignore tex2jax_ignore"  # MathJax 3's and MathJax 2's class for "typeset nothing in here"
PROCESS_MATH = "mathjax_process tex2jax_process"  # and for "typeset this, inside an ignored element"
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
    md.block.tokenize = _flat_past_depth(md.block.tokenize)  # type: ignore[method-assign,assignment]
    return md


def _flat_past_depth(tokenize: Callable[[StateBlock, int, int], None]) -> Callable[[StateBlock, int, int], None]:
    """The block tokenizer, except that a container nested past MAX_BLOCK_NESTING keeps its lines as indented text.

    markdown-it skips the rest of the document once it passes maxNesting; lists and quotes call this for their
    contents, so here is where the depth is known.
    """

    def flat(state: StateBlock, start: int, end: int) -> None:
        if state.level < MAX_BLOCK_NESTING:
            return tokenize(state, start, end)
        state.line = line = state.skipEmptyLines(start)
        if line < end and state.sCount[line] >= state.blkIndent:
            last = line
            while last < end and (state.isEmpty(last) or state.sCount[last] >= state.blkIndent):
                last += 1
            token = state.push("code_block", "code", 0)
            token.content, token.map = state.getLines(line, last, state.blkIndent, True), [line, last]
            state.line = last
        return None

    return flat


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


_LINE_BREAKS = re.compile(r"\r\n?")


def _clean_text(text: str) -> str:
    """`\\r\\n` and `\\r` as `\\n`, NUL and lone surrogates as U+FFFD: what every reader and every offset here agree on."""
    if "\r" in text:
        text = _LINE_BREAKS.sub("\n", text)
    if "\0" in text:
        text = text.replace("\0", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


# --- HTML ----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _html_renderer() -> Any:
    """markdown-it's HTML renderer: math left for MathJax in elements it processes, code highlighted."""
    from markdown_it.common.utils import escapeHtml
    from markdown_it.renderer import RendererHTML

    def math(tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        tex = escapeHtml(inert_tex(token.content))
        if token.type == "amsmath" or token.markup.startswith("\\b"):
            source = tex
        elif token.type == "math_inline":
            source = f"\\({tex}\\)"
        else:
            source = f"\\[{tex}\\]"
        tag = "div" if token.block else "span"
        return f'<{tag} class="{PROCESS_MATH}">{source}</{tag}>' + ("\n" if token.block else "")

    def text(tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        # The answer sits in an element MathJax ignores; a `$` or `\` in its own element also splits MathJax's
        # strings, for a typesetter that does not honour the ignore class.
        return _MATHJAX_TRIGGERS.sub(r"<span>\g<0></span>", escapeHtml(tokens[idx].content))

    def code(tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        language = token.info.split(maxsplit=1)[0] if token.info.strip() else ""
        return f"<pre><code>{_highlighted(token.content, language)}</code></pre>\n"

    renderer = RendererHTML()
    for name in _MATH:
        renderer.rules[name] = math  # type: ignore[assignment]  # markdown-it types its rules as bound methods; it calls any function
    renderer.rules["text"] = text  # type: ignore[assignment]
    renderer.rules["fence"] = renderer.rules["code_block"] = code  # type: ignore[assignment]
    return renderer


_MATHJAX_TRIGGERS = re.compile(r"[$\\]")


def _highlighted(code: str, language: str) -> str:
    """`code` as HTML with pygments' colours as inline styles, or escaped as it is when no lexer has that name.

    Inline styles, not classes: each block is an output of its own in the notebook, so it must look right without a
    stylesheet (a `<style>` element is what nh3 removes), in the live view, in the saved notebook and in an export.
    """
    from markdown_it.common.utils import escapeHtml

    if not language:
        return escapeHtml(code)
    from pygments import highlight  # type: ignore[import-untyped]
    from pygments.lexers import get_lexer_by_name  # type: ignore[import-untyped]
    from pygments.util import ClassNotFound  # type: ignore[import-untyped]

    try:
        lexer = get_lexer_by_name(language[:40])
    except ClassNotFound:
        return escapeHtml(code)
    return highlight(code, lexer, _formatter()).rstrip("\n") + ("\n" if code.endswith("\n") else "")


@lru_cache(maxsize=1)
def _formatter() -> Any:
    from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]

    return HtmlFormatter(nowrap=True, noclasses=True, style="default")


def _html(tokens: list[Token]) -> str:
    """Sanitized HTML for `tokens`, in one element that MathJax leaves alone but for the math inside."""
    import nh3

    rendered = _html_renderer().render(tokens, _parser().options, {})
    cleaned = nh3.clean(
        rendered, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes={s[:-1] for s in SAFE_SCHEMES},
        allowed_classes=_CLASSES, filter_style_properties=_STYLES, link_rel="noopener noreferrer nofollow",
    ).strip()
    return f'<div class="{IGNORE_MATH}">{cleaned}</div>' if cleaned else ""


_TAGS = {
    "a", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "span", "div",
}
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}, "span": {"style"}}
_CLASSES = {"span": set(PROCESS_MATH.split()), "div": set(PROCESS_MATH.split())}
_STYLES = {"text-align", "color", "background-color", "font-weight", "font-style", "text-decoration", "border"}


@_collector_paused
def to_html(text: str) -> str:
    """Safe HTML for finished Markdown with LaTeX, math left for MathJax: what a view shows and the notebook keeps."""
    return _html(_tokens(_clean_text(text)))


answer_html = to_html  # the final HTML of a whole answer: the same function, named for the callers that save it


# --- Saved Markdown ------------------------------------------------------------------------------------------


class _MarkdownWriter:
    """An mdformat extension for Markdown that no reader can take for structure we did not write.

    JupyterLab reads `text/markdown` with removeMath, then marked (GitHub-flavoured, autolinks on), then MathJax over
    the page; VS Code and Colab have readers of their own. So the text is written so that none of them has a choice:
    - every ASCII punctuation mark in text that can start or end inline structure is escaped: `` ` ``, `!`, `@`, `<`,
      `>`, `&`, `[`, `]`, `|` and `#` as entities (marked un-escapes `\\[` in link text, a table cell splits at
      `\\|`, and `\\@@1` after marked is a placeholder for replaceMath), `* _ ~` with a backslash;
    - `\\` and `$` are entities followed by an empty `<span>`, so that MathJax, which reads the decoded page, finds no
      delimiter in text, and removeMath finds no backslash or dollar in it at all;
    - `://` and `www.` in text are split by an empty `<span>` too, so that no autolinker sees a URL there;
    - code is an HTML `<code>`/`<pre>` with every punctuation mark an entity: no backtick, dollar or backslash for
      removeMath to pair, and no fence info string;
    - a link is `[text](url)`, its URL percent-encoded and its title left out, so nothing lands in an attribute;
    - math is `$…$`/`$$…$$` only in a form that removeMath, marked and MathJax delimit alike (`_math_markdown`), its
      blocked TeX commands shown as text; any other formula is written as text.
    """

    @staticmethod
    def text(node: RenderTreeNode, context: RenderContext) -> str:
        return _markdown_text(node.content)

    @staticmethod
    def inline(node: RenderTreeNode, context: RenderContext) -> str:
        return _math_markdown(node, False)

    @staticmethod
    def display(node: RenderTreeNode, context: RenderContext) -> str:
        return _math_markdown(node, True)

    @staticmethod
    def code_inline(node: RenderTreeNode, context: RenderContext) -> str:
        return f"<code>{_code_entities(node.content)}</code>"

    @staticmethod
    def code_block(node: RenderTreeNode, context: RenderContext) -> str:
        return f"<pre><code>{_code_entities(node.content.rstrip(chr(10)))}</code></pre>"

    @staticmethod
    def link(node: RenderTreeNode, context: RenderContext) -> str:
        text = "".join(child.render(context) for child in node.children)
        return f"[{text}]({_url_markdown(str(node.attrs['href']))})"

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
        "text": text, "code_inline": code_inline, "fence": code_block, "code_block": code_block, "link": link,
        "s": strikethrough, "list_item": list_item,
    }


_BREAK = "<span></span>"  # an element: MathJax's strings and autolinkers' text both end at it, and it shows nothing
# Every ASCII punctuation mark that can start or end inline structure in any reader we name. The rest
# (`. , ; : ? ' " { } ^ ( ) - + = / %`) acts only at a line's start, where mdformat's paragraph writer escapes list
# markers, setext underlines and thematic breaks, or after a `[…]`, which never forms (braces count only inside math,
# whose content `_math_markdown` checks); leaving them keeps saved text readable.
_TEXT_ESCAPES = str.maketrans({
    **{c: "\\" + c for c in "*_~"},
    "`": "&#96;", "!": "&#33;", "@": "&#64;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;",
    "|": "&#124;", "#": "&#35;", "\\": "&#92;" + _BREAK, "$": "&#36;" + _BREAK,
})
# A scheme's `://`, `www.`, and an underscore inside a word, which no reader takes for emphasis.
_AFTER_ESCAPES = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=[A-Za-z0-9])\\(_)(?=[A-Za-z0-9])", re.IGNORECASE)


def _markdown_text(text: str) -> str:
    """`text` as Markdown that every reader shows literally (see `_MarkdownWriter`); line breaks stay line breaks."""
    escaped = text.translate(_TEXT_ESCAPES)
    if "//" in text or "." in text or "_" in text:
        escaped = _AFTER_ESCAPES.sub(lambda m: m.group(1) or _BREAK, escaped)
    return escaped


_CODE_ENTITIES = str.maketrans({c: f"&#{ord(c)};" for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"})


def _code_entities(code: str) -> str:
    return code.translate(_CODE_ENTITIES)


def _url_markdown(url: str) -> str:
    """A link's URL with everything a Markdown or math reader might act on percent-encoded."""
    from urllib.parse import quote

    return quote(url, safe="/:?#=&%+,;!*'~-._")


_REMOVE_MATH_SPLIT = re.compile(r"(\$\$?|\\(?:begin|end)\{[a-z]*\*?\}|\\[{}$]|[{}]|(?:\n\s*)+|@@\d+@@|\\\\[()[\]])", re.IGNORECASE)
_MATHJAX_END = re.compile(r"\\(?:[a-zA-Z]|.)|[{}]", re.DOTALL)


def _balanced(tex: str, tokens: Iterable[str]) -> bool:
    depth = 0
    for token in tokens:
        if token == "{":
            depth += 1
        elif token == "}" and depth:
            depth -= 1
    return depth == 0


def _math_markdown(node: RenderTreeNode, display: bool) -> str:
    """A formula as `$…$`/`$$…$$` where removeMath, marked and MathJax all end it at our closer; else as text.

    That needs no dollar, backtick or blank line inside, braces balanced as both removeMath and MathJax count them,
    no `@@` (removeMath's placeholder) and no backslash at the end (it would escape the closer).
    """
    tex = inert_tex(node.content).strip()
    tex = re.sub(r"<(?=\S)", "< ", tex)
    tex = re.sub(r"\](?=[(\[:])", "] ", tex)
    tex = tex.replace("@@", "@ @")
    if not display and "\n" in tex and "%" not in tex:
        tex = tex.replace("\n", " ")
    if tex.endswith("\\"):
        tex += " "
    safe = (
        tex and "$" not in tex and "`" not in tex and "@@" not in tex and (display or "\n" not in tex)
        and not re.search(r"\n[ \t]*\n", tex)
        and _balanced(tex, _REMOVE_MATH_SPLIT.findall(tex)) and _balanced(tex, _MATHJAX_END.findall(tex))
    )
    delimiter = "$$" if display else "$"
    if safe:
        following = node.next_sibling
        return f"{delimiter}{tex}{delimiter}" + (_BREAK if following is not None and following.type in _MATH else "")
    return _markdown_text(f"{delimiter}{node.content}{delimiter}")


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

    extensions = [_MarkdownWriter, mdformat.plugins.PARSER_EXTENSIONS["tables"]]
    options = {**_parser().options, "parser_extension": extensions, "mdformat": {"wrap": "keep", "number": False}}
    return MDRenderer().render_tree(_tree_class()(_joined(tokens)), options, {}).rstrip("\n")


@_collector_paused
def to_markdown(text: str) -> str:
    """Markdown for readers of `text/markdown`: math as `$`/`$$`, code as HTML, everything else escaped as text."""
    return _markdown(_tokens(_clean_text(text)))


def first_code_block(text: str) -> str | None:
    """The code of the answer's first fenced block, as the parser sees it (a fence inside a list or quote too)."""
    return next((t.content.rstrip("\n") for t in _tokens(_clean_text(text)) if t.type == "fence"), None)


def escape_markdown(text: str) -> str:
    """Any string (a prompt, a name, an error) as Markdown that shows it literally, line breaks kept."""
    from markdown_it.token import Token

    tokens: list[Token] = []
    text = _clean_text(text)
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
        return escape_markdown(" ".join(str(value).split())) or " "

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
        self._carry = ""

    def feed(self, delta: str) -> None:
        """Add received text; a `\\r` at its end waits for the next delta, which may start with the `\\n` of its pair."""
        delta = self._carry + delta
        self._carry = "\r" if delta.endswith("\r") else ""
        self._parts.append(_clean_text(delta[: len(delta) - len(self._carry)]))

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
        """The answer has ended: the Markdown and final HTML of all the text not yet returned as finished, as one
        block, with nothing hidden or held back; the stream empties."""
        rest = _clean_text("".join(self._parts) + self._carry)
        self._parts, self._carry, self._shown, self._drawn_chars = [], "", "", 0
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
    from markdown_it.token import Token

    typed = Token("code_block", "code", 0, content=tail[opened:].lstrip(" >"))
    return _html([*(_tokens(tail[:opened]) if tail[:opened].strip() else []), typed])


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
