"""The app examples run as their rules files say (issue 4): examples/ and rules/."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

from sse_client import SSEClient
from sse_offload.config import load_rules
from sse_offload.endpoints import http_socket_endpoint

REPO = Path(__file__).resolve().parent.parent
RULES = sorted((REPO / "rules").glob("*.ini"))


@pytest.mark.parametrize(
    ("rules", "path", "header"),
    [
        ("wsgi_app.ini", "/whattimeisit", None),
        ("wsgi_app.ini", "/whattimeisit2", ("Foo", "Bar")),
        ("flask.ini", "/events/clock", None),
        ("django_inprocess.ini", "/sse/x/", ("Cache-Control", "no-cache")),
    ],
)
def test_example_streams_the_clock_mule(
    gateway_factory, redis_server, rules: str, path: str, header: tuple[str, str] | None
) -> None:
    # cwd elsewhere: the rules find their files through %d; the mule publishes the clock
    gw = gateway_factory(REPO / "rules" / rules, redis=redis_server.address).start()
    client = SSEClient(gw.port, path)
    assert client.read_head() == 200, client.raw
    assert client.header("Content-Type") == "text/event-stream"
    assert client.header("X-SSE-Channel") is None
    if header is not None:
        assert client.header(header[0]) == header[1]
    (epoch,) = client.read_events(1, timeout=15)
    assert epoch.isdigit()
    client.close()


@pytest.mark.parametrize(
    ("rules", "body"),
    [("wsgi_app.ini", b"Hello World\n"), ("flask.ini", b"Hello from Flask\n"),
     ("django_inprocess.ini", b"Hello from Django\n")],
)
def test_example_serves_pages(gateway_factory, redis_server, rules: str, body: bytes) -> None:
    gw = gateway_factory(REPO / "rules" / rules, redis=redis_server.address).start()
    client = SSEClient(gw.port, "/")
    assert client.read_head() == 200
    client.read_until(lambda c: c.body == body, what="page")


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_the_demo_rules_listen_on_loopback_only(path: Path) -> None:
    # A demo started on a laptop must not serve the network: our rule files name 127.0.0.1
    # (uWSGI's ":9090" means every IPv4 interface).
    value = load_rules(str(path)).option("http-socket")
    assert value is not None
    assert http_socket_endpoint(value).endswith(":interface=127.0.0.1"), value


def _imported_distributions() -> set[str]:
    """The third-party top-level modules examples/ imports (uwsgi is the gateway's own)."""
    found: set[str] = set()
    for path in (REPO / "examples").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            found.update(n.split(".")[0] for n in names)
    return {n for n in found if n not in sys.stdlib_module_names and n != "uwsgi"}


def test_the_examples_extra_installs_what_the_examples_import() -> None:
    # The README's demo install ('.[embedded,examples]') must be enough to run every example
    # app: the Flask and Django ones, and gunicorn for the proxy example.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["examples"]
    names = {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in extra}
    assert _imported_distributions() == {"flask", "django"}
    assert names >= {"flask", "django", "gunicorn"}
    readme = (REPO / "README.md").read_text()
    assert "pip install '.[embedded,examples]'" in readme
