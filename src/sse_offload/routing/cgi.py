"""Request vars as uWSGI builds them: PATH_INFO from the raw request path."""

from __future__ import annotations

from collections.abc import Iterable

_HEX = b"0123456789abcdefABCDEF"


def _hex_byte(pair: bytes) -> int:
    # uWSGI core/utils.c hex2num: an invalid digit makes the whole escape a NUL byte.
    if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
        return 0
    return int(pair, 16)


def _percent_decode(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte != 0x25:  # '%'
            out.append(byte)
            i += 1
        elif raw[i + 1 : i + 2] == b"%":
            out.append(0x25)
            i += 2
        elif i + 2 < len(raw):
            out.append(_hex_byte(raw[i + 1 : i + 3]))
            i += 3
        else:
            break  # an incomplete escape at the end is dropped, as uWSGI does
    return bytes(out)


#: What normalize_path_info has to work on: an escape, a fragment, empty or dot segments.
_SPECIAL = (b"%", b"#", b"//", b"/.")


def normalize_path_info(raw_path: bytes) -> str:
    """Build PATH_INFO from the raw request path (without its query string).

    Stops at ``#``, percent-decodes (``%%`` -> ``%``, a bad escape -> NUL), then collapses
    ``//``, drops ``.`` segments and resolves ``..`` without ever going above ``/``. A
    trailing ``/`` (or a final ``.``/``..`` segment) leaves a trailing ``/``. The result
    always starts with ``/`` and is decoded as UTF-8 with ``surrogateescape``.
    """
    if raw_path[:1] == b"/" and not any(c in raw_path for c in _SPECIAL):
        return raw_path.decode("utf-8", "surrogateescape")  # already normal: most paths
    decoded = _percent_decode(raw_path.split(b"#", 1)[0])
    # Decision against uWSGI, which resolves dot segments *before* decoding them, so that
    # "/%2e%2e/" stays "/../": decoding first means no escape can reach outside a mount.
    segments: list[bytes] = []
    parts = decoded.split(b"/")
    for part in parts:
        if part == b"..":
            if segments:
                segments.pop()
        elif part not in (b"", b"."):
            segments.append(part)
    trailing = bool(segments) and parts[-1] in (b"", b".", b"..")
    path = b"/" + b"/".join(segments) + (b"/" if trailing else b"")
    return path.decode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str:
    # Any byte survives the trip through the routing engine (UTF-8 with surrogateescape).
    return raw.decode("utf-8", "surrogateescape")


def cgi_vars(
    method: bytes,
    uri: bytes,
    protocol: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    remote_addr: str = "",
    remote_port: str = "",
    server_name: str = "",
    server_port: str = "",
) -> dict[str, str]:
    """The vars uWSGI gives a request, as text.

    Every header becomes ``HTTP_<NAME>`` (upper-cased, ``-`` -> ``_``; repeated headers
    joined with ``, ``), except Content-Length and Content-Type, which become
    CONTENT_LENGTH and CONTENT_TYPE. A client therefore cannot forge a var whose name has
    no ``HTTP_`` prefix, such as the ``X-SSE-OFFLOAD`` an app adds.
    """
    path, _, query = uri.partition(b"?")
    vars: dict[str, str] = {
        "REQUEST_METHOD": _text(method),
        "REQUEST_URI": _text(uri),
        "PATH_INFO": normalize_path_info(path),
        "QUERY_STRING": _text(query),
        "SERVER_PROTOCOL": _text(protocol),
        "SCRIPT_NAME": "",
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": remote_port,
        "CONTENT_LENGTH": "",
        "CONTENT_TYPE": "",
    }
    seen: set[str] = set()
    for name, value in headers:
        key = _VAR_NAMES.get(name) or _var_name(name)
        text = value.decode("utf-8", "surrogateescape")
        if key in seen:
            vars[key] += ", " + text  # a repeated header: its values joined, in order
        else:
            seen.add(key)
            vars[key] = text
    return vars


#: Header name -> var name, for the names clients send (bounded: names are client data).
_VAR_NAMES: dict[bytes, str] = {}
_VAR_NAMES_MAX = 1000


def _var_name(name: bytes) -> str:
    key = _text(name).upper().replace("-", "_")
    if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
        key = "HTTP_" + key
    if len(_VAR_NAMES) < _VAR_NAMES_MAX:
        _VAR_NAMES[name] = key
    return key
