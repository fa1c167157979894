"""``auth=jwt`` streams and ``--cors-origins``, end to end: ``twistd -n sse-offload`` in a
subprocess, a real redis-server, real sockets.

A refused stream is checked to subscribe to nothing; a granted one to deliver. The fast
path and twisted.web's path (an HTTP/1.0 request, which the fast path leaves to
twisted.web) must answer alike.
"""

from __future__ import annotations

import http.client
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway_helpers import GatewayProcess, wait_numsub
from redis_helpers import free_port, wait_for
from sse_client import SSEClient

SECRET = "subscribe-secret-" + "k" * 48
PUBLISH_SECRET = "publish-secret-" + "p" * 48
APP = "https://app.example"
APPS = Path(__file__).parent / "apps"

RULES = """\
[uwsgi]
route = ^/private/([a-z0-9.]+)$ sse:subscribe=$1,auth=jwt
route = ^/pattern/([a-z0-9.*]+)$ sse:psubscribe=$1,auth=jwt
route = ^/open/([a-z0-9.]+)$ sse:$1
route = ^/own/ addheader:Access-Control-Allow-Origin: https://own.example
route = ^/own/([a-z0-9.]+)$ sse:$1
"""


#: How late after ``exp`` a stream may close: a timer's lateness on a loaded machine, and
#: the read on this side; a second is far from the per-message or keepalive granularity a
#: broken implementation would show.
CLOSE_MARGIN = 1.5


def token(subscribe: list[str], secret: str = SECRET, algorithm: str = "HS256",
          **claims: Any) -> str:
    return jwt.encode({"sse": {"subscribe": subscribe}, **claims}, secret, algorithm=algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_server):
    """One gateway for the module: a subscribe key, CORS for APP and any other origin, and
    a publish endpoint on ``gw.publish_port``."""
    publish_port = free_port()
    gw = GatewayProcess(
        tmp_path_factory.mktemp("access"), RULES, redis=redis_server.address,
        args=(
            "--subscribe-key", SECRET, "--cors-origins", f"{APP}, *", "--keepalive", "0",
            "--publish", str(publish_port), "--publish-key", PUBLISH_SECRET,
        ),
    )
    gw.start()
    gw.publish_port = publish_port  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def answer(port: int, path: str, *, method: str = "GET", version: str = "HTTP/1.1",
           headers: dict[str, str] | None = None) -> SSEClient:
    """A request whose answer is read to its head (the connection stays open)."""
    client = SSEClient(port, path, method=method, version=version, headers=headers)
    client.read_head()
    return client


def refused(port: int, path: str, headers: dict[str, str] | None = None,
            version: str = "HTTP/1.1") -> SSEClient:
    client = answer(port, path, headers=headers, version=version)
    client.close()
    return client


# -- auth ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"], ids=["fast path", "twisted.web"])
def test_a_stream_without_a_valid_token_is_401(gateway, redis, version: str) -> None:
    cases = {
        "no token": {},
        "bad signature": bearer(token(["guarded"], "w" * 64)),
        "token expired": bearer(token(["guarded"], exp=int(time.time()) - 1)),
        "algorithm not allowed": bearer(token(["guarded"], algorithm="HS512")),
        "malformed token": bearer("not-a-token"),
    }
    for reason, headers in cases.items():
        client = refused(gateway.port, "/private/guarded", headers, version)
        assert client.status == 401, reason
        challenge = client.header("WWW-Authenticate") or ""
        assert challenge.startswith('Bearer realm="sse-offload"'), (reason, challenge)
        if reason == "no token":
            assert "error=" not in challenge
        else:
            assert f'error="invalid_token", error_description="{reason}"' in challenge
    assert redis.numsub("guarded") == 0


def test_a_channel_or_pattern_outside_the_grants_is_403(gateway, redis) -> None:
    client = refused(gateway.port, "/private/guarded", bearer(token(["other", "guarded.*"])))
    assert client.status == 403
    assert 'error="insufficient_scope"' in (client.header("WWW-Authenticate") or "")
    # "news.?" grants one-character names; PSUBSCRIBE news.* would deliver news.long too
    client = refused(gateway.port, "/pattern/news.*", bearer(token(["news.?"])))
    assert client.status == 403
    assert redis.numsub("guarded") == 0
    assert redis.call("PUBSUB", "NUMPAT") == 0


@pytest.mark.parametrize(
    ("channel", "path", "headers"),
    [
        ("header", "/private/{ch}", {"Authorization": "Bearer {tok}"}),
        ("cookie", "/private/{ch}", {"Cookie": "theme=dark; sseAuthorization={tok}"}),
        ("query", "/private/{ch}?lastEventId=&authorization={tok}", {}),
    ],
)
def test_a_good_token_streams_from_each_place(gateway, redis, channel: str, path: str,
                                              headers: dict[str, str]) -> None:
    good = token([channel], exp=int(time.time()) + 600)
    client = SSEClient(
        gateway.port, path.format(ch=channel, tok=good),
        headers={k: v.format(tok=good) for k, v in headers.items()},
    )
    assert client.read_head() == 200
    wait_numsub(redis, channel, 1)
    redis.publish(channel, "granted")
    assert client.read_events(1) == ["granted"]
    client.close()


