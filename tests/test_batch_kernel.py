"""`%%nano --map` in a real kernel: interrupt halfway, restart the kernel, rerun; only the missing rows go out."""

from __future__ import annotations

import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

from tests.support.notebooks import messages_of
from tests.support.rate_limited import RateLimitedServer

CELL = "%%nano --map rows --out labels -m gpt-4.1-nano\nClassify: {item}"
SETUP = "%load_ext nano_magic\n%config NanoMagics.cache_path = {path!r}\nrows = [f'row {{i}}' for i in range(300)]"


def execute(kc, code: str, timeout: float = 60) -> tuple[dict, list[dict]]:
    outputs: list[dict] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
    return reply, outputs


def printed(outputs: list[dict]) -> str:
    return "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")


def test_an_interrupted_map_resumes_after_a_kernel_restart(tmp_path: Path, monkeypatch) -> None:
    with RateLimitedServer(rate=40, error_rate=0, cut_rate=0) as server:
        monkeypatch.setenv("NANO_BASE_URL", server.base_url)
        km, kc = start_new_kernel(kernel_name="python3")
        try:
            execute(kc, SETUP.format(path=str(tmp_path / "answers.sqlite3")))
            msg_id = kc.execute(CELL)
            deadline = time.monotonic() + 60
            while len(server.completed) < 150 and time.monotonic() < deadline:
                time.sleep(0.02)
            km.interrupt_kernel()
            interrupted = time.monotonic()
            reply = kc.get_shell_msg(timeout=20)
            stopped_after = time.monotonic() - interrupted
            outputs = messages_of(kc, msg_id)
            assert reply["content"]["status"] == "error" and stopped_after < 2
            error = next(m["content"]["traceback"] for m in outputs if m["msg_type"] == "error")
            assert len(error) == 1 and error[0].startswith("Stopped by you: ") and "of 300 items are done" in error[0]
            done = int(error[0].split()[3].replace(",", ""))
            assert 100 <= done < 300
            swapped = [m for m in outputs if m["msg_type"] == "update_display_data"]
            assert swapped and "of 300 items answered" in swapped[-1]["content"]["data"]["text/plain"], "the bar became a summary"
            _, shown = execute(kc, "print(labels.notna().sum(), list(labels.dropna().index) == sorted(labels.dropna().index))")
            assert printed(shown).split() == [str(done), "True"], "the partial --out holds every finished row"
            before = len(server.completed)

            km.restart_kernel(now=True)
            kc.wait_for_ready(timeout=60)
            execute(kc, SETUP.format(path=str(tmp_path / "answers.sqlite3")))
            reply, outputs = execute(kc, CELL)
            assert reply["content"]["status"] == "ok"
            again = server.completed[before:]
            assert len(again) == 300 - done and len(set(again)) == len(again), "only the missing rows were requested"
            assert f"300 of 300 items answered ({done:,} from the cache)" in str(outputs)
            _, shown = execute(kc, "print(labels.tolist() == [f'Answer to: Classify: row {i}' for i in range(300)])")
            assert printed(shown).strip() == "True"
            assert not any("application/vnd.jupyter.widget-view+json" in m["content"].get("data", {})
                           for m in outputs if m["msg_type"] == "update_display_data"), "no widget is left in the output"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
