"""A loopback model that answers what each request asks for: it calls the tools offered, then answers, and its
JSON fits the schema sent. For the docs and the demo notebooks, whose examples must run whatever they ask."""

from __future__ import annotations

import json
from typing import Any

from tests.support.fake_server import Behaviour, Call, Reply, ToolCalls

__all__ = ["fitting"]


def _instance(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A value that fits a JSON Schema (the first choice of every enum and union)."""
    if "$ref" in schema:
        return _instance(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            choices = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _instance(choices[0], defs)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        return {name: _instance(sub, defs) for name, sub in (schema.get("properties") or {}).items()}
    examples: dict[str, Any] = {"array": [], "string": "Saturn", "integer": 146, "number": 2.5, "boolean": True, "null": None}
    if kind == "array":
        return [_instance(schema.get("items") or {"type": "string"}, defs)]
    return examples[kind]


def _structured(body: dict[str, Any]) -> dict[str, Any] | None:
    """The response format a request asks for (Chat's response_format or Responses' text.format)."""
    wanted = body.get("response_format") or (body.get("text") or {}).get("format")
    return wanted if isinstance(wanted, dict) and wanted.get("type") != "text" else None


def fitting(body: dict[str, Any]) -> Behaviour | None:
    """Call every offered tool once, then answer; JSON that fits a schema sent; None for the server's own text."""
    history = body.get("messages") or body.get("input") or []
    called = any(isinstance(m, dict) and (m.get("role") == "tool" or m.get("type") == "function_call_output") for m in history)
    tools = [t.get("function", t) for t in body.get("tools") or []]
    if tools and not called and body.get("tool_choice") != "none":
        chosen = body.get("tool_choice")
        name = chosen.get("name") or (chosen.get("function") or {}).get("name") if isinstance(chosen, dict) else None
        offered = [t for t in tools if name in (None, t["name"])]
        return ToolCalls([Call(t["name"], json.dumps(_instance(t.get("parameters") or {}, t.get("parameters", {}).get("$defs", {}))))
                          for t in offered])
    wanted = _structured(body)
    if wanted is None or wanted.get("type") != "json_schema":
        return None
    schema = (wanted.get("json_schema") or wanted).get("schema") or {}
    return Reply(json.dumps(_instance(schema, schema.get("$defs", {}))))
