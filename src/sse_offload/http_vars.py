"""The request vars of a request (uWSGI's CGI-style names), made from either HTTP path.

:func:`request_vars` reads twisted.web's Request; :func:`head_vars` parses a first request
head the front protocol read itself (front.py), strictly: only heads twisted.web would parse
the same way, so the rules see the same vars whichever path serves a request
(tests/test_front.py checks it on generated heads).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IAddress
from twisted.web import http
from twisted.web.server import Request

from .replies import to_text
from .routing import cgi_vars

#: A first request head longer than this (twisted.web's own limit is 16 KiB), or with more
#: header lines, goes to twisted.web, which answers it or refuses it as it always has.
MAX_HEAD: Final = 8192
MAX_HEADER_LINES: Final = 100

#: RFC 9110 token characters (header names).
_TCHARS: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: ``GET SP target SP HTTP/1.1``, the target a path (origin-form) of printable ASCII
#: (twisted.web takes a few more bytes, ``*`` and absolute URLs).
_REQUEST_LINE: Final = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1")
#: Headers that twisted.web must handle: a body, 100-continue, a connection to close.
_NOT_FAST: Final = frozenset({b"content-length", b"transfer-encoding", b"expect"})
_HOST: Final = http._hostHeaderExpression  # what Request.getRequestHostname matches


def request_vars(request: Request) -> dict[str, str]:
    """The CGI-style vars uWSGI gives a request (REQUEST_METHOD, REQUEST_URI, PATH_INFO,
    QUERY_STRING, SERVER_*, REMOTE_*, HTTP_* for each header), as text."""
    host = request.getHost()
    peer = request.getClientAddress()
    hostname = request.getRequestHostname()
    headers = (
        (name, value)
        for name, values in request.requestHeaders.getAllRawHeaders()
        for value in values
    )
    return cgi_vars(
        request.method,
        request.uri,
        request.clientproto,
        headers,
        remote_addr=str(getattr(peer, "host", "")),
        remote_port=str(getattr(peer, "port", "")),
        server_name=to_text(hostname) if hostname else "",
        server_port=str(getattr(host, "port", "")),
    )


def parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """The target and headers of a ``GET ... HTTP/1.1`` head (without its final CRLFCRLF),
    or None when the fast path does not take it."""
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None or len(lines) > MAX_HEADER_LINES or b"\x00" in head:
        return None
    # No CR or LF but the line ends: no folding, no bare LF line ends (twisted.web's rules
    # for those differ from a strict parser's, so they take such heads).
    if head.count(b"\r") != len(lines) - 1 or head.count(b"\n") != len(lines) - 1:
        return None
    headers = []
    seen = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        lower = name.lower()
        if not colon or not name or name.translate(None, _TCHARS) or lower in seen:
            return None  # not a token, or repeated (twisted.web groups repeated names)
        if lower in _NOT_FAST or (lower == b"connection" and b"close" in value.lower()):
            return None  # a body needs its decoder; a connection to close, its header
        seen.add(lower)
        headers.append((name, value.strip(b" \t")))
    return match.group(1), headers


def head_vars(
    head: bytes, peer: IAddress, server_port: str, local_host: Callable[[], str | None]
) -> dict[str, str] | None:
    """The request vars of a head the fast path takes (None: it does not), as
    :func:`request_vars` makes them from twisted.web's Request.
    ``local_host()``: the server's address, SERVER_NAME when there is no Host header."""
    parsed = parse_head(head)
    if parsed is None:
        return None
    target, headers = parsed
    host = next((value for name, value in headers if name.lower() == b"host"), None)
    if host is not None:
        match = _HOST.match(host)
        assert match is not None  # it matches any bytes: Request.getRequestHostname's
        server_name = to_text(match.group("host"))
    else:
        local = local_host()
        if local is None:
            return None  # a unix socket and no Host: twisted.web's answer
        server_name = local
    return cgi_vars(
        b"GET", target, b"HTTP/1.1", headers,
        remote_addr=str(getattr(peer, "host", "")),
        remote_port=str(getattr(peer, "port", "")),
        server_name=server_name,
        server_port=server_port,
    )
