"""Typed objects read from a rules file, each carrying where it came from."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

#: Actions whose argument names a Redis server with ``server=``.
OFFLOAD_ACTIONS = frozenset({"sse", "sseraw"})


@dataclass(frozen=True)
class SourcePos:
    """A place in a rules file: 1-based line and column, plus the whole line for display."""

    file: str
    line: int
    col: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning about a rules file."""

    severity: Literal["error", "warning"]
    pos: SourcePos | None
    message: str

    def format(self) -> str:
        """Return ``file:line:col: severity: message`` followed by the line and a caret."""
        pos = self.pos
        if pos is None:
            return f"{self.severity}: {self.message}"
        if pos.line <= 0:
            return f"{pos.file}: {self.severity}: {self.message}"
        before = pos.text[: max(pos.col - 1, 0)]
        pad = "".join("\t" if c == "\t" else " " for c in before)
        pad += " " * (max(pos.col - 1, 0) - len(before))
        return f"{pos}: {self.severity}: {self.message}\n    {pos.text}\n    {pad}^"


class RulesError(Exception):
    """A rules file that cannot be used.

    ``diagnostics`` holds every error found in the file, in file order; ``warnings`` the
    warnings found on the way (a checker may want to print them too). ``str()`` is the
    formatted errors, one after another.
    """

    def __init__(
        self, diagnostics: Iterable[Diagnostic], warnings: Iterable[Diagnostic] = ()
    ) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        self.warnings: tuple[Diagnostic, ...] = tuple(warnings)
        super().__init__("\n".join(d.format() for d in self.diagnostics))


@dataclass(frozen=True)
class IniEntry:
    """One ``key = value`` line of the ``[uwsgi]`` section, value already expanded.

    ``pos.col`` is the column where the value starts in the original line.
    """

    key: str
    value: str
    pos: SourcePos


@dataclass(frozen=True)
class Action:
    """A routing action: canonical ``name``, raw unexpanded ``arg``, position of the name."""

    name: str
    arg: str
    pos: SourcePos


@dataclass(frozen=True)
class Condition:
    """A ``route-if`` condition (``name:arg``); not produced by this version's reader."""

    name: str
    arg: str
    pos: SourcePos


@dataclass(frozen=True)
class Rule:
    """One rule of a chain: when it fires (``regex`` searched in var ``subject``) and its action.

    A rule with neither regex nor condition always fires (``route-run``).
    """

    chain: str
    subject: str | None
    regex: re.Pattern[str] | None
    action: Action
    pos: SourcePos
    condition: Condition | None = None
    negate: bool = False
    label: str | None = None


@dataclass(frozen=True)
class StaticMap:
    """``static-map = MOUNT=PATH``: serve PATH for request paths starting with MOUNT."""

    mount: str
    path: str
    pos: SourcePos


@dataclass(frozen=True)
class MuleSpec:
    """``mule = SCRIPT``: a long-running helper process to start with the service."""

    script: str
    pos: SourcePos


@dataclass(frozen=True)
class Config:
    """Everything read from one rules file."""

    path: str
    entries: tuple[IniEntry, ...]
    request_rules: tuple[Rule, ...]
    static_maps: tuple[StaticMap, ...]
    mules: tuple[MuleSpec, ...]
    warnings: tuple[Diagnostic, ...]

    def option(self, key: str) -> str | None:
        """Return the last value given to ``key`` (a scalar option), or None if absent."""
        for entry in reversed(self.entries):
            if entry.key == key:
                return entry.value
        return None

    def values(self, key: str) -> tuple[str, ...]:
        """Return every value given to ``key`` (a repeatable option), in file order."""
        return tuple(entry.value for entry in self.entries if entry.key == key)

    def literal_servers(self) -> frozenset[str]:
        """Return the ``server=`` values written literally (no ``$``) in sse/sseraw rules."""
        # Imported here: the routing package imports this module.
        from sse_offload.routing.kvlist import parse_kvlist

        servers: set[str] = set()
        for rule in self.request_rules:
            if rule.action.name not in OFFLOAD_ACTIONS or "=" not in rule.action.arg:
                continue
            server = parse_kvlist(rule.action.arg).get("server")
            if server and "$" not in server:
                servers.add(server)
        return frozenset(servers)