def test_a_granted_pattern_streams(gateway, redis) -> None:
    client = SSEClient(gateway.port, "/pattern/room.*", headers=bearer(token(["room.*"])))
    assert client.read_head() == 200
    wait_for(lambda: redis.call("PUBSUB", "NUMPAT") == 1, timeout=10, what="the pattern")
    redis.publish("room.7", "in the room")
    assert client.read_events(1) == ["in the room"]
    client.close()
    wait_for(lambda: redis.call("PUBSUB", "NUMPAT") == 0, timeout=10, what="no pattern")


def test_a_stream_closes_at_its_tokens_exp_and_the_reconnect_is_401(gateway, redis) -> None:
    expires = int(time.time()) + 4  # three to four seconds ahead: room to subscribe first
    short = token(["expiring"], exp=expires)
    client = SSEClient(gateway.port, "/private/expiring", headers=bearer(short))
    assert client.read_head() == 200
    wait_numsub(redis, "expiring", 1)
    redis.publish("expiring", "before exp")
    assert client.read_events(1) == ["before exp"]
    client.wait_closed(timeout=expires - time.time() + 5)
    closed_at = time.time()
    assert expires <= closed_at < expires + CLOSE_MARGIN, closed_at - expires
    assert client.body.endswith(b": token expired\n\n")
    client.close()
    wait_numsub(redis, "expiring", 0)
    # What an EventSource does next: the same request, the same token.
    again = refused(gateway.port, "/private/expiring", bearer(short))
    assert again.status == 401
    assert 'error_description="token expired"' in (again.header("WWW-Authenticate") or "")


# -- CORS ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"], ids=["fast path", "twisted.web"])
def test_a_listed_origin_gets_itself_and_credentials(gateway, version: str) -> None:
    client = answer(gateway.port, "/open/cors", version=version, headers={"Origin": APP})
    assert client.status == 200
    assert client.header("Access-Control-Allow-Origin") == APP
    assert client.header("Access-Control-Allow-Credentials") == "true"
    assert client.header("Vary") == "Origin"
    client.close()


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"], ids=["fast path", "twisted.web"])
def test_another_origin_gets_star_without_credentials(gateway, version: str) -> None:
    client = answer(gateway.port, "/open/cors", version=version,
                    headers={"Origin": "https://elsewhere.example"})
    assert client.header("Access-Control-Allow-Origin") == "*"
    assert client.header("Access-Control-Allow-Credentials") is None
    client.close()
    without = answer(gateway.port, "/open/cors", version=version)
    assert without.header("Access-Control-Allow-Origin") is None
    without.close()


def test_a_rules_own_addheader_wins(gateway) -> None:
    client = answer(gateway.port, "/own/cors", headers={"Origin": APP})
    assert client.status == 200
    values = [v for k, v in client.response_headers if k.lower() == "access-control-allow-origin"]
    assert values == ["https://own.example"]
    assert client.header("Access-Control-Allow-Credentials") is None
    client.close()


def test_a_refusal_carries_cors_so_a_page_can_read_it(gateway) -> None:
    client = refused(gateway.port, "/private/guarded", {"Origin": APP})
    assert client.status == 401
    assert client.header("Access-Control-Allow-Origin") == APP


