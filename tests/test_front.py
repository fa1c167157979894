"""The front protocol (front.py): a stream's first request read without twisted.web.

The fast path must be invisible: the rules see the same vars as through twisted.web, a
stream gets the same head, the request chain runs once whichever path serves a request,
and whatever the fast path does not take (pieces, pipelining, odd heads) still works.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web import http, server
from twisted.web.resource import Resource

from gateway_helpers import port_open, wait_for, wait_numsub
from sse_client import SSEClient
from sse_offload.front import http_date
from sse_offload.http_vars import head_vars, parse_head, request_vars

PEER = IPv4Address("TCP", "10.1.2.3", 40000)
LOCAL = IPv4Address("TCP", "127.0.0.2", 9090)


def twisted_vars(head: bytes) -> dict[str, str] | None:
    """The vars web.request_vars makes of ``head`` parsed by twisted.web (None: refused)."""
    got: list[dict[str, str]] = []

    class Capture(server.Request):
        def process(self) -> None:
            got.append(request_vars(self))

    channel = http.HTTPChannel()
    channel.site = server.Site(Resource())
    channel.requestFactory = Capture
    channel.timeOut = None  # no idle timer on the global reactor
    channel.makeConnection(StringTransport(hostAddress=LOCAL, peerAddress=PEER))
    channel.dataReceived(head + b"\r\n\r\n")
    return got[0] if got else None


def fast_vars(head: bytes) -> dict[str, str] | None:
    return head_vars(head, PEER, "9090", lambda: LOCAL.host)


TOKEN = st.text("abcxyzABCXYZ019-_!#$%&'*+.^`|~", min_size=1, max_size=12)
VALUE = st.binary(max_size=30).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)
TARGET = st.text("/abc%2e.?=&~:@!$'()*+,;-_09AZ", min_size=1, max_size=40)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    lines = [b"GET " + draw(TARGET).encode() + b" HTTP/1.1"]
    if draw(st.booleans()):
        lines.append(b"Host: " + draw(st.sampled_from(
            [b"example.org", b"example.org:8080", b"[::1]:99", b"", b" spaced.example  "]
        )))
    for name, value in draw(st.lists(st.tuples(TOKEN, VALUE), max_size=8)):
        pad = draw(st.sampled_from([b"", b" ", b"\t ", b"  "]))
        lines.append(name.encode() + b":" + pad + value + pad)
    return b"\r\n".join(lines)


@settings(max_examples=400, deadline=None)
@given(heads())
def test_the_fast_path_gives_the_rules_the_vars_twisted_web_gives(head: bytes) -> None:
    fast = fast_vars(head)
    if fast is not None:
        assert twisted_vars(head) == fast


def test_plain_heads_take_the_fast_path() -> None:
    browser = (
        b"GET /events/42?last=7 HTTP/1.1\r\nHost: localhost:9090\r\nConnection: keep-alive\r\n"
        b"Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nCookie: a=1; b=2\r\n"
        b"Accept-Language: en-US,en;q=0.9\r\nX-Empty:\r\nX-Padded: \t v \t"
    )
    fast = fast_vars(browser)
    assert fast is not None
    assert fast == twisted_vars(browser)
    assert fast["PATH_INFO"] == "/events/42" and fast["QUERY_STRING"] == "last=7"
    assert fast["SERVER_NAME"] == "localhost" and fast["HTTP_X_PADDED"] == "v"
    no_host = fast_vars(b"GET / HTTP/1.1")
    assert no_host is not None and no_host["SERVER_NAME"] == "127.0.0.2"
    assert no_host == twisted_vars(b"GET / HTTP/1.1")


def test_what_the_fast_path_leaves_to_twisted_web() -> None:
    for head in [
        b"POST /s/x HTTP/1.1\r\nHost: a",  # not GET
        b"HEAD /s/x HTTP/1.1\r\nHost: a",
        b"GET /s/x HTTP/1.0\r\nHost: a",  # HTTP/1.0: a close-delimited body
        b"GET /s/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0",  # a body, even an empty one
        b"GET /s/x HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"GET /s/x HTTP/1.1\r\nExpect: 100-continue",
        b"GET /s/x HTTP/1.1\r\nConnection: Close",  # twisted.web adds Connection: close
        b"GET /s/x HTTP/1.1\r\nX-A: 1\r\nx-a: 2",  # repeated: twisted.web groups them
        b"GET /s/x HTTP/1.1\r\nX-A: 1\r\n folded",  # obsolete line folding
        b"GET /s/x HTTP/1.1\nHost: a",  # a bare LF
        b"GET /s/x HTTP/1.1\r\nBad Name: 1",
        b"GET /s/x HTTP/1.1\r\nNoColon",
        b"GET /s/\x80 HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET /s/x HTTP/1.1\r\nX-Nul: a\x00b",
        b"GET /s/x HTTP/1.1\r\n" + b"\r\n".join(b"X-%d: 1" % i for i in range(120)),
    ]:
        assert parse_head(head) is None, head


def test_http_date_is_twisted_webs() -> None:
    now = time.time()
    assert http_date(now) == http.datetimeToString(int(now))
    assert http_date(now + 86400) == http.datetimeToString(int(now + 86400))


# --- end to end ---------------------------------------------------------------------------

RULES = """\
    [uwsgi]
    route-run = log:chain ran for ${REQUEST_URI}
    route = ^/ev/(.*)$ sse:$1
    route = ^/teapot return:418
