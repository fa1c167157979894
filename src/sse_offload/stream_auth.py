"""JWT auth on stream routes (``sse:...,auth=jwt``): who may open a stream, and until when.

A rule opts in with ``auth=jwt`` in its sse argument; the key is ``--subscribe-key``. When
such a stream starts, the request's token (tokens.token_from_request) is verified and must
grant, in ``sse.subscribe``, every name the stream listens to: each channel, each pattern as
written (``news.*`` must itself be granted), each Redis Stream key. A token with ``exp``
ends the stream at that moment: one timer for that stream only, cancelled when it ends.

Unlike the publish endpoint, a stream token gets no grace on ``exp``: the stream closes at
``exp`` exactly, so the browser's reconnect with the same token must be refused, not let in
for a few more seconds of leeway and closed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
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
from .tokens import TokenError, TokenKey, token_from_request, verify

#: The start of :meth:`Gateway.plan <sse_offload.gateway.Gateway.plan>`'s reason when a
#: stream is refused for its token: no valid token (401), or a name it does not grant (403).
UNAUTHORIZED: Final = "unauthorized: "
FORBIDDEN: Final = "forbidden: "
#: What a stream gets just before the gateway closes it at its token's ``exp``.
EXPIRED_COMMENT: Final = b": token expired\n\n"

_log = Logger(namespace="sse_offload.web")


def jwt_rules(config: Config) -> list[Rule]:
    """The rules whose ``sse``/``sseraw`` argument writes ``auth=jwt`` (any chain)."""
    rules: Iterable[Rule] = (*config.request_rules, *config.response_rules, *config.final_rules)
    return [
        rule for rule in rules
        if rule.action is not None and rule.action.name in ("sse", "sseraw")
        and "=" in rule.action.arg and parse_kvlist(rule.action.arg).get("auth") == "jwt"
    ]


def check_key(config: Config, key: TokenKey | None) -> None:
    """ConfigurationError when a rule of ``config`` asks for ``auth=jwt`` and there is no
    ``--subscribe-key`` to verify tokens with."""
    if key is not None:
        return
    rules = jwt_rules(config)
    if rules:
        raise ConfigurationError(
            f"{rules[0].action.pos}: auth=jwt needs --subscribe-key (ini subscribe-key): an "  # type: ignore[union-attr]
            "HS256 secret of 32 bytes or more, or @FILE with a secret or a PEM public key"
        )


def authorize(
    key: TokenKey | None, target: SseTarget, vars: Mapping[str, str], now: float | None = None
) -> float | str | None:
    """May this request open a stream of ``target``? The token's ``exp`` (None: none), or
    the refusal: a reason starting with :data:`UNAUTHORIZED` or :data:`FORBIDDEN`."""
    if key is None:
        return UNAUTHORIZED + "no key to verify tokens with"
    token = token_from_request(vars)
    if token is None:
        return UNAUTHORIZED + "no token"
    moment = time.time() if now is None else now
    try:
        claims = verify(key, token, moment)
    except TokenError as e:
        return UNAUTHORIZED + e.reason
    if claims.expires is not None and moment >= claims.expires:
        return UNAUTHORIZED + "token expired"
    for name in target.names():
        if not claims.may_subscribe(name):
            return FORBIDDEN + f"the token does not grant {name!r}"
    return claims.expires


def refuse_auth(request: server.Request, rule: str, why: str) -> bytes:
    """Answer a stream refused for its token (``why`` from :func:`authorize`); the body."""
    uri = request.uri[:200]
    if why.startswith(FORBIDDEN):
        _log.info("{rule}: 403 for {uri}: {why}", rule=rule, uri=uri, why=why)
        return plain(request, 403, b"403 Forbidden: " + _text(why, FORBIDDEN) + b"\n")
    _log.info("{rule}: 401 for {uri}: {why}", rule=rule, uri=uri, why=why)
    reason = _text(why, UNAUTHORIZED)
    request.setHeader(
        b"WWW-Authenticate", b'Bearer error="invalid_token", error_description="%s"' % reason
    )
    return plain(request, 401, b"401 Unauthorized: " + reason + b"\n")


def _text(why: str, prefix: str) -> bytes:
    return why[len(prefix):].replace('"', "'").encode("ascii", "backslashreplace")


class Expiry:
    """A stream's ``on_close`` while its token's ``exp`` timer is armed: cancels the timer,
    then does what the stream's own ``on_close`` does."""

    __slots__ = ("call", "inner")

    def __init__(self, call: IDelayedCall, inner: Callable[[], None] | None) -> None:
        self.call, self.inner = call, inner

    def __call__(self) -> None:
        if self.call.active():
            self.call.cancel()
        if self.inner is not None:
            self.inner()


def expire_at(clock: IReactorTime, stream: SSEStream, expires: float) -> None:
    """Close ``stream`` cleanly at ``expires`` (epoch seconds), after a comment saying why
    (``sse`` mode only: a raw stream carries the payloads alone)."""
    if stream.closed:
        return
    delay = max(0.0, expires - time.time())
    call = clock.callLater(delay, _expire, stream)
    stream.on_close = Expiry(call, stream.on_close)


def _expire(stream: SSEStream) -> None:
    if stream.closed:
        return
    if stream.mode is Mode.SSE:
        stream.send(http_chunk(EXPIRED_COMMENT) if stream.chunked else EXPIRED_COMMENT)
    stream.close("token_expired")
