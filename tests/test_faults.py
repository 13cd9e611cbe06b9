"""Faults a real server cannot produce on demand, through the magic: what the user sees, what history holds, how many requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.fake_server import Cut, MidStreamError, NoEnd, Reply, Status

SECRET = "sk-nano-leak-check-7f3a9c2e5b1d"


@pytest.fixture
def retrying(ip):
    ip.magics_manager.registry["NanoMagics"].max_retries = 3
    return ip


def turns(ip, thread: str = "default"):
    found = ip.magics_manager.registry["NanoMagics"].chat.conversation.threads.get(thread)
    return found.turns if found else []


def test_429_with_retry_after_is_waited_out_then_answered(retrying, run, fake) -> None:
    fake.queue(Status(429, {"error": {"message": "Rate limit reached"}}, headers={"Retry-After": "1"}))
    cell = run("%%nano\nHello")
    assert not cell.failed
    assert "[rate limited, retrying in 1 s (1/3)]" in cell.stderr
    assert fake.reply in cell.stdout and len(fake.posts()) == 2
    assert [t.status for t in turns(retrying)] == ["complete"]


def test_500_then_success(retrying, run, fake, monkeypatch) -> None:
    monkeypatch.setattr("nano_magic.client.backoff", lambda attempt: 0.01)
    fake.queue(Status(500, {"detail": "worker crashed"}))
    cell = run("%%nano\nHello")
    assert not cell.failed and "server error 500, retrying" in cell.stderr and len(fake.posts()) == 2


def test_failing_every_time_stops_after_the_bounded_attempts(retrying, run, fake, monkeypatch) -> None:
    monkeypatch.setattr("nano_magic.client.backoff", lambda attempt: 0.01)
    fake.queue(*[Status(503, {"error": {"message": "Overloaded, try later"}})] * 4)
    cell = run("%%nano\nHello")
    assert cell.failed and len(fake.posts()) == 4
    assert "failed with a server error (503: Overloaded, try later) (after 4 attempts)." in cell.stdout
    assert "Traceback" not in cell.shown and turns(retrying) == []


def test_a_failed_new_or_system_change_leaves_the_thread_as_it_was(run, fake, ip) -> None:
    run("%%nano -s Tutor\nFirst")
    fake.queue(Status(500, {"detail": "down"}))
    assert run('%%nano --new -s "Pirate"\nSecond').failed
    assert [(t.prompt, t.status) for t in turns(ip)] == [("First", "complete")]
    assert ip.magics_manager.registry["NanoMagics"].chat.conversation.threads["default"].system == "Tutor"


def test_401_names_the_setting_never_the_key(run, fake, monkeypatch) -> None:
    monkeypatch.setenv("NANO_API_KEY", SECRET)
    fake.queue(Status(401, {"error": {"message": "Incorrect API key provided"}}))
    cell = run("%%nano\nHello")
    assert cell.failed and "refused the key from NANO_API_KEY" in cell.stdout and "Check NANO_API_KEY" in cell.stdout
    assert SECRET not in cell.shown and len(fake.posts()) == 1


def test_404_says_the_model_is_unavailable(run, fake, ip) -> None:
    fake.queue(Status(404, {"error": {"message": "The model `gpt-4.1-nano` does not exist", "code": "model_not_found"}}))
    cell = run("%%nano -m gpt-4.1-nano\nHello")
    assert "The model 'gpt-4.1-nano' is unavailable or retired" in cell.stdout and '%config NanoMagics.model = "fake-model"' in cell.stdout
    assert cell.failed and turns(ip) == []


def test_context_length_suggests_reset(run, fake) -> None:
    fake.queue(Status(400, {"error": {"message": "This model's maximum context length is 1047576 tokens", "code": "context_length_exceeded"}}))
    cell = run("%%nano\nHello")
    assert cell.failed and "%nano reset or --new" in cell.stdout


def test_cloudflare_envelope_and_html_pages_are_summarised(run, fake) -> None:
    fake.queue(Status(400, {"success": False, "errors": [{"code": 5007, "message": "No such model"}]}))
    assert "No such model" in run("%%nano\nHello").stdout
    fake.queue(Status(502, "<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"))
    cell = run("%%nano\nHello")
    assert "(502: 502 Bad Gateway)" in cell.stdout and "<html" not in cell.shown


@pytest.mark.parametrize("fault,message", [
    (MidStreamError("The first half ", "upstream model crashed"), "reported an error mid-answer: upstream model crashed"),
    (Cut("The first half "), "The connection was cut mid-answer"),
    (NoEnd("The first half "), "The stream ended before the answer was finished"),
])
def test_a_broken_stream_keeps_the_partial_answer(run, fake, ip, fault, message: str) -> None:
    fake.queue(fault)
    cell = run("%%nano\nTell me a story")
    assert cell.failed and message in cell.stdout
    assert "The first half" in cell.stdout and "The answer is incomplete" in cell.stdout
    assert [(t.answer, t.status) for t in turns(ip)] == [("The first half ", "cut")]
    assert ip.user_ns["_nano"].status == "cut"
    assert len(fake.posts()) == 1


def test_a_broken_stream_is_not_retried(retrying, run, fake) -> None:
    fake.queue(Cut("Half "))
    run("%%nano\nHello")
    assert len(fake.posts()) == 1


def test_an_unreachable_server_is_a_plain_sentence(run, fake, monkeypatch) -> None:
    monkeypatch.setenv("NANO_BASE_URL", "http://127.0.0.1:9/v1")
    cell = run("%%nano -m m\nHello")
    assert cell.failed and "Could not reach http://127.0.0.1:9/v1" in cell.stdout and "Traceback" not in cell.shown


def test_an_unreachable_server_without_a_model_and_models_listing(run, fake, monkeypatch) -> None:
    monkeypatch.setenv("NANO_BASE_URL", "http://127.0.0.1:9/v1")
    for source in ("%%nano\nHello", "%%nano --dry-run\nHello", "%nano models"):
        cell = run(source)
        assert cell.failed and "Could not reach http://127.0.0.1:9/v1" in cell.stdout and "Traceback" not in cell.shown


def test_length_and_content_filter_add_a_note(run, fake, ip) -> None:
    fake.queue(Reply(finish="length"), Reply(finish="content_filter"))
    assert "hit the token limit" in run("%%nano\nHello").stdout
    assert "content filter" in run("%%nano\nHello").stdout
    assert [t.status for t in turns(ip)] == ["length", "content_filter"]


FAULTS = [
    Status(401, {"error": {"message": f"bad key {SECRET}"}}),
    Status(404, "not here"), Status(500, "<title>boom</title>"),
    MidStreamError("Part ", "crash"), Cut("Part "), NoEnd("Part "), Reply(),
]


def test_no_output_ever_shows_the_key(run, fake, monkeypatch) -> None:
    monkeypatch.setenv("NANO_API_KEY", SECRET)
    seen = [run("%%nano --dry-run\nHi").shown, run("%nano config").shown]
    run(f"%config NanoMagics.api_key = '{SECRET}'")
    seen.append(run("%config NanoMagics").shown)
    assert "…5b1d" in seen[-1]
    for fault in FAULTS:
        fake.queue(fault)
        seen.append(run("%%nano\nHello").shown)
    seen.append(run("%nano history").shown)
    monkeypatch.setenv("NANO_BASE_URL", "http://127.0.0.1:9/v1")
    seen.append(run("%%nano -m m\nHello").shown)
    assert all(SECRET not in text for text in seen)
    assert "…5b1d" in seen[0] and "…5b1d" in seen[1]  # the masked form is what shows
    assert all(p.headers["authorization"] == f"Bearer {SECRET}" for p in fake.posts())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=50), max_size=10))
def test_the_sse_parser_never_raises_anything_but_its_own_errors(body: bytes, cuts: list[int]) -> None:
    from nano_magic.errors import StreamError
    from tests.test_client import collect

    pieces, rest = [], body
    for n in cuts:
        pieces.append(rest[:n])
        rest = rest[n:]
    pieces.append(rest)
    try:
        collect(body, pieces)
    except StreamError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab $\\`*_-#1.\n()[]{}<>|~^&") + ["```", "$$", "\\[", "\\]", "\\(", "\\)", "\\begin{align}", "\\end{align}", "<img onerror=x>", "  ", "\n\n"]), max_size=80))
def test_the_renderer_never_raises_on_any_prefix(pieces: list[str]) -> None:
    from nano_magic.render import StreamRenderer, to_markdown

    text = "".join(pieces)
    renderer = StreamRenderer()
    for i in range(0, len(text), 7):
        renderer.feed(text[i : i + 7])
        renderer.render()
    to_markdown(text)


def test_a_finish_then_an_unclean_close_is_a_complete_answer(run, fake, ip) -> None:
    fake.queue(Reply("All of it.", done=False, cut_at_end=True))
    cell = run("%%nano\nHello")
    assert not cell.failed and "All of it." in cell.stdout and "incomplete" not in cell.shown
    assert [(t.answer, t.status) for t in turns(ip)] == [("All of it.", "complete")]


def test_a_redirect_through_the_magic_is_one_sentence(run, fake) -> None:
    fake.queue(Status(307, "", headers={"Location": "/v2/chat/completions"}))
    cell = run("%%nano\nHello")
    assert cell.failed and len(fake.posts()) == 1 and "Traceback" not in cell.shown
    target = fake.base_url.removesuffix("/v1") + "/v2"
    assert f"redirects (307) to {target}/chat/completions" in cell.stdout
    assert f"%config NanoMagics.base_url = '{target}'" in cell.stdout


def test_a_bug_in_a_subcommand_is_one_line_and_the_next_works(run, monkeypatch) -> None:
    from nano_magic import commands

    def broken(*args: object) -> None:
        raise RuntimeError("injected in a subcommand")

    monkeypatch.setitem(commands.COMMANDS, "history", broken)
    cell = run("%nano history")
    assert cell.failed and "Traceback" not in cell.shown
    assert "nano_magic failed unexpectedly (RuntimeError: injected in a subcommand)" in cell.shown
    assert not run("%nano threads").failed
