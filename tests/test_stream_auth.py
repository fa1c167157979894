"""``auth=jwt`` on stream routes (stream_auth.py), without a socket: who may open a stream
(authorize, table-driven), which patterns a grant covers, the argument's ``auth=`` that a
request var must not change, and the end of a stream at its token's ``exp`` on a fake
clock, on both HTTP paths (memory_helpers.Memory). The gateway as a user runs it is in
tests/test_stream_auth_e2e.py.
"""

from __future__ import annotations

import re
from typing import Any

import jwt
import pytest
from twisted.internet.protocol import connectionDone

from memory_helpers import Memory
from sse_offload.config import parse_rules_text
from sse_offload.config.values import TargetError, parse_sse_arg
from sse_offload.options import ConfigurationError
from sse_offload.routing import SseTarget
from sse_offload.stream_auth import (
    EXPIRED_REASON,
    FORBIDDEN,
    UNAUTHORIZED,
    _expire,
    authorize,
    check_key,
)
from sse_offload.tokens import Claims, parse_token_key

SECRET = "subscribe-secret-" + "k" * 48  # 64 bytes: PyJWT warns of shorter HS512 keys
KEY = parse_token_key(SECRET)
NOW = 1_800_000_000.0


def token(subscribe: list[str], secret: str = SECRET, algorithm: str = "HS256",
          **claims: Any) -> str:
    return jwt.encode({"sse": {"subscribe": subscribe}, **claims}, secret, algorithm=algorithm)


def target(channels: tuple[str, ...] = (), patterns: tuple[str, ...] = (),
           streams: tuple[str, ...] = (), sharded: tuple[str, ...] = ()) -> SseTarget:
    names = channels + patterns + sharded + streams
    return SseTarget(";".join(names), None, 4096, None, channels, patterns, streams,
                     sharded=sharded, auth="jwt")


# -- authorize ---------------------------------------------------------------------------

NEWS = target(("news",))


@pytest.mark.parametrize(
    ("vars", "aim", "expected"),
    [
        ({}, NEWS, UNAUTHORIZED + "no token"),
        ({"HTTP_AUTHORIZATION": "Basic dTpw"}, NEWS, UNAUTHORIZED + "no token"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news"], "w" * 40)}, NEWS,
         UNAUTHORIZED + "bad signature"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news"], exp=NOW - 1)}, NEWS,
         UNAUTHORIZED + "token expired"),
        # no leeway for streams: a token whose exp is now is over (the publish side allows 5 s)
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news"], exp=NOW)}, NEWS,
         UNAUTHORIZED + "token expired"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news"], algorithm="HS512")}, NEWS,
         UNAUTHORIZED + "algorithm not allowed"),
        ({"HTTP_AUTHORIZATION": "Bearer " + jwt.encode({"sse": {"subscribe": ["*"]}}, None,
                                                       algorithm="none")}, NEWS,
         UNAUTHORIZED + "algorithm not allowed"),
        ({"HTTP_AUTHORIZATION": "Bearer not.a.jwt"}, NEWS, UNAUTHORIZED + "malformed token"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["sport"])}, NEWS,
         FORBIDDEN + "the token does not grant 'news'"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news"])}, target(("news", "sport")),
         FORBIDDEN + "the token does not grant 'sport'"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news.?"])}, target(patterns=("news.*",)),
         FORBIDDEN + "the token does not grant the pattern 'news.*'"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["orders"])}, target(streams=("invoices",)),
         FORBIDDEN + "the token does not grant 'invoices'"),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["orders.1"])},
         target(sharded=("orders.7",)), FORBIDDEN + "the token does not grant 'orders.7'"),
        # granted: the token's exp, or None when it has none
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news"])}, NEWS, None),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news"], exp=NOW + 60)}, NEWS, NOW + 60),
        ({"HTTP_COOKIE": "a=1; sseAuthorization=" + token(["n*"])}, NEWS, None),
        ({"QUERY_STRING": "x=1&authorization=" + token(["*"])}, NEWS, None),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["news.*", "orders"])},
         target(("news.a",), ("news.b.*",)), None),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["orders", "invoices"])},
         target(streams=("orders", "invoices")), None),
        ({"HTTP_AUTHORIZATION": "Bearer " + token(["orders.*"])},
         target(sharded=("orders.7",)), None),
    ],
)
def test_authorize(vars: dict[str, str], aim: SseTarget, expected: float | str | None) -> None:
    assert authorize(KEY, aim, vars, NOW) == expected