"""


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    """Read until ``marker`` has arrived; each recv waits at most the socket's timeout."""
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def _raw_head(port: int, request: bytes) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    return sock, _read_until(sock, b"\r\n\r\n")


def test_a_stream_has_the_same_head_on_both_paths(gateway_factory, redis_server, redis) -> None:
    gateway = gateway_factory(RULES, redis=redis_server.address).start()
    fast, fast_head = _raw_head(
        gateway.port, b"GET /ev/same HTTP/1.1\r\nHost: a\r\nX-One: 1\r\n\r\n"
    )
    # A repeated header is not the fast path's: twisted.web serves this one.
    slow, slow_head = _raw_head(
        gateway.port, b"GET /ev/same HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nx-one: 2\r\n\r\n"
    )
    date = re.compile(rb"Date: [^\r]*\r\n")
    assert date.sub(b"", fast_head) == date.sub(b"", slow_head)
    assert fast_head.startswith(b"HTTP/1.1 200 OK\r\nServer: TwistedWeb/")
    wait_numsub(redis, "same", 1)
    redis.publish("same", "hello")
    for sock in (fast, slow):
        data = _read_until(sock, b"data: hello\n\n")
        assert data.startswith(b"d\r\ndata: hello\n\n\r\n"), data  # one chunk
        sock.close()


def test_the_request_chain_runs_once_whichever_path_serves(gateway_factory, redis_server) -> None:
    gateway = gateway_factory(RULES, redis=redis_server.address).start()
    client = SSEClient(gateway.port, "/ev/once")  # the fast path
    assert client.read_head() == 200
    teapot = SSEClient(gateway.port, "/teapot")  # chain run by the front, answered by twisted
    assert teapot.read_head() == 418
    head_only = SSEClient(gateway.port, "/ev/head", method="HEAD")  # twisted.web runs the chain
    assert head_only.read_head() == 200
    for uri in ("/ev/once", "/teapot", "/ev/head"):
        gateway.wait_log(f"chain ran for {uri}")
    client.close()
    teapot.close()
    head_only.close()
    log = gateway.log()
    for uri in ("/ev/once", "/teapot", "/ev/head"):
        assert log.count(f"chain ran for {uri}\n") == 1, log


