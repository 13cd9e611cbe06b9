"""In front of a class: the budget, the off switch, `%nano explain`, and replay in the in-process shell."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from nano_magic.conversation import Turn
from nano_magic.errors import OFF_MESSAGE
from nano_magic.replay import ReplayStore, replay_events
from tests.support.notebooks import notebook

PRICED = "gpt-4.1-nano"  # the fake server serves any model name; this one has a price
LONG = " ".join(f"word{i}" for i in range(400))


def magics(ip):
    return ip.magics_manager.registry["NanoMagics"]


def turns(ip, thread: str = "default"):
    found = magics(ip).chat.conversation.threads.get(thread)
    return found.turns if found else []


# Budget


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_cap_below_one_requests_estimate_refuses_it_with_no_request(run, fake, ip, api) -> None:
    magics(ip).budget = 0.001
    cell = run(f"%%nano -m {PRICED} --api {api}\nHello")
    assert cell.failed and fake.requests == []
    line = [s for s in cell.shown.splitlines() if s.strip()]
    assert line == [line[0]] and "Budget: this request could cost up to $0.013" in line[0]
    assert "$0.000000 of the $0.001000 cap is spent" in line[0] and "NanoMagics.budget" in line[0]
    assert run(f"%%nano -m {PRICED} --api {api} --max-tokens 100\nHello").failed is False, "a smaller bound fits"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_reaching_the_cap_mid_stream_closes_the_stream_and_keeps_the_partial_answer(run, fake, ip, api) -> None:
    magics(ip).budget = 0.00002  # the estimate (a few input tokens + 20 output tokens) fits; 400 words do not
    fake.reply, fake.chunk_delay = LONG, 0.005
    cell = run(f"%%nano -m {PRICED} --api {api} --max-tokens 20\nCount")  # the fake server ignores the bound
    assert cell.failed and "budget was reached mid-answer" in cell.shown
    assert fake.wait_for_client_gone(), "the server saw the client hang up"
    answer = ip.user_ns["_nano"]
    assert answer.status == "budget" and answer.text.startswith("word0 word1") and "word399" not in answer.text
    assert [t.status for t in turns(ip)] == ["budget"]
    usage = run("%nano usage").shown.replace("&#36;<span></span>", "$")
    assert "of the $0.000020 cap" in usage
    again = run(f"%%nano -m {PRICED} --api {api} --max-tokens 20\nMore")
    assert again.failed and "Budget:" in again.shown and len(fake.posts()) == 1


@pytest.mark.parametrize("stream", ["", "--no-stream"])
def test_each_request_of_a_tool_loop_is_checked_against_the_cap(run, fake, ip, stream) -> None:
    from tests.support.fake_server import Call, Reply, ToolCalls

    ip.user_ns["lookup"] = lambda topic: "fact " * 1000  # a long result makes the second request cost more
    magics(ip).budget = 0.00006  # the first request's estimate fits (100 output tokens); the second one's does not
    fake.queue(ToolCalls([Call("lookup", '{"topic": "heat"}')]), Reply("Never sent."))
    cell = run(f"%%nano -m {PRICED} --max-tokens 100 --tools lookup {stream}\nLook it up")
    assert cell.failed and "Budget: this request could cost" in cell.shown and "Traceback" not in cell.shown
    assert len(fake.posts()) == 1
    answer = ip.user_ns["_nano"]
    assert answer.status == "budget" and [c["name"] for c in answer.steps[0]["calls"]] == ["lookup"]
    assert "of the $0.000060 cap" in cell.shown


def test_models_without_a_price_count_as_zero_and_usage_shows_the_cap(run, fake, ip) -> None:
    magics(ip).budget = 0.5
    assert not run("%%nano\nHi").failed  # fake-model has no price
    usage = run("%nano usage").shown.replace("&#36;<span></span>", "$")
    assert "$0.000000 of the $0.500000 cap" in usage and "without a known price count as $0" in usage


def test_the_budget_defaults_to_nano_budget(monkeypatch) -> None:
    from nano_magic.magics import NanoMagics

    monkeypatch.setenv("NANO_BUDGET", "0.25")
    assert NanoMagics().budget == 0.25
    monkeypatch.setenv("NANO_BUDGET", "lots")
    assert NanoMagics().budget is None


# The off switch

SENDERS = ["%nano models", "%nano explain", "%%nano\nHi", "%%nano --dry-run\nHi", "%%nano --once\nHi"]
LOCAL = ["%nano", "%nano help", "%nano threads", "%nano history", "%nano usage", "%nano config", "%nano reset",
         "%nano system Be brief.", "%nano replay off"]


def test_turned_off_every_sending_cell_and_subcommand_says_so_in_one_line(run, fake, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NANO_MAGIC_DISABLED", "1")
    for source in SENDERS:
        cell = run(source)
        assert [s for s in cell.shown.splitlines() if s.strip()] == [OFF_MESSAGE], source
    for source in [*LOCAL, f"%nano export {tmp_path / 'x.json'}", f"%nano load {tmp_path / 'x.json'}"]:
        assert OFF_MESSAGE not in run(source).shown, source
    assert fake.requests == []


def test_the_extension_loads_when_turned_off(ip, monkeypatch) -> None:
    monkeypatch.setenv("NANO_MAGIC_DISABLED", "1")
    ip.run_line_magic("reload_ext", "nano_magic")
    assert "NanoMagics" in ip.magics_manager.registry and "nano" in ip.magics_manager.magics["cell"]


# %nano explain


@pytest.fixture
def no_error(monkeypatch):
    monkeypatch.delattr(sys, "last_value", raising=False)


def test_explain_sends_the_exception_the_frame_and_the_cell(run, fake, ip, no_error) -> None:
    failing = run("numerator = 1\ndenominator = 0\nratio = numerator / denominator")
    assert failing.failed
    cell = run("%nano explain")
    assert not cell.failed and len(fake.posts()) == 1
    body = fake.posts()[0].body
    sent = "\n".join(m["content"] for m in body["messages"])
    assert "ZeroDivisionError: division by zero" in sent
    assert "line 3, in <module>: ratio = numerator / denominator" in sent
    assert "numerator = 1\ndenominator = 0\nratio = numerator / denominator" in sent
    assert body["messages"][0]["role"] == "system" and "propose a fix" in body["messages"][0]["content"]
    assert fake.reply in cell.shown and turns(ip) == [], "one-shot: no thread grows"


def test_explain_masks_keys_from_the_environment_and_the_backend(run, fake, ip, no_error, monkeypatch) -> None:
    token, key = "course-token-5f1e9a7c3b2d8e40", "nano-key-0c4b8a2f6e1d9735"
    monkeypatch.setenv("COURSE_API_TOKEN", token)
    monkeypatch.setenv("NANO_API_KEY", key)
    run(f'import os\nraise PermissionError("rejected " + os.environ["COURSE_API_TOKEN"] + " and {key}")')
    run("%nano explain")
    sent = str(fake.posts()[0].body)
    assert token not in sent and key not in sent
    assert "rejected …8e40 and …9735" in sent


def test_explain_names_a_library_error_once(run, fake, no_error) -> None:
    run("import json\njson.loads('{oops')")
    run("%nano explain")
    sent = fake.posts()[0].body["messages"][1]["content"]
    assert "```text\njson.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)\n```" in sent


def test_explain_with_no_error_yet_sends_nothing(run, fake, no_error) -> None:
    cell = run("%nano explain")
    assert [s for s in cell.shown.splitlines() if s.strip()] == ["No error yet in this session: `%nano explain` explains the last error a cell raised."]
    assert fake.requests == []


def test_explain_dry_run_and_format_code(run, fake, ip, no_error, monkeypatch) -> None:
    run("print(undefined_name)")
    dry = run("%nano explain --dry-run")
    assert "NameError: name 'undefined_name' is not defined" in dry.shown and fake.posts() == []
    placed: list[str] = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: placed.append(text))
    fake.reply = "It is not defined.\n\n```python\nundefined_name = 1\nprint(undefined_name)\n```\n"
    run("%nano explain --format code")
    assert placed == ["undefined_name = 1\nprint(undefined_name)"]
    assert "single ```python code block" in fake.posts()[0].body["messages"][0]["content"]


# Replay, in-process (the real-kernel round trip is in test_replay_kernel.py)


def saved_notebook(path: Path, *turns_: dict) -> Path:
    nb = notebook(*("%%nano\n" + t["prompt"] for t in turns_))
    for cell, saved in zip(nb.cells, turns_):
        meta = {"thread": "default", "system": None, "status": "complete", "model": "fake-model", "options": {}, **saved}
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": saved["answer"]}, metadata={"nano_magic": meta})]
    nbformat.write(nb, path)
    return path


def test_replay_finds_the_current_notebook_and_answers_without_a_backend(run, fake, ip, tmp_path, monkeypatch) -> None:
    path = saved_notebook(tmp_path / "demo.ipynb", {"prompt": "Q1", "answer": "Saved one.", "turn": 0},
                          {"prompt": "Q2", "answer": "Saved two.", "turn": 1, "usage": {"input_tokens": 9, "output_tokens": 3}})
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    monkeypatch.delenv("NANO_BASE_URL")
    assert "2 saved answers" in run("%nano replay --speed 0").shown
    first, second = run("%%nano\nQ1"), run("%%nano\nQ2")
    assert "Saved one." in first.stdout and "Saved two." in second.stdout
    assert "replayed" in second.stdout and "9 in · 3 out tokens" in second.stdout
    assert [t.answer for t in turns(ip)] == ["Saved one.", "Saved two."]
    assert ip.user_ns["_nano"].replayed and "No tokens used" in run("%nano usage").shown
    assert fake.requests == []


def test_replay_from_configuration_needs_no_command(run, fake, ip, tmp_path, monkeypatch) -> None:
    path = saved_notebook(tmp_path / "course.ipynb", {"prompt": "Q1", "answer": "Saved one.", "turn": 0})
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # how JupyterLab names the open notebook
    magics = ip.magics_manager.registry["NanoMagics"]
    magics.replay, magics.replay_speed = "offline", 0.0  # as a course's ipython_config.py would set them
    assert "Saved one." in run("%%nano\nQ1").stdout
    refused = run("%%nano\nQ1, edited")
    assert refused.failed and "no saved answer matches this cell" in refused.shown
    assert fake.posts() == []


def test_replay_matches_the_whole_request(run, fake, ip, tmp_path) -> None:
    path = saved_notebook(tmp_path / "demo.ipynb", {"prompt": "Q1", "answer": "Saved.", "turn": 0, "options": {"temperature": 0.5}})
    run(f"%nano replay {path} --speed 0")
    assert "Saved." not in run("%%nano\nQ1").stdout, "different options"
    run("%nano reset")
    assert "Saved." in run("%%nano -t 0.5\nQ1").stdout
    assert "Saved." not in run("%%nano -t 0.5 --thread other\nQ1").stdout, "different thread"
    assert "Saved." not in run("%%nano -t 0.5 -s Pirate --new\nQ1").stdout, "different system message"
    assert len(fake.posts()) == 3
    offline = run(f"%nano replay {path} --offline")
    assert "offline" in offline.shown
    refused = run("%%nano\nQ1, edited")
    assert refused.failed and "no saved answer matches this cell" in refused.shown and len(fake.posts()) == 3
    run("%nano replay off")
    assert not run("%%nano\nQ1, edited").failed and len(fake.posts()) == 4


def test_replay_refuses_bad_input_in_one_line(run, fake, tmp_path) -> None:
    (tmp_path / "bad.ipynb").write_text("not json")
    for line, message in [(f"%nano replay {tmp_path / 'none.ipynb'}", "does not exist"),
                          (f"%nano replay {tmp_path / 'bad.ipynb'}", "is not a notebook"),
                          (f"%nano replay {tmp_path / 'bad.ipynb'} --speed -1", "--speed")]:
        cell = run(line)
        assert cell.failed and message in cell.shown and "Traceback" not in cell.shown


def test_a_notebook_with_new_and_reruns_indexes_each_request_as_it_was_sent(tmp_path) -> None:
    path = saved_notebook(tmp_path / "demo.ipynb", {"prompt": "A", "answer": "a", "turn": 0},
                          {"prompt": "B", "answer": "b", "turn": 1}, {"prompt": "C", "answer": "c", "turn": 0})
    store = ReplayStore.load(path)
    assert store.find("default", None, [], "C", {}, None).answer == "c", "--new: C saw no earlier turns"
    assert store.find("default", None, [Turn("A", "a")], "B", {}, "fake-model").answer == "b"
    assert store.find("default", None, [Turn("A", "a")], "B", {}, "other-model") is None
    assert store.find("default", None, [Turn("A", "changed")], "B", {}, None) is None


def test_replay_paces_the_answer_by_its_saved_output_tokens() -> None:
    slept: list[float] = []
    turn = Turn("q", " ".join(["word"] * 10), usage={"input_tokens": 1, "output_tokens": 40})
    pieces = [e for e in replay_events(turn, 40, sleep=slept.append, clock=lambda: 0.0)]
    assert len([p for p in pieces if hasattr(p, "text")]) == 10
    assert slept[-1] == pytest.approx(1.0) and slept == sorted(slept), "40 tokens at 40 tokens/s end after 1 s"


def test_the_python_api_is_turned_off_too(fake, monkeypatch) -> None:
    from nano_magic import Chat
    from nano_magic.errors import TurnedOff

    monkeypatch.setenv("NANO_MAGIC_DISABLED", "1")
    chat = Chat(base_url=fake.base_url)
    with pytest.raises(TurnedOff, match=OFF_MESSAGE):
        chat.ask("Hello")
    assert fake.requests == []


def test_explain_sends_the_cell_as_typed_with_its_magics(ip, run, fake, no_error) -> None:
    ip.run_cell("%config NanoMagics.refresh_rate = 10\nratio = 1 / 0", store_history=True)
    run("%nano explain")
    sent = fake.posts()[0].body["messages"][1]["content"]
    assert "%config NanoMagics.refresh_rate = 10\nratio = 1 / 0" in sent
    assert "run_line_magic" not in sent