def test_authorize_without_a_key_refuses() -> None:
    vars = {"HTTP_AUTHORIZATION": "Bearer " + token(["*"])}
    assert str(authorize(None, NEWS, vars, NOW)).startswith(UNAUTHORIZED)


@pytest.mark.parametrize(
    ("grants", "pattern", "granted"),
    [
        (["news.*"], "news.*", True),
        (["news.*"], "news.sport.*", True),
        (["news.*"], "news.[ab]", True),
        (["*"], "a?[x]*", True),
        (["*.news"], "eu.*.news", True),
        (["news.?"], "news.?", True),
        (["news.[ab]"], "news.a", True),
        (["news*"], r"news\*", True),  # Redis reads \* as the character *
        # "?" matches the character "*" in fnmatch, yet PSUBSCRIBE news.* gets news.long
        (["news.?"], "news.*", False),
        (["news.*"], "new*", False),
        (["*.news"], "eu.*", False),
        (["news.[ab]"], "news.?", False),
        (["a*]"], "a[xy]", False),
        # the same text means other things: [!a] excludes a for fnmatch, not for Redis
        (["news.[!a]"], "news.[!a]", False),
        (["news"], r"news\*", False),
        ([], "x", False),
    ],
)
def test_a_grant_covers_a_pattern_only_if_it_matches_all_it_can_match(
    grants: list[str], pattern: str, granted: bool
) -> None:
    assert Claims(subscribe=tuple(grants)).may_psubscribe(pattern) is granted


# -- the argument and the configuration ------------------------------------------------------

@pytest.mark.parametrize(
    ("expanded", "template"),
    [
        ("auth=jwt,subscribe=x,auth=", "auth=jwt,subscribe=$1"),  # a later key wins
        ("subscribe=x,auth=jwt", "subscribe=$1"),
        ("auth=,subscribe=x", "auth=$2,subscribe=$1"),
        ("auth=basic,subscribe=x", None),
    ],
)
def test_a_request_var_cannot_change_auth(expanded: str, template: str | None) -> None:
    with pytest.raises(TargetError):
        parse_sse_arg(expanded, template)


def test_auth_written_in_the_rule_is_kept() -> None:
    assert parse_sse_arg("auth=jwt,subscribe=x", "auth=jwt,subscribe=$1").auth == "jwt"
    assert parse_sse_arg("subscribe=x").auth is None


def test_check_key_names_the_rule_without_a_key() -> None:
    config = parse_rules_text(
        "[uwsgi]\nroute = ^/a sse:a\nroute = ^/b$ sse:subscribe=b,auth=jwt\n", "r.ini"
    )
    with pytest.raises(ConfigurationError) as caught:
        check_key(config, None)
    message = str(caught.value)
    assert message.startswith("r.ini:3:") and "auth=jwt needs --subscribe-key" in message
    assert "\n" not in message
    check_key(config, KEY)  # with a key: fine
    check_key(parse_rules_text("[uwsgi]\nroute = ^/a sse:a\n", "r.ini"), None)


# -- the end at exp, on a fake clock ---------------------------------------------------------

RULES = """\
[uwsgi]
route = ^/ev/(.*)$ sse:subscribe=$1,auth=jwt
route = ^/raw/(.*)$ sseraw:subscribe=$1,auth=jwt
"""
FAST = "GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n"
#: A repeated header name: the fast path leaves this head to twisted.web.
SLOW = "GET {path} HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nAuthorization: Bearer {token}\r\n\r\n"
PATHS = pytest.mark.parametrize("form", [FAST, SLOW], ids=["fast path", "twisted.web"])
START = 1000.0  # the fake clock's epoch time when the stream opens


def memory() -> Memory:
    m = Memory(RULES, subscribe_key=KEY)
    m.reactor.advance(START)
    return m


def expiry_calls(m: Memory) -> list[Any]:
    return [c for c in m.reactor.getDelayedCalls() if c.func is _expire and c.active()]


@PATHS
def test_a_stream_ends_at_its_tokens_exp_with_a_comment_saying_why(form: str) -> None:
    m = memory()
    request = form.format(path="/ev/news", token=token(["news"], exp=START + 30))
    protocol, transport = m.connect(request.encode())
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert m.listeners(b"news") == 1
    assert (protocol.stream is not None) is (form is FAST)  # the fast path took it itself
    m.reactor.advance(29.9)
    assert not transport.disconnecting
    transport.clear()
    m.reactor.advance(0.1)
    assert transport.value() == b"11\r\n: token expired\n\n\r\n0\r\n\r\n"
    # the response is over; the fast path also closes, twisted.web keeps the connection
    assert transport.disconnecting or form is SLOW
    assert m.listeners(b"news") == 0 and m.gateway.open_streams == 0
    assert m.gateway.stats[f"streams_closed_{EXPIRED_REASON}"] == 1


