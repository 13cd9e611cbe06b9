"""Whatever goes wrong in a `%%nano` cell, in a real kernel: one line, no traceback, no comm, no refresh thread."""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest
from jupyter_client.manager import start_new_kernel

from tests.conftest import BACKEND_VARIABLES
from tests.support.fake_server import FakeServer, Status

REPLY = "Partial words arrive here."

# Helpers defined once in the kernel: patch an attribute for one cell, then put it back.
HELPERS = """
import importlib, os, signal, threading, time
_undo = []
def _patch(owner, name, value):
    owner = importlib.import_module(owner) if isinstance(owner, str) else owner
    _undo.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)
def _restore():
    while _undo:
        owner, name, value = _undo.pop()
        setattr(owner, name, value)
def _raiser(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail
"""

PROBE = """
import sys, threading, comm
print(len(comm.get_comm_manager().comms), "ipywidgets" in sys.modules, [t.name for t in threading.enumerate() if t.name == "nano-refresh"])
"""


class Kernel:
    """One real kernel with nano_magic loaded, pointed at the loopback server."""

    def __init__(self, base_url: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in BACKEND_VARIABLES}
        self.km, self.kc = start_new_kernel(kernel_name="python3", env={**env, "NANO_BASE_URL": base_url})
        assert self.run("%load_ext nano_magic\n" + HELPERS)[0] == "ok"

    def run(self, code: str, timeout: float = 60) -> tuple[str, list[dict[str, Any]]]:
        """Execute a cell; its reply status and every IOPub message it caused."""
        messages: list[dict[str, Any]] = []
        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=messages.append)
        return reply["content"]["status"], messages

    def probe(self) -> str:
        """Open comms, whether ipywidgets was imported, and live refresh threads, as the kernel counts them."""
        status, messages = self.run(PROBE)
        assert status == "ok"
        return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream").strip()

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(server_session: FakeServer) -> Iterator[Kernel]:
    started = Kernel(server_session.base_url)
    yield started
    started.close()


def errors(messages: list[dict[str, Any]]) -> list[list[str]]:
    return [m["content"]["traceback"] for m in messages if m["msg_type"] == "error"]


def finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["content"] for m in messages if m["msg_type"] == "update_display_data"]