def _options(port: int, path: str, origin: str | None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Access-Control-Request-Method": "GET",
               "Access-Control-Request-Headers": "authorization, last-event-id"}
    if origin is not None:
        headers["Origin"] = origin
    conn.request("OPTIONS", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_a_preflight_of_a_stream_route_is_answered(gateway, redis) -> None:
    response = _options(gateway.port, "/private/guarded", APP)  # no token: not asked for
    assert response.status == 204
    assert response.getheader("Access-Control-Allow-Origin") == APP
    assert response.getheader("Access-Control-Allow-Credentials") == "true"
    assert "GET" in response.getheader("Access-Control-Allow-Methods", "")
    allowed = response.getheader("Access-Control-Allow-Headers", "").lower()
    assert "authorization" in allowed and "last-event-id" in allowed
    assert int(response.getheader("Access-Control-Max-Age", "0")) > 0
    other = _options(gateway.port, "/private/guarded", "https://elsewhere.example")
    assert other.status == 204 and other.getheader("Access-Control-Allow-Origin") == "*"
    assert redis.numsub("guarded") == 0


def test_the_publish_endpoint_answers_cors_too(gateway) -> None:
    port = gateway.publish_port
    wait_for(lambda: _reachable(port), timeout=20, what="the publish listener")
    response = _options(port, "/publish/news", APP)
    assert response.status == 204
    assert response.getheader("Access-Control-Allow-Origin") == APP
    assert "POST" in response.getheader("Access-Control-Allow-Methods", "")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    grant = jwt.encode({"sse": {"publish": ["news"]}}, PUBLISH_SECRET, algorithm="HS256")
    conn.request("POST", "/publish/news", body=b'{"data": "x"}',
                 headers={"Origin": APP, "Authorization": f"Bearer {grant}"})
    posted = conn.getresponse()
    posted.read()
    conn.close()
    assert posted.status == 200
    assert posted.getheader("Access-Control-Allow-Origin") == APP


def _reachable(port: int) -> bool:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
        return True
    except OSError:
        return False


# -- start-up, workers, reload, the app's streams --------------------------------------------

def test_auth_jwt_without_a_key_refuses_to_start(tmp_path, redis_server) -> None:
    gw = GatewayProcess(tmp_path, RULES, redis=redis_server.address)
    status, output = gw.run_to_exit()
    assert status != 0
    lines = [line for line in output.splitlines() if "auth=jwt needs --subscribe-key" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{gw.rules_path}:2:"), output


@pytest.mark.parametrize(
    ("origins", "why"),
    [("app.example", "is not an origin"), ("https://app.example/path", "more than"),
     ("https://*.example", "no wildcards"), (" , ", "no origin given")],
)
def test_malformed_cors_origins_refuse_to_start(tmp_path, redis_server, origins, why) -> None:
    gw = GatewayProcess(tmp_path, "[uwsgi]\nroute = ^/a sse:a\n", redis=redis_server.address,
                        args=("--cors-origins", origins))
    status, output = gw.run_to_exit()
    assert status != 0 and why in output, output


def test_workers_verify_tokens_and_answer_cors(gateway_factory, redis_server, redis) -> None:
    gw = gateway_factory(
        RULES, redis=redis_server.address,
        args=("--processes", "2", "--subscribe-key", SECRET, "--cors-origins", APP),
    ).start()
    good = token(["workers"])
    clients = [SSEClient(gw.port, "/private/workers", headers={**bearer(good), "Origin": APP})
               for _ in range(4)]  # spread over both workers' sockets
    for client in clients:
        assert client.read_head() == 200
        assert client.header("Access-Control-Allow-Origin") == APP
    assert refused(gw.port, "/private/workers").status == 401
    wait_for(lambda: redis.numsub("workers") >= 1, timeout=20, what="a worker's subscription")
    assert _options(gw.port, "/private/workers", "https://elsewhere.example").status == 403
    for client in clients:
        client.close()
    # The key reached the workers, but not through their command lines, which ps shows to
    # every user, nor through the log.
    workers = worker_command_lines(str(gw.rules_path))
    assert len(workers) == 2 and not any(SECRET in line for line in workers)
    assert SECRET not in gw.log()


def worker_command_lines(rules: str) -> list[str]:
    """The command lines of the running workers serving the rules file ``rules``."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if "sse_offload.processes.worker" in line and rules in line:
            out.append(line)
    return out


def test_a_reload_that_adds_auth_jwt_without_a_key_is_reported(gateway_factory,
                                                               redis_server) -> None:
    gw = gateway_factory("[uwsgi]\nroute = ^/s/(.+)$ sse:$1\n", redis=redis_server.address)
    gw.start()
    # A request served: the reactor runs, so the SIGHUP handler is in place (the port
    # listens before it is).
    answer(gw.port, "/s/before").close()
    gw.rules_path.write_text("[uwsgi]\nroute = ^/s/(.+)$ sse:subscribe=$1,auth=jwt\n")
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    log = gw.wait_log("not applied")
    assert "auth=jwt needs --subscribe-key" in log
    assert gw.proc.poll() is None
    client = answer(gw.port, "/s/still")  # the rules in force stay: no token needed
    assert client.status == 200
    client.close()


def test_a_stream_from_the_final_chain_needs_a_token(gateway_factory, redis_server,
                                                     redis) -> None:
    rules = textwrap.dedent(f"""\
        [uwsgi]
        wsgi-file = {APPS / "clock_b.py"}
        final-route-if-not = empty:${{X-SSE-OFFLOAD}} sse:subscribe=${{X-SSE-OFFLOAD}},auth=jwt
    """)
    gw = gateway_factory(rules, redis=redis_server.address,
                         args=("--subscribe-key", SECRET, "--cors-origins", APP)).start()
    client = refused(gw.port, "/whattimeisit", {"Origin": APP})
    assert client.status == 401
    assert client.header("Access-Control-Allow-Origin") == APP
    assert refused(gw.port, "/whattimeisit", bearer(token(["other"]))).status == 403
    client = answer(gw.port, "/whattimeisit", headers={**bearer(token(["clock"])), "Origin": APP})
    assert client.status == 200
    assert client.header("Foo") == "Bar"  # the app's head is kept
    assert client.header("Access-Control-Allow-Origin") == APP
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "tick")
    assert client.read_events(1) == ["tick"]
    client.close()