def test_a_raw_stream_ends_at_exp_without_the_comment() -> None:
    m = memory()
    request = FAST.format(path="/raw/news", token=token(["news"], exp=START + 5))
    _, transport = m.connect(request.encode())
    transport.clear()
    m.reactor.advance(5)
    assert transport.value() == b"0\r\n\r\n" and transport.disconnecting


@PATHS
def test_the_timer_is_cancelled_when_the_stream_ends_first(form: str) -> None:
    m = memory()
    request = form.format(path="/ev/news", token=token(["news"], exp=START + 30))
    protocol, _ = m.connect(request.encode())
    assert len(expiry_calls(m)) == 1
    protocol.connectionLost(connectionDone)
    assert expiry_calls(m) == []
    m.reactor.advance(60)
    assert m.gateway.stats[f"streams_closed_{EXPIRED_REASON}"] == 0
    assert m.gateway.stats["streams_closed_client"] == 1


def test_a_token_without_exp_arms_no_timer() -> None:
    m = memory()
    _, transport = m.connect(FAST.format(path="/ev/news", token=token(["news"])).encode())
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert expiry_calls(m) == []


@PATHS
def test_refusals_in_memory(form: str) -> None:
    m = memory()
    _, transport = m.connect(form.format(path="/ev/news", token=token(["sport"])).encode())
    assert transport.value().startswith(b"HTTP/1.1 403 ")
    assert b'error="insufficient_scope"' in transport.value()
    _, transport = m.connect(
        form.format(path="/ev/news", token=token(["news"], exp=START - 1)).encode()
    )
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert re.search(
        rb'WWW-Authenticate: Bearer realm="sse-offload", error="invalid_token", '
        rb'error_description="token expired"\r\n', answer
    ), answer
    assert m.listeners(b"news") == 0 and expiry_calls(m) == []
    assert m.gateway.stats["requests_refused_token"] == 2


# -- options --------------------------------------------------------------------------------

def _settings(tmp_path: Any, ini: str, *argv: str) -> Any:
    from sse_offload.config import load_rules
    from sse_offload.options import Options, resolve_settings

    rules = tmp_path / "rules.ini"
    rules.write_text("[uwsgi]\nroute = ^/s sse:s\n" + ini)
    options = Options()
    options.parseOptions(["--rules", str(rules), *argv])
    return resolve_settings(options, load_rules(str(rules)))


def test_the_options_are_ini_keys_too_and_the_command_line_wins(tmp_path: Any) -> None:
    access = _settings(tmp_path, "").access
    assert access.key is None and access.cors is None
    access = _settings(
        tmp_path, f"subscribe-key = hs256:{SECRET}\ncors-origins = https://a.example, *\n"
    ).access
    assert access.key is not None and access.key.algorithms == ("HS256",)
    assert access.cors is not None and access.cors.any_origin
    assert access.cors.origins == {"https://a.example"}
    assert SECRET not in repr(access)
    wins = _settings(tmp_path, "cors-origins = *\n", "--cors-origins", "https://b.example")
    assert wins.access.cors.origins == {"https://b.example"}
    assert not wins.access.cors.any_origin


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("subscribe-key = short\n", "--subscribe-key: token key: an HS256 secret needs"),
        ("subscribe-key = @/nonexistent/key\n", "--subscribe-key: cannot read"),
        ("cors-origins = app.example\n", "is not an origin"),
    ],
)
def test_bad_option_values_are_configuration_errors(tmp_path: Any, ini: str,
                                                    message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _settings(tmp_path, ini)


def test_the_masters_reload_checks_auth_jwt_against_its_key(tmp_path: Any) -> None:
    """With --processes N the master reloads without a gateway of its own: it must refuse a
    file its workers would refuse, and not signal them."""
    from sse_offload.service import reload_rules

    rules = tmp_path / "rules.ini"
    rules.write_text("[uwsgi]\nroute = ^/s$ sse:subscribe=s,auth=jwt\n")
    assert reload_rules(str(rules), None, None) is None
    assert reload_rules(str(rules), None, KEY) is not None
