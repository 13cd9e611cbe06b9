"""Row 4: a `%%nano` cell in a real ipykernel process, against reading the same stream bare.

A python3 kernel is started with jupyter_client, with `NANO_BASE_URL` pointing at a
`FakeServer` in this process that streams the 8k-token answer (chunk_delay 0 unless stated).
For each cell the figures are the kernel process's CPU seconds (psutil, user + system, all its
threads) from sending `execute_request` to its `idle` status, and the bytes of every IOPub
message in that window, counted as the raw ZMQ frames the client receives.

Cells compared:
  ours  `%%nano --once` (auto display, so the widget view);
  (a)   the same request read with a kept-alive `httpx.Client`: `for _ in r.iter_bytes(): pass`;
  (b)   naive display: `Chat.ask` streaming, and on every delta `to_html` of the whole text so
        far into `DisplayHandle.update` (run on the first 2k tokens only: it is quadratic).
Ours and (a) alternate, 5 runs each (ours warm: a first cell has paid the imports), then once more
with the server pacing the 8k answer at 150 deltas/s, as a model would, so that the ticker
refreshes ~10 times a second for about a minute; that run gives the IOPub bytes at a real pace
(its CPU is shown too, but paced reads vary a lot from run to run on a shared machine).

    python -m benchmarks.kernel
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil
import zmq
from jupyter_client.manager import KernelManager

from benchmarks.answer import answer, prefix
from benchmarks.table import Row, cpu, emit, median, size
from tests.support.fake_server import FakeServer

PROMPT = "Explain gradient descent, with formulas."
NANO = f"%%nano --once\n{PROMPT}"
SETUP = f"""
%load_ext nano_magic
import os, httpx
BODY = {{"model": "fake-model", "messages": [{{"role": "user", "content": {PROMPT!r}}}],
         "stream": True, "stream_options": {{"include_usage": True}}}}
HTTP = httpx.Client(timeout=None)
"""
BARE = """
with HTTP.stream("POST", os.environ["NANO_BASE_URL"] + "/chat/completions", json=BODY) as r:
    for _ in r.iter_bytes():
        pass
"""
NAIVE = f"""
from IPython.display import HTML, display
from nano_magic import Chat
from nano_magic.render import to_html
handle = display(HTML(""), display_id=True)
parts = []
def show(delta):
    parts.append(delta)
    handle.update(HTML(to_html("".join(parts))))
Chat().ask({PROMPT!r}, show, once=True)
"""
PACED_RATE = 150.0  # deltas per second for the paced run
REPEATS = 5


@dataclass
class Cell:
    """What one cell cost the kernel."""

    cpu: float
    bytes: int
    messages: int


class Kernel:
    """A python3 kernel process and a client that counts its IOPub frames."""

    def __init__(self, base_url: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("VSCODE_PID", "NANO_API_KEY")}
        env.update(NANO_BASE_URL=base_url, NANO_MODEL="fake-model", PYDEVD_DISABLE_FILE_VALIDATION="1")
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.process = psutil.Process(self.manager.provisioner.process.pid)
        self.iopub = self.client.iopub_channel.socket

    def run(self, code: str) -> Cell:
        """Execute `code`; its kernel CPU and the IOPub traffic until the kernel is idle again."""
        self._drain()
        before = self.process.cpu_times()
        msg_id = self.client.execute(code)
        total = messages = 0
        while True:
            if not self.iopub.poll(120_000):
                raise TimeoutError("the kernel went quiet")
            frames = self.iopub.recv_multipart()
            total += sum(len(frame) for frame in frames)
            messages += 1
            _, parts = self.client.session.feed_identities(frames)
            msg = self.client.session.deserialize(parts)
            if msg["msg_type"] == "error":
                raise RuntimeError("\n".join(msg["content"]["traceback"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" and msg["parent_header"].get("msg_id") == msg_id:
                break
        after = self.process.cpu_times()
        self.client.get_shell_msg(timeout=30)
        return Cell(after.user + after.system - before.user - before.system, total, messages)

    def _drain(self) -> None:
        while self.iopub.poll(50):
            self.iopub.recv_multipart(zmq.NOBLOCK)

    def close(self) -> None:
        """Stop the client and the kernel."""
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def measure() -> list[Row]:
    """Kernel CPU and IOPub bytes for ours, (a) and (b), unpaced and at a model's pace."""
    full, short = answer(8_000), "".join(prefix(2_000))
    with FakeServer() as fake:
        kernel = Kernel(fake.base_url)
        try:
            kernel.run(SETUP)
            fake.reply = full
            cold = kernel.run(NANO)
            ours, bare_runs = [], []
            for _ in range(REPEATS):
                ours.append(kernel.run(NANO))
                bare_runs.append(kernel.run(BARE))
            warm, bare = median_cell(ours), median_cell(bare_runs)
            fake.chunk_delay = 1 / PACED_RATE
            started = time.perf_counter()
            paced = kernel.run(NANO)
            paced_wall = time.perf_counter() - started
            fake.reply, fake.chunk_delay = short, 0.0
            ours_short = median_cell([kernel.run(NANO) for _ in range(3)])
            naive = kernel.run(NAIVE)
        finally:
            kernel.close()
    pace = f"at {PACED_RATE:.0f} deltas/s ({paced_wall:.0f} s)"
    return [
        Row(
            f"4. real kernel, %%nano 8k tokens, no delay: kernel CPU (warm, median of {REPEATS})",
            f"{cpu(warm.cpu)} (first cell {cold.cpu:.2f} s)", f"(a) bare httpx read: {cpu(bare.cpu)}",
            f"{warm.cpu / bare.cpu:.3f}", "≤ 1.5 × (a)", warm.cpu <= 1.5 * bare.cpu,
        ),
        Row(
            "4. real kernel, %%nano 8k tokens, no delay: IOPub bytes (raw ZMQ frames)",
            f"{size(warm.bytes)} in {warm.messages} msgs", f"(a): {size(bare.bytes)} in {bare.messages} msgs",
            f"{warm.bytes / bare.bytes:.0f}", "≤ 1 MB", warm.bytes <= 1e6,
        ),
        Row(
            f"4. real kernel, %%nano 8k tokens {pace}: IOPub bytes",
            f"{size(paced.bytes)} in {paced.messages} msgs ({cpu(paced.cpu)})", f"no delay: {size(warm.bytes)}",
            f"{paced.bytes / warm.bytes:.1f}", "≤ 1 MB", paced.bytes <= 1e6,
        ),
        Row(
            "4. real kernel, 2k-token prefix, no delay: kernel CPU, IOPub bytes",
            f"{cpu(ours_short.cpu)}, {size(ours_short.bytes)}", f"(b) naive: {cpu(naive.cpu)}, {size(naive.bytes)}",
            f"1/{naive.cpu / ours_short.cpu:.0f}", "—",
        ),
    ]


def median_cell(cells: list[Cell]) -> Cell:
    """The median of each figure."""
    return Cell(median([c.cpu for c in cells]), int(median([c.bytes for c in cells])), int(median([c.messages for c in cells])))


if __name__ == "__main__":
    emit(measure())
