"""``--publish``: an authenticated HTTP endpoint that publishes to Redis (nchan/Mercure style).

``POST /publish/<channel>`` with a JSON body (publish_message.py) and a JWT
(``Authorization: Bearer`` or the ``sseAuthorization`` cookie; not the query string, which
access logs keep) whose ``sse.publish`` grants the channel (tokens.py). ``?to=stream``
appends to the Redis Stream of that key instead, ``?to=sharded`` publishes to the sharded
channel (SPUBLISH, what ``sse:ssubscribe=`` streams read). The endpoint runs once per
gateway (the master with ``--processes N``), on its own listener, and talks to the default
Redis server over one command connection made again with the hub's backoff (to a Redis
Cluster: one per node it needs, cluster_commands.py). Every refusal happens before anything
reaches Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import unquote_to_bytes

import txredisapi
from twisted.application import service, strports
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from .channel import deadline_channel_factory
from .cluster_commands import ClusterCommands
from .config import Config
from .endpoints import admin_endpoint
from .mirror import DEFAULT_MAXLEN
from .options import ConfigurationError, Limits
from .publish_message import Message, MessageError, MessageTooLarge, build_message
from .redis_address import RedisAddress
from .redis_link import CommandProtocol, Link
from .tokens import TokenError, TokenKey, TokenKeyError, parse_token_key, token_from_request, verify

log = Logger()

PREFIX: Final = b"/publish/"
#: A PUBLISH or XADD unanswered this long is a 503 (and its connection is made again).
PUBLISH_TIMEOUT: Final = 5.0
#: Entries a Redis Stream written through the endpoint keeps, about (``MAXLEN ~``): the
#: mirror's bound, so both writers keep the same history.
STREAM_MAXLEN: Final = DEFAULT_MAXLEN


@dataclass(frozen=True)
class PublishSettings:
    """``--publish`` and ``--publish-key`` resolved; the body and channel limits."""

    endpoint: str
    key: TokenKey
    max_body: int
    max_channel_length: int
    header_timeout: float


def resolve_publish(options: Any, config: Config, limits: Limits) -> PublishSettings | None:
    """The publish endpoint the options or ini keys ask for, or None; ConfigurationError
    when ``--publish`` has no usable ``--publish-key``."""

    def get(key: str) -> str | None:
        value = options[key] if key in options else None
        return value or config.option(key)

    endpoint = admin_endpoint(get("publish"))  # loopback unless it names an interface
    if not endpoint:
        return None
    key_text = get("publish-key")
    if not key_text:
        raise ConfigurationError(
            "--publish needs --publish-key (an HS256 secret of 32 bytes or more, or "
            "@FILE with a secret or a PEM public key)"
        )
    try:
        key = parse_token_key(key_text)
    except TokenKeyError as e:
        raise ConfigurationError(f"--publish-key: {e}") from None
    return PublishSettings(
        endpoint, key, limits.max_message_size, limits.max_channel_length, limits.header_timeout
    )


class CorsPolicy(Protocol):
    """The seam for CORS: the headers to add to an answer to ``request`` (a preflight
    when ``preflight``). None (the default) adds none."""

    def headers(self, request: server.Request, preflight: bool) -> list[tuple[bytes, bytes]]: ...


class PublishRequest(server.Request):
    """A request whose body is bounded: a declared length over ``max_body`` is refused with
    413 as soon as the head is read, a chunked body once it passes the bound; neither is
    buffered."""

    max_body = 0
    too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self._refuse_too_large(length)
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        content = self.content
        assert content is not None  # made by gotLength
        if content.tell() + len(data) > self.max_body:
            self._refuse_too_large(None)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.too_large:
            super().requestReceived(command, path, version)

    def _refuse_too_large(self, length: int | None) -> None:
        # Answered at once, like twisted.web's own answer to a bad head, and the connection
        # closed: the rest of the body is never read.
        self.too_large = True
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        size = f"{length} bytes" if length is not None else "a chunked body"
        log.warn("publish: refused {size} over {limit}", size=size, limit=self.max_body)
        body = _json({"error": f"body over {self.max_body} bytes"})
        transport = self.channel.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()


class PublishResource(resource.Resource):
    """``POST /publish/<channel>[?to=stream]``: auth, checks, then one PUBLISH or XADD."""

    isLeaf = True

    def __init__(
        self,
        settings: PublishSettings,
        command: Callable[..., Any],
        cors: CorsPolicy | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.command = command  # Link.command: a Deferred of the reply
        self.cors = cors

    def render(self, request: server.Request) -> bytes | int:
        if self.cors is not None:
            for header, value in self.cors.headers(request, request.method == b"OPTIONS"):
                request.setHeader(header, value)
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"allow", b"POST, OPTIONS")
            return b""
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST, OPTIONS")
            return _error(request, 405, "method not allowed: use POST")
        path = request.path
        if not path.startswith(PREFIX) or len(path) == len(PREFIX):
            return _error(request, 404, "not found: POST /publish/<channel>")
        channel = unquote_to_bytes(path[len(PREFIX):])
        name = channel.decode("utf-8", "surrogateescape")
        if len(name) > self.settings.max_channel_length:
            return _error(request, 400, "channel name too long")
        args: dict[bytes, list[bytes]] = request.args or {}
        targets = args.get(b"to", [b"channel"])
        if len(targets) != 1 or targets[0] not in (b"channel", b"stream", b"sharded"):
            return _error(request, 400, "to= must be channel, sharded or stream")
        to_stream = targets[0] == b"stream"
        refusal = self._authorize(request, name)
        if refusal is not None:
            return refusal
        body = request.content.read() if request.content is not None else b""
        try:
            message = build_message(body, to_stream, self.settings.max_body)
        except MessageTooLarge as e:
            return _error(request, 413, str(e))
        except MessageError as e:
            return _error(request, 400, str(e))
        self._send(request, channel, message, targets[0] == b"sharded")
        return server.NOT_DONE_YET

    def _authorize(self, request: server.Request, name: str) -> bytes | None:
        vars = {
            "HTTP_AUTHORIZATION": _header(request, b"authorization"),
            "HTTP_COOKIE": _header(request, b"cookie"),
        }
        token = token_from_request(vars)
        if token is None:
            request.setHeader(b"www-authenticate", b'Bearer realm="sse-offload"')
            return _error(request, 401, "missing token")
        try:
            claims = verify(self.settings.key, token)
        except TokenError as e:
            log.info("publish to {channel!r} refused: {reason}", channel=name, reason=e.reason)
            request.setHeader(
                b"www-authenticate", b'Bearer realm="sse-offload", error="invalid_token"'
            )
            return _error(request, 401, e.reason)
        if not claims.may_publish(name):
            return _error(request, 403, "channel not granted by the token")
        return None

    def _send(
        self, request: server.Request, channel: bytes, message: Message, sharded: bool
    ) -> None:
        if message.stream:
            args: tuple[bytes, ...] = (
                b"XADD", channel, b"MAXLEN", b"~", b"%d" % STREAM_MAXLEN, b"*", *message.fields,
            )
        else:
            args = (b"SPUBLISH" if sharded else b"PUBLISH", channel, message.payload)
        d = self.command(*args, timeout=PUBLISH_TIMEOUT)
        d.addCallbacks(self._sent, self._failed, (request, message), None, (request,), None)
        d.addErrback(self._broken, request)

    def _sent(self, reply: object, request: server.Request, message: Message) -> None:
        if message.stream:
            entry = reply.decode("ascii") if isinstance(reply, bytes) else str(reply)
            _finish(request, 200, {"id": entry})
        else:
            _finish(request, 200, {"receivers": int(reply)})  # type: ignore[call-overload]

    def _broken(self, failure: Failure, request: server.Request) -> None:
        log.failure("publish: answering failed", failure)
        _finish(request, 500, {"error": "internal error"})

    def _failed(self, failure: Failure, request: server.Request) -> None:
        if failure.check(txredisapi.ResponseError):
            _finish(request, 409, {"error": f"redis: {failure.getErrorMessage()}"})
            return
        log.warn("publish: redis unavailable: {why}", why=failure.getErrorMessage())
        _finish(request, 503, {"error": "redis unavailable"})


def _header(request: server.Request, name: bytes) -> str:
    values = request.requestHeaders.getRawHeaders(name) or []
    return ", ".join(v.decode("latin-1") for v in values)


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _error(request: server.Request, code: int, reason: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return _json({"error": reason})


def _finish(request: server.Request, code: int, obj: object) -> None:
    if request.finished or request._disconnected:
        return  # the client left while Redis answered
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.write(_json(obj))
    request.finish()


def publish_site(settings: PublishSettings, command: Callable[..., Any],
                 cors: CorsPolicy | None = None) -> server.Site:
    """The publish endpoint's site: bounded bodies, the gateway's request-head deadline."""

    class Request(PublishRequest):
        max_body = settings.max_body

    site = server.Site(PublishResource(settings, command, cors))
    site.requestFactory = Request
    site.protocol = deadline_channel_factory(settings.header_timeout)  # type: ignore[method-assign]
    return site


class PublishService(service.MultiService):
    """The endpoint's listener and its Redis link. The server is read when the service
    starts (``address()``): with ``--redis embedded`` it is known only once that runs."""

    def __init__(
        self,
        settings: PublishSettings,
        address: Callable[[], RedisAddress | None],
        reactor: Any,
        cors: CorsPolicy | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self._address = address
        self.address: RedisAddress | None = None  # read when the service starts
        self.link: Link | ClusterCommands | None = None
        site = publish_site(settings, self._command, cors)
        strports.service(settings.endpoint, site).setServiceParent(self)

    def _command(self, *args: bytes, timeout: float) -> Any:
        if self.link is None:  # stopping
            return defer.fail(txredisapi.ConnectionError("the publish endpoint is stopping"))
        return self.link.command(*args, timeout=timeout)

    def startService(self) -> None:
        self.address = self._address()
        assert self.address is not None, "the publish endpoint started before its redis address"
        if self.address.kind == "cluster":
            self.link = ClusterCommands(self.reactor, self.clock, self.address)
        else:
            self.link = Link(self, "publish", self._ready, lambda: None)  # type: ignore[arg-type]
        self.link.start()
        super().startService()
        log.info("publishing over HTTP on {endpoint} to redis {server}",
                 endpoint=self.settings.endpoint, server=self.address)

    def _ready(self, _: CommandProtocol) -> None:
        pass

    def stopService(self) -> Any:
        d = super().stopService()
        if self.link is not None:
            link, self.link = self.link, None
            d.addBoth(lambda _: link.stop())
        return d
