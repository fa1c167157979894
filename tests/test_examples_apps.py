"""The app examples run as their rules files say (issue 4): examples/ and rules/."""

from __future__ import annotations

from pathlib import Path

import pytest

from sse_client import SSEClient

REPO = Path(__file__).resolve().parent.parent


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
