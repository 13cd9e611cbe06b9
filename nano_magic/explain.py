"""`%nano explain`: the notebook's last error as a one-shot question, with every known secret masked."""

from __future__ import annotations

import linecache
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .config import mask
from .context import fence_for

__all__ = ["LastError", "INSTRUCTION", "CODE_INSTRUCTION", "NO_ERROR", "last_error", "env_secrets", "masked"]

INSTRUCTION = (
    "A notebook cell failed. Explain the cause of the error in plain words for a student, "
    "then propose a fix."
)
CODE_INSTRUCTION = INSTRUCTION + " End with the whole corrected cell in a single ```python code block."
NO_ERROR = "No error yet in this session: `%nano explain` explains the last error a cell raised."
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|PRIVATE|SIGNATURE", re.I)
MIN_SECRET_LENGTH = 8  # shorter values (flags, ports, "1") are not credentials, and masking them would garble the text


@dataclass(frozen=True)
class LastError:
    """The last exception a cell raised: its type and message, the frames in notebook cells, and the failing cell."""

    kind: str
    message: str
    frames: list[traceback.FrameSummary]
    cells: dict[str, int]
    source: str | None

    def prompt(self) -> str:
        """The error as the question's text."""
        error = f"{self.kind}: {self.message}" if self.message else self.kind
        parts = [f"The cell failed with this error:\n{_fenced(error, 'text')}"]
        if self.frames:
            lines = "\n".join(f"{self._label(f.filename)}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}" for f in self.frames)
            parts.append(f"Traceback frames in the notebook's cells, most recent last:\n{_fenced(lines, 'text')}")
        if self.source is not None:
            parts.append(f"The failing cell ({self._label(self.frames[-1].filename)}):\n{_fenced(self.source, 'python')}")
        return "\n\n".join(parts)

    def _label(self, filename: str) -> str:
        return f"In [{self.cells[filename]}]"


def last_error(shell: Any) -> LastError | None:
    """The last error IPython showed for a cell, or None before the first one."""
    value = getattr(sys, "last_value", None)
    if not isinstance(value, BaseException):
        return None
    cells: dict[str, int] = dict(getattr(shell.compile, "_filename_map", {}))
    frames = [f for f in traceback.extract_tb(value.__traceback__) if f.filename in cells]
    if isinstance(value, SyntaxError) and value.filename in cells:
        frames.append(traceback.FrameSummary(value.filename, value.lineno or 0, "<cell>", line=value.text or ""))
    source = _cell_source(shell, frames[-1].filename, cells) if frames else None
    kind = type(value).__qualname__
    if type(value).__module__ not in ("builtins", "__main__"):  # named as the traceback names it, so its prefix comes off
        kind = f"{type(value).__module__}.{kind}"
    message = "".join(traceback.format_exception_only(type(value), value)).strip().removeprefix(kind).removeprefix(":").strip()
    return LastError(kind, message, frames, cells, source)


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
    """`text` with every secret shown only as its mask; longer secrets first, so a secret inside another goes too."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, mask(secret))
    return text


def _fenced(text: str, language: str) -> str:
    fence = fence_for(text)
    return f"{fence}{language}\n{text}\n{fence}"
