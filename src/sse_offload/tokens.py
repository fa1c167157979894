"""JSON Web Tokens that grant publishing and subscribing, verified with PyJWT (no Twisted).

A key comes from an option text (:func:`parse_token_key`) and pins the algorithms a token
may use: the token's own ``alg`` header only has to be one of them, so a token cannot pick
``none``, nor an HMAC keyed with an RSA public key's PEM text (the classic algorithm
confusion). Grants follow Mercure's shape under a claim of their own::

    {"sse": {"publish": ["news", "room.*"], "subscribe": ["*"]}, "exp": 1767225600}

Each list holds channel names or :func:`fnmatch.fnmatchcase` patterns (``*`` is every
channel); a stream's ``PSUBSCRIBE`` pattern needs a grant that matches every channel the
pattern can (:meth:`Claims.may_psubscribe`). ``exp`` is optional; when present it is checked
with :data:`LEEWAY` seconds of grace for clocks a little apart. ``aud`` and ``iss`` are not
checked.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

#: Seconds of grace on ``exp`` and ``nbf``: enough for NTP-synced hosts a little apart, too
#: little to matter for a token's lifetime (PyJWT's own default is 0).
LEEWAY: Final = 5.0
#: An HS256 secret shorter than this is refused: RFC 7518 section 3.2 asks for a key at
#: least as long as the hash output (256 bits).
MIN_SECRET_BYTES: Final = 32
#: A token longer than this is refused before it is decoded (a token with a few dozen
#: grants is well under 1 KiB; this bounds the work a client can ask for).
MAX_TOKEN_LENGTH: Final = 8192
#: The claim that holds the grants.
CLAIM: Final = "sse"
#: The cookie a browser sends a token in (Mercure's ``mercureAuthorization``, renamed).
COOKIE_NAME: Final = "sseAuthorization"
#: The query parameter a token may come in (EventSource cannot send headers).
QUERY_NAME: Final = "authorization"

_EC_ALGORITHMS: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_BEARER: Final = re.compile(r"\s*bearer\s+(\S+)\s*", re.IGNORECASE)


class TokenKeyError(ValueError):
    """A key option text that cannot be used; the message says why (for start-up)."""


class TokenError(Exception):
    """A token refused. ``reason`` is short, for a log line and a 401 body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenKey:
    """A verification key and the algorithms pinned to it. ``source`` says where it came
    from (``hs256 secret``, ``RSA public key from FILE``), never the secret itself."""

    key: Any
    algorithms: tuple[str, ...]
    source: str

    def __repr__(self) -> str:
        return f"TokenKey({self.source}, algorithms={self.algorithms!r})"


@dataclass(frozen=True)
class Claims:
    """The grants of a verified token. ``expires`` is the ``exp`` claim (epoch seconds) or
    None when the token has none; ``subject`` is ``sub`` when it is a string."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    expires: float | None = None
    subject: str | None = None

    def may_publish(self, name: str) -> bool:
        """Whether the token grants publishing to channel (or stream key) ``name``."""
        return _granted(self.publish, name)

    def may_subscribe(self, name: str) -> bool:
        """Whether the token grants subscribing to channel (or stream key) ``name``."""
        return _granted(self.subscribe, name)

    def may_psubscribe(self, pattern: str) -> bool:
        """Whether the token grants a Redis ``PSUBSCRIBE`` to ``pattern``: some grant
        matches every channel the pattern can match. (Not the same text: ``[!a]`` excludes
        ``a`` for fnmatch, and includes ``!`` and ``a`` for Redis.)"""
        tokens = _redis_tokens(pattern)
        return any(_covers(_grant_tokens(grant), tokens) for grant in self.subscribe)


def _granted(patterns: tuple[str, ...], name: str) -> bool:
    return any(pattern == name or fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# A pattern is granted by what it can match, not by its text: fnmatch("news.*", "news.?")
# is true because "?" matches the character "*", yet PSUBSCRIBE news.* delivers news.long,
# which the grant news.? does not allow. So both are read as token lists, a grant's "*"
# standing for any run of a pattern's tokens, its "?" for one token that is one character,
# its "[...]" for one literal character of the set; a pattern's wildcards only ever match a
# grant's wildcards. What this proves is a subset: it may refuse an exotic pattern that is
# in fact covered, never grant one that is not.
_ANY: Final = ("any", "")  # "*": any run of characters
_ONE: Final = ("one", "")  # "?" or a class: one character


def _literal(char: str) -> tuple[str, str]:
    return ("lit", char)


def _redis_tokens(pattern: str) -> list[tuple[str, str]]:
    """A Redis glob as tokens: ``\\x`` is a literal x; ``[...]`` (to its ``]``, or to the
    end when unclosed, as Redis reads it) is one character."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(_literal(pattern[i + 1]))
            i += 2
            continue
        if char == "[":
            i += 1
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            out.append(_ONE)
        elif char in "*?":
            out.append(_ANY if char == "*" else _ONE)
        else:
            out.append(_literal(char))
        i += 1
    return out


