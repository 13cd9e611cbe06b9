"""Markdown with LaTeX to safe HTML, incrementally and mid-stream; and the portable final Markdown.

Math is found by one scanner (`segments`) that both outputs share. pymdownx.arithmatex protects math
inside Python-Markdown, but it cannot report unclosed math mid-stream, and the final Markdown needs
the very same spans normalised to `$`; one scanner keeps the live view and the saved answer in agreement.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache

import markdown
import nh3

__all__ = ["Segment", "segments", "to_html", "to_markdown", "tidy_tail", "StreamRenderer"]

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})", re.M)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+\S")
_HALF_MARKER = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)]?|#{1,6}|>|\|)[ \t]*$")
_ENV = re.compile(r"\\begin\{([A-Za-z]+\*?)\}")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_LINK_TARGET = re.compile(r"(\]\(\s*<?)([^\s)>]*)")
_LINK_DEFINITION = re.compile(r"^([ \t]{0,3}\[[^\]\n]+\]:[ \t]*<?)(\S*?)(>?[ \t]*(?:$|[ \t]))", re.M)
_SAFE_SCHEMES = {"http", "https", "mailto"}
MAX_PENDING_MATH = 40  # characters of an unclosed inline formula hidden while it streams
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")
_SPECIAL = re.compile(r"[`~$\\]")
_BACKTICKS = re.compile("`+")


@dataclass(frozen=True)
class Segment:
    """A run of text: `text`, `code` (a span or fence), `math`, or `open_math` (display math not yet closed)."""

    kind: str
    source: str
    tex: str = ""
    display: bool = False


def segments(text: str) -> list[Segment]:
    """Split Markdown into text, code and math, so that code is never math."""
    out: list[Segment] = []
    plain_start = i = 0
    while (special := _SPECIAL.search(text, i)) is not None:
        i = special.start()
        found = _match_at(text, i)
        if found is None:
            i += 1
            continue
        segment, end = found
        if plain_start < i:
            out.append(Segment("text", text[plain_start:i]))
        out.append(segment)
        plain_start = i = end
    if plain_start < len(text):
        out.append(Segment("text", text[plain_start:]))
    return out


def _match_at(text: str, i: int) -> tuple[Segment, int] | None:
    """The code or math segment starting at `i`, if one does."""
    c = text[i]
    if c not in "`~$\\":
        return None
    at_line_start = i == 0 or text[i - 1] == "\n" or text[text.rfind("\n", 0, i) + 1 : i].strip(" \t") == ""
    if c in "`~" and at_line_start and (fence := _FENCE.match(text, text.rfind("\n", 0, i) + 1)):
        return _fenced(text, i, fence.group(1))
    if c == "`":
        return _code_span(text, i)
    if c == "$":
        return _dollar(text, i)
    if text.startswith("\\(", i):
        return _delimited(text, i, "\\(", "\\)", display=False)
    if text.startswith("\\[", i):
        return _delimited(text, i, "\\[", "\\]", display=True)
    if env := _ENV.match(text, i):
        return _delimited(text, i, env.group(0), f"\\end{{{env.group(1)}}}", display=True, keep=True)
    if text.startswith("\\$", i):
        return Segment("text", "\\$"), i + 2
    return None


def _fenced(text: str, i: int, marker: str) -> tuple[Segment, int]:
    closer = re.compile(rf"^[ \t]*{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$", re.M)
    line_end = text.find("\n", i)
    if line_end == -1:
        return Segment("code", text[i:]), len(text)
    close = closer.search(text, line_end + 1)
    end = len(text) if close is None else close.end()
    return Segment("code", text[i:end]), end


def _code_span(text: str, i: int) -> tuple[Segment, int] | None:
    run = _BACKTICKS.match(text, i).end() - i  # type: ignore[union-attr]
    ticks = text[i : i + run]
    j = i + run
    while (k := text.find(ticks, j)) != -1:
        if (k + run >= len(text) or text[k + run] != "`") and text[k - 1] != "`":
            return Segment("code", text[i : k + run]), k + run
        j = k + run
    return Segment("text", ticks), i + run


def _dollar(text: str, i: int) -> tuple[Segment, int] | None:
    if text.startswith("$$", i):
        return _delimited(text, i, "$$", "$$", display=True)
    # Pandoc's rule, so that "costs $5 and $10" stays text: no space inside either dollar, no digit after the closer.
    if i + 1 >= len(text) or text[i + 1] in " \t\n$":
        return None
    j = i + 1
    while (k := text.find("$", j)) != -1:
        inner = text[i + 1 : k]
        if "\n\n" in inner or "`" in inner:
            return None
        if text[k - 1] not in " \t\n\\" and not (k + 1 < len(text) and text[k + 1].isdigit()):
            return Segment("math", text[i : k + 1], inner, False), k + 1
        j = k + 1
    return None


def _delimited(text: str, i: int, opener: str, closer: str, *, display: bool, keep: bool = False) -> tuple[Segment, int]:
    k = text.find(closer, i + len(opener))
    if k == -1:
        return (Segment("open_math", text[i:]) if display else Segment("text", opener)), (len(text) if display else i + len(opener))
    end = k + len(closer)
    tex = text[i:end] if keep else text[i + len(opener) : k]
    return Segment("math", text[i:end], tex, display), end


def to_markdown(text: str) -> str:
    """The final, portable Markdown: math as `$`/`$$`, stray dollars and raw HTML escaped outside code."""
    out = []
    for seg in segments(text):
        if seg.kind == "code":
            out.append(seg.source)
        elif seg.kind == "math":
            out.append(_dollar_math(seg))
        else:
            out.append(_escape_text(seg.source))
    return "".join(out)


def _dollar_math(seg: Segment) -> str:
    tex = seg.tex.strip()
    return f"$${tex}$$" if seg.display else f"${tex}$"


def _escape_text(text: str) -> str:
    """Escape what Markdown frontends would otherwise run or typeset: raw HTML, bare dollars, unsafe links."""
    text = _unimage(re.sub(r"(?<!\\)\$", r"\\$", text).replace("<", "&lt;"))
    text = _LINK_TARGET.sub(lambda m: m.group(1) + _safe_url(m.group(2)), text)
    return _LINK_DEFINITION.sub(lambda m: m.group(1) + _safe_url(m.group(2)) + m.group(3), text)


def _unimage(text: str) -> str:
    """Markdown images as links: an image from the model would load its URL unasked, which can leak data."""
    return text.replace("![", "[")


def _safe_url(url: str) -> str:
    bare = re.sub(r"[\x00-\x20]", "", html.unescape(url))
    scheme = _SCHEME.match(bare)
    return url if scheme is None or scheme.group(1).lower() in _SAFE_SCHEMES else "#"


class _Html:
    """One Python-Markdown converter plus the sanitizer: Markdown source to safe HTML."""

    def __init__(self) -> None:
        self._md = markdown.Markdown(
            extensions=["pymdownx.highlight", "pymdownx.superfences", "tables", "sane_lists"],
            extension_configs={"pymdownx.highlight": {"use_pygments": False}},
            lazy_ol=False,
        )

    def convert(self, text: str, live: bool = False) -> str:
        """Safe HTML for `text`; `live` shows unfinished fences and display math as code."""
        maths: list[str] = []
        parts = []
        for seg in segments(text):
            if seg.kind == "math":
                maths.append(_mathjax_source(seg))
                parts.append(_placeholder(len(maths) - 1, seg.display))
            elif seg.kind == "open_math":
                parts.append(f"\n\n```latex\n{seg.source}\n```\n\n")
            elif seg.kind == "code" and live and _FENCE.match(seg.source) and not _is_closed_fence(seg.source):
                parts.append(seg.source.rstrip("`~ \t\n") + "\n" + _FENCE.match(seg.source).group(1).strip() + "\n")  # type: ignore[union-attr]
            elif seg.kind == "text":
                parts.append(_unimage(seg.source.replace("<", "&lt;").replace("$", "\\$")))  # raw HTML shows as text, as when saved
            else:
                parts.append(seg.source)
        source = _prepare_lists("".join(parts))
        self._md.reset()
        cleaned = nh3.clean(self._md.convert(source), tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=_SAFE_SCHEMES)
        return _PLACEHOLDER.sub(lambda m: html.escape(maths[int(m.group(1))], quote=False), cleaned)


_TAGS = nh3.ALLOWED_TAGS - {"img", "area", "map"}
_ATTRIBUTES = {
    "a": {"href", "title"}, "ol": {"start"},
    "th": {"align", "style"}, "td": {"align", "style"}, "code": {"class"},
}


def _mathjax_source(seg: Segment) -> str:
    if seg.source.startswith("\\begin"):
        return seg.tex
    return f"\\[{seg.tex}\\]" if seg.display else f"\\({seg.tex}\\)"


def _placeholder(index: int, display: bool) -> str:
    token = f"\ue000{index}\ue001"
    return f"\n\n{token}\n\n" if display else token


def _is_closed_fence(source: str) -> bool:
    lines = source.rstrip("\n").split("\n")
    marker = _FENCE.match(lines[0]).group(1)  # type: ignore[union-attr]
    return len(lines) > 1 and lines[-1].strip().startswith(marker[0] * len(marker))


def _prepare_lists(source: str) -> str:
    """Python-Markdown wants a blank line before a list and 4-space nesting; models give neither."""
    out: list[str] = []
    levels: list[int] = []  # the source indent of each open list level
    fence_shift: int | None = None
    for line in source.split("\n"):
        indent = len(line) - len(line.lstrip(" "))
        if fence_shift is not None:
            out.append(_shift(line, fence_shift))
            if _FENCE.match(line):
                fence_shift = None
            continue
        if not line.strip():
            out.append(line)
            continue
        if _LIST_ITEM.match(line):
            while levels and levels[-1] > indent:
                levels.pop()
            if not levels or levels[-1] < indent:
                levels.append(indent)
            if out and out[-1].strip() and not levels[:-1] and not _LIST_ITEM.match(out[-1]) and not out[-1].startswith(" "):
                out.append("")
            shift = 4 * (len(levels) - 1) - indent
        elif indent == 0:
            levels.clear()
            shift = 0
        else:
            shift = 4 * sum(1 for level in levels if level < indent) - indent if levels else 0
        if _FENCE.match(line):
            fence_shift = shift
        out.append(_shift(line, shift))
    return "\n".join(out)


def _shift(line: str, by: int) -> str:
    if by >= 0:
        return " " * by + line
    return line[min(-by, len(line) - len(line.lstrip(" "))) :]


@lru_cache(maxsize=1)
def _converter() -> _Html:
    return _Html()


def to_html(text: str) -> str:
    """Safe HTML for finished Markdown with LaTeX, math left for MathJax (one thread at a time)."""
    return _converter().convert(text)


class StreamRenderer:
    """Renders a growing answer: finished blocks once, and only the tail on each refresh.

    Only the text after the last frozen block is kept, so each refresh costs the size of the tail,
    not of the answer. `min_block_chars` gathers small finished blocks into fewer, larger groups.
    """

    def __init__(self, min_block_chars: int = 0) -> None:
        self._parts: list[str] = []
        self._min = min_block_chars
        self._html = _Html()

    def feed(self, delta: str) -> None:
        """Add received text."""
        self._parts.append(delta)

    def render(self) -> tuple[str | None, str]:
        """HTML of the blocks finished since the last call (None if none), and of the live tail."""
        tail = "".join(self._parts)
        boundary = _last_boundary(tail)
        frozen = None
        if boundary and boundary >= self._min:
            frozen = self._html.convert(tail[:boundary])
            tail = tail[boundary:]
        self._parts = [tail]
        return frozen, self._html.convert(tidy_tail(tail), live=True)


def _last_boundary(text: str) -> int:
    """The start of the last block that begins after a blank line outside code and math."""
    best = offset = 0
    for seg in segments(text):
        if seg.kind == "text":
            for m in re.finditer(r"\n[ \t]*\n(?=[^\s])", seg.source):
                best = offset + m.end()
        elif seg.kind == "code" and seg.source[:1] in "`~" and _FENCE.match(seg.source) and _is_closed_fence(seg.source):
            following = offset + len(seg.source)
            if text.startswith("\n\n", following) and following + 2 < len(text) and not text[following + 2].isspace():
                best = following + 2
        offset += len(seg.source)
    return best


def tidy_tail(tail: str) -> str:
    """Hide half-typed markers on the unfinished last line, so nothing flashes."""
    head, sep, last = tail.rpartition("\n")
    if _HALF_MARKER.match(last):
        return head + sep
    if last.count("**") % 2:
        i = last.rfind("**")
        last = last[:i] + last[i + 2 :]
    if last.count("`") % 2 and "```" not in last:
        i = last.rfind("`")
        last = last[:i] + last[i + 1 :]
    final = segments(last)[-1:]
    if final and final[0].kind == "text" and (i := _unclosed_inline_math(final[0].source)) is not None:
        last = last[: len(last) - len(final[0].source) + i]
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
        return i
    return None
