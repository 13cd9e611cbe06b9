"""Settings, the environment, and which backend a request goes to."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from traitlets import CFloat, CInt, Dict, Enum, TraitError, Unicode, default, observe, validate
from traitlets.config import Configurable

from .errors import NoBackend

__all__ = [
    "Backend", "NanoSettings", "NoBackend", "mask", "resolve_backend", "default_cache_path", "SETUP_HELP", "turned_off",
    "budget_from_env", "CLOUDFLARE",
]

CLOUDFLARE_URL = "https://api.cloudflare.com/client/v4/accounts/{account}/ai/v1"
GATEWAY_URL = "https://gateway.ai.cloudflare.com/v1/{account}/{gateway}/openai"
OPENAI_URL = "https://api.openai.com/v1"
COMPATIBLE = "OpenAI-compatible server"
CLOUDFLARE = "Cloudflare Workers AI"

SETUP_HELP = """\
nano_magic has no backend yet. Set one of these, then run the cell again:
  Cloudflare Workers AI (default): CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN
    (add CLOUDFLARE_GATEWAY_ID to go through an AI Gateway)
  OpenAI: OPENAI_API_KEY
  Any OpenAI-compatible server: NANO_BASE_URL (and NANO_API_KEY, NANO_MODEL if it needs them)
