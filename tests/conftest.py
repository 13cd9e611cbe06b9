"""Shared fixtures: the loopback fake server, an in-process IPython shell, llama.cpp's server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from tests.support.fake_server import FakeServer
from tests.support.tiktoken_offline import use_offline_o200k

BACKEND_VARIABLES = (
    "NANO_BASE_URL", "NANO_API_KEY", "NANO_MODEL", "OPENAI_API_KEY",
    "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_GATEWAY_ID",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own credentials."""
    for name in BACKEND_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def offline_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """tiktoken finds o200k_base in a local cache (from the bpe-openai wheel), here and in kernels the tests start."""
    return use_offline_o200k(tmp_path_factory.getbasetemp() / "tiktoken")


@pytest.fixture(scope="session")
def server_session() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake(server_session: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """A fresh loopback OpenAI-compatible server that NANO_BASE_URL points to."""
    server_session.reset()
    monkeypatch.setenv("NANO_BASE_URL", server_session.base_url)
    return server_session


@pytest.fixture(scope="session")
def _shell():
    shell = start_ipython()
    shell.run_line_magic("load_ext", "nano_magic")
    return shell


@pytest.fixture
def ip(_shell, fake: FakeServer, tmp_path: Path):
    """The in-process IPython shell with nano_magic loaded, fresh state, pointed at the fake server."""
    magics = _shell.magics_manager.registry["NanoMagics"]
    if magics._chat is not None:
        magics._chat.close()
    magics._chat = None
    for name, trait in magics.traits(config=True).items():
        setattr(magics, name, trait.default())  # default(), not default_value: a Dict trait keeps the latter Undefined
    magics.max_retries = 0
    magics.cache_path = str(tmp_path / "answers.sqlite3")
    for name in ("_nano", "answer", "_nano_test"):
        _shell.user_ns.pop(name, None)
    return _shell


class CellRun:
    """What a user sees after running a cell: printed text, errors and rich outputs."""

    def __init__(self, shell, source: str) -> None:
        with capture_output() as captured:
            self.result = shell.run_cell(source)
        self.stdout = captured.stdout
        self.stderr = captured.stderr
        self.outputs = captured.outputs
        self.failed = not self.result.success

    @property
    def shown(self) -> str:
        """All the text the user sees."""
        rich = "\n".join(str(o.data.get("text/markdown", o.data.get("text/plain", ""))) for o in self.outputs)
        return "\n".join([self.stdout, self.stderr, rich])


@pytest.fixture
def run(ip):
    """Run a cell in the shell and capture what the user would see."""
    return lambda source: CellRun(ip, source)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama as a GGUF file, built offline."""
    from tests.support.tiny_model import build_tiny_model

    cache = Path(os.environ.get("NANO_TEST_MODEL_DIR", tmp_path_factory.mktemp("model")))
    return build_tiny_model(cache / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def llama_server(tiny_model: Path) -> Iterator[tuple[str, str]]:
    """llama.cpp's server (llama-cpp-python) on loopback with the tiny model: (base_url, model id)."""
    from tests.support.real_server import llama_serve

    with llama_serve(tiny_model) as found:
        yield found


@pytest.fixture
def real(ip, llama_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch):
    """The in-process shell pointed at llama.cpp's server and its tiny model."""
    base_url, model = llama_server
    monkeypatch.setenv("NANO_BASE_URL", base_url)
    monkeypatch.setenv("NANO_MODEL", model)
    return ip
