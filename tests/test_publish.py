"""``--publish``: POST /publish/<channel> with a JWT, against a real gateway and redis-server.

Refusals are checked to publish nothing: the subscriber's next event is the good message
sent after the refused one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import time
from typing import Any

import jwt
import pytest

from gateway_helpers import GatewayProcess, port_open
from redis_helpers import free_port, wait_for
from sse_client import SSEClient
from sse_offload.publish import PUBLISH_TIMEOUT
from sse_offload.publish_message import MessageError, MessageTooLarge, build_message

SECRET = "publish-secret-" + "x" * 32
LIMIT = 2000  # --max-message-size, so a small body is "too large"

RULES = """\
[uwsgi]
route = ^/ch/([a-z0-9.]+)$ sse:$1
route = ^/env/([a-z0-9.]+)$ sse:subscribe=$1,envelope=json
route = ^/st/([a-z0-9.]+)$ sse:stream=$1
"""


def token(publish: list[str], secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sse": {"publish": publish}, **claims}, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_server):
    """One gateway for the module, its publish endpoint on ``gw.publish_port``."""
    publish_port = free_port()
    gw = GatewayProcess(
        tmp_path_factory.mktemp("pub"), RULES, redis=redis_server.address,
        args=(
            "--publish", str(publish_port), "--publish-key", SECRET,
            "--max-message-size", str(LIMIT), "--keepalive", "0",
        ),
    )
    gw.start()
    gw.publish_port = publish_port  # type: ignore[attr-defined]
    wait_for(lambda: port_open(publish_port), timeout=20, what="the publish listener")
    yield gw
    gw.stop()



def post(
    port: int, path: str, body: Any = None, *, bearer: str | None = None,
    headers: dict[str, str] | None = None, method: str = "POST", raw: bytes | None = None,
) -> tuple[int, http.client.HTTPResponse, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=payload, headers=all_headers)
    response = conn.getresponse()
    text = response.read()
    conn.close()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return response.status, response, parsed


def subscriber(gw: GatewayProcess, path: str, redis, channel: str) -> SSEClient:
    client = SSEClient(gw.port, path)
    assert client.read_head() == 200
    wait_for(lambda: redis.numsub(channel) >= 1, timeout=15, what=f"a subscriber of {channel}")
    return client


def test_a_granted_publish_reaches_a_subscriber(gateway, redis) -> None:
    client = subscriber(gateway, "/ch/news.1", redis, "news.1")
    status, _, answer = post(
        gateway.publish_port, "/publish/news.1", {"data": "hello\nworld"},
        bearer=token(["news.*"]),
    )
    assert status == 200 and answer == {"receivers": 1}
    assert client.read_events(1) == ["hello\nworld"]
    client.close()


def test_cookie_token_and_url_encoded_channel(gateway, redis) -> None:
    client = subscriber(gateway, "/ch/a.b", redis, "a.b")
    status, _, _ = post(
        gateway.publish_port, "/publish/a%2Eb", {"data": "via cookie"},
        headers={"Cookie": f"other=1; sseAuthorization={token(['a.b'])}"},
    )
    assert status == 200
    assert client.read_events(1) == ["via cookie"]
    client.close()


def test_refusals_publish_nothing(gateway, redis) -> None:
    port = gateway.publish_port
    client = subscriber(gateway, "/ch/guarded", redis, "guarded")
    good = token(["guarded"])

    status, response, answer = post(port, "/publish/guarded", {"data": "no token"})
    assert status == 401 and answer == {"error": "missing token"}
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")

    status, response, answer = post(
        port, "/publish/guarded", {"data": "x"}, bearer=token(["guarded"], "y" * 40)
    )
    assert (status, answer) == (401, {"error": "bad signature"})
    assert 'error="invalid_token"' in response.getheader("WWW-Authenticate", "")

    expired = token(["guarded"], exp=int(time.time()) - 60)
    status, _, answer = post(port, "/publish/guarded", {"data": "x"}, bearer=expired)
    assert (status, answer) == (401, {"error": "token expired"})

    none_alg = jwt.encode({"sse": {"publish": ["*"]}}, None, algorithm="none")
    status, _, _ = post(port, "/publish/guarded", {"data": "x"}, bearer=none_alg)
    assert status == 401

    status, _, answer = post(port, "/publish/guarded", {"data": "x"}, bearer=token(["other"]))
    assert (status, answer) == (403, {"error": "channel not granted by the token"})

    status, _, answer = post(port, "/publish/guarded", raw=b"{not json", bearer=good)
    assert (status, answer) == (400, {"error": "body is not JSON"})
    for bad in ({"data": 5}, {}, {"data": "x", "colour": "red"}, {"data": "x", "retry": -1},
                {"data": "x", "event": "a\nb"}, ["data"]):
        status, _, _ = post(port, "/publish/guarded", bad, bearer=good)
        assert status == 400, bad

    status, _, _ = post(port, "/publish/guarded", {"data": "x" * LIMIT}, bearer=good)
    assert status == 413

    status, response, _ = post(port, "/publish/guarded", method="GET", bearer=good)
    assert status == 405 and "POST" in response.getheader("Allow", "")
    status, _, _ = post(port, "/elsewhere", {"data": "x"}, bearer=good)
    assert status == 404
    status, _, _ = post(port, "/publish/guarded?to=list", {"data": "x"}, bearer=good)
    assert status == 400
    status, _, _ = post(port, "/publish/" + "g" * 2000, {"data": "x"}, bearer=token(["*"]))
    assert status == 400

    assert post(port, "/publish/guarded", {"data": "the good one"}, bearer=good)[0] == 200
    assert client.read_events(1) == ["the good one"]
    assert client.events() == ["the good one"]
    client.close()


def _raw_exchange(port: int, request: bytes, timeout: float = 10.0, to_end: bool = False) -> bytes:
    """The answer's head (``to_end``: all the server sends until it closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while (to_end or b"\r\n\r\n" not in data) and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_an_oversize_declared_body_is_refused_before_it_is_sent(gateway, redis) -> None:
    client = subscriber(gateway, "/ch/big", redis, "big")
    head = (
        f"POST /publish/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token(['big'])}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer = _raw_exchange(gateway.publish_port, head)  # the body is never sent
    assert answer.startswith(b"HTTP/1.1 413 ")
    expecting = head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    answer = _raw_exchange(gateway.publish_port, expecting, to_end=True)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer
    assert answer.endswith(b'{"error":"body over %d bytes"}\n' % LIMIT)
    status, _, _ = post(gateway.publish_port, "/publish/big", {"data": "ok"}, bearer=token(["big"]))
    assert status == 200
    assert client.read_events(1) == ["ok"]
    client.close()


def test_an_oversize_chunked_body_is_refused_while_read(gateway, redis) -> None:
    client = subscriber(gateway, "/ch/chunky", redis, "chunky")
    body = json.dumps({"data": "y" * (LIMIT * 2)}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 500]), body[i:i + 500])
                      for i in range(0, len(body), 500))
    head = (
        f"POST /publish/chunky HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token(['*'])}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer = _raw_exchange(gateway.publish_port, head + chunks[: LIMIT + 600])
    assert answer.startswith(b"HTTP/1.1 413 ")
    # A chunked body under the limit is published.
    small = json.dumps({"data": "small chunks"}).encode()
    framed = b"".join(b"%x\r\n%s\r\n" % (len(small[i:i + 5]), small[i:i + 5])
                      for i in range(0, len(small), 5)) + b"0\r\n\r\n"
    answer = _raw_exchange(gateway.publish_port, head + framed)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert client.read_events(1) == ["small chunks"]
    client.close()


def test_envelope_fields_arrive_as_sse_fields(gateway, redis) -> None:
    client = subscriber(gateway, "/env/scores", redis, "scores")
    status, _, _ = post(
        gateway.publish_port, "/publish/scores",
        {"data": "3-1", "event": "goal", "id": "42", "retry": 2500}, bearer=token(["*"]),
    )
    assert status == 200
    client.read_events(1)
    assert b"event: goal\nid: 42\nretry: 2500\ndata: 3-1\n\n" in client.body
    client.close()


def test_to_stream_appends_an_entry_a_stream_route_reads(gateway, redis) -> None:
    port = gateway.publish_port
    status, _, answer = post(
        port, "/publish/ledger?to=stream", {"data": "entry one", "event": "tick"},
        bearer=token(["ledger"]),
    )
    assert status == 200 and "-" in answer["id"]
    status, _, _ = post(port, "/publish/ledger?to=stream", {"data": "x", "id": "9"},
                        bearer=token(["ledger"]))
    assert status == 400  # an entry's id is Redis's
    client = SSEClient(gateway.port, "/st/ledger?lastEventId=0-0")
    assert client.read_head() == 200
    client.read_events(1)
    assert f"event: tick\nid: {answer['id']}\ndata: entry one\n\n".encode() in client.body
    assert redis.call("XLEN", "ledger") == 1
    client.close()


def test_a_command_redis_refuses_is_409(gateway, redis) -> None:
    redis.call("SET", "plainkey", "v")
    status, _, answer = post(gateway.publish_port, "/publish/plainkey?to=stream",
                             {"data": "x"}, bearer=token(["*"]))
    assert status == 409 and answer["error"].startswith("redis: WRONGTYPE")
    assert redis.call("GET", "plainkey") == b"v"


def test_publish_without_key_refuses_to_start(tmp_path, redis_server) -> None:
    gw = GatewayProcess(tmp_path, RULES, redis=redis_server.address,
                        args=("--publish", str(free_port())))
    status, output = gw.run_to_exit()
    assert status != 0 and "--publish needs --publish-key" in output
    gw = GatewayProcess(tmp_path / "weak", RULES, redis=redis_server.address,
                        args=("--publish", str(free_port()), "--publish-key", "short"))
    status, output = gw.run_to_exit()
    assert status != 0 and "at least 32 bytes" in output


def test_redis_down_is_503_not_a_hang(tmp_path, fresh_redis) -> None:
    port = free_port()
    gw = GatewayProcess(tmp_path, RULES, redis=fresh_redis.address,
                        args=("--publish", str(port), "--publish-key", SECRET))
    gw.start()
    try:
        wait_for(lambda: port_open(port), timeout=20, what="the publish listener")
        good = token(["*"])
        wait_for(lambda: post(port, "/publish/up", {"data": "x"}, bearer=good)[0] == 200,
                 timeout=20, what="a first publish")
        # A Redis that takes the command and never answers: 503 after the reply timeout.
        assert fresh_redis.proc is not None
        fresh_redis.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            status, _, answer = post(port, "/publish/up", {"data": "x"}, bearer=good)
            assert (status, answer) == (503, {"error": "redis unavailable"})
            assert time.monotonic() - started < PUBLISH_TIMEOUT + 5
        finally:
            fresh_redis.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: post(port, "/publish/up", {"data": "x"}, bearer=good)[0] == 200,
                 timeout=30, what="a publish once redis answers again")
        # A Redis that is gone: 503 at once.
        fresh_redis.stop()
        started = time.monotonic()
        status, _, answer = post(port, "/publish/up", {"data": "x"}, bearer=good)
        assert (status, answer) == (503, {"error": "redis unavailable"})
        assert time.monotonic() - started < 3
    finally:
        gw.stop()


