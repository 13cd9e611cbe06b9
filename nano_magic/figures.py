"""The last figure a cell left open, kept for `--image _` before the inline backend closes it."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["LAST_FIGURE", "FigureKeeper"]


class FigureKeeper:
    """A post_execute callback holding the last open figure: the inline backend shows, then closes, every figure after a cell."""

    def __init__(self) -> None:
        self.last: Any = None

    def __call__(self, *args: Any) -> None:
        helpers = sys.modules.get("matplotlib._pylab_helpers")  # only when matplotlib is in use: never imported here
        managers = helpers.Gcf.get_all_fig_managers() if helpers is not None else []
        if managers:
            self.last = managers[-1].canvas.figure


LAST_FIGURE = FigureKeeper()
