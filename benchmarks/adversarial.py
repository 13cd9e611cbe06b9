"""Row 12: hostile shapes of answer cost no more than a benign answer of the same length.

A model can be steered to write anything, so answers shaped to hit a parser's worst case are measured
next to a benign answer of the same length (12,000 characters of `benchmarks.answer`):
  `$a ` repeated            4,000 openers of inline math, none closed;
  price table               a 400-row table of `| thing 7 | $7.20 | $14.40 |` rows, no blank line;
  backticks                 runs of one and two backticks that never pair;
  unclosed fence            one fence opened at the top, 12k characters of code after it;
  deep list                 a list nested 30 levels deep, no blank line;
  deep quotes               `>` quotes nested up to 40 deep;
  blocked TeX               formulas full of `\\href`, `\\class`, `\\def`, shown as text;
  placeholders and CRs      `@@1@@`, `\\\\(`, `www.` and URLs, lines ending in a bare `\\r`;
  punctuation               nothing but ASCII punctuation, every mark escaped in the Markdown.
Each is a `%%nano --once` cell in a real kernel (`benchmarks.kernel.Kernel`), the fake server streaming it
at PACE deltas/s so that the view refreshes ~10 times a second as it grows: kernel CPU (psutil), median of
REPEATS. Target: each within 2× of the benign answer.

Then, in this process, the final Markdown and the HTML of 20,000-character versions of the same answers
(`to_markdown` + `to_html`, CPU time): the worst of them against 0.5 s.

    python -m benchmarks.adversarial
"""

from __future__ import annotations

import time

from benchmarks.answer import answer
from benchmarks.kernel import SETUP, Kernel
from benchmarks.table import Row, cpu, emit, median
from tests.support.fake_server import FakeServer

PACE = 600.0  # deltas per second: a fast model
REPEATS = 3
NANO = "%%nano --once\nAnswer."


def shapes(length: int) -> dict[str, str]:
    """The benign answer and each hostile one, `length` characters long."""
    def fill(unit: str, head: str = "") -> str:
        return (head + unit * (length // len(unit) + 1))[:length]

    return {
        "benign": answer(length // 3)[:length],
        "`$a ` repeated": fill("$a "),
        "price table": fill("| thing 7 | $7.20 | $14.40 |\n", "| thing | price | twice |\n| --- | --- | --- |\n"),
        "backticks": fill("x ` y `` z "),
        "unclosed fence": fill("    total = price * 2  # $7.20 <b>\n", "```python\n"),
        "deep list": "".join("  " * (i % 30) + "- item $x_1$ and more\n" for i in range(length // 40))[:length],
        "deep quotes": "".join(">" * (i % 40) + " quoted $y$ text\n" for i in range(length // 40))[:length],
        "blocked TeX": fill("$\\href{javascript:1}{x}\\class{a}{b}\\def\\c{d}$ and "),
        "placeholders and CRs": fill("@@1@@ \\\\( www.example.com http://a.b/c\r"),
        "punctuation": fill("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ "),
    }


def measure() -> list[Row]:
    """Kernel CPU per answer shape, and the final render of each at 20k characters."""
    answers = shapes(12_000)
    figures: dict[str, float] = {}
    with FakeServer() as fake:
        fake.chunk_delay = 1 / PACE
        kernel = Kernel(fake.base_url)
        try:
            kernel.run(SETUP)
            fake.reply = answers["benign"]
            kernel.run(NANO)  # warm-up: imports and first-use caches
            for name, text in answers.items():
                fake.reply = text
                figures[name] = median([kernel.run(NANO).cpu for _ in range(REPEATS)])
        finally:
            kernel.close()
    benign = figures.pop("benign")
    rows = [
        Row(f"12. adversarial 12k-char answer, real kernel at {PACE:.0f} deltas/s: {name}", cpu(seconds),
            f"benign answer, same length: {cpu(benign)}", f"{seconds / benign:.2f}", "≤ 2 × benign", seconds <= 2 * benign)
        for name, seconds in figures.items()
    ]
    return rows + [final_render()]


def final_render() -> Row:
    """`to_markdown` + `to_html` of each 20k-character shape: the slowest against 0.5 s."""
    from nano_magic.render import to_html, to_markdown

    costs = {}
    for name, text in shapes(20_000).items():
        to_markdown(text[:1000])
        to_html(text[:1000])  # imports and first-use caches (pygments and its lexers) are not render costs
        started = time.process_time()
        to_markdown(text)
        to_html(text)
        costs[name] = time.process_time() - started
    benign = costs.pop("benign")
    worst = max(costs, key=costs.__getitem__)
    return Row("12. final Markdown + HTML of a 20k-char answer: the slowest adversarial shape", f"{cpu(costs[worst])} ({worst})",
               f"benign: {cpu(benign)}", f"{costs[worst] / benign:.2f}", "< 0.5 s", costs[worst] < 0.5)


if __name__ == "__main__":
    emit(measure())
