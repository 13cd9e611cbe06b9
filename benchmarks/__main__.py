"""`python -m benchmarks`: run every benchmark, each in a fresh interpreter, and print one table.

Progress goes to stderr; the table goes to stdout. A benchmark that fails still gets a row,
which says why it could not be measured.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.table import Row, print_table

MODULES = ["sse", "imports", "view_cpu", "kernel", "latency", "scale", "reuse", "batch", "gate", "batch_api", "verbs", "tools", "adversarial", "images", "browser", "browser_cost"]
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 900


def run(module: str) -> list[Row]:
    """The rows one benchmark module prints with `--json`."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{module}", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return [Row(f"benchmarks.{module}", f"not measured: no result within {TIMEOUT} s", "", "", "")]
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [Row(f"benchmarks.{module}", f"not measured: {last}", "", "", "")]
    return [Row(**json.loads(line)) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    """Run the modules in turn and print the table."""
    started = time.perf_counter()
    rows: list[Row] = []
    for module in MODULES:
        began = time.perf_counter()
        print(f"benchmarks.{module} ...", end=" ", file=sys.stderr, flush=True)
        rows += run(module)
        print(f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    print_table(rows)
    machine = f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    print(f"\n{len(rows)} rows in {time.perf_counter() - started:.0f} s (wall) on {machine}")


if __name__ == "__main__":
    main()
