"""The models a server offers: Cloudflare's catalogue read into `GET /models` entries, and the ones to suggest instead of a missing model."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["CLOUDFLARE_TASK", "FAMILY_WORDS", "cloudflare_entries", "offer_lines", "suggestions"]

# The task of the models that Workers AI's OpenAI-compatible /ai/v1/chat/completions can call.
CLOUDFLARE_TASK = "Text Generation"
# Words that name a model's size or tier; a suggestion sharing one with the missing model comes first.
FAMILY_WORDS = frozenset({"nano", "mini", "micro", "tiny", "small", "lite", "flash", "haiku", "turbo", "instant", "medium", "large", "pro"})
SHOWN = 8


def cloudflare_entries(result: Iterable[Any]) -> list[dict[str, Any]]:
    """Workers AI model search results (`GET /accounts/{id}/ai/models/search`) as `GET /models` entries.

    Each result has `name` (the id to call), `task: {name}` and `properties: [{property_id, value}]`; only text
    generation models can be called through /ai/v1/chat/completions. A `planned_deprecation_date` property, when a
    model has one, becomes its `shutdown_date`.
    """
    entries = []
    for item in result:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        task = item.get("task")
        if not isinstance(task, Mapping) or task.get("name") != CLOUDFLARE_TASK:
            continue
        properties = {p.get("property_id"): p.get("value") for p in item.get("properties") or [] if isinstance(p, Mapping)}
        shutdown = properties.get("planned_deprecation_date")
        entries.append({"id": item["name"], "object": "model", "owned_by": str(item.get("author") or "cloudflare"),
                        "shutdown_date": shutdown if isinstance(shutdown, str) else None})
    return entries


def _words(model: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", model.lower()))


def suggestions(missing: str, offered: Iterable[Mapping[str, Any]], limit: int = SHOWN) -> list[str]:
    """Up to `limit` offered model ids to use instead of `missing`: those sharing a family word first, retiring ones last."""
    family = _words(missing) & FAMILY_WORDS
    ids = [str(m["id"]) for m in offered if isinstance(m.get("id"), str) and m["id"] != missing]
    retiring = {str(m.get("id")) for m in offered if m.get("shutdown_date")}
    ranked = sorted(ids, key=lambda name: (not (_words(name) & family), name in retiring))  # sorted is stable: server order within
    return ranked[:limit]


def offer_lines(headline: str, offered: list[str]) -> str:
    """The missing-model failure: its one line, then what the server offers and the setting for the first of them."""
    if not offered:
        return f"{headline}\nThe server lists no other model; name one with -m NAME."
    return f"{headline}\nThe server offers: {', '.join(offered)}\n%config NanoMagics.model = \"{offered[0]}\""
