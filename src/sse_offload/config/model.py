"""Typed objects read from a rules file, each carrying where it came from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sse_offload.config.actions import OFFLOAD_ACTIONS
from sse_offload.config.errors import Diagnostic as Diagnostic
from sse_offload.config.errors import RulesError as RulesError
from sse_offload.config.errors import Severity as Severity
from sse_offload.config.errors import SourcePos as SourcePos
from sse_offload.config.values import parse_kvlist

#: The four chains, in the order a request meets them (docs/architecture.md, "A request");
#: ``error`` is parsed only.
CHAINS = ("request", "response", "final", "error")

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
    """A routing action: canonical ``name``, raw unexpanded ``arg``, position of the name.

    ``written`` is the name as the file spells it (an alias such as ``last``).
    """

    name: str
    arg: str
    pos: SourcePos
    written: str = ""

    def __str__(self) -> str:
        return f"{self.written or self.name}:{self.arg}"


@dataclass(frozen=True)
class Condition:
    """A ``route-if`` condition: canonical ``name``, raw ``arg``, position of the name.

    ``regex`` is the compiled pattern of a ``regexp:`` condition whose pattern has no
    ``${...}`` in it (checked at load time); patterns that need expanding are compiled per
    request.
    """

    name: str
    arg: str
    pos: SourcePos
    regex: re.Pattern[str] | None = None
    written: str = ""

    def __str__(self) -> str:
        return f"{self.written or self.name}:{self.arg}"


@dataclass(frozen=True)
class Rule:
    """One rule of a chain. What makes it fire depends on which field is set:

    - ``regex``: searched in the request var ``subject`` (``route``, ``route-host``, ...);
    - ``condition``: evaluated, ``negate`` for ``-if-not``;
    - ``status``: equal to the response status (``*-route-status``);
    - none of them: always (``route-run``).

    A label rule (``route-label``) has ``label`` set and no action: the walk skips it, it
    only names a position for ``goto``. ``key`` is the ini key the rule came from.
    """

    chain: str
    subject: str | None
    regex: re.Pattern[str] | None
    action: Action | None
    pos: SourcePos
    condition: Condition | None = None
    negate: bool = False
    label: str | None = None
    status: int | None = None
    key: str = "route"

    def describe(self) -> str:
        """``key = value`` as written in the file (the ini line without its indentation)."""
        return self.pos.text.strip(" \t\r")


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
class HeaderVar:
    """``collect-header`` / ``pull-header = Header-Name VAR``: a response header into a var.

    ``pull`` headers are not sent to the client. ``lower`` is the header name lower-cased
    (matching is case-insensitive).
    """

    header: str
    var: str
    pull: bool
    pos: SourcePos
    lower: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lower", self.header.lower())


@dataclass(frozen=True)
class AddHeader:
    """``add-header = Name: value``: a header line added to every response."""

    name: str
    value: str
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
    response_rules: tuple[Rule, ...] = ()
    final_rules: tuple[Rule, ...] = ()
    error_rules: tuple[Rule, ...] = ()
    header_vars: tuple[HeaderVar, ...] = ()
    add_headers: tuple[AddHeader, ...] = ()
    del_headers: frozenset[str] = frozenset()

    def option(self, key: str) -> str | None:
        """Return the last value given to ``key`` (a scalar option), or None if absent."""
        for entry in reversed(self.entries):
            if entry.key == key:
                return entry.value
        return None

    def values(self, key: str) -> tuple[str, ...]:
        """Return every value given to ``key`` (a repeatable option), in file order."""
        return tuple(entry.value for entry in self.entries if entry.key == key)

    def chain(self, name: str) -> tuple[Rule, ...]:
        """Return the rules of chain ``name`` (request, response, final or error)."""
        return {
            "request": self.request_rules,
            "response": self.response_rules,
            "final": self.final_rules,
            "error": self.error_rules,
        }[name]

    def all_rules(self) -> tuple[Rule, ...]:
        """Every rule of every chain, chain by chain."""
        return self.request_rules + self.response_rules + self.final_rules + self.error_rules

    def literal_servers(self) -> frozenset[str]:
        """Return the ``server=`` values written literally (no ``$``) in sse/sseraw rules."""
        servers: set[str] = set()
        for rule in self.all_rules():
            action = rule.action
            if action is None or action.name not in OFFLOAD_ACTIONS or "=" not in action.arg:
                continue
            server = parse_kvlist(action.arg).get("server")
            if server and "$" not in server:
                servers.add(server)
        return frozenset(servers)
