"""%%nano and %nano in an in-process IPython shell against the loopback server."""

from __future__ import annotations

import json
import re

import pytest
from IPython.utils.capture import capture_output

from tests.support.fake_server import Status


def messages(post) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in post.body["messages"]]


def test_a_cell_streams_the_answer_and_its_usage(run, fake) -> None:
    fake.reply = "Entropy never decreases."
    cell = run("%%nano\nWhat is the second law?")
    assert not cell.failed
    assert "Entropy never decreases." in cell.stdout
    assert "5 in · 3 out tokens" in cell.stdout
    assert messages(fake.posts()[0]) == [("user", "What is the second law?")]


def test_two_cells_make_a_conversation_with_the_system_message(run, fake) -> None:
    run('%%nano -s "You are terse."\nFirst question')
    run("%%nano\nSecond question")
    second = fake.posts()[1]
    assert messages(second) == [
        ("system", "You are terse."),
        ("user", "First question"),
        ("assistant", fake.reply),
        ("user", "Second question"),
    ]


def test_rerunning_a_cell_replaces_its_turn(run, fake, ip, monkeypatch) -> None:
    cell_id = {"value": "cell-a"}
    monkeypatch.setattr("nano_magic.cell.parent_cell", lambda shell: (cell_id["value"], []))
    run("%%nano\nFirst")
    cell_id["value"] = "cell-b"
    run("%%nano\nSecond")
    cell_id["value"] = "cell-a"
    run("%%nano\nFirst, again")
    assert messages(fake.posts()[2]) == [("user", "First, again")]
    turns = ip.magics_manager.registry["NanoMagics"].chat.conversation.threads["default"].turns
    assert [t.prompt for t in turns] == ["First, again", "Second"]


def test_deleted_cells_leave_the_thread(run, fake, ip, monkeypatch) -> None:
    state = {"id": "a", "deleted": []}
    monkeypatch.setattr("nano_magic.cell.parent_cell", lambda shell: (state["id"], state["deleted"]))
    run("%%nano\nOne")
    state.update(id="b", deleted=["a"])
    run("%%nano\nTwo")
    assert messages(fake.posts()[1]) == [("user", "Two")]
    assert "1 turns left the history because their cells were deleted" in run("%nano history").shown


def test_threads_are_isolated(run, fake) -> None:
    run("%%nano --thread physics\nAbout heat")
    run("%%nano --thread poetry\nAbout rhyme")
    run("%%nano --thread physics\nMore heat")
    assert messages(fake.posts()[1]) == [("user", "About rhyme")]
    assert [c for _, c in messages(fake.posts()[2])] == ["About heat", fake.reply, "More heat"]


def test_once_reads_and_writes_no_history(run, fake, ip) -> None:
    run("%%nano\nKept")
    run("%%nano --once\nForgotten")
    run("%%nano\nNext")
    assert messages(fake.posts()[1]) == [("user", "Forgotten")]
    assert [c for _, c in messages(fake.posts()[2])] == ["Kept", fake.reply, "Next"]


def test_new_starts_afresh_but_keeps_the_system_message(run, fake) -> None:
    run("%%nano -s Terse\nOld")
    run("%%nano --new\nFresh")
    assert messages(fake.posts()[1]) == [("system", "Terse"), ("user", "Fresh")]


def test_every_option_lands_in_its_chat_field(run, fake) -> None:
    run('%%nano -m fake-model -t 0.3 --top-p 0.8 --max-tokens 20 --seed 4 --stop "END"\nHi')
    body = fake.posts()[0].body
    assert (body["model"], body["temperature"], body["top_p"], body["max_completion_tokens"], body["seed"], body["stop"]) == ("fake-model", 0.3, 0.8, 20, 4, "END")


def test_every_option_lands_in_its_responses_field(run, fake) -> None:
    cell = run('%%nano --api responses -s "Be kind" -t 0.3 --top-p 0.8 --max-tokens 20\nHi')
    body = fake.posts()[0].body
    assert fake.posts()[0].path.endswith("/responses")
    assert (body["instructions"], body["temperature"], body["top_p"], body["max_output_tokens"], body["store"]) == ("Be kind", 0.3, 0.8, 20, False)
    assert body["input"] == [{"role": "user", "content": "Hi"}]
    assert fake.reply in cell.stdout


