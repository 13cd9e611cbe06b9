"""Settings, the environment, and which backend a request goes to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from traitlets import CFloat, CInt, Enum, TraitError, Unicode, default, validate
from traitlets.config import Configurable

__all__ = [
    "Backend", "NanoSettings", "NoBackend", "mask", "resolve_backend", "SETUP_HELP",
    "OFF_MESSAGE", "turned_off", "budget_from_env",
]

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


OFF_MESSAGE = "nano_magic is turned off on this server"
_TRUE = {"1", "true", "yes", "on"}


def turned_off(env: Mapping[str, str] | None = None) -> bool:
    """Whether an instructor switched nano_magic off with `NANO_MAGIC_DISABLED=1` (an exam server)."""
    value = (os.environ if env is None else env).get("NANO_MAGIC_DISABLED", "")
    return value.strip().lower() in _TRUE


def budget_from_env(env: Mapping[str, str] | None = None) -> float | None:
    """The cap in `NANO_BUDGET` (dollars), or None when it is unset or not a number of dollars."""
    value = (os.environ if env is None else env).get("NANO_BUDGET", "").strip().lstrip("$")
    try:
        cap = float(value)
    except ValueError:
        return None
    return cap if cap >= 0 else None


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
    budget = CFloat(None, allow_none=True, help="Dollars this kernel may spend; None: no cap. Default: $NANO_BUDGET.").tag(config=True)
    replay = Enum(["off", "on", "offline"], "off", help="Answer cells from the notebook's saved turns: off, on (others go live) or offline (others are refused).").tag(config=True)
    replay_speed = CFloat(80.0, help="Tokens a second at which replayed answers stream; 0: at once.").tag(config=True)

    def connection(self) -> dict[str, Any]:
        """The settings that say where and how a Chat connects."""
        names = ("model", "base_url", "api_key", "max_retries", "connect_timeout", "read_timeout")
        return {name: getattr(self, name) for name in names}

    @default("budget")
    def _budget_from_env(self) -> float | None:
        return budget_from_env()

    @validate("budget", "replay_speed")
    def _not_negative(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and value < 0:
            raise TraitError(f"{proposal['trait'].name} must be 0 or more, not {value:g}")
        return value

    @validate("api_key")
    def _secret(self, proposal: Any) -> Secret | None:
        return None if proposal["value"] is None else Secret(proposal["value"])


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
