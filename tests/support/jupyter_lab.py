"""Run a throwaway JupyterLab server for browser tests.

    with jupyter_lab(tmp_path, {"NANO_BASE_URL": server.base_url}) as lab_url:
        page.goto(tree_url(lab_url, "demo.ipynb"))

The server listens on a free 127.0.0.1 port with the fixed token `TOKEN`, opens no browser and
serves `root`. Its config, runtime and user data dirs and the kernels' IPython dir live in a
temporary directory, so nothing from the user's own setup (settings, workspaces, kernelspecs,
startup files) leaks in, while the lab extensions installed in `sys.prefix` (ipywidgets'
`@jupyter-widgets/jupyterlab-manager` among them) are still found. The only kernelspec, `python3`,
runs the current interpreter. News, update checks and the "receive Jupyter news?" toast are
off, notebooks render every cell (no windowing, unless a benchmark asks for JupyterLab's default), and `window.jupyterapp`
is exposed so that tests can run JupyterLab commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from ipykernel.kernelspec import write_kernel_spec

__all__ = ["TOKEN", "jupyter_lab", "tree_url"]

TOKEN = "nano-magic-browser-test"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
QUIET_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
# Where the notebook's windowing mode is set: "none" keeps every cell in the page, so that tests can read and scan
# outputs scrolled out of view.
TRACKER = "@jupyterlab/notebook-extension/tracker.jupyterlab-settings"


def _free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prepare(base: Path, windowing: str) -> dict[str, str]:
    """Create the isolated Jupyter dirs, kernelspec and user settings; return their env vars."""
    dirs = {name: base / name for name in ("config", "data", "runtime", "ipython")}
    for path in dirs.values():
        path.mkdir(parents=True)
    write_kernel_spec(dirs["data"] / "kernels" / "python3")  # argv[0] is sys.executable
    for name, settings in {**QUIET_SETTINGS, TRACKER: {"windowingMode": windowing}}.items():
        target = dirs["config"] / "lab" / "user-settings" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings))
    return {
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "IPYTHONDIR": str(dirs["ipython"]),
    }


def _log_tail(log_path: Path, lines: int = 40) -> str:
    """Return the last lines of the server log."""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(proc: subprocess.Popen[bytes], root_url: str, log_path: Path) -> None:
    """Poll /api/status until it answers 200; raise with the log tail if the server dies or hangs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    headers = {"Authorization": f"token {TOKEN}"}
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{_log_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{root_url}/api/status", headers=headers, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"jupyter lab not ready in {STARTUP_TIMEOUT}s:\n{_log_tail(log_path)}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes], root_url: str) -> None:
    """Shut the server down through its API (it stops its kernels), then by signal if need be."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{root_url}/api/shutdown", headers={"Authorization": f"token {TOKEN}"}, timeout=5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            proc.wait(STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
    proc.wait()


def _kill_stray_kernels(runtime_dir: Path) -> None:
    """Kill kernels still running on a connection file of `runtime_dir` (only after a hard kill)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(runtime_dir) in cmdline.read_bytes().decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)


@contextlib.contextmanager
def jupyter_lab(root: Path, env: dict[str, str], windowing: str = "none") -> Iterator[str]:
    """Serve `root` with JupyterLab; yield `http://127.0.0.1:PORT/lab?token=TOKEN` once it answers.

    `env` is added to the server's environment, so kernels inherit it too. `windowing` is the notebook's
    windowing mode: "none" keeps every cell in the page; "contentVisibility" is JupyterLab's default. On exit
    the server and its kernels are stopped and the temporary dirs removed.
    """
    port = _free_port()
    root_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="nano-lab-") as tmp:
        base = Path(tmp)
        dirs = _prepare(base, windowing)
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}",
            "--allow-root", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
            "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
        ]
        log_path = base / "lab.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, env={**os.environ, **dirs, **env}, cwd=root, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            _wait_ready(proc, root_url, log_path)
            yield f"{root_url}/lab?token={TOKEN}"
        finally:
            _stop(proc, root_url)
            _kill_stray_kernels(Path(dirs["JUPYTER_RUNTIME_DIR"]))


def tree_url(lab_url: str, path: str) -> str:
    """The URL that opens `path` (relative to the server root) in the lab at `lab_url`."""
    base, _, query = lab_url.partition("?")
    return f"{base}/tree/{path}?{query}"