def test_no_stream_sends_one_plain_request(run, fake) -> None:
    cell = run("%%nano --no-stream\nHi")
    assert fake.posts()[0].body["stream"] is False and fake.reply in cell.stdout


@pytest.mark.parametrize("line,message", [
    ("-t 3", "--temperature 3 is out of range"),
    ("--top-p -1", "--top-p -1 is out of range"),
    ("--max-tokens 0", "--max-tokens 0 must be greater than 0"),
    ("--api soap", "argument --api: invalid choice: 'soap'"),
    ("-t hot", "invalid float value: 'hot'"),
    ("--context nope", "no variable named 'nope'"),
    ("--api responses --seed 3", "--seed and --stop exist only in Chat Completions"),
    ("--bogus", "unrecognized arguments: --bogus\nusage: %%nano [-m MODEL]"),
])
def test_bad_input_gives_one_line_and_sends_nothing(run, fake, line: str, message: str) -> None:
    cell = run(f"%%nano {line}\nHello")
    assert cell.failed and message in cell.shown
    assert "Traceback" not in cell.shown
    assert fake.posts() == []


def test_an_empty_cell_sends_nothing(run, fake) -> None:
    cell = run("%%nano\n   \n")
    assert cell.failed and "The cell is empty" in cell.stderr and fake.posts() == []


def test_no_backend_explains_how_to_set_one(run, fake, monkeypatch) -> None:
    monkeypatch.delenv("NANO_BASE_URL")
    cell = run("%%nano\nHello")
    assert cell.failed and "CLOUDFLARE_API_TOKEN" in cell.stdout and "OPENAI_API_KEY" in cell.stdout
    assert "Traceback" not in cell.shown and fake.posts() == []


def test_dry_run_shows_the_request_and_sends_nothing(run, fake, monkeypatch) -> None:
    monkeypatch.delenv("NANO_BASE_URL")
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct42")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "cf-very-secret-token-1234")
    cell = run("%%nano --dry-run -t 0.5\nHello")
    assert "POST https://api.cloudflare.com/client/v4/accounts/acct42/ai/v1/chat/completions" in cell.stdout
    assert '"model": "openai/gpt-4.1-nano"' in cell.stdout and '"temperature": 0.5' in cell.stdout
    assert "cf-very-secret-token-1234" not in cell.shown
    assert fake.posts() == []


def test_answer_object_out_variable_and_json(run, fake, ip) -> None:
    fake.reply = '{"planets": 8, "dwarf": ["Pluto"]}'
    run("%%nano --json --out raw\nList planets as JSON")
    answer = ip.user_ns["_nano"]
    assert answer.json == {"planets": 8, "dwarf": ["Pluto"]} and answer.status == "complete"
    assert ip.user_ns["raw"] == fake.reply and answer.usage.output_tokens == 4
    assert fake.posts()[0].body["response_format"] == {"type": "json_object"}


def test_json_that_does_not_parse_says_so_and_keeps_the_text(run, fake, ip) -> None:
    fake.reply = "Sure! planets: 8"
    cell = run("%%nano --json\nList planets as JSON")
    assert cell.failed and "not valid JSON" in cell.shown
    assert ip.user_ns["_nano"].text == "Sure! planets: 8" and ip.user_ns["_nano"].json is None


def test_format_code_puts_the_first_code_block_in_the_next_cell(run, fake, ip, monkeypatch) -> None:
    fake.reply = "Here:\n\n```python\nprint('hi')\n```\n\nand\n\n```python\nprint('no')\n```\n"
    queued = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: queued.append(text))
    run("%%nano --format code\nWrite hello")
    assert queued == ["print('hi')"]


def test_context_describes_a_dataframe(run, fake, ip) -> None:
    import pandas as pd

    ip.user_ns["df"] = pd.DataFrame({"city": ["Oslo", "Lima"] * 10, "temp": range(20)})
    run("%%nano --context df --dry-run\nWhich city is warmer?")
    run("%%nano --context df\nWhich city is warmer?")
    prompt = fake.posts()[0].body["messages"][-1]["content"]
    assert prompt.startswith("Which city is warmer?")
    assert "shape: 20 rows × 2 columns" in prompt and "temp: int64" in prompt and "Oslo" in prompt
    assert prompt.count("\n") < 30


