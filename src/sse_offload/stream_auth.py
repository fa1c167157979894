"""JWT auth on stream routes (``sse:...,auth=jwt``): who may open a stream, and until when.

A rule opts in with ``auth=jwt`` in its sse argument; the key is ``--subscribe-key``. When
such a stream starts, the request's token (tokens.token_from_request: ``Authorization:
Bearer``, the ``sseAuthorization`` cookie, the ``authorization`` query parameter) is
verified and must grant, in ``sse.subscribe``, every name the stream listens to: each
channel, each Redis Stream key, and each pattern (a grant must match every channel the
pattern can). A token with ``exp`` ends the stream at that moment: one timer for that stream
only, cancelled when it ends first; nothing is checked per message.

Unlike the publish endpoint, a stream token gets no grace on ``exp``: the stream closes at
``exp`` exactly, so the browser's reconnect with the same token must be refused, not let in
for a few more seconds of leeway and closed again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import server

from .config import Config
from .config.model import Rule
from .config.values import parse_kvlist
from .options import ConfigurationError
from .replies import plain
from .routing import SseTarget
from .sse import Mode, http_chunk
from .stream import SSEStream
from .timers import cancel
from .tokens import TokenError, TokenKey, token_from_request, verify

#: The start of :meth:`Gateway.plan <sse_offload.gateway.Gateway.plan>`'s reason when a
#: stream is refused for its token: no valid token (401), or a name it does not grant (403).
UNAUTHORIZED: Final = "unauthorized: "
FORBIDDEN: Final = "forbidden: "
#: The realm of the ``WWW-Authenticate`` challenge (the publish endpoint's too).
REALM: Final = b'Bearer realm="sse-offload"'
#: What an ``sse`` stream gets just before the gateway closes it at its token's ``exp``
#: (a comment: an EventSource ignores it, a person reading the stream sees why it ended).
EXPIRED_COMMENT: Final = b": token expired\n\n"
#: The counter (``streams_closed_<reason>``) and log reason of a stream closed at ``exp``.
EXPIRED_REASON: Final = "token_expired"

_log = Logger(namespace="sse_offload.web")


def jwt_rules(config: Config) -> list[Rule]:
    """The rules whose ``sse``/``sseraw`` argument writes ``auth=jwt`` (any chain)."""
    return [
        rule for rule in config.all_rules()
        if rule.action is not None and rule.action.name in ("sse", "sseraw")
        and "=" in rule.action.arg and parse_kvlist(rule.action.arg).get("auth") == "jwt"
    ]


def check_key(config: Config, key: TokenKey | None) -> None:
    """Raise ConfigurationError (one line, naming the rule) when a rule of ``config`` asks
    for ``auth=jwt`` and there is no ``--subscribe-key`` to verify tokens with."""
    if key is not None:
        return
    for rule in jwt_rules(config):
        where = rule.action.pos if rule.action is not None else rule.pos
        raise ConfigurationError(
            f"{where}: auth=jwt needs --subscribe-key (ini: subscribe-key): an HS256 secret "
            "of 32 bytes or more, or @FILE with a secret or a PEM public key"
        )


def authorize(
    key: TokenKey | None, target: SseTarget, vars: Mapping[str, str], now: float
) -> float | str | None:
    """May this request (its CGI ``vars``) open a stream of ``target`` at ``now`` (epoch
    seconds)? The token's ``exp`` (None: it has none), or the refusal: a reason starting
    with :data:`UNAUTHORIZED` or :data:`FORBIDDEN`."""
    if key is None:  # check_key keeps a configuration without a key from loading
        return UNAUTHORIZED + "no --subscribe-key to verify tokens with"
    token = token_from_request(vars)
    if token is None:
        return UNAUTHORIZED + "no token"
    try:
        claims = verify(key, token, now)
    except TokenError as e:
        return UNAUTHORIZED + e.reason
    if claims.expires is not None and now >= claims.expires:
        return UNAUTHORIZED + "token expired"
    for name in (*target.channels, *target.sharded, *target.streams):
        if not claims.may_subscribe(name):
            return FORBIDDEN + f"the token does not grant {name!r}"
    for pattern in target.patterns:
        if not claims.may_psubscribe(pattern):
            return FORBIDDEN + f"the token does not grant the pattern {pattern!r}"
    return claims.expires


def refuse_auth(request: server.Request, rule: str, why: str) -> bytes:
    """Answer a stream refused for its token (``why`` from :func:`authorize`): 401 with a
    ``WWW-Authenticate: Bearer`` challenge, or 403; returns the body. The log line names the
    path without its query string, which may hold the token."""
    path = request.path[:200].decode("utf-8", "backslashreplace")
    if why.startswith(FORBIDDEN):
        _log.info("{rule}: 403 for {path}: {why}", rule=rule, path=path, why=why)
        request.setHeader(b"WWW-Authenticate", REALM + b', error="insufficient_scope"')
        return plain(request, 403, b"403 Forbidden: the token does not grant this stream\n")
    _log.info("{rule}: 401 for {path}: {why}", rule=rule, path=path, why=why)
    reason = why[len(UNAUTHORIZED):]
    challenge = REALM
    if reason != "no token":  # RFC 6750, 3.1: no error code when no token was sent
        challenge += b', error="invalid_token", error_description="%s"' % _quotable(reason)
    request.setHeader(b"WWW-Authenticate", challenge)
    return plain(request, 401, b"401 Unauthorized: " + _quotable(reason) + b"\n")


def _quotable(text: str) -> bytes:
    """``text`` as an RFC 6750 ``error_description``: printable ASCII without ``"`` or ``\\``."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text).encode()


class Expiry:
    """A stream's ``on_close`` while its token's ``exp`` timer is armed: cancels the timer,
    then does what the stream's own ``on_close`` does."""

    __slots__ = ("call", "inner")

    def __init__(self, call: IDelayedCall, inner: Callable[[], None] | None) -> None:
        self.call, self.inner = call, inner

    def __call__(self) -> None:
        cancel(self.call)
        if self.inner is not None:
            self.inner()


def expire_at(clock: IReactorTime, stream: SSEStream, expires: float) -> IDelayedCall | None:
    """Close ``stream`` at ``expires`` (epoch seconds, read on ``clock``: a reactor's
    ``seconds()`` is the epoch time), after a comment saying why in ``sse`` mode (a raw
    stream carries the payloads alone). The timer, or None for a stream already closed."""
    if stream.closed:
        return None
    call = clock.callLater(max(0.0, expires - clock.seconds()), _expire, stream)
    stream.on_close = Expiry(call, stream.on_close)
    return call


def _expire(stream: SSEStream) -> None:
    if stream.closed:
        return
    if stream.mode is Mode.SSE:
        stream.send(http_chunk(EXPIRED_COMMENT) if stream.chunked else EXPIRED_COMMENT)
    stream.close(EXPIRED_REASON)
