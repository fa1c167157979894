"""The front resource: request vars -> the routing engine -> stream, static file or answer."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from twisted.logger import Logger
from twisted.web import resource, server, static
from twisted.web.server import Request

from .config import Config, StaticMap
from .pubsub import Hub
from .redis_address import AddressError, RedisAddress, parse_address
from .routing import Break, Continue, Offload, normalize_path_info, parse_sse_arg, run_chain
from .sse import Mode
from .stream import DEFAULT_MAX_QUEUED, SSEStream

#: DESIGN §4.7: the head of a stream offloaded from the request chain.
SSE_HEADERS: Final = (
    (b"Content-Type", b"text/event-stream"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
)


def _text(raw: bytes) -> str:
    # DESIGN §5: any byte survives the trip through the routing engine.
    return raw.decode("utf-8", "surrogateescape")


def request_vars(request: Request) -> dict[str, str]:
    """The CGI-style vars uWSGI gives a request (seed-behaviour §3.9), as text."""
    uri = request.uri
    path, _, query = uri.partition(b"?")
    host = request.getHost()
    peer = request.getClientAddress()
    vars: dict[str, str] = {
        "REQUEST_METHOD": _text(request.method),
        "REQUEST_URI": _text(uri),
        "PATH_INFO": normalize_path_info(path),
        "QUERY_STRING": _text(query),
        "SERVER_PROTOCOL": _text(request.clientproto),
        "SCRIPT_NAME": "",
        "SERVER_PORT": str(getattr(host, "port", "")),
        "REMOTE_ADDR": str(getattr(peer, "host", "")),
        "REMOTE_PORT": str(getattr(peer, "port", "")),
        "CONTENT_LENGTH": "",
        "CONTENT_TYPE": "",
    }
    hostname = request.getRequestHostname()
    vars["SERVER_NAME"] = _text(hostname) if hostname else ""
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = _text(name).upper().replace("-", "_")
        value = _text(b", ".join(values))
        if key in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            vars[key] = value
        else:
            vars["HTTP_" + key] = value
    return vars


@dataclass
class Gateway:
    """What the front resource needs: the rules, the hub, and the servers streams may use."""

    config: Config
    hub: Hub
    default_address: RedisAddress
    allowed_servers: set[tuple[object, ...]] = field(default_factory=set)
    max_queued: int = DEFAULT_MAX_QUEUED

    def allow(self, addresses: Iterable[RedisAddress]) -> None:
        self.allowed_servers.update(a.key for a in addresses)


def _plain(request: Request, status: int, body: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return body


class GatewayResource(resource.Resource):
    """Every request goes through here: isLeaf, the rules decide."""

    isLeaf = True
    log = Logger()

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()
        self.gateway = gateway

    def render(self, request: Request) -> bytes | int:
        vars = request_vars(request)
        outcome = run_chain(self.gateway.config.request_rules, vars)
        if isinstance(outcome, Offload):
            return self._offload(request, outcome)
        if isinstance(outcome, Break):
            return self._break(request, outcome.status)
        assert isinstance(outcome, Continue)
        static_file = self._static(request, vars)
        if static_file is not None:
            return static_file
        return _plain(request, 404, b"404 Not Found\n")

    # --- break -------------------------------------------------------------------------
    def _break(self, request: Request, status: int | None) -> bytes | int:
        if status is None:
            # DESIGN §4.15: the original closes the connection without a response.
            request.channel.transport.loseConnection()
            return server.NOT_DONE_YET
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/plain")
        request.setHeader(b"Connection", b"close")
        return b""

    # --- static-map ----------------------------------------------------------------------
    def _static(self, request: Request, vars: dict[str, str]) -> bytes | int | None:
        if request.method not in (b"GET", b"HEAD"):
            return None
        path_info = vars["PATH_INFO"]
        for mapping in self.gateway.config.static_maps:
            if path_info.startswith(mapping.mount):
                target = _static_target(mapping, path_info[len(mapping.mount) :])
                if target is not None:
                    result: bytes | int = static.File(target).render(request)
                    return result
        return None

    # --- offload -------------------------------------------------------------------------
    def _offload(self, request: Request, outcome: Offload) -> bytes | int:
        gateway = self.gateway
        target = parse_sse_arg(outcome.arg)
        rule = outcome.rule
        if target.channel is None:
            self.log.error(
                "{rule}: {mode} without a pubsub channel (no subscribe=) for {uri}",
                rule=str(rule.pos), mode=outcome.mode, uri=request.uri,
            )
            return _plain(request, 500, b"500 Internal Server Error\n")
        if target.server is None:
            address = gateway.default_address
        else:
            try:
                address = parse_address(target.server)
            except AddressError as e:
                self.log.error("{rule}: {error}", rule=str(rule.pos), error=str(e))
                return _plain(request, 500, b"500 Internal Server Error\n")
        if address.key not in gateway.allowed_servers:
            # DESIGN §4.9: a server named by an expanded (client or app supplied) value must be
            # one the configuration names; the original let a query string pick any server.
            self.log.error(
                "{rule}: refused server {server!r} for {uri}: not a server the configuration names",
                rule=str(rule.pos), server=target.server, uri=request.uri,
            )
            return _plain(request, 403, b"403 Forbidden\n")
        for name, value in SSE_HEADERS:
            request.setHeader(name, value)
        request.setResponseCode(200)
        if request.method == b"HEAD":
            return b""  # DESIGN §4.7: HEAD gets the head and ends
        stream = SSEStream(request, Mode(outcome.mode), gateway.max_queued)
        channel = target.channel.encode("utf-8", "surrogateescape")
        stream.start()
        if not stream.closed:
            stream.on_close = gateway.hub.subscribe(address, channel, stream)
        return server.NOT_DONE_YET


def _static_target(mapping: StaticMap, rest: str) -> str | None:
    """The file a static-map serves for ``rest`` of the path, never outside the mapped path."""
    if "\0" in rest:
        return None  # a %00 in the URL: no file has that name
    base = os.path.realpath(mapping.path)
    if os.path.isfile(base):
        return base  # a mount mapped to a file serves it for every path with the prefix
    if not os.path.isdir(base):
        return None
    candidate = os.path.realpath(os.path.join(base, rest.lstrip("/")))
    if os.path.commonpath([base, candidate]) != base or not os.path.isfile(candidate):
        return None  # outside the mapped directory, missing, or a directory (no listings)
    return candidate
