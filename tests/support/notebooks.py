"""Run notebooks in a real kernel the way JupyterLab does: each execute request carries its cell's id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.util import run_sync


class CellIdClient(NotebookClient):
    """An nbclient that puts `cellId` in each execute request's metadata, as JupyterLab 4 does."""

    _cell_id: str | None = None

    async def async_execute_cell(self, cell: Any, cell_index: int, execution_count: int | None = None, store_history: bool = True) -> Any:
        self._cell_id = cell.get("id")
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    async def async_start_new_kernel_client(self) -> Any:
        kc = await super().async_start_new_kernel_client()

        def execute(code: str, silent: bool = False, store_history: bool = True, user_expressions: Any = None,
                    allow_stdin: Any = None, stop_on_error: bool = True) -> str:
            content = {"code": code, "silent": silent, "store_history": store_history,
                       "user_expressions": user_expressions or {}, "allow_stdin": False, "stop_on_error": stop_on_error}
            msg = kc.session.msg("execute_request", content, metadata={"cellId": self._cell_id})
            kc.shell_channel.send(msg)
            return msg["header"]["msg_id"]

        kc.execute = execute
        return kc

    execute_cell = run_sync(async_execute_cell)
    start_new_kernel_client = run_sync(async_start_new_kernel_client)


def notebook(*sources: str) -> nbformat.NotebookNode:
    """A notebook of code cells, each with its own id."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    return nb


def run_notebook(nb: nbformat.NotebookNode, cwd: Path, allow_errors: bool = False,
                 on_cell_executed: Callable[..., None] | None = None) -> nbformat.NotebookNode:
    """Execute every cell in a fresh kernel; return the notebook with its outputs.

    `on_cell_executed(cell=, cell_index=, execute_reply=)` sees each reply, payloads included.
    """
    CellIdClient(nb, timeout=120, kernel_name="python3", allow_errors=allow_errors, on_cell_executed=on_cell_executed,
                 resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def answers(cell: Any) -> list[Any]:
    """The saved answer outputs of a cell: display_data carrying nano_magic metadata."""
    return [o for o in cell.outputs if o.output_type == "display_data" and "nano_magic" in o.get("metadata", {})]


def messages_of(kc: Any, msg_id: str, timeout: float = 10) -> list[dict[str, Any]]:
    """The IOPub messages of one execute request, up to its idle status."""
    messages: list[dict[str, Any]] = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id:
            messages.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return messages
