"""Compact, fenced descriptions of notebook variables for `--context`: data frames, arrays, and anything else."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping as MappingABC
from typing import Any, Mapping

__all__ = ["describe", "fence_for", "MAX_CHARS"]

MAX_CHARS = 4000
HEAD_ROWS = 5
ARRAY_VALUES = 10
ITEMS = 20

# reprlib bounds the work on big or deeply nested containers, and falls back to `<X instance>` when a __repr__ raises.
_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxdict = ITEMS
_REPR.maxlevel, _REPR.maxother, _REPR.maxstring, _REPR.maxlong = 3, 300, 300, 300


def describe(names: list[str], namespace: Mapping[str, Any], limit: int = MAX_CHARS) -> str:
    """A block per variable, to append to a prompt; KeyError names a missing variable. Nothing else raises."""
    missing = [n for n in names if n not in namespace]
    if missing:
        raise KeyError(missing[0])
    return "\n\n" + "\n\n".join(_block(name, namespace[name], limit) for name in names)


def _block(name: str, value: Any, limit: int) -> str:
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    try:
        body = _body(value)
    except Exception as exc:  # a broken object: say so rather than fail the cell
        body = f"(could not describe this value: {type(exc).__name__})"
    if len(body) > limit:
        body = body[:limit] + f"\n… ({len(body) - limit} more characters cut)"
    fence = fence_for(body)
    return f"Context variable `{name}` ({kind}):\n{fence}text\n{body}\n{fence}"


def fence_for(body: str) -> str:
    """A backtick fence longer than any run of backticks in `body`, so that the body cannot close it."""
    return "`" * max(3, 1 + max((len(run) for run in re.findall("`+", body)), default=0))


def _body(value: Any) -> str:
    if isinstance(value, type):
        return _REPR.repr(value)
    frame = _frame(value)
    if frame is not None:
        return frame
    if all(hasattr(value, a) for a in ("shape", "dtype", "ravel")):
        return _array(value)
    if isinstance(value, str):
        return repr(value)  # cut to `limit` characters, with a note, by the caller
    text = _REPR.repr(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)) and len(value) > ITEMS:
        text += f"\n… ({len(value)} items; the first {ITEMS} shown)"
    return text


def _frame(value: Any) -> str | None:
    """Shape, column types and the first rows of pandas, polars, or any frame with `__dataframe__` or `to_pandas`."""
    dtypes = getattr(value, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items") and hasattr(value, "head") and hasattr(value, "shape"):  # pandas
        return _frame_text(value.shape, [(str(c), str(t)) for c, t in dtypes.items()], value.head(HEAD_ROWS).to_string())
    schema = getattr(value, "schema", None)
    if isinstance(schema, MappingABC) and hasattr(value, "head") and hasattr(value, "shape"):  # polars and its likes
        return _frame_text(value.shape, [(str(c), str(t)) for c, t in schema.items()], str(value.head(HEAD_ROWS)))
    if hasattr(value, "__dataframe__"):  # the dataframe interchange protocol
        frame = value.__dataframe__()
        names = list(frame.column_names())
        columns = [(n, _interchange_type(frame.get_column_by_name(n).dtype)) for n in names]
        head = str(value.head(HEAD_ROWS)) if callable(getattr(value, "head", None)) else _pandas_head(frame)
        return _frame_text((frame.num_rows(), frame.num_columns()), columns, head)
    if callable(getattr(value, "to_pandas", None)):
        return _frame(value.to_pandas())
    return None


def _frame_text(shape: tuple[int, ...], columns: list[tuple[str, str]], head: str) -> str:
    rows, cols = shape
    listed = "\n".join(f"  {column}: {dtype}" for column, dtype in columns[:ITEMS * 5])
    more = f"\n  … ({len(columns) - ITEMS * 5} more columns)" if len(columns) > ITEMS * 5 else ""
    return f"shape: {rows} rows × {cols} columns\ndtypes:\n{listed}{more}\nfirst {HEAD_ROWS} rows:\n{head}"


def _interchange_type(dtype: Any) -> str:
    """An interchange column dtype `(kind, bits, format, endianness)` as a short name."""
    kind, bits = dtype[0], dtype[1]
    name = getattr(kind, "name", str(kind)).lower()
    return f"{name}{bits}" if name in ("int", "uint", "float") else name


def _pandas_head(frame: Any) -> str:
    from pandas.api.interchange import from_dataframe

    return from_dataframe(frame).head(HEAD_ROWS).to_string()


def _array(value: Any) -> str:
    """Shape, dtype and the first values of a numpy array (or anything shaped like one)."""
    size = getattr(value, "size", None)
    first = value.ravel()[:ARRAY_VALUES]
    shown = first.tolist() if hasattr(first, "tolist") else list(first)
    more = f" … ({size} values)" if isinstance(size, int) and size > ARRAY_VALUES else ""
    return f"shape: {tuple(value.shape)}, dtype: {value.dtype}\nfirst values: {_REPR.repr(shown)}{more}"