def test_context_fences_hold_values_that_contain_fences(run, fake, ip) -> None:
    ip.user_ns["notes"] = "see ```python\nx = 1\n``` above"
    run("%%nano --context notes\nExplain")
    prompt = fake.posts()[0].body["messages"][-1]["content"]
    assert "````text\n'see ```python" in prompt and prompt.endswith("above'\n````")


def test_line_magic_subcommands(run, fake) -> None:
    run("%%nano --thread a\nOne")
    run("%%nano --thread b\nTwo")
    threads = run("%nano threads").shown
    assert "| a | 1 |" in threads and "| b | 1 |" in threads
    usage = run("%nano usage")
    assert re.search(r"\| total \| +\| 2 \|", usage.shown) and "| price unknown |" in usage.shown
    plain = usage.outputs[-1].data["text/plain"].splitlines()
    assert plain[0].split() == ["thread", "turns", "requests", "input", "tokens", "output", "tokens", "cost"]
    assert plain[-1].startswith("total") and "\\" not in "".join(plain) and "|" not in "".join(plain)
    assert all(line[plain[0].index("cost")] in "$p" for line in plain[2:])  # the columns line up
    history = run("%nano history a").shown
    assert "**You:**" in history and "One" in history and "[" not in history.split("Thread")[0]
    run("%nano reset a")
    assert "| a | 0 |" in run("%nano threads").shown
    models = run("%nano models").shown
    assert "fake-model" in models and "2026-10-23" in models
    unknown = run("%nano frobnicate")
    assert unknown.failed and "Valid: reset, history" in unknown.shown


def test_config_sets_and_shows_settings_with_a_masked_key(run, fake, monkeypatch) -> None:
    monkeypatch.setenv("NANO_API_KEY", "local-secret-key-98765")
    shown = run("%nano config model=fake-model").shown
    assert "fake-model" in shown and "…8765" in shown and "local-secret-key-98765" not in shown
    bad = run("%nano config api=soap")
    assert bad.failed and "api" in bad.shown


def test_a_model_with_a_shutdown_date_warns(run, fake) -> None:
    run("%nano models")
    cell = run("%%nano -m old-model\nHi")
    assert "shutting down on 2026-10-23" in cell.stdout


def test_the_chat_api_streams_to_a_callback(fake) -> None:
    from nano_magic import Chat

    pieces: list[str] = []
    chat = Chat(system="Be brief.", base_url=fake.base_url)
    first = chat.ask("Hello", on_delta=pieces.append)
    second = chat.ask("Again", temperature=0.1)
    assert "".join(pieces) == first.text == fake.reply and len(pieces) > 1
    assert second.usage.input_tokens > first.usage.input_tokens
    assert json.dumps(fake.posts()[1].body["messages"][0]) == json.dumps({"role": "system", "content": "Be brief."})
    chat.close()


def test_markdown_display_streams_and_saves_the_final_markdown(run, fake, ip) -> None:
    ip.magics_manager.registry["NanoMagics"].display = "markdown"
    fake.reply = "Area is $\\pi r^2$ for $5."
    cell = run("%%nano\nArea?")
    final = [o for o in cell.outputs if "nano_magic" in o.metadata]
    assert final and final[-1].data["text/markdown"] == "Area is $\\pi r^2$ for &#36;<span></span>5."
    assert final[-1].metadata["nano_magic"]["prompt"] == "Area?"


def test_format_text_saves_preformatted_text_only(run, fake, ip) -> None:
    ip.magics_manager.registry["NanoMagics"].display = "markdown"
    fake.reply = "Plain *text* $x$"
    cell = run("%%nano --format text\nHi")
    final = [o for o in cell.outputs if "nano_magic" in o.metadata][-1]
    assert final.data == {"text/plain": "Plain *text* $x$"}


