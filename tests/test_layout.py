"""The package's shape: imports point one way with no cycle, and only the gate opens connections."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import AbstractSet

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nano_magic"
MODULES = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def imports(path: Path, known: AbstractSet[str] = frozenset(MODULES)) -> set[str]:
    """The `known` modules `path` imports anywhere: top level, inside functions, under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nano_magic."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("nano_magic.")}
    return found & known


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = {name: imports(path) for name, path in MODULES.items()}
    assert graph["chat"] and graph["commands"], "the parser sees the imports"
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle_through_an_import_inside_a_function(tmp_path: Path) -> None:
    files = {"one": "from .two import x\n", "two": "def f():\n    from . import one\n", "three": "from .one import x\n"}
    for name, source in files.items():
        (tmp_path / f"{name}.py").write_text(source)
    graph = {name: imports(tmp_path / f"{name}.py", set(files)) for name in files}
    assert cycle(graph) == ["one", "two", "one"]
    del graph["two"], graph["one"]
    assert cycle({**graph, "one": set()}) is None


@pytest.mark.parametrize("layer, below", [
    ("gate", {"chat", "batch", "magics", "cell", "commands", "map_cell", "display", "progress"}),
    ("client", {"gate", "chat", "batch", "magics", "cell", "commands", "map_cell"}),
    ("wire", {"client", "gate", "chat", "batch"}),
    ("chat", {"magics", "cell", "commands", "map_cell"}),
    ("batch", {"chat", "magics", "cell", "commands", "map_cell"}),
    ("verbs", {"chat", "magics", "cell", "commands", "map_cell", "verb_cell", "display", "progress"}),
])
def test_dependencies_point_one_way(layer: str, below: set[str]) -> None:
    assert not imports(MODULES[layer]) & below, f"{layer} imports {imports(MODULES[layer]) & below}"


OPENERS = {"Client", "AsyncClient"}  # client.py's connection pools, and httpx's
HTTPX_CALLS = OPENERS | {"get", "post", "put", "delete", "request", "stream", "HTTPTransport", "AsyncHTTPTransport"}
NETWORK = ("socket", "urllib.request", "http.client", "requests", "aiohttp", "urllib3")


def openers(path: Path) -> list[str]:
    """Where a module could open a connection: constructing a Client or AsyncClient, calling httpx, importing a network library."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in OPENERS:
                found.append(f"constructs {func.id}")
            elif isinstance(func, ast.Attribute) and func.attr in HTTPX_CALLS and isinstance(func.value, ast.Name) and func.value.id in ("httpx", "client"):
                found.append(f"calls {func.value.id}.{func.attr}")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"imports {n}" for n in names if n.startswith(NETWORK)]
    return found


def test_only_the_gate_opens_connections() -> None:
    assert sorted(openers(MODULES["gate"])) == ["constructs AsyncClient", "constructs Client"]
    assert "calls httpx.Client" in openers(MODULES["client"]), "the check sees a construction"
    others = {name: found for name, path in MODULES.items() if name not in ("gate", "client") and (found := openers(path))}
    assert others == {}


def test_every_sending_path_constructs_its_client_in_the_gate(fake, tmp_path, monkeypatch) -> None:
    import inspect

    from nano_magic import Chat, client

    callers: list[str] = []
    for cls in (client.Client, client.AsyncClient):
        original = cls.__init__

        def spy(self, *args, _original=original, **kwargs):
            callers.append(inspect.stack()[1].frame.f_globals["__name__"])
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", spy)
    chat = Chat("fake-model", base_url=fake.base_url)
    chat.ask("Hi")
    chat.models(refresh=True)
    chat.map(["a", "b"], "{item}", cache=False, progress=False)
    assert len(fake.requests) == 4 and set(callers) == {"nano_magic.gate"} and len(callers) >= 2
