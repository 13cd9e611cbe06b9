"""Rows of figures, the one table they print as, and the small statistics every benchmark uses."""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass

__all__ = ["Row", "median", "percentile", "emit", "print_table", "cpu", "ms", "size"]


@dataclass
class Row:
    """One line of the table: what was measured, our figure, the baseline's, their ratio, the target.

    `met` says whether our figure reaches the target (None: no target); it is shown, never asserted.
    """

    what: str
    ours: str
    baseline: str
    ratio: str
    target: str
    met: bool | None = None

    def cells(self) -> list[str]:
        """The five printed cells; the target carries a met / MISSED mark."""
        mark = {True: " (met)", False: " (MISSED)", None: ""}[self.met]
        return [self.what, self.ours, self.baseline, self.ratio, self.target + mark]


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), by linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cpu(seconds: float) -> str:
    """CPU seconds, to three significant figures."""
    return f"{seconds:.3g} s CPU"


def ms(seconds: float) -> str:
    """Seconds shown as milliseconds."""
    return f"{seconds * 1000:.1f} ms"


def size(nbytes: float) -> str:
    """A byte count in KB or MB (powers of 1000)."""
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.2f} MB"
    return f"{nbytes / 1e3:.1f} KB"


def emit(rows: list[Row]) -> None:
    """Print the rows: as JSON lines with `--json` (for `python -m benchmarks`), else as a table."""
    if "--json" in sys.argv:
        for row in rows:
            print(json.dumps(asdict(row)))
    else:
        print_table(rows)


def print_table(rows: list[Row]) -> None:
    """A plain-text table with one line per row, columns padded to fit."""
    header = Row("what", "ours", "baseline (same run)", "ratio", "target")
    lines = [row.cells() for row in [header, *rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    for n, line in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))
