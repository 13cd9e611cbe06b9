"""The test answer every benchmark streams: deterministic Markdown with plenty of LaTeX.

`answer(8000)` is an answer of about 8,000 tokens with about 300 formulas that mixes inline
`$…$` and `\\(…\\)`, display `$$…$$` and `\\[…\\]`, an `aligned` environment, fenced code,
nested bullet and numbered lists, tables, block quotes, headings and a few dollar amounts that
must stay text. `answer(1000)` and `answer(64000)` are shorter and longer answers built the same
way (the first 1,000 tokens of the 8k answer are the 1k answer).

A token here is one chunk as `tests/support/fake_server.py` streams it: a run of non-space
characters with the whitespace after it (regex `\\S+\\s*|\\s+`). So the fake server sends exactly
`len(tokens(answer(n)))` deltas, and every benchmark counts the same deltas. These word chunks
average about 5.5 characters, a little coarser than a real tokenizer's ~4 characters per token;
finer chunks would only make the naive per-token baselines slower.
"""

from __future__ import annotations

import random
import re
from functools import cache

__all__ = ["answer", "tokens", "prefix", "SIZES"]

SIZES = {"1k": 1_000, "8k": 8_000, "64k": 64_000}

CHUNK = re.compile(r"\S+\s*|\s+")  # the fake server's split

_WORDS = (
    "the matrix norm bound holds for every vector and so the estimate converges quickly when "
    "we choose a step size small enough that each update stays stable while the error shrinks "
    "geometrically this follows from the spectral theorem applied to a symmetric operator whose "
    "eigenvalues are real so we may diagonalise it in an orthonormal basis and read off the rate"
).split()
_SYMBOLS = ["x", "y", "z", "t", "u", "v", "w", "k", "n", "m", "\\lambda", "\\theta", "\\mu", "\\sigma", "\\alpha", "\\beta"]
_TITLES = [
    "Setting up the problem", "The key identity", "Convergence", "A worked example", "Error bounds",
    "Eigenvalues", "Gradient descent", "Fourier series", "Probability", "Numerical checks",
]


@cache
def answer(size: int = 8_000, seed: int = 7) -> str:
    """A deterministic answer of `size` tokens or a few more (it ends at a block boundary)."""
    rng = random.Random(seed)
    blocks: list[str] = []
    count = section = 0
    while count < size:
        section += 1
        for block in _section(rng, section):
            blocks.append(block)
            count += len(tokens(block + "\n\n"))
            if count >= size:
                break
    return "\n\n".join(blocks) + "\n"


def tokens(text: str) -> list[str]:
    """`text` split into deltas exactly as the fake server streams it."""
    return CHUNK.findall(text)


def prefix(size: int, full: int = 8_000) -> list[str]:
    """The first `size` tokens of the `full`-token answer."""
    return tokens(answer(full))[:size]


def _section(rng: random.Random, n: int) -> list[str]:
    """One section: a heading and a mix of the block kinds, with a table in every fourth section."""
    blocks = [f"## {n}. {rng.choice(_TITLES)}", _paragraph(rng), _display(rng), _paragraph(rng), _bullets(rng)]
    if n % 4 == 2:
        blocks.append(_table(rng))
    blocks += [_paragraph(rng), _code(rng, n), _numbered(rng), f"### {n}.1 Details", _paragraph(rng), _display(rng)]
    if n % 3 == 0:
        blocks.append("> " + _sentence(rng, 12) + " " + _inline(rng) + ".")
    blocks.append(_paragraph(rng))
    return blocks


def _symbol(rng: random.Random) -> str:
    return rng.choice(_SYMBOLS)


def _formula(rng: random.Random) -> str:
    a, b, c = _symbol(rng), _symbol(rng), rng.randint(2, 9)
    return rng.choice([
        f"{a}^{c} + {b}^{c}",
        f"\\frac{{{a}}}{{{b}+{c}}}",
        f"\\sum_{{i=1}}^{{n}} {a}_i^{c}",
        f"\\int_0^{{{c}}} {a}\\,d{b}",
        f"\\|{a} - {b}\\|_{c} \\le \\epsilon",
        f"\\mathbf{{A}}{a} = \\lambda {a}",
        f"e^{{i{a}}} = \\cos {a} + i\\sin {a}",
        f"\\lim_{{{a} \\to \\infty}} (1 + 1/{a})^{a} = e",
        f"{a}_{{k+1}} = {a}_k - \\eta \\nabla f({a}_k)",
        f"\\mathbb{{E}}[{a}] = \\sum_k k\\,p_k",
    ])


def _inline(rng: random.Random) -> str:
    tex = _formula(rng)
    return f"${tex}$" if rng.random() < 0.7 else f"\\({tex}\\)"


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:]


def _paragraph(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(2, 4)):
        math = f" {_inline(rng)}" if rng.random() < 0.45 else ""
        parts.append(f"{_sentence(rng, rng.randint(6, 12))}{math} {' '.join(rng.choice(_WORDS) for _ in range(4))}.")
    if rng.random() < 0.15:
        parts.append(f"A run costs about ${rng.randint(2, 9)} and a batch of ten about ${rng.randint(20, 90)}.")
    if rng.random() < 0.3:
        parts.append(f"Use **{rng.choice(_WORDS)}** with `step({_symbol(rng).lstrip(chr(92))})` here.")
    return " ".join(parts)


def _display(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.6:
        return f"$$\n{_formula(rng)}\n$$"
    if kind < 0.85:
        return f"\\[\n{_formula(rng)}\n\\]"
    return f"$$\n\\begin{{aligned}}\n{_formula(rng)} &= {_formula(rng)} \\\\\n&\\le {_formula(rng)}\n\\end{{aligned}}\n$$"


def _bullets(rng: random.Random) -> str:
    items = []
    for _ in range(rng.randint(3, 5)):
        items.append(f"- {_sentence(rng, rng.randint(4, 8))}" + (f" {_inline(rng)}" if rng.random() < 0.6 else ""))
        if rng.random() < 0.4:
            items.append(f"  - {_sentence(rng, 5)} {_inline(rng)}")
    return "\n".join(items)


def _numbered(rng: random.Random) -> str:
    items = range(1, rng.randint(3, 5) + 1)
    return "\n".join(f"{i}. {_sentence(rng, rng.randint(4, 9))}" + (f" {_inline(rng)}" if rng.random() < 0.6 else "") for i in items)


def _table(rng: random.Random) -> str:
    rows = ["| method | rate | cost |", "| --- | :---: | ---: |"]
    for _ in range(rng.randint(3, 5)):
        rows.append(f"| {rng.choice(_WORDS)} | ${_formula(rng)}$ | {rng.randint(1, 99)} ms |")
    return "\n".join(rows)


def _code(rng: random.Random, n: int) -> str:
    step = rng.choice(["0.1", "0.01", "1e-3"])
    return (
        "```python\n"
        f"def solve_{n}(A, b, steps={rng.randint(10, 500)}):\n"
        "    x = np.zeros_like(b)\n"
        "    for _ in range(steps):\n"
        f"        x -= {step} * (A @ x - b)  # cost: $O(n^2)$ per step\n"
        "    return x\n"
        "```"
    )
