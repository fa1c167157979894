"""Cross-origin access to the gateway's streams (``--cors-origins``), as pure functions.

A page on another origin may read a stream (``new EventSource(url)``) only when the
response names its origin in ``Access-Control-Allow-Origin``; with ``{withCredentials:
true}`` (the auth cookie) it also needs ``Access-Control-Allow-Credentials: true`` and its
exact origin, never ``*`` (the Fetch standard's CORS check). :class:`CorsPolicy` says which
headers a response to a request from some ``Origin`` carries, and answers a preflight.

- A listed origin gets itself back and ``Access-Control-Allow-Credentials: true``.
- ``*`` in the list lets every other origin read responses without credentials: the answer
  is ``*``, and no credentials, so a page on an arbitrary site cannot read a stream with the
  user's cookie.
- An unlisted origin (and a request without ``Origin``) gets no such header: the browser
  then refuses the page the response.
- When origins are listed, every answer says ``Vary: Origin``: it depends on the request's
  origin, so a cache must key on it (even for an answer without the header).

:func:`combine` fits these headers into a head that has its own: a rule's ``addheader:`` or
the app's CORS headers win whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

#: What a stream route takes (an EventSource GETs; HEAD gets the head).
STREAM_METHODS: Final = b"GET, HEAD, OPTIONS"
#: Headers a stream's client may send: EventSource sends Last-Event-ID when it reconnects;
#: a fetch-based client adds Authorization; some send Cache-Control: no-cache.
STREAM_REQUEST_HEADERS: Final = b"Last-Event-ID, Authorization, Cache-Control"
#: How long a browser may keep a preflight's answer: Chromium caps it at 7200 s, Firefox
#: at 86400 s; two hours spares a preflight per reconnect without outliving a config long.
MAX_AGE: Final = 7200

ALLOW_ORIGIN: Final = b"Access-Control-Allow-Origin"
ALLOW_CREDENTIALS: Final = b"Access-Control-Allow-Credentials"
VARY: Final = b"Vary"
#: A head with any header of this prefix does CORS itself: the gateway adds none of its own.
CORS_PREFIX: Final = b"access-control-"


class CorsError(ValueError):
    """A ``--cors-origins`` value that is not a list of origins; the message says why."""


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Which origins may read the gateway's streams: ``origins`` (``scheme://host[:port]``,
    as browsers write an ``Origin``) with credentials, and, when ``any_origin``, every other
    one without."""

    origins: frozenset[str]
    any_origin: bool = False

    @classmethod
    def parse(cls, text: str) -> CorsPolicy:
        """The policy of a comma-separated list of origins (``https://app.example``,
        ``http://localhost:8000``) and/or ``*``. Raises :class:`CorsError`."""
        origins: set[str] = set()
        any_origin = False
        for item in (part.strip() for part in text.split(",")):
            if item == "*":
                any_origin = True
            elif item:
                origins.add(_origin(item))
        if not origins and not any_origin:
            raise CorsError(f"--cors-origins {text!r}: no origin given")
        return cls(frozenset(origins), any_origin)

    def headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The headers of a response to a request with this ``Origin`` header (None: the
        request had none)."""
        out: list[tuple[bytes, bytes]] = []
        listed = origin.lower() if origin else None
        if listed is not None and listed in self.origins:
            out += [(ALLOW_ORIGIN, listed.encode("ascii")), (ALLOW_CREDENTIALS, b"true")]
        elif listed is not None and self.any_origin:
            out.append((ALLOW_ORIGIN, b"*"))
        if self.origins:
            out.append((VARY, b"Origin"))
        return out

    def preflight(
        self,
        origin: str | None,
        methods: bytes = STREAM_METHODS,
        request_headers: bytes = STREAM_REQUEST_HEADERS,
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The answer to an ``OPTIONS`` request from ``origin`` for a route that takes
        ``methods``: status and headers. 204 with the CORS headers for an allowed origin,
        403 for another; 204 with ``Allow`` alone without ``Origin`` (not a preflight)."""
        if not origin:
            return 204, [(b"Allow", methods)]
        allowed = self.headers(origin)
        if not any(name == ALLOW_ORIGIN for name, _ in allowed):
            return 403, [(VARY, b"Origin")]
        return 204, [
            *allowed,
            (b"Access-Control-Allow-Methods", methods),
            (b"Access-Control-Allow-Headers", request_headers),
            (b"Access-Control-Max-Age", b"%d" % MAX_AGE),
        ]


def combine(
    ours: Sequence[tuple[bytes, bytes]], present: Mapping[bytes, Sequence[bytes]]
) -> list[tuple[bytes, bytes]]:
    """The headers to set, each replacing that name's values, so that a head which has
    ``present`` (lower-case names) carries ``ours``. A head with an ``Access-Control-*``
    header of its own (a rule's ``addheader:``, the app's) gets none of ours: half of each
    could make a pair the browser refuses (``*`` with credentials). ``Origin`` joins an
    existing ``Vary``."""
    own = any(name.startswith(CORS_PREFIX) for name in present)
    out: list[tuple[bytes, bytes]] = []
    for name, value in ours:
        if name.lower() == b"vary":
            existing = list(present.get(b"vary", ()))
            tokens = {t.strip().lower() for v in existing for t in v.split(b",")}
            if value.lower() not in tokens and b"*" not in tokens:
                out.append((name, b", ".join([*existing, value])))
        elif not own:
            out.append((name, value))
    return out


def _origin(item: str) -> str:
    """An origin as browsers serialize it (lower case, no path, no default port kept);
    CorsError for anything else."""
    if "*" in item:
        raise CorsError(
            f"--cors-origins: {item!r}: no wildcards in an origin (list each one, or * alone)"
        )
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
