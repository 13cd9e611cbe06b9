"""Servers refusing a request's model or one of its parameters, recognised by shape and said in our options' words.

The shapes of a missing or retired model:
- OpenAI: 404 `{"error": {"code": "model_not_found", "message": "The model `x` does not exist or you do not have access
  to it."}}`; the same 404 and code say "The model `text-davinci-003` has been deprecated, learn more here: ..."
  (quoted in openai/openai-quickstart-node#127).
- Groq: 400 `{"error": {"code": "model_decommissioned", "message": "The model `x` has been decommissioned and is no
  longer supported. ..."}}` (quoted in valentinfrlch/ha-llmvision#324 and atiilla/sqlmap-ai#3).
- Cloudflare Workers AI: 400 v4 envelope `{"success": false, "errors": [{"code": 5007, "message": "AiError: No such
  model x or task"}]}` (quoted as "5007: No such model minimax/m2.7 or task" in cloudflare/agents#1328).
- llama.cpp's server in router mode: 400 `{"error": {"code": 400, "message": "model not found", "type":
  "invalid_request_error"}}` (ggml-org/llama.cpp#17968).

A rejected parameter: OpenAI's 400 `{"error": {"param": "temperature", "message": "Unsupported parameter:
'temperature' is not supported with this model."}}` (OpenHands/software-agent-sdk#1837), and for function tools with a
reasoning model on Chat Completions `{"error": {"param": "reasoning_effort", "message": "Function tools with
reasoning_effort are not supported for gpt-5.4 in /v1/chat/completions. ..."}}` (pipecat-ai/pipecat#4043,
GEMISIS/leviath#333), which comes even when no effort was sent, because such models default to one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import NanoError

__all__ = ["OUR_OPTION", "ModelMissing", "OptionRejected", "missing_model", "rejected_option"]

# Wire fields and the cell options that set them.
OUR_OPTION = {
    "temperature": "-t", "top_p": "--top-p", "max_completion_tokens": "--max-tokens", "max_tokens": "--max-tokens",
    "max_output_tokens": "--max-tokens", "seed": "--seed", "stop": "--stop", "reasoning_effort": "--reasoning-effort",
    "reasoning": "--reasoning-effort", "reasoning.effort": "--reasoning-effort", "tools": "--tools",
    "tool_choice": "--tool-choice", "response_format": "--json or --schema", "text": "--json or --schema",
    "text.format": "--json or --schema",
}
_MISSING_CODES = {"model_not_found", "model_decommissioned"}
_MISSING_WORDS = ("no such model", "model not found", "does not exist", "deprecated", "decommissioned", "retired", "shut down")
CLOUDFLARE_NO_SUCH_MODEL = 5007
_SAMPLING = {"temperature", "top_p"}


class ModelMissing(NanoError):
    """The server says the model does not exist or was retired; `model` is the one asked for."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message)
        self.model = model


class OptionRejected(NanoError):
    """The server refused one of the request's parameters; the message names our option and what to do."""


def missing_model(status: int, data: Mapping[str, Any] | None, message: str) -> bool:
    """Whether an error answer says that the model does not exist or was retired, in any of the shapes above."""
    if status not in (400, 404):
        return False
    error = (data or {}).get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    if code in _MISSING_CODES:
        return True
    errors = (data or {}).get("errors")
    if isinstance(errors, list) and any(isinstance(e, Mapping) and e.get("code") == CLOUDFLARE_NO_SUCH_MODEL for e in errors):
        return True
    lowered = message.lower()
    return (status == 404 and "model" in lowered) or ("model" in lowered and any(w in lowered for w in _MISSING_WORDS))


def rejected_option(status: int, data: Mapping[str, Any] | None, message: str, body: Mapping[str, Any], api: str) -> str | None:
    """One line naming our option that the server refused and what to do, or None when the error is not that."""
    error = (data or {}).get("error")
    if status != 400 or not isinstance(error, Mapping):
        return None
    lowered = message.lower()
    model = str(body.get("model", ""))
    effort = body.get("reasoning_effort") or (body.get("reasoning") or {}).get("effort")
    if "tools" in lowered and "reasoning" in lowered and api == "chat" and body.get("tools"):
        return (f"--tools are not supported by model {model} on Chat Completions unless --reasoning-effort none; "
                "add --reasoning-effort none or use --api responses")
    if not any(w in lowered for w in ("unsupported", "not supported", "does not support", "unknown parameter", "unrecognized")):
        return None
    field = _field(error, message, body)
    if field is None:
        return None
    ours = OUR_OPTION[field]
    if field in _SAMPLING and effort != "none":
        return f"{ours} is not supported by model {model} unless --reasoning-effort none; drop {ours} or add --reasoning-effort none"
    if ours == "--reasoning-effort":
        return f"--reasoning-effort {effort} is not accepted by model {model} ({message}); choose another effort or drop --reasoning-effort"
    return f"{ours} is not supported by model {model} ({message}); drop {ours}"


def _field(error: Mapping[str, Any], message: str, body: Mapping[str, Any]) -> str | None:
    """The wire field the error names: its `param`, else the first quoted field name in its message that the request sent."""
    param = error.get("param")
    if isinstance(param, str) and param in OUR_OPTION:
        return param
    for name in re.findall(r"['`\"]([a-z_.]+)['`\"]", message):
        if name in OUR_OPTION and name.split(".")[0] in body:
            return name
    return None