def _grant_tokens(grant: str) -> list[tuple[str, str]]:
    """An fnmatch glob as tokens; a class keeps its text (an unclosed ``[`` is literal, as
    fnmatch reads it)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(grant):
        char = grant[i]
        if char == "[":
            end = i + 1
            if end < len(grant) and grant[end] == "!":
                end += 1
            if end < len(grant) and grant[end] == "]":
                end += 1
            end = grant.find("]", end)
            if end >= 0:
                out.append(("set", grant[i : end + 1]))
                i = end + 1
                continue
        out.append(_ANY if char == "*" else _ONE if char == "?" else _literal(char))
        i += 1
    return out


def _covers(grant: list[tuple[str, str]], pattern: list[tuple[str, str]]) -> bool:
    """Does ``grant`` match every string ``pattern`` matches? The usual wildcard match with
    backtracking to the last ``*``, on tokens."""
    g = p = 0
    star, mark = -1, 0
    while p < len(pattern):
        if g < len(grant) and grant[g] != _ANY and _one_covers(grant[g], pattern[p]):
            g += 1
            p += 1
        elif g < len(grant) and grant[g] == _ANY:
            star, mark = g, p
            g += 1
        elif star >= 0:
            mark += 1
            g, p = star + 1, mark
        else:
            return False
    while g < len(grant) and grant[g] == _ANY:
        g += 1
    return g == len(grant)


def _one_covers(grant: tuple[str, str], token: tuple[str, str]) -> bool:
    kind, text = grant
    if kind == "lit":
        return token == grant
    if kind == "one":
        return token[0] in ("lit", "one")
    if kind == "set":
        return token[0] == "lit" and fnmatch.fnmatchcase(token[1], text)
    return False


def parse_token_key(text: str) -> TokenKey:
    """The key an option text names: ``hs256:SECRET`` or plain text (an HS256 secret), or
    ``@/path`` to a file holding a secret or a PEM public key (or certificate), whose type
    picks the algorithm: RSA -> RS256, EC -> ES256/ES384/ES512 by curve, Ed25519/Ed448 ->
    EdDSA. Raises :class:`TokenKeyError` with the reason."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise TokenKeyError(f"cannot read token key file {str(path)!r}: {e.strerror}") from e
        if b"-----BEGIN" in raw:
            return _pem_key(raw, f"from {path}")
        try:
            secret = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise TokenKeyError(f"token key file {str(path)!r} is neither UTF-8 nor PEM") from e
        return _secret_key(secret, f"hs256 secret from {path}")
    if text[:6].lower() == "hs256:":
        text = text[6:]
    return _secret_key(text, "hs256 secret")


def _secret_key(secret: str, source: str) -> TokenKey:
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise TokenKeyError(
            f"token key: an HS256 secret needs at least {MIN_SECRET_BYTES} bytes, this one"
            f" has {size} (make one with: python -c 'import secrets;"
            " print(secrets.token_urlsafe(32))')"
        )
    return TokenKey(secret.encode("utf-8"), ("HS256",), source)


