"""`--batch` in a real kernel: submit and stop waiting, restart the kernel, and the rerun of the same cell collects the batch."""

from __future__ import annotations

import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

from tests.support.batch_server import BatchServer
from tests.support.notebooks import messages_of

CELL = "%%nano --map rows --batch --out labels -m gpt-4.1-nano\nClassify: {item}"
SETUP = "%load_ext nano_magic\n%config NanoMagics.cache_path = {path!r}\nrows = [f'row {{i}}' for i in range(20)]"


def execute(kc, code: str, timeout: float = 60) -> tuple[dict, str]:
    outputs: list[dict] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
    shown = "".join(m["content"].get("text", "") or m["content"].get("data", {}).get("text/plain", "")
                    for m in outputs if m["msg_type"] in ("stream", "display_data", "error"))
    shown += "".join("\n".join(m["content"]["traceback"]) for m in outputs if m["msg_type"] == "error")
    return reply, shown


def test_a_batch_submitted_before_a_kernel_restart_is_collected_after_it(tmp_path: Path, monkeypatch) -> None:
    setup = SETUP.format(path=str(tmp_path / "answers.sqlite3"))
    with BatchServer(rate=1, manual=True) as server:
        monkeypatch.setenv("NANO_BASE_URL", server.base_url)
        km, kc = start_new_kernel(kernel_name="python3")
        try:
            execute(kc, setup)
            outputs: list[dict] = []
            msg_id = kc.execute(CELL.replace("--batch", "--batch --wait"))
            deadline = time.monotonic() + 60
            while not server.sent("GET", "/v1/batches/") and time.monotonic() < deadline:
                time.sleep(0.05)
            km.interrupt_kernel()
            reply = kc.get_shell_msg(timeout=20)
            outputs += messages_of(kc, msg_id)
            shown = "".join(m["content"].get("text", "") + m["content"].get("data", {}).get("text/plain", "") for m in outputs)
            assert reply["content"]["status"] == "ok", outputs
            assert "Submitted 1 batch: 20 requests" in shown and "Stopped waiting; the batches keep running" in shown
            assert not server.sent("POST", "/v1/batches/batch-000002/cancel"), "an interrupt leaves the batch running"

            km.restart_kernel(now=True)
            kc.wait_for_ready(timeout=60)
            execute(kc, setup)
            server.advance(5)
            reply, shown = execute(kc, CELL)
            assert reply["content"]["status"] == "ok", shown
            assert "batch-000002: in_progress · 5 completed, 0 failed of 20" in shown and "Not done yet" in shown

            server.advance(60)
            reply, shown = execute(kc, CELL)
            assert reply["content"]["status"] == "ok", shown
            assert "20 of 20 items answered" in shown
            _, shown = execute(kc, "print(labels.tolist() == [f'Answer to: Classify: row {i}' for i in range(20)], type(_nano).__name__)")
            assert shown.split() == ["True", "MapResult"]
            assert len(server.uploads) == 1 and len(server.sent("POST", "/v1/batches")) == 1, "collecting sent nothing again"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
