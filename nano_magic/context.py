"""Compact, fenced descriptions of notebook variables for `--context`."""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["describe", "fence_for", "MAX_CHARS"]

MAX_CHARS = 4000


def describe(names: list[str], namespace: Mapping[str, Any], limit: int = MAX_CHARS) -> str:
    """A block per variable, to append to a prompt; KeyError names a missing variable."""
    missing = [n for n in names if n not in namespace]
    if missing:
        raise KeyError(missing[0])
    return "\n\n" + "\n\n".join(_block(name, namespace[name], limit) for name in names)


def _block(name: str, value: Any, limit: int) -> str:
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    body = _dataframe(value) if kind.endswith("DataFrame") and hasattr(value, "dtypes") else repr(value)
    if len(body) > limit:
        body = body[:limit] + f"\n… ({len(body) - limit} more characters cut)"
    fence = fence_for(body)
    return f"Context variable `{name}` ({kind}):\n{fence}text\n{body}\n{fence}"


def fence_for(body: str) -> str:
    """A backtick fence longer than any run of backticks in `body`, so that the body cannot close it."""
    return "`" * max(3, 1 + max((len(run) for run in re.findall("`+", body)), default=0))


def _dataframe(df: Any) -> str:
    rows, cols = df.shape
    dtypes = "\n".join(f"  {column}: {dtype}" for column, dtype in df.dtypes.items())
    return f"shape: {rows} rows × {cols} columns\ndtypes:\n{dtypes}\nfirst 5 rows:\n{df.head(5).to_string()}"
