"""`--map` input: the items of a DataFrame, Series, list or dict, and the cell body as a `{name}` template."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

__all__ = ["BadInput", "Items", "Template", "items_of"]

# Literal braces, or one brace-delimited name on one line. Anything else (JSON, a lone brace) stays as written.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}\n]+)\}")
# Inside the braces: a name, then as in str.format an optional `!r`/`!s`/`!a` conversion and an optional `:spec`.
_FIELD = re.compile(r"\s*(?P<name>[^!:]*?)\s*(?:!(?P<conversion>[rsa]))?(?::(?P<spec>.*))?")


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
        self._parts: list[str | _Field] = []
        literal: list[str] = []
        start = 0
        for match in _TOKEN.finditer(text):
            literal.append(text[start:match.start()])
            start = match.end()
            token, inside = match.group(0), match.group(1)
            field = _FIELD.fullmatch(inside) if inside is not None else None
            name = field.group("name") if field is not None else ""
            if inside is None:
                literal.append(token[0])
            elif field is not None and name in position:
                self._parts += ["".join(literal), _Field(position[name], field.group("conversion"), field.group("spec") or "", token)]
                literal = []
            elif name.isidentifier():
                available = ", ".join("{%s}" % n for n in self.names)
                raise BadInput(f"The template uses {token}, which the data does not have; available: {available}.")
            else:
                literal.append(token)
        literal.append(text[start:])
        self._parts.append("".join(literal))

    @property
    def fields(self) -> int:
        """How many placeholders the template fills."""
        return sum(isinstance(part, _Field) for part in self._parts)

    def render(self, row: tuple[Any, ...]) -> str:
        """The prompt for one row; BadInput when a format spec does not fit the row's value."""
        return "".join(part if isinstance(part, str) else part.text(row[part.position]) for part in self._parts)


@dataclass(frozen=True)
class _Field:
    """One placeholder: which value, and how str.format would show it."""

    position: int
    conversion: str | None
    spec: str
    token: str

    def text(self, value: Any) -> str:
        """The value as it reads in a prompt, as `str.format` writes it; a missing value reads as nothing."""
        if _missing(value):
            return ""
        if self.conversion:
            value = repr(value) if self.conversion == "r" else ascii(value) if self.conversion == "a" else str(value)
        try:
            return format(value, self.spec)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"The template's {self.token} cannot format the value {_short(value)}: {exc}.") from None


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA and NaT: a value that is not there."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    pandas = sys.modules.get("pandas")  # only pandas makes pd.NA and NaT, so only then is it asked
    if pandas is not None:
        try:
            return bool(pandas.api.types.is_scalar(value) and pandas.isna(value))
        except (TypeError, ValueError):
            return False
    return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
