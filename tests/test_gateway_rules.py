"""The rules language through the real gateway: ``twistd -n sse-offload`` in a subprocess.

The original plugin's README's routing-driven and action-parameter configs, then every
request-chain outcome the front resource applies: return, redirect, basicauth (htpasswd
with bcrypt, apr1 and {SHA} users), static:, rewrite, header actions on streams and on
answers, and the response side on gateway-made responses.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from passlib.hash import apr_md5_crypt, bcrypt, ldap_sha1

from gateway_helpers import wait_numsub
from redis_helpers import wait_for
from rules_helpers import README_INI
from sse_client import SSEClient

PERL_REDIS = pytest.mark.skipif(
    subprocess.run(["perl", "-MRedis", "-e1"], capture_output=True).returncode != 0,
    reason="perl or the CPAN Redis module (Debian libredis-perl) is not installed",
)

# The original plugin's README's routing-driven ini, verbatim.
README_ROUTING_INI = README_INI

# The original plugin's README's clock.pl, verbatim.
README_CLOCK_PL = """\
use Redis;

my $redis = Redis->new;

while(1) {
        sleep(1);
        $redis->publish('clock', time);
}
"""

CLOCK_HTML = "<div id=\"clock\" />\n"


def get(port: int, path: str, **kwargs) -> SSEClient:
    """Send a request and read the whole response (it must end)."""
    client = SSEClient(port, path, **kwargs)
    client.read_head()
    length = client.header("Content-Length")
    if length is not None:
        client.read_body(int(length))
    client.close()
    return client


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- the README's routing-driven and action-parameter examples ---------------------------


@PERL_REDIS
def test_readme_routing_config_verbatim_streams_the_perl_clock(
    gateway_factory, redis_server, redis, tmp_path: Path
) -> None:
    site = tmp_path / "readme"
    site.mkdir()
    (site / "rules.ini").write_text(README_ROUTING_INI)
    (site / "clock.pl").write_text(README_CLOCK_PL)
    (site / "clock.html").write_text(CLOCK_HTML)
    gw = gateway_factory(site / "rules.ini", redis=redis_server.address, cwd=site).start()
    for path in ("/clock", "/clockwork"):  # the mount maps to a file: any path with the prefix
        page = get(gw.port, path)
        assert page.status == 200 and page.body == CLOCK_HTML.encode()
    client = SSEClient(gw.port, "/whattimeisitANYTHING")
    assert client.read_head() == 200
    assert client.head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert client.header("Content-Type") == "text/event-stream"
    assert client.header("Cache-Control") == "no-cache"
    (first,) = client.read_events(1, timeout=15)
    assert first.isdigit() and len(first) >= 10, first  # the epoch, as clock.pl publishes it
    assert client.read_events(2, timeout=15)[1] != first
    client.close()


@pytest.mark.parametrize("mode", ["sse", "sseraw"])
def test_readme_action_parameter_config(gateway_factory, redis_server, redis, mode: str) -> None:
    # The README's action-parameter example, with the private Redis's port for its 4040.
    rules = f"""\
        [uwsgi]
        route = ^/foobar {mode}:server=127.0.0.1:{redis_server.port},subscribe=foobar
    """
    # No --redis: the only server the gateway may use is the one the rule names.
    gw = gateway_factory(rules, redis=None).start()
    client = SSEClient(gw.port, "/foobar")
    assert client.read_head() == 200
    assert client.header("Content-Type") == "text/event-stream"
    wait_numsub(redis, "foobar", 1)
    redis.publish("foobar", "foobar\nfoobar2")
    expected = b"data: foobar\ndata: foobar2\n\n" if mode == "sse" else b"foobar\nfoobar2"
    assert client.read_body(len(expected)) == expected
    client.close()


# --- answers from the request chain -------------------------------------------------------

ANSWERS = """\
    [uwsgi]
    route = ^/teapot return:418
    route = ^/gone break-with-status:410
    route = ^/old/(.*)$ redirect:/new/$1?from=${qs[src]}
    route = ^/moved redirect-permanent:https://example.org/
    route-if = equal:${REQUEST_METHOD};DELETE return:405
    route = ^/quiet break:204
