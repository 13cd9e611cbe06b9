"""Row 2: what `%load_ext nano_magic` adds to starting IPython, in fresh interpreters.

Each child process times, from inside, `import IPython` and
`InteractiveShell.instance()`, then (in half of the children) `%load_ext nano_magic`, and
reports CPU and wall time plus which heavy modules the extension pulled in. The row shows the
median time of `%load_ext` itself, timed inside the children that ran it, and the difference
between the medians of whole runs with and without it (that one carries the noise of two
~250 ms runs); the children alternate so that machine noise falls on both sides.

    python -m benchmarks.imports
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.table import Row, emit, median

CHILDREN = 7
HEAVY = ("ipywidgets", "markdown_it", "mdformat", "mdit_py_plugins", "nh3", "httpx")
CHILD = f"""
import json, sys, time
wall, cpu = time.perf_counter(), time.process_time()
import IPython
imported = time.perf_counter() - wall, time.process_time() - cpu
ip = IPython.core.interactiveshell.InteractiveShell.instance()
shell = time.perf_counter(), time.process_time()
if sys.argv[1] == "load":
    ip.run_line_magic("load_ext", "nano_magic")
end = time.perf_counter(), time.process_time()
heavy = [name for name in {HEAVY!r} if name in sys.modules]
print(json.dumps({{
    "import_wall": imported[0], "import_cpu": imported[1], "wall": end[0] - wall, "cpu": end[1] - cpu,
    "load_wall": end[0] - shell[0], "load_cpu": end[1] - shell[1], "heavy": heavy,
}}))
"""


def child(load: bool) -> dict:
    """One fresh interpreter's timings."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "load" if load else "plain"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure() -> list[Row]:
    """The extension's cost and IPython's own, in milliseconds."""
    loaded, plain = [], []
    for _ in range(CHILDREN):
        loaded.append(child(load=True))
        plain.append(child(load=False))
    load_cpu = median([r["load_cpu"] for r in loaded])
    load_wall = median([r["load_wall"] for r in loaded])
    difference = median([r["cpu"] for r in loaded]) - median([r["cpu"] for r in plain])
    ipython_cpu = median([r["import_cpu"] for r in plain])
    ipython_wall = median([r["import_wall"] for r in plain])
    heavy = sorted({name for r in loaded for name in r["heavy"]})
    pulled = "/".join(HEAVY) + (f": {', '.join(heavy)} loaded" if heavy else " not loaded")
    return [Row(
        f"2. %load_ext nano_magic, {CHILDREN}+{CHILDREN} fresh processes",
        f"{load_cpu * 1000:.1f} ms CPU ({load_wall * 1000:.1f} ms wall; with − without {difference * 1000:.0f} ms); {pulled}",
        f"import IPython: {ipython_cpu * 1000:.0f} ms CPU ({ipython_wall * 1000:.0f} ms wall)",
        f"{load_cpu / ipython_cpu:.3f}", "< 50 ms, none of them loaded", max(load_cpu, difference) < 0.05 and not heavy,
    )]


if __name__ == "__main__":
    emit(measure())
