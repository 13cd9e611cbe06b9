"""Retired models, reasoning models and prices, against a loopback server answering like each provider."""

from __future__ import annotations

from typing import Any

import pytest

from nano_magic.usage import Usage, format_usage, max_output_for, price_for
from tests.support import fake_server
from tests.support.fake_server import Reply, Status

OFFERED: dict[str, Any] = {"object": "list", "data": [
    {"id": "llama-3.1-8b", "owned_by": "meta", "shutdown_date": None},
    {"id": "gpt-5-mini", "owned_by": "openai", "shutdown_date": None},
    {"id": "gpt-4.1-mini", "owned_by": "openai", "shutdown_date": "2027-03-01"},
    {"id": "gpt-5-nano", "owned_by": "openai", "shutdown_date": None},
    {"id": "gpt-5.4-nano", "owned_by": "openai", "shutdown_date": None},
    *({"id": f"other-{i}", "owned_by": "x", "shutdown_date": None} for i in range(10)),
]}

RETIRED = {
    "openai-missing": Status(404, {"error": {"message": "The model `gpt-4.1-nano` does not exist or you do not have access to it.",
                                             "type": "invalid_request_error", "param": None, "code": "model_not_found"}}),
    "openai-deprecated": Status(404, {"error": {"message": "The model `gpt-4.1-nano` has been deprecated, learn more here: "
                                                "https://platform.openai.com/docs/deprecations",
                                                "type": "invalid_request_error", "param": None, "code": "model_not_found"}}),
    "groq": Status(400, {"error": {"message": "The model `gpt-4.1-nano` has been decommissioned and is no longer supported.",
                                   "type": "invalid_request_error", "code": "model_decommissioned"}}),
    "cloudflare": Status(400, {"success": False, "errors": [{"code": 5007, "message": "AiError: No such model gpt-4.1-nano or task"}],
                               "result": {}, "messages": []}),
    "llama.cpp-router": Status(400, {"error": {"code": 400, "message": "model not found", "type": "invalid_request_error"}}),
}


@pytest.mark.parametrize("shape", list(RETIRED))
def test_a_retired_model_explains_itself_and_names_what_is_offered(run, fake, monkeypatch, shape) -> None:
    monkeypatch.setattr(fake_server, "MODELS", OFFERED)
    fake.queue(RETIRED[shape])
    cell = run("%%nano -m gpt-4.1-nano\nHi")
    assert cell.failed
    lines = [line for line in cell.shown.strip().splitlines() if line.strip()][-3:]  # after the view's header line
    assert lines[0].startswith("The model 'gpt-4.1-nano' is unavailable or retired on OpenAI-compatible server")
    assert "Traceback" not in cell.shown
    offered = lines[1].removeprefix("The server offers: ").split(", ")
    # the nano family first (in the server's order, a retiring one last), then the rest, at most 8
    assert offered[:2] == ["gpt-5-nano", "gpt-5.4-nano"] and len(offered) == 8 and "gpt-4.1-nano" not in offered
    assert lines[2] == '%config NanoMagics.model = "gpt-5-nano"'
    assert len(fake.posts()) == 1  # nothing retried, no other model tried
    assert [r.path for r in fake.requests if r.method == "GET"] == ["/v1/models"]


def test_a_mini_model_gets_minis_first_and_retiring_ones_after() -> None:
    from nano_magic.catalogue import suggestions

    assert suggestions("openai/gpt-4o-mini", OFFERED["data"])[:2] == ["gpt-5-mini", "gpt-4.1-mini"]


def test_cloudflare_lists_its_catalogue_of_callable_models(fake, monkeypatch) -> None:
    from nano_magic import Chat
    from nano_magic.rejections import ModelMissing

    root = fake.base_url.removesuffix("/v1") + fake_server.CLOUDFLARE_ROOT
    monkeypatch.setattr("nano_magic.config.CLOUDFLARE_URL", root.replace("acc-test", "{account}") + "/v1")
    chat = Chat(env={"CLOUDFLARE_ACCOUNT_ID": "acc-test", "CLOUDFLARE_API_TOKEN": "cf-token-0123456789abcdef"})
    fake.queue(RETIRED["cloudflare"])
    with pytest.raises(ModelMissing) as info:
        chat.ask("Hi")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("The model 'openai/gpt-4.1-nano' is unavailable or retired on Cloudflare Workers AI (400: AiError: No such model")
    # text generation only (no embeddings model), the nano family first, the retiring one last
    assert lines[1] == "The server offers: openai/gpt-5-nano, @cf/old/retiring-nano, @cf/meta/llama-3.1-8b-instruct"
    assert lines[2] == '%config NanoMagics.model = "openai/gpt-5-nano"'
    searches = [r for r in fake.requests if r.method == "GET"]
    assert [r.path.split("?")[0] for r in searches] == [fake_server.CLOUDFLARE_ROOT + "/models/search"]
    assert searches[0].headers["authorization"] == "Bearer cf-token-0123456789abcdef"
    assert [m["shutdown_date"] for m in chat.models()] == [None, None, "2027-01-31"]
    chat.close()


def test_models_marks_retiring_ones_and_a_cell_warns_once(run, fake, monkeypatch) -> None:
    monkeypatch.setattr(fake_server, "MODELS", OFFERED)
    shown = run("%nano models").shown
    assert "⚠ gpt-4.1-mini" in shown and "⚠ marks 1 models the server says will shut down" in shown
    assert "⚠ gpt-5-mini" not in shown
    first, second = run("%%nano -m gpt-4.1-mini\nHi"), run("%%nano -m gpt-4.1-mini\nAgain")
    assert "shutting down on 2027-03-01" in first.stdout and "shutting down" not in second.stdout


