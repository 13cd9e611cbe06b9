"""Untrusted TeX made inert for MathJax: the commands that make links, attributes, raw markup or definitions show as text."""

from __future__ import annotations

import re

__all__ = ["BLOCKED_COMMANDS", "inert_tex"]

# MathJax 3 (all packages, as JupyterLab loads them) turns these into links (`\href`, `\url`, `\eqref`, `\ref`),
# attributes or raw markup (`\class`, `\cssId`, `\style`, `\data`, `\bbox` styles, `\mmlToken`, `\html`, `\unicode`,
# the action package's tooltips and toggles), loads code (`\require`), sets options (`\setOptions`) or defines
# commands that could rebuild any of them. A denylist, because math needs the open-ended rest of TeX; each name here
# is matched whole, as TeX reads a command name (letters after one backslash).
BLOCKED_COMMANDS = frozenset({
    "href", "url", "class", "cssId", "style", "data", "unicode", "require", "mmlToken", "html", "bbox",
    "eqref", "ref", "label",
    "texttip", "mathtip", "toggle", "tooltip",
    "def", "gdef", "edef", "xdef", "let", "futurelet", "newcommand", "renewcommand", "providecommand",
    "newenvironment", "renewenvironment", "DeclareMathOperator", "Newextarrow", "setOptions", "csname",
    "begingroup", "endgroup", "global",
})

# A backslash and the command it starts: letters, or any one character (so `\\href` is a line break, then text).
_COMMAND = re.compile(r"\\([A-Za-z]+|[\s\S]?)")


def inert_tex(tex: str) -> str:
    """`tex` with every blocked command written as a backslash symbol and its name in roman type."""

    def neutral(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"\\backslash\\mathrm{{{name}}}" if name in BLOCKED_COMMANDS else match.group(0)

    return _COMMAND.sub(neutral, tex) if "\\" in tex else tex
