"""JSON text from outside (a model's answer or tool arguments, a server's body, a shared notebook) parsed safely."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["load_json", "json_object"]


def load_json(text: str | bytes) -> Any:
    """`json.loads`, with nesting too deep for Python's parser raised as the JSONDecodeError of any malformed input.

    A few thousand `[` make `json.loads` raise RecursionError, which no caller expects from bad input.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in `text`, or None for anything else: empty, malformed, or not an object."""
    if not text.strip():
        return None
    try:
        data = load_json(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