"""


@pytest.fixture
def answers(gateway_factory, redis_server):
    return gateway_factory(ANSWERS, redis=redis_server.address).start()


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/teapot", 418, "I'm a Teapot"),
        ("GET", "/gone", 410, "Gone"),
        ("DELETE", "/anything", 405, "Method Not Allowed"),
    ],
)
def test_return_answers_status_reason_and_body(answers, method, path, status, reason) -> None:
    client = get(answers.port, path, method=method)
    assert client.head.startswith(f"HTTP/1.1 {status} {reason}\r\n".encode())
    assert client.header("Content-Type") == "text/plain"
    assert client.header("Content-Length") == str(len(reason))
    assert client.body == reason.encode()


def test_return_to_head_request_has_length_but_no_body(answers) -> None:
    client = SSEClient(answers.port, "/gone", method="HEAD")
    assert client.read_head() == 410
    assert client.header("Content-Length") == "4"
    assert client.body == b""
    client.close()


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [
        ("/old/a/b?src=mail", 302, "/new/a/b?from=mail"),
        ("/moved", 301, "https://example.org/"),
    ],
)
def test_redirect_sends_location(answers, path: str, status: int, location: str) -> None:
    client = get(answers.port, path)
    assert client.status == status
    assert client.header("Location") == location


def test_break_with_status_still_answers_without_a_body(answers) -> None:
    client = SSEClient(answers.port, "/quiet")
    assert client.read_head() == 204
    client.close()


# --- basicauth ------------------------------------------------------------------------------


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "users.htpasswd"
    path.write_text(
        f"bob:{bcrypt.using(rounds=4).hash('b-secret')}\n"
        f"amy:{apr_md5_crypt.hash('a-secret')}\n"
        f"sam:{ldap_sha1.hash('s-secret')}\n"
    )
    return path


@pytest.fixture
def authed(gateway_factory, redis_server, htpasswd: Path):
    rules = f"""\
        [uwsgi]
        route = ^/private basicauth:Private Area,{htpasswd}
        route = ^/private/stream sse:feed-${{REMOTE_USER}}
        route = ^/private return:200
        route = ^/inline basicauth:Inline,ann:pw
        route = ^/inline return:200
        route = ^/chain basicauth-next:Chain,one:1
        route = ^/chain basicauth-next:Chain,two:2
        route = ^/chain basicauth:Chain,
        route-remote-user = ^(two)$ addheader:X-User: $1
        route = ^/chain return:200
    """
    return gateway_factory(rules, redis=redis_server.address).start()


@pytest.mark.parametrize(
    ("user", "password"), [("bob", "b-secret"), ("amy", "a-secret"), ("sam", "s-secret")]
)
def test_htpasswd_users_of_every_hash_get_in(authed, user: str, password: str) -> None:
    assert get(authed.port, "/private", headers=basic(user, password)).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("bob", "wrong"),
        basic("nobody", "b-secret"),
        basic("bob", "a-secret"),
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!notbase64"},
    ],
    ids=["none", "wrong-password", "unknown-user", "other-users-password", "bearer", "garbage"],
)
def test_htpasswd_refuses_with_401_and_the_realm(authed, headers) -> None:
    client = get(authed.port, "/private", headers=headers)
    assert client.status == 401
    assert client.head.startswith(b"HTTP/1.1 401 Authorization Required\r\n")
    assert client.header("WWW-Authenticate") == 'Basic realm="Private Area"'
    assert client.body == b"Unauthorized"


def test_remote_user_feeds_the_stream_channel(authed, redis) -> None:
    client = SSEClient(authed.port, "/private/stream", headers=basic("sam", "s-secret"))
    assert client.read_head() == 200
    wait_numsub(redis, "feed-sam", 1)
    redis.publish("feed-sam", "hello sam")
    assert client.read_events(1) == ["hello sam"]
    client.close()


def test_inline_credentials_compare_the_whole_pair(authed) -> None:
    assert get(authed.port, "/inline", headers=basic("ann", "pw")).status == 200
    assert get(authed.port, "/inline", headers=basic("ann", "pw2")).status == 401
    assert get(authed.port, "/inline", headers=basic("ann", "")).status == 401


def test_basicauth_next_tries_each_then_the_last_one_refuses(authed) -> None:
    two = get(authed.port, "/chain", headers=basic("two", "2"))
    assert two.status == 200
    assert two.header("X-User") == "two"  # REMOTE_USER is the route-remote-user subject
    one = get(authed.port, "/chain", headers=basic("one", "1"))
    assert one.status == 200 and one.header("X-User") is None
    assert get(authed.port, "/chain", headers=basic("one", "2")).status == 401


def test_htpasswd_file_changes_are_picked_up(authed, htpasswd: Path) -> None:
    assert get(authed.port, "/private", headers=basic("zoe", "z")).status == 401
    htpasswd.write_text(htpasswd.read_text() + f"zoe:{ldap_sha1.hash('z')}\n")
    assert get(authed.port, "/private", headers=basic("zoe", "z")).status == 200


# --- static: ------------------------------------------------------------------------------


def test_static_action_serves_files_and_never_outside_its_directory(
    gateway_factory, redis_server, tmp_path: Path
) -> None:
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "page.html").write_text("<p>page</p>")
    (www / "sub" / "deep.txt").write_text("deep")
    (tmp_path / "secret.txt").write_text("secret")
    (www / "escape.txt").symlink_to(tmp_path / "secret.txt")
    rules = f"""\
        [uwsgi]
        route = ^/fixed static:{www}/page.html
        route = ^/files/(.*)$ static:{www}/$1
        route = ^/q static:{www}/${{qs[f]}}
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    fixed = get(gw.port, "/fixed")
    assert (fixed.status, fixed.body) == (200, b"<p>page</p>")
    assert "text/html" in fixed.header("Content-Type")
    assert get(gw.port, "/files/sub/deep.txt").body == b"deep"
    for path in (
        "/files/../secret.txt",
        "/q?f=../secret.txt",
        "/q?f=/etc/passwd",
        "/files/escape.txt",  # a symlink out of the directory
        "/files/sub",  # a directory: no listing
        "/files/missing",
    ):
        client = get(gw.port, path)
        assert client.status == 404, path
        assert b"secret" not in client.body and b"root:" not in client.body


