"""Request vars as uWSGI builds them: PATH_INFO from the raw request path (seed §3.9)."""

from __future__ import annotations

_HEX = b"0123456789abcdefABCDEF"


def _hex_byte(pair: bytes) -> int:
    # U:core/utils.c hex2num: an invalid digit makes the whole escape a NUL byte.
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


def normalize_path_info(raw_path: bytes) -> str:
    """Build PATH_INFO from the raw request path (without its query string).

    Stops at ``#``, percent-decodes (``%%`` -> ``%``, a bad escape -> NUL), then collapses
    ``//``, drops ``.`` segments and resolves ``..`` without ever going above ``/``. A
    trailing ``/`` (or a final ``.``/``..`` segment) leaves a trailing ``/``. The result
    always starts with ``/`` and is decoded as UTF-8 with ``surrogateescape``.
    """
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