def test_build_message_forms() -> None:
    assert build_message(b'{"data": "caf\\u00e9"}', False, 100).payload == "café".encode()
    envelope = build_message(b'{"data": "d", "id": "7"}', False, 100).payload
    assert json.loads(envelope) == {"id": "7", "data": "d"}
    entry = build_message(b'{"data": "d", "retry": 10, "event": "e"}', True, 100)
    assert entry.fields == (b"data", b"d", b"event", b"e", b"retry", b"10")
    with pytest.raises(MessageTooLarge):
        build_message(json.dumps({"data": "x" * 101}).encode(), False, 100)
    with pytest.raises(MessageError, match="not a string"):
        build_message(b'{"data": null}', False, 100)


def test_one_endpoint_in_the_master_with_workers_and_embedded_redis(tmp_path) -> None:
    port = free_port()
    gw = GatewayProcess(
        tmp_path, RULES, redis="embedded",
        args=("--processes", "2", "--publish", str(port), "--publish-key", SECRET),
    )
    gw.start()
    try:
        wait_for(lambda: port_open(port), timeout=30, what="the publish listener")
        clients = [SSEClient(gw.port, "/ch/multi") for _ in range(4)]
        for client in clients:
            assert client.read_head() == 200

        def every_client_has_a_probe() -> bool:
            # The workers subscribe in their own time: probe until every client has one.
            assert post(port, "/publish/multi", {"data": "probe"}, bearer=good)[0] == 200
            for client in clients:
                with contextlib.suppress(AssertionError):
                    client.read_until(lambda c: "probe" in c.events(), 1.0, "a probe")
            return all("probe" in client.events() for client in clients)

        good = token(["multi"])
        wait_for(every_client_has_a_probe, timeout=30, what="every client's first probe")
        assert post(port, "/publish/multi", {"data": "to all"}, bearer=good)[0] == 200
        for client in clients:
            client.read_until(lambda c: "to all" in c.events(), 10, "the message")
            client.close()
        assert gw.log().count("publishing over HTTP on") == 1
    finally:
        gw.stop()