def _pem_key(raw: bytes, where: str) -> TokenKey:
    if b"PRIVATE KEY-----" in raw:
        raise TokenKeyError(f"token key {where} is a private key: give the public key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in raw:
            public: Any = x509.load_pem_x509_certificate(raw).public_key()
        else:
            public = serialization.load_pem_public_key(raw)
    except ValueError as e:
        raise TokenKeyError(f"token key {where}: not a PEM public key ({e})") from e
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise TokenKeyError(f"token key {where}: RSA key of {public.key_size} bits, need 2048")
        return TokenKey(public, ("RS256",), f"RSA public key {where}")
    if isinstance(public, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(public.curve.name)
        if algorithm is None:
            raise TokenKeyError(f"token key {where}: unsupported curve {public.curve.name}")
        return TokenKey(public, (algorithm,), f"EC public key {where}")
    if isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return TokenKey(public, ("EdDSA",), f"EdDSA public key {where}")
    raise TokenKeyError(f"token key {where}: unsupported key type {type(public).__name__}")


def verify(key: TokenKey, token: str, now: float | None = None) -> Claims:
    """The claims of ``token`` signed with ``key`` (by one of its pinned algorithms) and
    valid at ``now`` (default: the current time). Raises :class:`TokenError`."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("malformed token")
    try:
        payload = jwt.decode(
            token,
            key.key,
            algorithms=list(key.algorithms),
            # Times are checked below against ``now``; aud and iss are not used.
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError("bad signature") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError("algorithm not allowed") from None
    except jwt.DecodeError:
        raise TokenError("malformed token") from None
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise TokenError("invalid token") from None
    if not isinstance(payload, dict):
        raise TokenError("malformed token")
    moment = time.time() if now is None else now
    expires = _time_claim(payload, "exp")
    if expires is not None and moment > expires + LEEWAY:
        raise TokenError("token expired")
    not_before = _time_claim(payload, "nbf")
    if not_before is not None and moment + LEEWAY < not_before:
        raise TokenError("token not yet valid")
    grants = payload.get(CLAIM)
    if grants is None:
        raise TokenError(f"missing claim {CLAIM!r}")
    if not isinstance(grants, dict):
        raise TokenError(f"malformed claim {CLAIM!r}")
    subject = payload.get("sub")
    return Claims(
        publish=_patterns(grants, "publish"),
        subscribe=_patterns(grants, "subscribe"),
        expires=expires,
        subject=subject if isinstance(subject, str) else None,
    )


def _time_claim(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenError(f"malformed claim {name!r}")
    return float(value)


def _patterns(grants: dict[str, Any], name: str) -> tuple[str, ...]:
    value = grants.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenError(f"malformed claim {CLAIM}.{name}")
    return tuple(value)


def token_from_request(vars: Mapping[str, str]) -> str | None:
    """The token a request carries, from the first of: an ``Authorization: Bearer`` header
    (``HTTP_AUTHORIZATION``), the ``sseAuthorization`` cookie (``HTTP_COOKIE``), the
    ``authorization`` query parameter (``QUERY_STRING``); None when there is none."""
    match = _BEARER.fullmatch(vars.get("HTTP_AUTHORIZATION", ""))
    if match is not None:
        return match.group(1)
    # Repeated Cookie headers reach the vars joined with ", ": split on both.
    for pair in re.split(r"[;,]", vars.get("HTTP_COOKIE", "")):
        name, equals, value = pair.strip().partition("=")
        if equals and name == COOKIE_NAME and value.strip().strip('"'):
            return value.strip().strip('"')
    query = vars.get("QUERY_STRING", "")
    if QUERY_NAME in query:
        try:
            fields = parse_qsl(query, max_num_fields=100)
        except ValueError:
            return None  # more fields than a request to this gateway has a use for
        for name, value in fields:
            if name == QUERY_NAME and value:
                return value
    return None
