"""Settings, the environment, and which backend a request goes to."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from traitlets import CFloat, CInt, Enum, TraitError, Unicode, default, validate
from traitlets.config import Configurable

__all__ = ["Backend", "NanoSettings", "NoBackend", "mask", "resolve_backend", "default_cache_path", "SETUP_HELP"]

CLOUDFLARE_URL = "https://api.cloudflare.com/client/v4/accounts/{account}/ai/v1"
GATEWAY_URL = "https://gateway.ai.cloudflare.com/v1/{account}/{gateway}/openai"
OPENAI_URL = "https://api.openai.com/v1"
COMPATIBLE = "OpenAI-compatible server"

SETUP_HELP = """\
nano_magic has no backend yet. Set one of these, then run the cell again:
  Cloudflare Workers AI (default): CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN
    (add CLOUDFLARE_GATEWAY_ID to go through an AI Gateway)
  OpenAI: OPENAI_API_KEY
  Any OpenAI-compatible server: NANO_BASE_URL (and NANO_API_KEY, NANO_MODEL if it needs them)
In a notebook: %env OPENAI_API_KEY=... or %config NanoMagics.base_url = "http://localhost:8000/v1"\
"""


class NoBackend(Exception):
    """No credentials or base URL were found."""


class Secret(str):
    """A string whose repr is masked, so that `%config NanoMagics` never prints the key."""

    def __repr__(self) -> str:
        return repr(mask(self))


class NanoSettings(Configurable):
    """The settings of `%%nano`, set with `%config NanoMagics.<name> = ...` or `%nano config`."""

    model = Unicode(None, allow_none=True, help="Model id; default depends on the backend.").tag(config=True)
    base_url = Unicode(None, allow_none=True, help="Any OpenAI-compatible base URL, e.g. http://localhost:8000/v1.").tag(config=True)
    api_key = Unicode(None, allow_none=True, help="API key; overrides the environment. Always shown masked.").tag(config=True)
    api = Enum(["chat", "responses"], "chat", help="Chat Completions or the Responses API.").tag(config=True)
    max_retries = CInt(3, help="Retries for 408/409/429/5xx and connection errors, before the first answer byte.").tag(config=True)
    connect_timeout = CFloat(10.0, help="Seconds to wait for a connection.").tag(config=True)
    read_timeout = CFloat(120.0, help="Seconds to wait for the next bytes of an answer.").tag(config=True)
    refresh_rate = CFloat(10.0, help="Display refreshes per second while an answer streams.").tag(config=True)
    display = Enum(["auto", "widget", "markdown", "text"], "auto", help="How answers stream: live widget, Markdown output or plain text.").tag(config=True)
    concurrency = CInt(8, help="Requests in flight at once for --map (at least 1).").tag(config=True)
    confirm_above = CFloat(1.0, help="Dollars above which --map asks for --yes before sending.").tag(config=True)
    cache_path = Unicode(help="The SQLite file of --map answers (default: answers.sqlite3 in the user cache directory).").tag(config=True)

    def connection(self) -> dict[str, Any]:
        """The settings that say where and how a Chat connects."""
        names = ("model", "base_url", "api_key", "max_retries", "connect_timeout", "read_timeout")
        return {name: getattr(self, name) for name in names}

    @default("cache_path")
    def _default_cache_path(self) -> str:
        return str(default_cache_path())

    @validate("concurrency")
    def _at_least_one(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"NanoMagics.concurrency must be at least 1, not {proposal['value']}.")
        return proposal["value"]

    @validate("confirm_above")
    def _not_negative(self, proposal: Any) -> float:
        if proposal["value"] < 0:
            raise TraitError(f"NanoMagics.confirm_above must be 0 or more dollars, not {proposal['value']:g}.")
        return proposal["value"]

    @validate("api_key")
    def _secret(self, proposal: Any) -> Secret | None:
        return None if proposal["value"] is None else Secret(proposal["value"])


def default_cache_path() -> Path:
    """`answers.sqlite3` in the user cache directory (XDG_CACHE_HOME, ~/Library/Caches or LOCALAPPDATA)."""
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "nano_magic" / "answers.sqlite3"


@dataclass(frozen=True)
class Backend:
    """Where requests go and how they authenticate."""

    name: str
    base_url: str
    model: str | None
    api_key: str | None = field(default=None, repr=False)
    key_source: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def compatible(self) -> bool:
        """A server of the user's own, which may lag behind OpenAI's newer request fields."""
        return self.name == COMPATIBLE

    def headers(self) -> dict[str, str]:
        """Request headers, secrets included: never print these, use `masked_headers`."""
        headers = {"Content-Type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def masked_headers(self) -> dict[str, str]:
        """Request headers safe to show."""
        return {k: mask_header(v) if k.lower() in _SECRET_HEADERS else v for k, v in self.headers().items()}

    def secrets(self) -> list[str]:
        """Every secret this backend sends, for scrubbing text before it is shown."""
        found = [self.api_key, *(v.removeprefix("Bearer ") for k, v in self.extra_headers.items() if k.lower() in _SECRET_HEADERS)]
        return [s for s in found if s]


_SECRET_HEADERS = {"authorization", "cf-aig-authorization", "api-key", "x-api-key"}


def mask(secret: str | None) -> str:
    """A secret shown safely: its last four characters at most."""
    if not secret:
        return "(none)"
    return "…" + secret[-4:] if len(secret) >= 16 else "****"


def mask_header(value: str) -> str:
    """A header value with the credential masked."""
    scheme, _, secret = value.partition(" ")
    return f"{scheme} {mask(secret)}" if secret else mask(value)


def resolve_backend(settings: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Backend:
    """Pick the backend: explicit settings, then the environment; raise NoBackend when there is none."""
    env = os.environ if env is None else env
    backend = _from_base_url(settings, env) or _from_cloudflare(env) or _from_openai(env)
    if backend is None:
        raise NoBackend(SETUP_HELP)
    if settings.get("api_key"):
        backend = replace(backend, api_key=settings["api_key"], key_source="NanoMagics.api_key")
    if settings.get("model"):
        backend = replace(backend, model=settings["model"])
    return backend


def _from_base_url(settings: Mapping[str, Any], env: Mapping[str, str]) -> Backend | None:
    url = settings.get("base_url") or env.get("NANO_BASE_URL")
    if not url:
        return None
    key = env.get("NANO_API_KEY")
    return Backend(COMPATIBLE, url.rstrip("/"), env.get("NANO_MODEL"), key, "NANO_API_KEY" if key else None)


def _from_cloudflare(env: Mapping[str, str]) -> Backend | None:
    account, token = env.get("CLOUDFLARE_ACCOUNT_ID"), env.get("CLOUDFLARE_API_TOKEN")
    if not (account and token):
        return None
    gateway = env.get("CLOUDFLARE_GATEWAY_ID")
    if not gateway:
        url = CLOUDFLARE_URL.format(account=account)
        return Backend("Cloudflare Workers AI", url, "openai/gpt-4.1-nano", token, "CLOUDFLARE_API_TOKEN")
    # The gateway authenticates itself with the Cloudflare token; the provider key, when given, rides in Authorization.
    url = GATEWAY_URL.format(account=account, gateway=gateway)
    openai_key = env.get("OPENAI_API_KEY")
    return Backend(
        "Cloudflare AI Gateway", url, "gpt-4.1-nano", openai_key,
        "OPENAI_API_KEY" if openai_key else "CLOUDFLARE_API_TOKEN",
        {"cf-aig-authorization": f"Bearer {token}"},
    )


def _from_openai(env: Mapping[str, str]) -> Backend | None:
    key = env.get("OPENAI_API_KEY")
    return Backend("OpenAI", OPENAI_URL, "gpt-4.1-nano", key, "OPENAI_API_KEY") if key else None