def _resolve(tmp_path, ini: str, *argv: str):
    from sse_offload.config import load_rules
    from sse_offload.options import Limits, Options
    from sse_offload.publish import resolve_publish

    rules = tmp_path / "rules.ini"
    rules.write_text("[uwsgi]\nroute = ^/s sse:s\n" + ini)
    options = Options()
    options.parseOptions(["--rules", str(rules), *argv])
    return resolve_publish(options, load_rules(str(rules)), Limits(max_message_size=123))


def test_publish_ini_keys_and_loopback_default(tmp_path) -> None:
    from sse_offload.options import ConfigurationError

    assert _resolve(tmp_path, "") is None
    settings = _resolve(tmp_path, f"publish = 9999\npublish-key = hs256:{SECRET}\n")
    assert settings is not None
    assert settings.endpoint == "tcp:9999:interface=127.0.0.1"
    assert settings.key.algorithms == ("HS256",) and settings.max_body == 123
    wins = _resolve(tmp_path, "publish = 9999\n", "--publish", "tcp:8888:interface=0.0.0.0",
                    "--publish-key", SECRET)
    assert wins is not None and wins.endpoint == "tcp:8888:interface=0.0.0.0"
    with pytest.raises(ConfigurationError, match="needs --publish-key"):
        _resolve(tmp_path, "publish = 9999\n")
    with pytest.raises(ConfigurationError, match="--publish-key: cannot read"):
        _resolve(tmp_path, "publish = 9999\npublish-key = @/nonexistent/key\n")
