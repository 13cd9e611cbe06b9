"""Backend resolution, key masking, and cost."""

from __future__ import annotations

import pytest

from nano_magic.config import NoBackend, mask, resolve_backend
from nano_magic.usage import Usage, format_usage

CF = {"CLOUDFLARE_ACCOUNT_ID": "acc", "CLOUDFLARE_API_TOKEN": "cf-token-abcdefghijklmnop"}


def test_cloudflare_is_the_default_backend() -> None:
    backend = resolve_backend({}, {**CF, "OPENAI_API_KEY": "sk-openai-0123456789abcdef"})
    assert backend.base_url == "https://api.cloudflare.com/client/v4/accounts/acc/ai/v1"
    assert backend.model == "openai/gpt-4.1-nano" and backend.key_source == "CLOUDFLARE_API_TOKEN"


def test_gateway_sends_the_cloudflare_token_in_its_own_header() -> None:
    backend = resolve_backend({}, {**CF, "CLOUDFLARE_GATEWAY_ID": "gw", "OPENAI_API_KEY": "sk-openai-0123456789abcdef"})
    assert backend.base_url == "https://gateway.ai.cloudflare.com/v1/acc/gw/openai"
    assert backend.model == "gpt-4.1-nano"
    headers = backend.headers()
    assert headers["cf-aig-authorization"] == "Bearer cf-token-abcdefghijklmnop"
    assert headers["Authorization"] == "Bearer sk-openai-0123456789abcdef"
    assert "abcdefghijklmnop" not in str(backend.masked_headers()) and "0123456789abcdef" not in str(backend.masked_headers())


def test_openai_backend() -> None:
    backend = resolve_backend({}, {"OPENAI_API_KEY": "sk-openai-0123456789abcdef"})
    assert (backend.base_url, backend.model) == ("https://api.openai.com/v1", "gpt-4.1-nano")


def test_settings_beat_the_environment() -> None:
    backend = resolve_backend({"base_url": "http://localhost:8000/v1/", "model": "mine", "api_key": "k" * 20}, {**CF, "NANO_MODEL": "env-model"})
    assert (backend.base_url, backend.model, backend.key_source) == ("http://localhost:8000/v1", "mine", "NanoMagics.api_key")


def test_base_url_without_model_leaves_it_to_the_server() -> None:
    assert resolve_backend({}, {"NANO_BASE_URL": "http://x/v1"}).model is None


def test_no_backend_explains_each_option() -> None:
    with pytest.raises(NoBackend) as info:
        resolve_backend({}, {})
    text = str(info.value)
    for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "OPENAI_API_KEY", "NANO_BASE_URL"):
        assert name in text


def test_mask_never_shows_more_than_four_characters() -> None:
    assert mask("sk-abcdefghijklmnopqrstuvwxyz") == "…wxyz"
    assert mask("short") == "****" and mask(None) == "(none)"


def test_cost_uses_the_price_table_and_cached_tokens() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=400_000)
    assert usage.cost("openai/gpt-4.1-nano") == pytest.approx(0.6 * 0.10 + 0.4 * 0.025 + 0.40)
    assert usage.cost("gpt-4.1-nano-2025-04-14") == usage.cost("gpt-4.1-nano")
    assert usage.cost("llama3") is None


def test_usage_line_never_invents_numbers() -> None:
    assert format_usage(None, "gpt-4.1-nano") == "usage not reported"
    assert format_usage(Usage(21, 8), "gpt-4.1-nano") == "21 in · 8 out tokens · $0.000005"
    assert format_usage(Usage(21, 8), "llama3") == "21 in · 8 out tokens · price unknown"


def test_an_api_key_setting_alone_selects_openai() -> None:
    backend = resolve_backend({"api_key": "sk-setting-0123456789abcdef"}, {})
    assert (backend.name, backend.base_url, backend.key_source) == ("OpenAI", "https://api.openai.com/v1", "NanoMagics.api_key")
    assert backend.headers()["Authorization"] == "Bearer sk-setting-0123456789abcdef"


def test_the_backend_says_why_it_won_and_what_it_ignored() -> None:
    backend = resolve_backend({}, {**CF, "OPENAI_API_KEY": "sk-openai-0123456789abcdef", "NANO_MODEL": "m"})
    assert backend.name == "Cloudflare Workers AI" and "CLOUDFLARE_API_TOKEN" in backend.reason
    assert backend.ignored == ("NANO_MODEL", "OPENAI_API_KEY")
    local = resolve_backend({"base_url": "http://localhost:8080/v1", "api_key": "k" * 20}, {**CF, "NANO_BASE_URL": "http://x/v1", "NANO_API_KEY": "n" * 20})
    assert local.reason == "NanoMagics.base_url is set" and local.key_source == "NanoMagics.api_key"
    assert local.ignored == ("NANO_BASE_URL", "NANO_API_KEY", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN")


@pytest.mark.parametrize("name,bad", [
    ("max_retries", -1), ("connect_timeout", -1), ("connect_timeout", float("inf")), ("read_timeout", 0),
    ("refresh_rate", 0), ("refresh_rate", 61), ("display", "fancy"), ("api", "soap"),
    ("concurrency", 0), ("tool_result_chars", 0), ("budget", -1), ("confirm_above", -0.5), ("replay", "sometimes"),
])
def test_settings_are_checked_when_set_and_keep_their_value(name: str, bad: object) -> None:
    from traitlets import TraitError

    from nano_magic.config import NanoSettings

    settings = NanoSettings()
    before = getattr(settings, name)
    with pytest.raises(TraitError):
        setattr(settings, name, bad)
    assert getattr(settings, name) == before


def test_settings_accept_their_edges() -> None:
    from nano_magic.config import NanoSettings

    settings = NanoSettings(max_retries=0, connect_timeout=0.5, read_timeout=1, refresh_rate=60, display="text", api="responses")
    assert (settings.max_retries, settings.refresh_rate, settings.display) == (0, 60.0, "text")
