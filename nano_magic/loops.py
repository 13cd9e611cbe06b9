"""Running a coroutine to its end from synchronous code, even inside a running event loop (ipykernel's)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["on_worker_loop"]

T = TypeVar("T")


def on_worker_loop(make: Callable[[], Coroutine[Any, Any, T]], name: str = "nano-worker") -> T:
    """Run a coroutine on a new loop in a worker thread while this thread waits; Ctrl-C cancels its tasks and waits for their end.

    A coroutine that handles the cancel and returns gives its result; one that ends cancelled raises KeyboardInterrupt here.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    future = asyncio.run_coroutine_threadsafe(make(), loop)
    interrupted = False
    try:
        while True:
            try:
                return future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                continue
            except concurrent.futures.CancelledError:
                if interrupted:
                    raise KeyboardInterrupt from None
                raise
            except KeyboardInterrupt:
                interrupted = True
                loop.call_soon_threadsafe(_cancel_all, loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()
