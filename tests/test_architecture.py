"""The shape of the package, checked: the rules docs/architecture.md states for the layers.

- no import cycle among the package's modules, counting imports inside functions and under
  ``TYPE_CHECKING`` (a cycle hidden that way is still one for the reader);
- no module over 450 lines (one concern per module);
- the pub/sub hub imports nothing from the HTTP side;
- the code and docs cite only files that are in the repository.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "sse_offload"

#: One concern per module: past this, a module is doing two things.
MAX_MODULE_LINES = 450

#: The hub's modules: the pub/sub hub, what it and the stream layer share, and Redis Cluster
#: support (a cluster is one more kind of server the hub holds: its slot map, its node
#: connections, its channels that wait), over the Redis modules below them.
HUB_MODULES = {
    "sse_offload.pubsub", "sse_offload.hub_types", "sse_offload.cluster",
    "sse_offload.cluster_outages", "sse_offload.cluster_probe", "sse_offload.cluster_topology",
    "sse_offload.cluster_state", "sse_offload.cluster_commands",
}
#: What the hub's modules may import from the package: each other, Redis addresses and
#: connections (a Sentinel address's endpoint among them), RESP, timers. Nothing that knows
#: HTTP, streams, rules or processes.
HUB_MAY_IMPORT = HUB_MODULES | {
    "sse_offload.redis_address", "sse_offload.redis_protocol", "sse_offload.redis_link",
    "sse_offload.resp", "sse_offload.sentinel", "sse_offload.sentinel_watch",
    "sse_offload.timers",
}


#: What the Sentinel support may import from the package: it sits below the hub's Redis
#: connection (redis_protocol.client_endpoint returns its endpoint), so it knows Redis
#: addresses, RESP and timers, and nothing of the hub, HTTP, streams, rules or processes.
SENTINEL_MAY_IMPORT = {
    "sse_offload.redis_address", "sse_offload.resp", "sse_offload.sentinel_watch",
    "sse_offload.timers",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _package_of(name: str, path: Path) -> list[str]:
    parts = name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every package module ``name`` imports, anywhere in the file."""
    package = _package_of(name, path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            candidates = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in known and c != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(import_graph()) == []


def test_no_module_is_over_the_line_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_hub_imports_nothing_from_the_http_side() -> None:
    graph = import_graph()
    beyond = {m: sorted(graph[m] - HUB_MAY_IMPORT) for m in HUB_MAY_IMPORT}
    assert {m: found for m, found in beyond.items() if found} == {}


def test_the_sentinel_support_knows_only_redis() -> None:
    graph = import_graph()
    for module in ("sse_offload.sentinel", "sse_offload.sentinel_watch", "sse_offload.resp"):
        assert graph[module] <= SENTINEL_MAY_IMPORT, module


#: Documents that are not in the repository: earlier drafts cited them.
_OUTSIDE = re.compile(r"DESIGN[ ]§|libraries\.md|seed-behaviour|\.\./shared")


@pytest.mark.parametrize("top", ["src", "docs", "README.md", "tests", "benchmarks", "examples"])
def test_nothing_cites_a_document_outside_the_repository(top: str) -> None:
    base = ROOT / top
    files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
    hits = []
    for path in files:
        if path == Path(__file__) or path.suffix in (".pyc", ".png"):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == []
