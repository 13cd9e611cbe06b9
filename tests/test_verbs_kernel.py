"""`--filter`, `--classify` and `--reduce` in a real kernel: interrupt halfway, restart, rerun; only the missing rows go out."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from tests.support.notebooks import messages_of
from tests.support.rate_limited import RateLimitedServer
from tests.test_batch_kernel import execute, printed

SETUP = "%load_ext nano_magic\n%config NanoMagics.cache_path = {path!r}\nrows = [f'row {{i}}' for i in range(300)]"
CELLS = {
    "filter": "%%nano --filter rows --out result -m gpt-4.1-nano\nKeep? {item}",
    "classify": "%%nano --classify rows --labels even,odd --out result -m gpt-4.1-nano\nLabel: {item}",
    "reduce": "%%nano --reduce rows --chunk-tokens 80 --out result -m gpt-4.1-nano\nList:\n- {item}",
}
CHECKS = {
    "filter": "print(result == [f'row {i}' for i in range(0, 300, 2)])",
    "classify": "print(result.tolist() == ['even', 'odd'] * 150 and list(result.cat.categories) == ['even', 'odd'])",
    "reduce": "print(result == 'rows 0-299')",
}


def answer(prompt: str) -> str:
    """Each verb's answer, from the prompt alone; chunks and combines answer with the range of rows they saw."""
    if prompt.startswith(("Keep?", "Label:")):
        n = int(prompt.rsplit(" ", 1)[1])
        return json.dumps({"answer": n % 2 == 0} if prompt.startswith("Keep?") else {"label": ["even", "odd"][n % 2]})
    time.sleep(0.05)
    ranges = re.findall(r"rows (\d+)-(\d+)", prompt)
    if ranges:
        return f"rows {ranges[0][0]}-{ranges[-1][1]}"
    numbers = re.findall(r"^- row (\d+)$", prompt, re.MULTILINE)
    return f"rows {numbers[0]}-{numbers[-1]}"


def chunk_rows(prompts: Iterable[str]) -> list[int]:
    return [int(n) for p in prompts for n in re.findall(r"^- row (\d+)$", p, re.MULTILINE)]


@pytest.mark.parametrize("verb", ["filter", "classify", "reduce"])
def test_an_interrupted_verb_resumes_after_a_kernel_restart(tmp_path: Path, monkeypatch, verb: str) -> None:
    halfway = 150 if verb != "reduce" else 8
    with RateLimitedServer(rate=40 if verb != "reduce" else 8, error_rate=0, cut_rate=0, answer=answer) as server:
        monkeypatch.setenv("NANO_BASE_URL", server.base_url)
        km, kc = start_new_kernel(kernel_name="python3")
        try:
            execute(kc, SETUP.format(path=str(tmp_path / "answers.sqlite3")))
            msg_id = kc.execute(CELLS[verb])
            deadline = time.monotonic() + 60
            while len(server.completed) < halfway and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # the client takes in the answers already sent
            km.interrupt_kernel()
            reply = kc.get_shell_msg(timeout=20)
            outputs = messages_of(kc, msg_id)
            assert reply["content"]["status"] == "error"
            error = next(m["content"]["traceback"] for m in outputs if m["msg_type"] == "error")
            assert len(error) == 1 and error[0].startswith("Stopped by you"), error
            done, total = map(int, re.search(r"([\d,]+) of ([\d,]+) (?:items|chunks) are done", error[0]).groups())
            before = list(server.completed)
            assert halfway // 2 <= done < total

            km.restart_kernel(now=True)
            kc.wait_for_ready(timeout=60)
            execute(kc, SETUP.format(path=str(tmp_path / "answers.sqlite3")))
            reply, outputs = execute(kc, CELLS[verb], timeout=120)
            assert reply["content"]["status"] == "ok", outputs
            again = server.completed[len(before):]
            assert len(set(again)) == len(again), "nothing asked twice"
            if verb == "reduce":
                chunks = [p for p in again if "partial answers" not in p]
                assert len(chunks) == total - done, "only the chunks without an answer were asked"
                assert sorted(chunk_rows(chunks) + chunk_rows(p for p in before if p not in chunks)) == list(range(300))
            else:
                assert len(again) == 300 - done, "only the missing rows were asked"
                assert f"300 of 300 items answered ({done:,} from the cache)" in str(outputs)
            _, shown = execute(kc, CHECKS[verb])
            assert printed(shown).strip() == "True"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