# --- rewrite, set*, header actions ---------------------------------------------------------


def test_rewrite_feeds_later_rules_and_static_map(
    gateway_factory, redis_server, redis, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("home")
    rules = f"""\
        [uwsgi]
        static-map = /site={tmp_path}
        route = ^/$ rewrite-last:/site/index.html
        route = ^/legacy/(\\w+)$ rewrite:/events/$1?v=2
        route-if = equal:${{PATH_INFO}};/events/news addheader:X-Query: ${{QUERY_STRING}}
        route = ^/events/(\\w+)$ sse:$1
        route = ^/method setmethod:POST
        route-if = equal:${{REQUEST_METHOD}};POST return:403
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    home = get(gw.port, "/")
    assert (home.status, home.body) == (200, b"home")
    client = SSEClient(gw.port, "/legacy/news?page=1")
    assert client.read_head() == 200
    assert client.header("X-Query") == "v=2&page=1"  # the rewrite's query goes first
    wait_numsub(redis, "news", 1)
    client.close()
    assert get(gw.port, "/method").status == 403


def test_headers_are_added_and_removed_on_streams_and_answers(
    gateway_factory, redis_server, redis
) -> None:
    rules = """\
        [uwsgi]
        add-header = Access-Control-Allow-Origin: *
        del-header = Server
        route-run = addheader:X-Request-Id: ${uwsgi[uuid]}
        route = ^/events sse:clock
        route = ^/nocache delheader:Cache-Control
        route = ^/nocache sse:clock
        route = ^/teapot return:418
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    client = SSEClient(gw.port, "/events")
    assert client.read_head() == 200
    assert client.header("Access-Control-Allow-Origin") == "*"
    assert client.header("Server") is None
    assert len(client.header("X-Request-Id")) == 36
    assert client.header("Cache-Control") == "no-cache"
    wait_numsub(redis, "clock", 1)
    redis.publish("clock", "x")
    assert client.read_events(1) == ["x"]
    client.close()
    plain = SSEClient(gw.port, "/nocache")
    assert plain.read_head() == 200
    assert plain.header("Cache-Control") is None
    assert plain.header("Content-Type") == "text/event-stream"
    plain.close()
    teapot = get(gw.port, "/teapot")
    assert teapot.status == 418
    assert teapot.header("Access-Control-Allow-Origin") == "*"
    assert teapot.header("Server") is None
    assert teapot.header("X-Request-Id") != client.header("X-Request-Id")


# --- the response side on responses the gateway makes --------------------------------------


def test_response_side_rules_see_gateway_responses(gateway_factory, redis_server) -> None:
    rules = """\
        [uwsgi]
        route = ^/ev sse:clock
        route = ^/gone break:
        collect-header = Content-Type RESPONSE_TYPE
        response-route-status = 404 addheader:X-Hint: try /ev
        final-route-run = log:final ${REQUEST_URI} ${uwsgi[status]} ${RESPONSE_TYPE}
        final-route-if-not = empty:${X-SSE-OFFLOAD} sse:${X-SSE-OFFLOAD}
        route = ^/var addvar:X-SSE-OFFLOAD=clock
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    missing = get(gw.port, "/nothing")
    assert missing.status == 404
    assert missing.header("X-Hint") == "try /ev"
    gw.wait_log("final /nothing 404 text/plain; charset=utf-8")
    stream = SSEClient(gw.port, "/ev")
    assert stream.read_head() == 200
    assert stream.header("X-Hint") is None
    gw.wait_log("final /ev 200 text/event-stream")
    stream.close()
    closed = SSEClient(gw.port, "/gone")
    closed.wait_closed()
    assert closed.raw == b""
    gw.wait_log("final /gone 0 ")
    # Without an app, a final-chain sse cannot turn the gateway's own 404 into a stream.
    var = get(gw.port, "/var")
    assert var.status == 404
    log = gw.wait_log("is answered by the gateway itself")
    assert "rules.ini:7:" in log


def test_log_actions_reach_the_gateway_log_and_goto_skips(gateway_factory, redis_server) -> None:
    rules = """\
        [uwsgi]
        route-run = goto:end
        route-run = log:never
        route-label = end
        route = ^/(.*)$ log:saw $1 from ${REMOTE_ADDR}
        route-run = logvar:user=${qs[u]}
        route = ^/quiet donotlog:
        route = ^/gone break:
        route = ^/ return:200
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    assert get(gw.port, "/hello?u=ann").status == 200
    log = gw.wait_log("saw hello from 127.0.0.1")
    assert "never" not in log
    gw.wait_log("GET /hello?u=ann 200 user=ann")
    get(gw.port, "/quiet?u=bob")
    closed = SSEClient(gw.port, "/gone?u=cid")
    closed.wait_closed()
    gw.wait_log("GET /gone?u=cid - user=cid")
    assert "saw quiet from" in gw.log() and "user=bob" not in gw.log()


def test_rules_error_on_a_new_key_stops_startup(gateway_factory, redis_server) -> None:
    gw = gateway_factory(
        "[uwsgi]\nroute-if = nosuch:x return:200\n", redis=redis_server.address
    )
    status, output = gw.run_to_exit()
    assert status != 0
    assert f"{gw.rules_path}:2:12: error: unknown condition 'nosuch'" in output
    assert "Traceback" not in output


def test_slow_password_checks_do_not_block_other_requests(
    gateway_factory, redis_server, redis, tmp_path: Path
) -> None:
    # bcrypt at its default cost takes a fraction of a second: it runs in a thread, so a
    # stream keeps receiving while passwords are checked.
    users = tmp_path / "slow.htpasswd"
    users.write_text(f"bob:{bcrypt.using(rounds=13).hash('pw')}\n")
    rules = f"""\
        [uwsgi]
        route = ^/private basicauth:R,{users}
        route = ^/private return:200
        route = ^/events sse:clock
    """
    gw = gateway_factory(rules, redis=redis_server.address).start()
    stream = SSEClient(gw.port, "/events")
    assert stream.read_head() == 200
    wait_numsub(redis, "clock", 1)
    checkers = [SSEClient(gw.port, "/private", headers=basic("bob", "wrong")) for _ in range(2)]
    redis.publish("clock", "during")
    assert stream.read_events(1, timeout=0.5) == ["during"]
    for checker in checkers:
        assert checker.read_head(timeout=20) == 401
        checker.close()
    stream.close()
    wait_for(lambda: redis.numsub("clock") == 0, what="the stream to go")