def test_frontends_without_widget_math_stream_markdown(ip, monkeypatch) -> None:
    from types import SimpleNamespace

    from nano_magic.display import pick_mode

    kernel_shell = SimpleNamespace(kernel=object(), user_ns={})
    assert pick_mode("auto", kernel_shell) == "html"
    assert pick_mode("widget", kernel_shell) == "html", "the old name still works"
    assert pick_mode("auto", SimpleNamespace(kernel=object(), user_ns={"__vsc_ipynb_file__": "/x.ipynb"})) == "markdown"
    monkeypatch.setitem(__import__("sys").modules, "google.colab", SimpleNamespace())
    assert pick_mode("auto", kernel_shell) == "markdown"
    assert pick_mode("text", kernel_shell) == "text"
    assert pick_mode("auto", ip) == "text"  # terminal IPython has no kernel


def test_a_bad_config_value_is_one_line_and_keeps_the_old_value(run, fake, ip) -> None:
    magics = ip.magics_manager.registry["NanoMagics"]
    run("%nano config max_retries=2 refresh_rate=5")
    for pair, message in [("max_retries=-1", "max_retries must be 0 or more"), ("read_timeout=0", "read_timeout must be a number of seconds greater than 0"),
                          ("refresh_rate=100", "refresh_rate must be above 0 and at most 60"), ("display=fancy", "'display' trait")]:
        cell = run(f"%nano config {pair}")
        assert cell.failed and message in cell.stderr and len(cell.stderr.strip().splitlines()) == 1 and "Traceback" not in cell.shown
    assert (magics.max_retries, magics.read_timeout, magics.refresh_rate, magics.display) == (2, 120.0, 5.0, "auto")
    assert not run("%%nano\nStill fine").failed


