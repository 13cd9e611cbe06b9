"""`--map` input: the items of a DataFrame, Series, list or dict, and the cell body as a `{name}` template."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

__all__ = ["BadInput", "Items", "Template", "items_of"]

# Literal braces, or one brace-delimited name on one line. Anything else (JSON, a lone brace) stays as written.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}\n]+)\}")


class BadInput(ValueError):
    """Input that cannot be mapped, explained in one line; nothing was sent."""


@dataclass(frozen=True)
class Items:
    """A collection as rows of named values, with the index the results go back on."""

    names: tuple[str, ...]
    index: Any
    size: int
    rows: Callable[[], Iterator[tuple[Any, ...]]]

    def __len__(self) -> int:
        return self.size


def items_of(data: Any, label: str = "the data") -> Items:
    """The rows of a DataFrame (`{column}`), Series or list (`{item}`, a named Series by name) or dict (`{key}`, `{value}`)."""
    kind = type(data).__name__
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and kind == "DataFrame":
        names = tuple(str(c) for c in data.columns)
        return _check(Items(names, data.index, len(data), lambda: data.itertuples(index=False, name=None)), label)
    if module == "pandas" and kind == "Series":
        names = ("item", data.name) if isinstance(data.name, str) and data.name != "item" else ("item",)
        width = len(names)
        return _check(Items(names, data.index, len(data), lambda: ((v,) * width for v in data)), label)
    if isinstance(data, (list, tuple)):
        return _check(Items(("item",), range(len(data)), len(data), lambda: ((v,) for v in data)), label)
    if isinstance(data, dict):
        return _check(Items(("key", "value"), list(data), len(data), lambda: iter(data.items())), label)
    raise BadInput(f"--map {label}: a {kind} cannot be mapped; use a pandas DataFrame or Series, a list or a dict.")


def _check(items: Items, label: str) -> Items:
    if not items.size:
        raise BadInput(f"--map {label} is empty: there is nothing to send.")
    return items


class Template:
    """The cell body with `{name}` placeholders, compiled once for a set of names."""

    def __init__(self, text: str, names: Sequence[str]) -> None:
        self.names = tuple(names)
        position = {name: i for i, name in enumerate(self.names)}
        self._parts: list[str | int] = []
        literal: list[str] = []
        start = 0
        for match in _TOKEN.finditer(text):
            literal.append(text[start:match.start()])
            start = match.end()
            token, name = match.group(0), match.group(1)
            if name is None:
                literal.append(token[0])
            elif name in position:
                self._parts += ["".join(literal), position[name]]
                literal = []
            elif name.isidentifier():
                available = ", ".join("{%s}" % n for n in self.names)
                raise BadInput(f"The template uses {{{name}}}, which the data does not have; available: {available}.")
            else:
                literal.append(token)
        literal.append(text[start:])
        self._parts.append("".join(literal))

    @property
    def fields(self) -> int:
        """How many placeholders the template fills."""
        return sum(isinstance(part, int) for part in self._parts)

    def render(self, row: tuple[Any, ...]) -> str:
        """The prompt for one row."""
        return "".join(part if isinstance(part, str) else _text(row[part]) for part in self._parts)


def _text(value: Any) -> str:
    """A value as it reads in a prompt; a missing value reads as nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)