REFUSED_TEMPERATURE = Status(400, {"error": {"message": "Unsupported parameter: 'temperature' is not supported with this model.",
                                             "type": "invalid_request_error", "param": "temperature", "code": "unsupported_parameter"}})
REFUSED_TOOLS = Status(400, {"error": {"message": "Function tools with reasoning_effort are not supported for gpt-5.4 in "
                                       "/v1/chat/completions. To use function tools, use /v1/responses or set reasoning_effort to 'none'.",
                                       "type": "invalid_request_error", "param": "reasoning_effort", "code": None}})


def test_a_refused_temperature_names_our_option_and_what_to_do(run, fake) -> None:
    fake.queue(REFUSED_TEMPERATURE)
    cell = run("%%nano -m gpt-5.4 -t 0.2\nHi")
    assert cell.failed and "Traceback" not in cell.shown
    assert cell.shown.strip().splitlines()[-1] == ("-t is not supported by model gpt-5.4 unless --reasoning-effort none; "
                                  "drop -t or add --reasoning-effort none")
    assert len(fake.posts()) == 1 and fake.posts()[0].body["temperature"] == 0.2


def test_tools_refused_on_chat_completions_without_any_effort_given(run, fake, ip) -> None:
    ip.user_ns["area"] = lambda r: 3.14 * r * r
    ip.user_ns["area"].__annotations__ = {"r": float, "return": float}
    fake.queue(REFUSED_TOOLS)
    cell = run("%%nano -m gpt-5.4 --tools area\nArea of r=2?")
    assert cell.failed and "reasoning_effort" not in fake.posts()[0].body
    assert cell.shown.strip().splitlines()[-1] == ("--tools are not supported by model gpt-5.4 on Chat Completions unless --reasoning-effort none; "
                                  "add --reasoning-effort none or use --api responses")
    assert len(fake.posts()) == 1


def test_the_effort_goes_out_as_it_is_in_both_apis(run, fake, ip) -> None:
    run("%%nano --reasoning-effort xhigh\nHi")
    run("%%nano --once --api responses --reasoning-effort none -t 0.3\nHi")
    ip.run_line_magic("config", "NanoMagics.reasoning_effort = 'minimal'")
    run("%%nano --once\nHi")
    chat, responses, configured = (p.body for p in fake.posts())
    assert chat["reasoning_effort"] == "xhigh" and "reasoning" not in chat
    assert responses["reasoning"] == {"effort": "none"} and responses["temperature"] == 0.3 and "reasoning_effort" not in responses
    assert configured["reasoning_effort"] == "minimal"
    assert run("%%nano --reasoning-effort 'very high'\nHi").failed and len(fake.posts()) == 3


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("stream", [True, False])
def test_reasoning_tokens_show_in_the_footer_and_count_once(run, fake, ip, api, stream) -> None:
    fake.queue(Reply("Four.", reasoning=250))
    cell = run(f"%%nano -m gpt-5-nano --api {api} {'' if stream else '--no-stream'}\nTwo plus two?")
    answer = ip.user_ns["_nano"]
    assert answer.usage.output_tokens == 251 and answer.usage.reasoning_tokens == 250
    expected_cost = (answer.usage.input_tokens * 0.05 + 251 * 0.40) / 1e6
    assert answer.cost == pytest.approx(expected_cost)
    assert "251 out tokens, of which 250 reasoning" in cell.shown and f"${expected_cost:.6f}" in cell.shown
    usage_table = run("%nano usage").shown
    assert "| 251 |" in usage_table and f"${expected_cost:.6f}" in usage_table


def test_the_chat_api_takes_a_reasoning_effort(fake) -> None:
    from nano_magic import Chat

    chat = Chat(base_url=fake.base_url, reasoning_effort="low")
    chat.ask("Hi")
    chat.ask("Again", reasoning_effort="high")
    assert [p.body["reasoning_effort"] for p in fake.posts()] == ["low", "high"]
    chat.close()


def test_prices_come_from_the_data_file_and_settings_override_them(run, fake, ip, caplog) -> None:
    assert price_for("openai/gpt-4.1-nano") == (0.10, 0.025, 0.40) and max_output_for("gpt-4.1-nano") == 32768
    assert price_for("gpt-5-nano-2025-08-07") == (0.05, 0.005, 0.40)
    assert format_usage(Usage(10, 5), "fake-model").endswith("· price unknown")
    run("%%nano\nHi")
    assert "price unknown" in run("%nano usage").shown
    ip.run_line_magic("config", "NanoMagics.prices = {'fake-model': {'input': 1.0, 'cached_input': 0.5, 'output': 2.0}}")
    assert price_for("fake-model") == (1.0, 0.5, 2.0)
    cell = run("%%nano\nHi")
    assert "price unknown" not in cell.shown and "$0.0000" in cell.shown
    run("%config NanoMagics.prices = {'fake-model': {'input': 'cheap'}}")  # IPython logs a refused %config value
    assert caplog.messages[-1] == "prices: 'fake-model' needs input as dollars per 1M tokens (0 or more), not 'cheap'."
    assert price_for("fake-model") == (1.0, 0.5, 2.0)
