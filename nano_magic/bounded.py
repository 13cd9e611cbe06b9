"""A tool's return value as the text the model reads, written only up to the cut: a huge or endless value costs no more than its first characters."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from collections import deque
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from pathlib import PurePath
from typing import Any

__all__ = ["TABLE_COLUMNS", "TABLE_ROWS", "bounded_text"]

TABLE_ROWS = 50
TABLE_COLUMNS = 50
MAX_DEPTH = 32  # deeper nesting (or a list that contains itself) is written as "…"
_ATOMS = (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal, uuid.UUID, PurePath)
_SEQUENCES = (list, tuple, set, frozenset, range, deque, KeysView, ValuesView, ItemsView, Iterator)


class _Full(Exception):
    """The writer reached the cut."""


class _Writer:
    """Compact JSON written piece by piece into a budget; it stops, mid-value, as soon as the budget is spent.

    pydantic_core's `to_json` would be the library for this, but it serialises the whole value before
    anything can be cut, which for a 16-million-element array or `itertools.count()` is the failure itself.
    Every item writes at least one character, so an endless iterator is read at most `limit` times.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[str] = []

    def put(self, text: str) -> None:
        room = self.limit - self.size
        if len(text) > room:
            self.parts.append(text[:room])
            self.size = self.limit
            raise _Full
        self.parts.append(text)
        self.size += len(text)

    def string(self, text: str) -> None:
        self.put(json.dumps(text[: self.limit - self.size + 1], ensure_ascii=False))

    def value(self, value: Any, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            self.put('"…"')
        elif value is None or isinstance(value, (bool, int, float)):
            self.put(json.dumps(value))
        elif isinstance(value, str):
            self.string(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self.string(bytes(value[: self.limit]).decode("utf-8", "replace"))
        elif isinstance(value, enum.Enum):
            self.value(value.value, depth + 1)
        elif isinstance(value, _ATOMS):
            self.string(value.isoformat() if isinstance(value, (datetime.date, datetime.time)) else str(value))
        elif isinstance(value, Mapping):
            self.pairs(iter(value.items()), depth)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            self.pairs(((f.name, getattr(value, f.name)) for f in dataclasses.fields(value)), depth)
        elif _is_pydantic_model(value):
            self.pairs(iter(value), depth)
        elif _is_numpy(value) and hasattr(value, "ndim"):
            if value.ndim == 0:
                self.value(value.item(), depth + 1)
            else:
                self.items((value[i] for i in range(len(value))), depth)  # rows are views: nothing is copied
        elif _is_numpy(value) and hasattr(value, "item"):
            self.value(value.item(), depth + 1)
        elif isinstance(value, _SEQUENCES):
            self.items(iter(value), depth)
        elif depth:
            self.string(repr(value)[: self.limit])
        else:  # an object of its own as a whole result reads as its repr, unquoted
            self.put(repr(value))

    def items(self, values: Iterator[Any], depth: int) -> None:
        self.put("[")
        for i, item in enumerate(values):
            self.put("," if i else "")
            self.value(item, depth + 1)
        self.put("]")

    def pairs(self, pairs: Iterator[tuple[Any, Any]], depth: int) -> None:
        self.put("{")
        for i, (key, item) in enumerate(pairs):
            self.put("," if i else "")
            self.string(key if isinstance(key, str) else str(key))
            self.put(":")
            self.value(item, depth + 1)
        self.put("}")


def _is_numpy(value: Any) -> bool:
    return (type(value).__module__ or "").startswith("numpy")


def _is_pydantic_model(value: Any) -> bool:
    return any(base.__name__ == "BaseModel" and base.__module__.startswith("pydantic") for base in type(value).__mro__)


def _table(value: Any, limit: int) -> str:
    """A DataFrame or Series: its first rows (and columns) as CSV, with a note of how much more there is."""
    rows = len(value)
    if value.ndim == 2:
        columns = value.shape[1]
        shown = value.iloc[:TABLE_ROWS, :TABLE_COLUMNS]
        more = f" × {columns:,} columns" if columns > TABLE_COLUMNS else ""
    else:
        shown, more = value.iloc[:TABLE_ROWS], ""
    text = shown.to_csv()
    if rows > TABLE_ROWS or more:
        text += f"[first {min(rows, TABLE_ROWS)} of {rows:,} rows{more}]"
    return text[:limit + 1]


def bounded_text(value: Any, limit: int) -> tuple[str, bool]:
    """`value` as text of at most `limit` characters, and whether it was cut: text as is, a table as CSV, else compact JSON, else repr."""
    if isinstance(value, str):
        return value[:limit], len(value) > limit
    if (type(value).__module__ or "").startswith("pandas") and hasattr(value, "to_csv") and hasattr(value, "iloc"):
        text = _table(value, limit)
        return text[:limit], len(text) > limit
    writer = _Writer(limit + 1)  # one character more than shown: writing it is how the cut is known
    try:
        writer.value(value)
    except _Full:
        pass
    text = "".join(writer.parts)
    return text[:limit], len(text) > limit