def test_heads_in_pieces_pipelined_and_chatty_clients(gateway_factory, redis_server, redis) -> None:
    gateway = gateway_factory(RULES, redis=redis_server.address).start()
    pieces = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    for part in (b"GET /ev/pie", b"ces HTTP/1.1\r\nHo", b"st: a\r\n", b"\r\n"):
        pieces.sendall(part)
        time.sleep(0.05)  # separate reads on the gateway's side
    data = _read_until(pieces, b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    # Two requests in one write: twisted.web answers the first, then streams the second.
    piped, head = _raw_head(
        gateway.port,
        b"GET /teapot HTTP/1.1\r\nHost: a\r\n\r\nGET /ev/piped HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 418 ")
    wait_numsub(redis, "pieces", 1)
    wait_numsub(redis, "piped", 1)
    pieces.sendall(b"whatever the client sends after its request is ignored\r\n\r\n")
    redis.publish("pieces", "p")
    redis.publish("piped", "q")
    for sock, event in ((pieces, b"data: p\n\n"), (piped, b"data: q\n\n")):
        _read_until(sock, event)
        sock.close()


def _server_sockets(port: int) -> list[str]:
    out = subprocess.run(
        ["ss", "-tmoHn", "state", "established", "sport", f"= :{port}"],
        capture_output=True, text=True, check=True,
    ).stdout
    return re.split(r"\n(?=\S)", out.strip())  # one socket: a line, then indented ones


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
@pytest.mark.parametrize("processes", ["1", "2"])
def test_stream_sockets_have_the_stream_settings(
    gateway_factory, redis_server, processes: str
) -> None:
    """Set once on the listening socket, inherited by each accepted one: a 256 KiB send
    buffer (the kernel shows it doubled) and keepalive probes after 30 s."""
    gateway = gateway_factory(
        RULES, redis=redis_server.address, args=("--processes", processes)
    ).start()
    fast, _ = _raw_head(gateway.port, b"GET /ev/a HTTP/1.1\r\nHost: a\r\n\r\n")
    slow, _ = _raw_head(gateway.port, b"GET /ev/b HTTP/1.1\r\nHost: a\r\nX: 1\r\nx: 2\r\n\r\n")
    sockets = _server_sockets(gateway.port)
    assert len(sockets) == 2, sockets
    for line in sockets:
        assert "tb524288" in line, line
        keepalive = re.search(r"timer:\(keepalive,(\d+)sec", line)
        assert keepalive is not None and int(keepalive.group(1)) <= 30, line
    fast.close()
    slow.close()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_port_in_use_is_not_shared(gateway_factory, redis_server, processes: str) -> None:
    """The gateway's listeners are SO_REUSEPORT groups (several accept queues): a second
    gateway on the same port must still fail, not quietly take half the connections."""
    first = gateway_factory(RULES, redis=redis_server.address).start()
    second = gateway_factory(
        RULES, redis=redis_server.address,
        args=("--processes", processes, "--listen", f"tcp:{first.port}:interface=127.0.0.1"),
    )
    status, output = second.run_to_exit()
    assert status != 0
    assert "Address already in use" in output + second.log()
    assert SSEClient(first.port, "/ev/still").read_head() == 200


def _self_signed(tmp_path) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


def test_tls_connections_go_to_twisted_web(gateway_factory, redis_server, redis, tmp_path) -> None:
    """Over TLS the front protocol steps aside at once (twisted.web's channel, ALPN and h2
    included, serves the connection): streams and answers still work."""
    import ssl

    from redis_helpers import free_port, wait_for

    key, cert = _self_signed(tmp_path)
    tls_port = free_port()
    gateway_factory(
        RULES, redis=redis_server.address,
        args=("--listen", f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"),
    ).start()
    wait_for(lambda: port_open(tls_port), what="the TLS listener")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def over_tls(request: bytes) -> tuple[ssl.SSLSocket, bytes]:
        sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", tls_port), timeout=10),
            server_hostname="localhost",
        )
        sock.sendall(request)
        return sock, _read_until(sock, b"\r\n\r\n")

    stream, head = over_tls(b"GET /ev/tls HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in head
    teapot, answer = over_tls(b"GET /teapot HTTP/1.1\r\nHost: a\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 418 ")
    wait_numsub(redis, "tls", 1)
    redis.publish("tls", "secret")
    _read_until(stream, b"data: secret\n\n")
    stream.close()
    teapot.close()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_unix_listener_serves_streams_and_answers(
    gateway_factory, redis_server, redis, tmp_path, processes: str
) -> None:
    # unix.Server is a tcp.Server subclass whose host address has no port: SERVER_PORT and
    # SERVER_NAME must come from the address, not the class (it raised AttributeError).
    path = tmp_path / "gw.sock"
    args = ("--listen", f"unix:{path}")
    if processes != "1":
        args += ("--processes", processes)
    gateway = gateway_factory(RULES, redis=redis_server.address, args=args).start()
    wait_for(path.exists, timeout=20, what="the unix socket")

    def unix_request(request: bytes) -> tuple[socket.socket, bytes]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(request)
        return sock, _read_until(sock, b"\r\n\r\n")

    with_host, head = unix_request(b"GET /ev/u HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"Content-Type: text/event-stream\r\n" in head
    answered, head = unix_request(b"GET /teapot HTTP/1.1\r\nHost: a\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 418 "), head
    answered.close()
    wait_numsub(redis, "u", 1)
    redis.publish("u", "over unix")
    assert b"data: over unix\n\n" in _read_until(with_host, b"data: over unix\n\n")
    with_host.close()
    assert "Traceback" not in gateway.log()