In a notebook: %env OPENAI_API_KEY=... or %config NanoMagics.base_url = "http://localhost:8000/v1"\
"""


_TRUE = {"1", "true", "yes", "on"}


def turned_off(env: Mapping[str, str] | None = None) -> bool:
    """Whether an instructor switched nano_magic off with `NANO_MAGIC_DISABLED=1` (an exam server)."""
    value = (os.environ if env is None else env).get("NANO_MAGIC_DISABLED", "")
    return value.strip().lower() in _TRUE


def budget_from_env(env: Mapping[str, str] | None = None) -> float | None:
    """The cap in `NANO_BUDGET` (dollars), or None when it is unset or not a number of dollars (the gate refuses to send then)."""
    value = (os.environ if env is None else env).get("NANO_BUDGET", "").strip().lstrip("$")
    try:
        cap = float(value)
    except ValueError:
        return None
    return cap if math.isfinite(cap) and cap >= 0 else None


class Secret(str):
    """A string whose repr is masked, so that `%config NanoMagics` never prints the key."""

    def __repr__(self) -> str:
        return repr(mask(self))


class NanoSettings(Configurable):
    """The settings of `%%nano`, set with `%config NanoMagics.<name> = ...` or `%nano config`."""

    model = Unicode(None, allow_none=True, help="Model id; default depends on the backend.").tag(config=True)
    base_url = Unicode(None, allow_none=True, help="Any OpenAI-compatible base URL, e.g. http://localhost:8000/v1.").tag(config=True)
    api_key = Unicode(None, allow_none=True, help=(
        "API key; replaces the key of the backend the environment selects, or, when none is set, selects OpenAI. "
        "Always shown masked."
    )).tag(config=True)
    api = Enum(["chat", "responses"], "chat", help="Chat Completions or the Responses API.").tag(config=True)
    max_retries = CInt(3, help="Retries (0 or more) for 408/409/429/5xx and connection errors, before the first answer byte.").tag(config=True)
    connect_timeout = CFloat(10.0, help="Seconds to wait for a connection.").tag(config=True)
    read_timeout = CFloat(120.0, help="Seconds to wait for the next bytes of an answer.").tag(config=True)
    refresh_rate = CFloat(10.0, help="Display refreshes per second while an answer streams (above 0, at most 60).").tag(config=True)
    display = Enum(["auto", "html", "markdown", "text", "widget"], "auto", help="How answers stream: HTML outputs, a Markdown output or plain text (widget: the old name of html).").tag(config=True)
    budget = CFloat(None, allow_none=True, help="Dollars this kernel may spend; None: no cap. Default: $NANO_BUDGET.").tag(config=True)
    replay = Enum(["off", "on", "offline"], "off", help="Answer cells from the notebook's saved turns: off, on (others go live) or offline (others are refused).").tag(config=True)
    replay_speed = CFloat(80.0, help="Tokens a second at which replayed answers stream; 0: at once.").tag(config=True)
    concurrency = CInt(8, help="Requests in flight at once for --map (at least 1).").tag(config=True)
    confirm_above = CFloat(1.0, help="Dollars above which --map asks for --yes before sending.").tag(config=True)
    cache_path = Unicode(help="The SQLite file of --map answers (default: answers.sqlite3 in the user cache directory).").tag(config=True)
    batch_max_requests = CInt(50_000, help="--batch: the most requests in one batch (1 to 50,000, the provider's limit); "
                              "fewer gives earlier partial results.").tag(config=True)
    reasoning_effort = Unicode(None, allow_none=True, help=(
        "Reasoning effort for reasoning models (none, minimal, low, medium, high, xhigh, ...), passed on as it is; "
        "None: the model's default."
    )).tag(config=True)
    prices = Dict(default_value={}, help=(
        "Price entries that add to or override the shipped table, by model id: "
        "{'my-model': {'input': 0.1, 'cached_input': 0.025, 'output': 0.4, 'longest_output': 32768}} in dollars per 1M tokens."
    )).tag(config=True)
    tool_result_chars = CInt(4000, help="Longest tool result sent back to the model, in characters; longer ones are cut with a note.").tag(config=True)

    def connection(self) -> dict[str, Any]:
        """The settings that say where and how a Chat connects."""
        names = ("model", "base_url", "api_key", "max_retries", "connect_timeout", "read_timeout")
        return {name: getattr(self, name) for name in names}

    @default("budget")
    def _budget_from_env(self) -> float | None:
        return budget_from_env()

    @validate("budget", "replay_speed", "confirm_above")
    def _not_negative(self, proposal: Any) -> float | None:
        value = proposal["value"]
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise TraitError(f"{proposal['trait'].name} must be 0 or more, not {value:g}.")
        return value

    @default("cache_path")
    def _default_cache_path(self) -> str:
        return str(default_cache_path())

    @validate("concurrency", "tool_result_chars")
    def _at_least_one(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            raise TraitError(f"{proposal['trait'].name} must be at least 1, not {proposal['value']}.")
        return int(proposal["value"])

    @validate("batch_max_requests")
    def _batch_limit(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= 50_000:
            raise TraitError(f"batch_max_requests must be from 1 to 50,000 (the provider's limit), not {proposal['value']}.")
        return int(proposal["value"])
    @validate("reasoning_effort")
    def _effort_word(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is not None and (not value.strip() or len(value.split()) != 1):
            raise TraitError(f"reasoning_effort must be one word such as low or none, not {value!r}.")
        return None if value is None else value.strip()

    @validate("prices")
    def _price_entries(self, proposal: Any) -> dict[str, Any]:
        from .usage import check_price_entry

        for name, entry in proposal["value"].items():
            if (problem := check_price_entry(str(name), entry)) is not None:
                raise TraitError(f"prices: {problem}.")
        return dict(proposal["value"])

    @observe("prices")
    def _use_prices(self, change: Any) -> None:
        from .usage import set_price_overrides

        set_price_overrides(change["new"])

    @validate("api_key")
    def _secret(self, proposal: Any) -> Secret | None:
        return None if proposal["value"] is None else Secret(proposal["value"].strip())  # a key read from a file ends in \n

    @validate("max_retries")
    def _retries(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"max_retries must be 0 or more, not {proposal['value']}.")
        return int(proposal["value"])

    @validate("connect_timeout", "read_timeout")
    def _timeout(self, proposal: Any) -> float:
        value = proposal["value"]
        if not (math.isfinite(value) and value > 0):
            raise TraitError(f"{proposal['trait'].name} must be a number of seconds greater than 0, not {value:g}.")
        return float(value)

    @validate("refresh_rate")
    def _rate(self, proposal: Any) -> float:
        value = proposal["value"]
        if not 0 < value <= 60:
            raise TraitError(f"refresh_rate must be above 0 and at most 60 refreshes a second, not {value:g}.")
        return float(value)


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
    reason: str = field(default="", compare=False)
    ignored: tuple[str, ...] = field(default=(), compare=False)

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
        return [s for s in [*found, urlsplit(self.base_url).password] if s]

    def scrub(self, text: str) -> str:
        """`text` with every secret masked, also as a repr quotes it (h11 shows a header it refuses as `b'Bearer sk-…\\n'`)."""
        for secret in self.secrets():
            for form in secret_forms(secret):
                text = text.replace(form, mask(secret))
        return text

    def shown_url(self) -> str:
        """The base URL safe to show: a password in it (`https://user:pass@host`) masked."""
        password = urlsplit(self.base_url).password
        return self.base_url.replace(f":{password}@", f":{mask(password)}@", 1) if password else self.base_url


_SECRET_HEADERS = {"authorization", "cf-aig-authorization", "api-key", "x-api-key"}


BASE64_FORM = 16  # shorter base64 runs are too likely to occur by chance in other text


def secret_forms(secret: str) -> list[str]:
    """Every form in which a secret can show in text, longest first: as written, in a repr, URL-encoded (in a URL's userinfo
    or query), URL-decoded, and base64 (standard and URL-safe, at each byte alignment, as in `Basic user:secret`)."""
    from base64 import b64encode, urlsafe_b64encode
    from urllib.parse import quote, quote_plus, unquote

    forms = {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1], quote(secret, safe=""), quote(secret), quote_plus(secret),
             unquote(secret)}
    raw = secret.encode()
    for offset in range(3):  # base64 of the secret inside longer data: only the characters that depend on its bytes alone
        start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
        for encode in (b64encode, urlsafe_b64encode):
            core = encode(b"\0" * offset + raw).decode()[start:end]
            if len(core) >= BASE64_FORM:
                forms.add(core)
    return sorted((form for form in forms if form), key=len, reverse=True)


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
    """Pick the backend, first match wins: a base URL (setting, then NANO_BASE_URL), Cloudflare, OPENAI_API_KEY,
    then the `api_key` setting alone as an OpenAI key; raise NoBackend when there is none.

    The `api_key` and `model` settings replace the chosen backend's key and model. The backend says why it
    was chosen (`reason`) and which credentials in the environment it leaves unused (`ignored`).
    """
    env = {name: value.strip() for name in CREDENTIALS if (value := (os.environ if env is None else env).get(name))}
    found = _from_base_url(settings, env) or _from_cloudflare(env) or _from_openai(env) or _from_key_setting(settings)
    if found is None:
        raise NoBackend(SETUP_HELP)
    backend, used = found
    if settings.get("api_key"):
        used = used - {backend.key_source}
        backend = replace(backend, api_key=settings["api_key"], key_source="NanoMagics.api_key")
    if settings.get("model"):
        used = used - {"NANO_MODEL"}
        backend = replace(backend, model=settings["model"])
    return replace(backend, ignored=tuple(name for name in CREDENTIALS if env.get(name) and name not in used))


CREDENTIALS = ("NANO_BASE_URL", "NANO_API_KEY", "NANO_MODEL", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN",
               "CLOUDFLARE_GATEWAY_ID", "OPENAI_API_KEY")
_Found = tuple[Backend, frozenset[str]]  # the backend and the environment variables it reads


def _from_base_url(settings: Mapping[str, Any], env: Mapping[str, str]) -> _Found | None:
    used = {"NANO_API_KEY", "NANO_MODEL"}
    if settings.get("base_url"):
        url, reason = settings["base_url"], "NanoMagics.base_url is set"
    elif env.get("NANO_BASE_URL"):
        url, reason = env["NANO_BASE_URL"], "NANO_BASE_URL is set"
        used.add("NANO_BASE_URL")
    else:
        return None
    key = env.get("NANO_API_KEY")
    backend = Backend(COMPATIBLE, url.rstrip("/"), env.get("NANO_MODEL"), key, "NANO_API_KEY" if key else None, reason=reason)
    return backend, frozenset(used)


def _from_cloudflare(env: Mapping[str, str]) -> _Found | None:
    account, token = env.get("CLOUDFLARE_ACCOUNT_ID"), env.get("CLOUDFLARE_API_TOKEN")
    if not (account and token):
        return None
    gateway = env.get("CLOUDFLARE_GATEWAY_ID")
    if not gateway:
        url = CLOUDFLARE_URL.format(account=account)
        reason = "CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN are set, and no base URL is"
        backend = Backend(CLOUDFLARE, url, "openai/gpt-4.1-nano", token, "CLOUDFLARE_API_TOKEN", reason=reason)
        return backend, frozenset({"CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN"})
    # The gateway authenticates itself with the Cloudflare token; the provider key, when given, rides in Authorization.
    url = GATEWAY_URL.format(account=account, gateway=gateway)
    openai_key = env.get("OPENAI_API_KEY")
    backend = Backend(
        "Cloudflare AI Gateway", url, "gpt-4.1-nano", openai_key,
        "OPENAI_API_KEY" if openai_key else "CLOUDFLARE_API_TOKEN",
        {"cf-aig-authorization": f"Bearer {token}"},
        reason="CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_API_TOKEN and CLOUDFLARE_GATEWAY_ID are set, and no base URL is",
    )
    return backend, frozenset({"CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_GATEWAY_ID", "OPENAI_API_KEY"})


def _from_openai(env: Mapping[str, str]) -> _Found | None:
    key = env.get("OPENAI_API_KEY")
    if not key:
        return None
    reason = "OPENAI_API_KEY is set, and neither a base URL nor Cloudflare variables are"
    return Backend("OpenAI", OPENAI_URL, "gpt-4.1-nano", key, "OPENAI_API_KEY", reason=reason), frozenset({"OPENAI_API_KEY"})


def _from_key_setting(settings: Mapping[str, Any]) -> _Found | None:
    if not settings.get("api_key"):
        return None
    reason = "NanoMagics.api_key is set, and the environment names no backend"
    return Backend("OpenAI", OPENAI_URL, "gpt-4.1-nano", reason=reason), frozenset()