def test_config_names_the_backend_why_and_what_it_ignored(run, fake, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-ignored-0123456789")
    shown = run("%nano config").shown
    assert "OpenAI-compatible server" in shown and "NANO_BASE_URL is set" in shown
    assert "OPENAI_API_KEY (set, but not used by this backend)" in shown and "0123456789" not in shown


def test_one_cell_has_at_most_one_turn(run, fake, ip, monkeypatch) -> None:
    monkeypatch.setattr("nano_magic.cell.parent_cell", lambda shell: ("cell-a", []))
    threads = ip.magics_manager.registry["NanoMagics"].chat.conversation.threads
    run("%%nano --thread physics\nFirst")
    run("%%nano --thread poetry\nFirst, moved")
    assert [t.prompt for t in threads["poetry"].turns] == ["First, moved"] and threads["physics"].turns == []
    run("%%nano --once\nFirst, once")
    assert all(t.turns == [] for t in threads.values())


def test_the_stored_execution_count_is_the_cells_in_number(ip, fake) -> None:
    result = ip.run_cell("%%nano\nHello", store_history=True)
    # a cell run outside the history has no In[n]: IPython 8 reports None for it, IPython 9 the next number
    unnumbered = ip.run_cell("%%nano --thread unnumbered\nHello")
    threads = ip.magics_manager.registry["NanoMagics"].chat.conversation.threads
    assert result.execution_count is not None and threads["default"].turns[0].execution_count == result.execution_count
    assert threads["unnumbered"].turns[0].execution_count == unnumbered.execution_count


class InterchangeFrame:
    """A frame that speaks only the dataframe interchange protocol, plus `head`, as cuDF or Vaex do."""

    class _Column:
        def __init__(self, kind: int, bits: int) -> None:
            from enum import IntEnum

            kinds = IntEnum("DtypeKind", {"INT": 0, "FLOAT": 2, "STRING": 21})  # type: ignore[misc]
            self.dtype = (kinds(kind), bits, "", "=")

    def __dataframe__(self):
        frame = self

        class Protocol:
            def column_names(self):
                return ["city", "temp"]

            def get_column_by_name(self, name):
                return frame._Column(21, 8) if name == "city" else frame._Column(2, 64)

            def num_rows(self):
                return 300

            def num_columns(self):
                return 2

        return Protocol()

    def head(self, n: int) -> str:
        return "city temp\nOslo 3.5\nLima 19.0"


class ArrowLikeTable:
    """A table that converts with `to_pandas`, as pyarrow's does."""

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame({"x": [1.5, 2.5, 3.5]})


class PolarsLike:
    """Polars' shape of API: `schema` mapping, `dtypes` a list, `head` returning a frame that prints as a table."""

    shape = (1000, 2)
    dtypes = ["Int64", "String"]
    schema = {"id": "Int64", "name": "String"}

    def head(self, n: int) -> str:
        return "┌────┬──────┐\n│ id ┆ name │\n│ 1  ┆ Ada  │"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_context_describes_any_frame_array_or_long_value_and_never_raises(run, fake, ip) -> None:
    import numpy as np

    ip.user_ns.update(
        inter=InterchangeFrame(), arrow=ArrowLikeTable(), pl=PolarsLike(), arr=np.arange(1000, dtype="float32").reshape(10, 100),
        many=list(range(10_000)), table={f"k{i}": i for i in range(500)}, text="word " * 5000, broken=BrokenRepr(), nested=[BrokenRepr()],
    )
    cell = run("%%nano --context inter,arrow,pl,arr,many,table,text,broken,nested\nDescribe")
    assert not cell.failed and "Traceback" not in cell.shown
    prompt = fake.posts()[0].body["messages"][-1]["content"]
    assert "shape: 300 rows × 2 columns" in prompt and "city: string" in prompt and "temp: float64" in prompt and "Oslo 3.5" in prompt
    assert "shape: 3 rows × 1 columns" in prompt and "x: float64" in prompt and "2.5" in prompt
    assert "shape: 1000 rows × 2 columns" in prompt and "id: Int64" in prompt and "│ 1  ┆ Ada  │" in prompt
    assert "shape: (10, 100), dtype: float32" in prompt and "[0.0, 1.0, 2.0" in prompt and "(1000 values)" in prompt
    assert "(10000 items; the first 20 shown)" in prompt and "(500 items; the first 20 shown)" in prompt
    assert "more characters cut" in prompt and len(prompt) < 9 * 4500
    assert "<BrokenRepr instance at" in prompt and "[<BrokenRepr instance at" in prompt


def test_the_extension_chains_to_an_earlier_exception_handler_and_gives_it_back(ip, fake) -> None:
    class TheirError(Exception):
        pass

    seen = []
    ip.user_ns["TheirError"] = TheirError
    ip.run_line_magic("unload_ext", "nano_magic")
    ip.set_custom_exc((TheirError,), lambda shell, etype, value, tb, tb_offset=None: seen.append(str(value)) or ["theirs"])
    try:
        ip.run_line_magic("load_ext", "nano_magic")
        from nano_magic.errors import CellFailed

        assert set(ip.custom_exceptions) == {CellFailed, TheirError}
        fake.queue(Status(401, {"error": {"message": "no key"}}))
        with capture_output() as out:
            ip.run_cell("raise TheirError('routed on')")
            ip.run_cell("%%nano\nHi")
        assert seen == ["routed on"]
        assert "(401: no key)" in out.stdout and "Traceback" not in out.stdout
        ip.run_line_magic("unload_ext", "nano_magic")
        assert ip.custom_exceptions == (TheirError,)
        ip.run_cell("raise TheirError('after unload')")
        assert seen == ["routed on", "after unload"]
    finally:
        ip.set_custom_exc((), None)
        ip.run_line_magic("load_ext", "nano_magic")


def test_a_slow_refresh_never_holds_up_incoming_text() -> None:
    import threading
    import time

    from nano_magic.display import HtmlView

    view = HtmlView("fake-model · default · turn 1", 10)
    rendering, release = threading.Event(), threading.Event()
    render = view._renderer.render

    def slow_render() -> tuple[str | None, str]:
        rendering.set()
        release.wait(10)
        return render()

    view._renderer.render = slow_render
    try:
        view.delta("First words")
        assert rendering.wait(10), "the ticker never refreshed"
        started = time.perf_counter()
        view.delta(" and more")
        waited = time.perf_counter() - started
    finally:
        release.set()
        view.close()
    assert waited < 1.0, f"delta waited {waited:.1f} s for a render in progress"


def test_the_help_explains_every_option_in_a_sentence(run, fake) -> None:
    from nano_magic.magics import NanoMagics

    shown = run("%%nano?").stdout
    for action in NanoMagics.nano_cell.parser._actions:
        if "-h" in action.option_strings:
            continue
        assert action.option_strings[-1] in shown, action.dest
        words = (action.help or "").split()
        assert len(words) >= 3 and action.help.rstrip().endswith((".", ")")), f"{action.option_strings[-1]}: {action.help!r}"
    assert fake.requests == []
