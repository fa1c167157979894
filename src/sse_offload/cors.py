"""Cross-origin access to the gateway's responses (``--cors-origins``), as pure functions.

A page on another origin may read a stream (``new EventSource(url)``) only when the
response names its origin in ``Access-Control-Allow-Origin``; with ``{withCredentials:
true}`` (the auth cookie) it also needs ``Access-Control-Allow-Credentials: true`` and its
exact origin, never ``*`` (the Fetch standard's CORS check). :class:`CorsPolicy` says which
headers a response to a request from some ``Origin`` carries, and answers a preflight.

- A listed origin gets itself back, ``Access-Control-Allow-Credentials: true`` and
  ``Vary: Origin`` (the answer depends on the request's origin, so a cache must key on it).
- ``*`` in the list lets every other origin read responses without credentials: the answer
  is ``*``, and no credentials, so a page on an arbitrary site cannot read a stream with the
  user's cookie.
- An unlisted origin (and a request without ``Origin``) gets no header at all: the browser
  then refuses the page the response.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

#: Headers a stream's client may send (EventSource sends Last-Event-ID when it reconnects;
#: a fetch-based client adds Authorization; some send Cache-Control: no-cache).
ALLOW_HEADERS: Final = b"Last-Event-ID, Authorization, Cache-Control"
#: How long a browser may keep a preflight's answer: Chromium caps it at 7200 s, Firefox
#: at 86400 s; two hours spares a preflight per reconnect without outliving a config long.
MAX_AGE: Final = 7200

ALLOW_ORIGIN: Final = b"Access-Control-Allow-Origin"
ALLOW_CREDENTIALS: Final = b"Access-Control-Allow-Credentials"
VARY: Final = b"Vary"
#: The response headers the gateway sets; a rule's own ``addheader:`` of one of these
#: names wins (the gateway then adds none of them).
HEADER_NAMES: Final = (b"access-control-allow-origin", b"access-control-allow-credentials")


class CorsError(ValueError):
    """A ``--cors-origins`` value that is not a list of origins; the message says why."""


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Which origins may read the gateway's responses: ``origins`` (``scheme://host[:port]``,
    lower case) with credentials, and, when ``any_origin``, every other one without."""

    origins: frozenset[str]
    any_origin: bool = False

    @classmethod
    def parse(cls, text: str) -> CorsPolicy:
        """The policy of a comma-separated list of origins (``https://app.example``,
        ``http://localhost:8000``) and/or ``*``. Raises :class:`CorsError`."""
        origins: set[str] = set()
        any_origin = False
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item == "*":
                any_origin = True
                continue
            origins.add(_origin(item))
        if not origins and not any_origin:
            raise CorsError(f"--cors-origins {text!r}: no origin given")
        return cls(frozenset(origins), any_origin)

    def allows(self, origin: str | None) -> bool:
        """Whether a page of ``origin`` may read responses (with or without credentials)."""
        if not origin:
            return False
        return self.any_origin or origin.lower() in self.origins

    def headers(self, origin: str | None, credentials: bool = True) -> list[tuple[bytes, bytes]]:
        """The headers to add to a response to a request with this ``Origin`` header;
        ``credentials``: a listed origin may send cookies and Authorization."""
        if not origin:
            return []
        listed = origin.lower()
        if listed in self.origins:
            out = [(ALLOW_ORIGIN, listed.encode("ascii"))]
            if credentials:
                out.append((ALLOW_CREDENTIALS, b"true"))
            out.append((VARY, b"Origin"))
            return out
        if self.any_origin:
            # The answer still varies with the origin when some origins are listed.
            return [(ALLOW_ORIGIN, b"*"), (VARY, b"Origin")] if self.origins else [
                (ALLOW_ORIGIN, b"*")
            ]
        return []

    def preflight(
        self, origin: str | None, methods: Iterable[str] = ("GET",), credentials: bool = True
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The answer to an ``OPTIONS`` preflight from ``origin`` for a route that takes
        ``methods``: 204 with the CORS headers, or 403 (no CORS header) for an origin not
        allowed."""
        allowed = self.headers(origin, credentials)
        if not allowed:
            return 403, [(VARY, b"Origin")]
        return 204, [
            *allowed,
            (b"Access-Control-Allow-Methods", ", ".join(methods).encode("ascii")),
            (b"Access-Control-Allow-Headers", ALLOW_HEADERS),
            (b"Access-Control-Max-Age", b"%d" % MAX_AGE),
        ]


def _origin(item: str) -> str:
    """An origin as browsers serialize it (lower case, no path, no default port kept)."""
    parts = urlsplit(item)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CorsError(f"--cors-origins: {item!r} is not an origin (scheme://host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise CorsError(f"--cors-origins: {item!r} has more than scheme://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise CorsError(f"--cors-origins: {item!r} has a bad port") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme}://{host}{suffix}"