def answer(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The last output update that carries the turn: the tail become the answer's last output."""
    return [f for f in finals(messages) if "nano_magic" in f["metadata"]][-1]


def displays(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")]


def shown(messages: list[dict[str, Any]]) -> str:
    parts = [m["content"].get("text", "") for m in messages if m["msg_type"] == "stream"]
    parts += [str(m["content"].get("data", {})) for m in messages if "data" in m["content"]]
    parts += ["\n".join(t) for t in errors(messages)]
    return "\n".join(parts)


def failure_lines(messages: list[dict[str, Any]]) -> list[str]:
    """What the cell says went wrong: its error output, or IPython's UsageError line on stderr."""
    lines = [line for traceback in errors(messages) for line in traceback]
    return lines + [m["content"]["text"].rstrip("\n") for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"]


def check_one_line(messages: list[dict[str, Any]], expected: str) -> None:
    """One line containing `expected`, and no traceback or stray text anywhere."""
    lines = failure_lines(messages)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert expected in lines[0]
    assert "Traceback" not in shown(messages)
    assert not [m for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"], "nothing printed besides the one line"


def check_clean_and_working(kernel: Kernel, fake: FakeServer) -> None:
    """No comm opened, no widget library imported, no refresh thread alive, and the next cell answers."""
    kernel.run("_restore()")
    assert kernel.probe() == "0 False []"
    fake.reply = "Fine again."
    status, messages = kernel.run("%%nano --once\nAre you there?")
    assert status == "ok" and not errors(messages)
    assert answer(messages)["data"]["text/plain"] == "Fine again."
    assert kernel.probe() == "0 False []"


def test_a_bug_before_the_request_leaves_nothing(kernel: Kernel, fake: FakeServer) -> None:
    kernel.run('_patch("nano_magic.chat", "build_request", _raiser(RuntimeError("injected before the request")))')
    status, messages = kernel.run("%%nano\nHello")
    assert status == "error" and fake.posts() == []
    check_one_line(messages, "nano_magic failed unexpectedly (RuntimeError: injected before the request)")
    assert not displays(messages), "the request is built before the live view opens"
    check_clean_and_working(kernel, fake)


def test_an_interrupt_before_the_request_leaves_nothing(kernel: Kernel, fake: FakeServer) -> None:
    kernel.run('_patch("nano_magic.chat", "build_request", _raiser(KeyboardInterrupt()))')
    status, messages = kernel.run("%%nano\nHello")
    assert status == "error"
    check_one_line(messages, "Stopped before any answer arrived.")
    assert not displays(messages)
    check_clean_and_working(kernel, fake)


def test_a_real_interrupt_while_waiting_to_retry(kernel: Kernel, fake: FakeServer) -> None:
    kernel.run("%nano config max_retries=2")
    fake.queue(Status(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "20"}))
    msg_id = kernel.kc.execute("%%nano\nHello")
    deadline = time.monotonic() + 30
    while not fake.posts() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    kernel.km.interrupt_kernel()
    messages = []
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    check_one_line(messages, "Stopped before any answer arrived.")
    assert "retrying in 20 s" in str(finals(messages)[0]["data"]), "the status line said why it waited"
    assert [f["data"] for f in finals(messages)[-3:]] == [{"text/plain": ""}] * 3, "the header, tail and status lines all go"
    assert len(fake.posts()) == 1
    kernel.run("%nano config max_retries=0")
    check_clean_and_working(kernel, fake)


def test_a_bug_while_showing_a_retry(kernel: Kernel, fake: FakeServer) -> None:
    kernel.run("%nano config max_retries=1\n"
               '_patch("nano_magic.client", "backoff", lambda attempt: 0.01)\n'
               '_patch(importlib.import_module("nano_magic.display").HtmlView, "notice", _raiser(ValueError("injected in a retry")))')
    fake.queue(Status(500, {"error": {"message": "down"}}))
    status, messages = kernel.run("%%nano\nHello")
    kernel.run("%nano config max_retries=0")
    check_one_line(messages, "nano_magic failed unexpectedly (ValueError: injected in a retry)")
    assert finals(messages)[-1]["data"] == {"text/plain": ""}
    check_clean_and_working(kernel, fake)


def test_a_bug_mid_stream_keeps_the_partial_answer(kernel: Kernel, fake: FakeServer) -> None:
    fake.reply = REPLY
    kernel.run('_patch(importlib.import_module("nano_magic.usage").Usage, "from_chat", _raiser(TypeError("injected mid-stream")))')
    status, messages = kernel.run("%%nano\nHello")
    assert status == "error"
    check_one_line(messages, "nano_magic failed unexpectedly (TypeError: injected mid-stream)")
    final = answer(messages)
    assert final["data"]["text/plain"] == REPLY and final["metadata"]["nano_magic"]["status"] == "cut"
    check_clean_and_working(kernel, fake)


def test_an_interrupt_mid_stream_keeps_the_partial_answer(kernel: Kernel, fake: FakeServer) -> None:
    fake.reply = REPLY
    kernel.run('_patch(importlib.import_module("nano_magic.usage").Usage, "from_chat", _raiser(KeyboardInterrupt()))')
    status, messages = kernel.run("%%nano\nHello")
    check_one_line(messages, "Stopped by you; the partial answer is kept.")
    final = answer(messages)
    assert final["data"]["text/plain"] == REPLY and final["metadata"]["nano_magic"]["status"] == "stopped"
    check_clean_and_working(kernel, fake)


def test_a_bug_in_a_refresh_is_shown_once_and_the_answer_still_arrives(kernel: Kernel, fake: FakeServer) -> None:
    fake.reply = " ".join(f"w{i}" for i in range(12))
    fake.chunk_delay = 0.05
    kernel.run('_patch(importlib.import_module("nano_magic.render").StreamRenderer, "render", _raiser(RuntimeError("injected in a refresh")))')
    status, messages = kernel.run("%%nano\nHello")
    assert status == "ok" and not errors(messages)
    assert answer(messages)["data"]["text/plain"] == fake.reply
    status_lines = [f["data"]["text/html"] for f in finals(messages) if "injected in a refresh" in f["data"].get("text/html", "")]
    assert len(status_lines) == 2 and "the full answer shows at the end" in status_lines[0], "the status line says it once"
    footer = finals(messages)[-1]["data"]["text/plain"]
    assert "tokens" in footer and "the live view failed to refresh (RuntimeError: injected in a refresh)" in footer, "then the footer"
    check_clean_and_working(kernel, fake)


def test_a_bug_in_the_final_output_leaves_the_plain_answer(kernel: Kernel, fake: FakeServer) -> None:
    fake.reply = REPLY
    kernel.run('_patch("nano_magic.cell", "to_markdown", _raiser(RuntimeError("injected in the final output")))')
    status, messages = kernel.run("%%nano\nHello")
    check_one_line(messages, "nano_magic failed unexpectedly (RuntimeError: injected in the final output)")
    assert {"text/plain": REPLY} in [f["data"] for f in finals(messages)]
    check_clean_and_working(kernel, fake)


def test_a_real_interrupt_while_the_answer_ends_is_held_until_it_is_done(kernel: Kernel, fake: FakeServer) -> None:
    fake.reply = REPLY
    kernel.run("_view = importlib.import_module('nano_magic.display').HtmlView\n"
               "_finish = _view.finish\n"
               "def _slow_finish(*args):\n"
               "    os.kill(os.getpid(), signal.SIGINT)\n"
               "    time.sleep(0.2)\n"
               "    _finish(*args)\n"
               '_patch(_view, "finish", _slow_finish)')
    status, messages = kernel.run("%%nano\nHello")
    check_one_line(messages, "Stopped by you as the answer ended; what arrived is kept.")
    final = answer(messages)
    assert f"<p>{REPLY}</p>" in final["data"]["text/html"] and final["metadata"]["nano_magic"]["status"] == "complete"
    assert "tokens" in finals(messages)[-1]["data"]["text/plain"], "the footer came after the answer"
    check_clean_and_working(kernel, fake)


def test_an_html_page_for_a_non_streamed_request_is_one_sentence(kernel: Kernel, fake: FakeServer) -> None:
    fake.queue(Status(200, "<html><head><title>Sign in</title></head><body>portal</body></html>"))
    status, messages = kernel.run("%%nano --no-stream\nHello")
    check_one_line(messages, "answered with an HTML page (Sign in) instead of a JSON answer")
    check_clean_and_working(kernel, fake)


@pytest.mark.parametrize("setting,expected", [
    ("max_retries=-1", "max_retries must be 0 or more"),
    ("connect_timeout=-1", "connect_timeout must be a number of seconds greater than 0"),
    ("read_timeout=0", "read_timeout must be a number of seconds greater than 0"),
])
def test_a_bad_setting_is_refused_in_one_line_and_the_next_cell_works(kernel: Kernel, fake: FakeServer, setting: str, expected: str) -> None:
    status, messages = kernel.run(f"%nano config {setting}")
    assert status == "error"
    check_one_line(messages, expected)
    status, messages = kernel.run("%%nano\nHello")
    assert status == "ok" and not errors(messages)
    check_clean_and_working(kernel, fake)
