"""nano_magic: a `%%nano` cell magic that streams GPT-4.1 nano answers into Jupyter as live Markdown and LaTeX."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

__all__ = ["Answer", "Chat", "NanoMagics", "load_ipython_extension", "unload_ipython_extension"]
__version__ = "0.2.0"

if TYPE_CHECKING:
    from .chat import Answer, Chat
    from .magics import NanoMagics


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nano_magic`: register the magics and the short error display."""
    from .errors import FailureDisplay
    from .magics import NanoMagics

    magics = NanoMagics(shell=ipython)
    ipython.register_magics(magics)
    magics.failures = FailureDisplay(ipython)
    magics.failures.install()
    # First among post_execute callbacks: the inline backend's own (flush_figures) shows and then closes the figures,
    # and `--image _` needs the last of them still open. EventManager has no ordering API, hence the insert.
    from .figures import LAST_FIGURE

    callbacks = ipython.events.callbacks["post_execute"]
    if LAST_FIGURE not in callbacks:
        callbacks.insert(0, LAST_FIGURE)
    # trio < 0.24 warns on import whenever IPython has a custom exception handler, such as ours.
    warnings.filterwarnings("ignore", "IPython detected, but you already have a custom exception handler", RuntimeWarning)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext nano_magic`: close connections and give the error display back to its earlier owner."""
    magics = ipython.magics_manager.registry.pop("NanoMagics", None)
    if magics is not None and magics._chat is not None:
        magics._chat.close()
    if magics is not None and magics.failures is not None:
        magics.failures.uninstall()
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("nano", None)
    from .figures import LAST_FIGURE

    if LAST_FIGURE in ipython.events.callbacks["post_execute"]:
        ipython.events.unregister("post_execute", LAST_FIGURE)


def __getattr__(name: str) -> Any:
    """Import the public API lazily, so that `%load_ext` stays fast."""
    if name in ("Answer", "Chat"):
        from . import chat

        return getattr(chat, name)
    if name == "NanoMagics":
        from .magics import NanoMagics

        return NanoMagics
    raise AttributeError(name)
