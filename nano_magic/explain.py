"""`%nano explain`: the notebook's last error as a one-shot question, with every known secret masked."""

from __future__ import annotations

import linecache
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .config import mask, secret_forms
from .context import fence_for

__all__ = ["LastError", "Link", "INSTRUCTION", "CODE_INSTRUCTION", "NO_ERROR", "last_error", "env_secrets", "masked"]

INSTRUCTION = (
    "A notebook cell failed. Explain the cause of the error in plain words for a student, "
    "then propose a fix."
)
CODE_INSTRUCTION = INSTRUCTION + " End with the whole corrected cell in a single ```python code block."
NO_ERROR = "No error yet in this session: `%nano explain` explains the last error a cell raised."
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|PRIVATE|SIGNATURE", re.I)
MIN_SECRET_LENGTH = 8  # shorter values (flags, ports, "1") are not credentials, and masking them would garble the text


FIRST_FRAMES = 3  # where the error started in the user's code
LAST_FRAMES = 5  # where it was raised: with the first, what a reader needs; a RecursionError has ~1,000 frames in between
MAX_CAUSES = 5  # chained exceptions past this are left out, with a note


@dataclass(frozen=True)
class Link:
    """One exception of a chain: its type and message, and its frames in notebook cells."""

    kind: str
    message: str
    frames: list[traceback.FrameSummary]

    def shown(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


@dataclass(frozen=True)
class LastError:
    """The last exception a cell raised (with its causes, most recent last), the cells it passed through, and the failing cell."""

    chain: list[Link]
    cells: dict[str, int]
    source: str | None
    left_out: int = 0  # causes not shown

    def prompt(self) -> str:
        """The error as the question's text: bounded, whatever the depth of the traceback or the length of the chain."""
        error = self.chain[-1]
        parts = [f"The cell failed with this error:\n{_fenced(error.shown(), 'text')}"]
        if len(self.chain) > 1:
            causes = [f"{link.shown()}" + (f"\n{self._frames(link.frames)}" if link.frames else "") for link in self.chain[:-1]]
            more = [f"({self.left_out} earlier exceptions in the chain are left out.)"] if self.left_out else []
            parts.append("It was caused by, first to last:\n" + _fenced("\n\n".join(more + causes), "text"))
        if error.frames:
            parts.append(f"Traceback frames in the notebook's cells, most recent last:\n{_fenced(self._frames(error.frames), 'text')}")
        last = next((link.frames[-1] for link in reversed(self.chain) if link.frames), None)
        if self.source is not None and last is not None:
            parts.append(f"The failing cell ({self._label(last.filename)}):\n{_fenced(self.source, 'python')}")
        return "\n\n".join(parts)

    def _frames(self, frames: list[traceback.FrameSummary]) -> str:
        def line(f: traceback.FrameSummary) -> str:
            return f"{self._label(f.filename)}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}"

        if len(frames) <= FIRST_FRAMES + LAST_FRAMES:
            return "\n".join(map(line, frames))
        gap = len(frames) - FIRST_FRAMES - LAST_FRAMES
        return "\n".join([*map(line, frames[:FIRST_FRAMES]), f"… {gap:,} frames left out …", *map(line, frames[-LAST_FRAMES:])])

    def _label(self, filename: str) -> str:
        return f"In [{self.cells[filename]}]"


def last_error(shell: Any) -> LastError | None:
    """The last error IPython showed for a cell (nano_magic's own one-line errors too), or None before the first one."""
    value = getattr(sys, "last_value", None)
    if not isinstance(value, BaseException):
        return None
    cells: dict[str, int] = dict(getattr(shell.compile, "_filename_map", {}))
    chain = _chain(value)
    links = [_link(exc, cells) for exc in chain[-(MAX_CAUSES + 1):]]
    frames = [f for link in links for f in link.frames]
    source = _cell_source(shell, frames[-1].filename, cells) if frames else None
    return LastError(links, cells, source, max(0, len(chain) - MAX_CAUSES - 1))


def _chain(value: BaseException) -> list[BaseException]:
    """The exception and what caused it (`raise … from …`, or raised while handling), first cause first."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = value
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain[::-1]


def _link(value: BaseException, cells: Mapping[str, int]) -> Link:
    frames = [f for f in traceback.extract_tb(value.__traceback__) if f.filename in cells]
    if isinstance(value, SyntaxError) and value.filename in cells:
        frames.append(traceback.FrameSummary(str(value.filename), value.lineno or 0, "<cell>", line=value.text or ""))
    kind = type(value).__qualname__
    if type(value).__module__ not in ("builtins", "__main__"):  # named as the traceback names it, so its prefix comes off
        kind = f"{type(value).__module__}.{kind}"
    message = "".join(traceback.format_exception_only(type(value), value)).strip().removeprefix(kind).removeprefix(":").strip()
    return Link(kind, message, frames)


def _cell_source(shell: Any, filename: str, cells: Mapping[str, int]) -> str:
    """The cell as the user typed it (magics and all), from the history; its compiled form when it was not stored."""
    raw = getattr(getattr(shell, "history_manager", None), "input_hist_raw", [])
    number = cells.get(filename, 0)
    if 0 < number < len(raw) and raw[number].strip():
        return raw[number]
    return "".join(linecache.getlines(filename))


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names look like keys, tokens or passwords."""
    return [v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH]


def masked(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret, in every form it can take, shown only as its mask; longer forms first, so a secret inside another goes too."""
    forms = {form: mask(secret) for secret in {s for s in secrets if s} for form in secret_forms(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, forms[form])
    return text


def _fenced(text: str, language: str) -> str:
    fence = fence_for(text)
    return f"{fence}{language}\n{text}\n{fence}"
