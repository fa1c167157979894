"""The uWSGI ini reader: an ordered multimap of the ``[uwsgi]`` section, as uWSGI reads it.

Values are expanded as uWSGI does (magic ``%X``, then ``$(ENV)``, then ``@(file)``, then
``%(name)``), and every character of an expanded value remembers the source column it came
from, so an error found later inside a value points into the original line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sse_offload.config.model import Diagnostic, IniEntry, SourcePos

SECTION = "uwsgi"
_STRIP = " \t\r"
_ENV_RE = re.compile(r"\$\(([^)]*)\)")
_PLACEHOLDER_RE = re.compile(r"%\(([^)]*)\)")
_FILE_RE = re.compile(r"@\(([^)]*)\)")
#: ``@(file)`` reads at most this much: it is meant for a password or a short value, and a
#: rules file pointing at /dev/zero must not hang start-up.
MAX_INCLUDED_BYTES = 1 << 20


@dataclass(frozen=True)
class IniLine:
    """An entry plus the source column (1-based) of each character of its value.

    ``cols`` has one more item than the value: the column just past its end.
    """

    entry: IniEntry
    key_col: int
    cols: tuple[int, ...]

    def locate(self, offset: int) -> SourcePos:
        """Return the source position of character ``offset`` of the value."""
        pos = self.entry.pos
        col = self.cols[min(max(offset, 0), len(self.cols) - 1)]
        return SourcePos(pos.file, pos.line, col, pos.text)

    def key_pos(self) -> SourcePos:
        """Return the source position of the key."""
        pos = self.entry.pos
        return SourcePos(pos.file, pos.line, self.key_col, pos.text)


class _Text:
    """A string being expanded, with a source column per character."""

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.cols: list[int] = []

    def add(self, text: str, col: int) -> None:
        self.chars.append(text)
        self.cols.extend([col] * len(text))

    def value(self) -> str:
        return "".join(self.chars)


def _magic_table(path: str) -> dict[str, str]:
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    return {
        "d": directory if directory.endswith("/") else directory + "/",
        "n": os.path.splitext(os.path.basename(absolute))[0],
        "%": "%",
        "(": "%(",
    }


def _magic(
    value: str,
    cols: list[int],
    table: Mapping[str, str],
    pos: SourcePos,
    warnings: list[Diagnostic],
) -> tuple[str, list[int]]:
    out = _Text()
    i = 0
    while i < len(value):
        if value[i] == "%" and i + 1 < len(value):
            pair = value[i : i + 2]
            if pair[1] in table:
                out.add(table[pair[1]], cols[i])
            else:
                # Decision against uWSGI (docs/architecture.md, difference 13): it deletes unknown
                # pairs silently,
                # which eats URL escapes such as %2F in a regex.
                out.add(pair, cols[i])
                warnings.append(
                    Diagnostic(
                        "warning",
                        SourcePos(pos.file, pos.line, cols[i], pos.text),
                        f"unknown magic variable {pair!r} kept as written "
                        "(uWSGI would remove it; write '%%' for a literal '%')",
                    )
                )
            i += 2
        else:
            out.add(value[i], cols[i])
            i += 1
    return out.value(), out.cols


def _substitute(
    pattern: re.Pattern[str],
    value: str,
    cols: list[int],
    lookup: Mapping[str, str],
) -> tuple[str, list[int]]:
    out = _Text()
    last = 0
    for match in pattern.finditer(value):
        replacement = lookup.get(match.group(1))
        if replacement is None:
            continue
        for i in range(last, match.start()):
            out.add(value[i], cols[i])
        out.add(replacement, cols[match.start()])
        last = match.end()
    for i in range(last, len(value)):
        out.add(value[i], cols[i])
    return out.value(), out.cols


def read_included_file(path: str) -> str:
    """The content of ``@(path)``, without one trailing newline; OSError if unreadable."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_INCLUDED_BYTES + 1)
    if len(data) > MAX_INCLUDED_BYTES:
        raise OSError(f"larger than {MAX_INCLUDED_BYTES} bytes")
    text = data.decode("utf-8", "surrogateescape")
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    return text


def _include_files(
    value: str, cols: list[int], pos: SourcePos, errors: list[Diagnostic]
) -> tuple[str, list[int]]:
    contents: dict[str, str] = {}
    for match in _FILE_RE.finditer(value):
        path = match.group(1)
        if path in contents:
            continue
        try:
            contents[path] = read_included_file(path)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            errors.append(
                Diagnostic(
                    "error",
                    SourcePos(pos.file, pos.line, cols[match.start()], pos.text),
                    f"cannot read @({path}): {reason}",
                )
            )
    return _substitute(_FILE_RE, value, cols, contents)


def split_section(path: str) -> tuple[str, str]:
    """``file.ini:section`` -> (file.ini, section); a plain path reads ``[uwsgi]``.

    A path that exists as written is never split, so a file name with a colon still works.
    """
    head, colon, section = path.rpartition(":")
    if colon and head and section and "/" not in section and not os.path.exists(path):
        return head, section
    return path, SECTION


def read_ini(
    text: str,
    filename: str,
    environ: Mapping[str, str],
    section_name: str = SECTION,
    errors: list[Diagnostic] | None = None,
) -> tuple[list[IniLine], list[Diagnostic]]:
    """Read section ``section_name`` of ``text``; return its lines in order and the warnings.

    Never raises on any input: an ini file has no syntax errors, only ignored lines. The
    one thing that can go wrong, an ``@(file)`` that cannot be read, is appended to
    ``errors`` when given (and the ``@(...)`` is kept as written).
    """
    warnings: list[Diagnostic] = []
    if errors is None:
        errors = []
    table = _magic_table(filename)
    read: list[tuple[IniEntry, int, list[int], int]] = []
    section = ""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(_STRIP)
        if not line or line[0] in ";#":
            continue
        if line[0] == "[":
            section = line[1:-1]
            continue
        if section != section_name:
            continue
        key_start = len(raw) - len(raw.lstrip(_STRIP))
        key, equal, rest = line.partition("=")
        if equal:
            key = key.rstrip(_STRIP)
            value = rest.strip(_STRIP)
            value_start = key_start + len(line) - len(rest.lstrip(_STRIP))
        else:
            value, value_start = "", key_start + len(line)
        pos = SourcePos(filename, number, value_start + 1, raw.rstrip("\r"))
        end = value_start + 1 + len(value)
        cols = list(range(value_start + 1, end))
        value, cols = _magic(value, cols, table, pos, warnings)
        value, cols = _substitute(_ENV_RE, value, cols, environ)
        if "@(" in value:
            value, cols = _include_files(value, cols, pos, errors)
        read.append((IniEntry(key, value, pos), key_start + 1, cols, end))

    if not read:
        warnings.append(
            Diagnostic(
                "warning",
                SourcePos(filename, 0, 0, ""),
                f"no [{section_name}] section with keys in the file: nothing was read",
            )
        )

    first: dict[str, str] = {}
    for entry, *_ in read:
        first.setdefault(entry.key, entry.value)
    lines = []
    for entry, key_col, cols, end in read:
        value, cols = _substitute(_PLACEHOLDER_RE, entry.value, cols, first)
        lines.append(IniLine(IniEntry(entry.key, value, entry.pos), key_col, (*cols, end)))
    return lines, warnings
