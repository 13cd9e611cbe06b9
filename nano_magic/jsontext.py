"""JSON text from outside (a model's answer or tool arguments, a server's body, a shared notebook) parsed safely."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["load_json", "json_object", "answer_json", "digest"]


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


def answer_json(text: str) -> tuple[Any, str | None]:
    """The JSON value in a model's answer (a ```json fence is allowed), or None and why it is not valid JSON."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        return load_json(body), None
    except json.JSONDecodeError as exc:
        return None, f"The answer is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); the raw text is kept in .text."


def digest(value: Any) -> str:
    """The SHA-256 of `value` as canonical JSON (sorted keys, no spaces): equal data, equal digest."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
