"""The failures a user sees: each is one plain sentence, never a traceback."""

from __future__ import annotations

import sys
from typing import Any

__all__ = [
    "NanoError", "StreamError", "InternalError", "NoBackend", "CellFailed", "FailureDisplay", "unexpected",
    "OFF_MESSAGE", "TurnedOff", "OverBudget", "BadBudget", "NoSavedAnswer", "BatchUnavailable",
]

OFF_MESSAGE = "nano_magic is turned off on this server"


class NanoError(Exception):
    """A failure explained in one plain sentence; `answer` holds the partial answer when text had arrived."""

    answer: Any = None


class StreamError(NanoError):
    """The answer broke off after it had started; `partial` holds the text that had arrived, when it is known."""

    partial = ""


class InternalError(NanoError):
    """A bug of ours, caught so that the cell still ends cleanly; the original is its `__cause__`."""


class TurnedOff(NanoError):
    """`NANO_MAGIC_DISABLED` is set (an exam server): nothing may be sent."""

    def __init__(self) -> None:
        super().__init__(OFF_MESSAGE)


class OverBudget(NanoError):
    """A request could take spending past the budget cap; nothing was sent."""


class BatchUnavailable(NanoError):
    """`--batch` cannot go to this backend, or the provider refused the submission; said in one line."""


class BadBudget(NanoError):
    """NANO_BUDGET or the budget setting is not a number of dollars: every sending path refuses until it is fixed."""


class NoSavedAnswer(NanoError):
    """Replay is offline and no saved turn matches the request; nothing was sent."""

    def __init__(self) -> None:
        super().__init__(
            "Replay is offline and no saved answer matches this cell (its prompt, thread, earlier turns, "
            "model or options differ); nothing was sent. `%nano replay` without --offline lets it go live."
        )


class NoBackend(Exception):
    """No credentials or base URL were found."""


class CellFailed(Exception):
    """A cell that failed for a reason the user can act on: one message, no traceback."""


def unexpected(exc: BaseException) -> str:
    """One line for an error nobody planned for, naming it without a traceback."""
    detail = " ".join(str(exc).split())[:200]
    what = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return f"nano_magic failed unexpectedly ({what}). This is a bug in nano_magic; please report it."


def _record_last(etype: type, value: BaseException, tb: Any) -> None:
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = value


class FailureDisplay:
    """IPython's handler for CellFailed (its message alone), chained to whichever handler was set before.

    IPython has one `set_custom_exc` slot; other exceptions go on to the earlier handler, and
    `uninstall` puts that handler back.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.previous: tuple[tuple[type[BaseException], ...], Any] = (tuple(shell.custom_exceptions), shell.CustomTB)
        self.installed: tuple[type[BaseException], ...] = ()
        self.active = False

    def install(self) -> None:
        """Take IPython's slot, keeping the earlier exceptions routed to the earlier handler."""
        self.shell.set_custom_exc((CellFailed, *self.previous[0]), self)
        self.installed = self.shell.custom_exceptions
        self.active = True

    def uninstall(self) -> None:
        """Give the slot back; if another handler took it since, only stop handling ours."""
        self.active = False
        if self.shell.custom_exceptions is self.installed:
            self.shell.custom_exceptions, self.shell.CustomTB = self.previous

    def __call__(self, shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str] | None:
        """Show a CellFailed as its message alone; the cell still counts as failed, so Run All stops."""
        if self.active and isinstance(value, CellFailed):
            _record_last(etype, value, tb)  # as IPython's own traceback display does, so `%nano explain` finds this error
            lines = [str(value)]
            shell._showtraceback(etype, value, lines)  # the kernel turns this into an error output without a traceback
            return lines
        exceptions, handler = self.previous
        if exceptions and issubclass(etype, exceptions):
            return handler(etype, value, tb, tb_offset)
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
