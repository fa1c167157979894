"""The action table: every routing action, its aliases, its argument check and its nature.

One row per action (:class:`ActionSpec`). Everything that needs to know about actions reads
this table: the rules grammar (names, aliases, argument checks, the uWSGI actions we refuse
by name), the checker (which actions stop the chain, which answer the client, which
offload), the chain memo (which actions are pure) and the routing engine, whose handlers
are keyed by these names and checked against the table when the engine is imported
(routing/engine.py: ``HANDLERS``). The table lives in the config layer so that reading
rules never depends on the engine.
"""

from __future__ import annotations

import http
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sse_offload.config.errors import Diagnostic, RulesError, SourcePos

_STATUS_RE: Final = re.compile(r"([0-9]+)(?: .*)?", re.DOTALL)
_NUMBER_RE: Final = re.compile(r"[0-9]+")


def error(pos: SourcePos, message: str) -> RulesError:
    """Return a RulesError carrying one error diagnostic."""
    return RulesError([Diagnostic("error", pos, message)])


def parse_break_status(arg: str) -> int | None:
    """Return the status of a ``break:`` argument: None when empty; ValueError when invalid."""
    if not arg:
        return None
    match = _STATUS_RE.fullmatch(arg)
    if match is None or not 100 <= int(match.group(1)) <= 599:
        raise ValueError(arg)
    return int(match.group(1))


def reason_phrase(status: int) -> str | None:
    """The standard reason phrase of ``status`` (Python's table), or None if it has none."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return None


#: ``check(written, text, where, notes)``: raise RulesError for an argument the action can
#: never use (uWSGI refuses most of these at start); may add warnings to ``notes``.
ArgCheck = Callable[[str, str, SourcePos, "list[Diagnostic] | None"], None]


def _break_status(written: str, text: str, where: SourcePos, notes: list[Diagnostic] | None
                  ) -> None:
    try:
        parse_break_status(text)
    except ValueError:
        raise error(
            where, f"expected an HTTP status (100-599) or nothing after 'break:', not {text!r}"
        ) from None


def _status(written: str, text: str, where: SourcePos, notes: list[Diagnostic] | None) -> None:
    if _NUMBER_RE.fullmatch(text) is None or not 100 <= int(text) <= 599:
        raise error(where, f"expected an HTTP status (100-599) after '{written}:', not {text!r}")
    if reason_phrase(int(text)) is None and notes is not None:
        notes.append(
            Diagnostic(
                "warning",
                where,
                f"status {text} has no standard reason phrase: '{written}:' closes the "
                "connection without a response, as uWSGI does",
            )
        )


def _name_value(written: str, text: str, where: SourcePos, notes: list[Diagnostic] | None
                ) -> None:
    if "=" not in text or text.startswith("="):
        raise error(where, f"expected NAME=VALUE after '{written}:', not {text!r}")


def _header(written: str, text: str, where: SourcePos, notes: list[Diagnostic] | None) -> None:
    name, colon, _ = text.partition(":")
    if "$" not in text and (not colon or not name.strip()):
        raise error(where, f"expected 'Name: value' after '{written}:', not {text!r}")


def _credentials(written: str, text: str, where: SourcePos, notes: list[Diagnostic] | None
                 ) -> None:
    if "," not in text:
        raise error(
            where,
            f"expected REALM,USER:PASSWORD or REALM,HTPASSWD-FILE or REALM, after "
            f"'{written}:', not {text!r}",
        )


def _not_empty(what: str = "an argument") -> ArgCheck:
    def check(written: str, text: str, where: SourcePos, notes: list[Diagnostic] | None
              ) -> None:
        if not text:
            raise error(where, f"expected {what} after '{written}:'")

    return check


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One routing action.

    - ``aliases``: other names uWSGI accepts for it;
    - ``check``: refuses an argument the action can never use (None: any argument);
    - ``stops``: it ends the chain whenever it runs;
    - ``answers``: it answers the client itself (too late in the final chain);
    - ``offload``: it turns the request into a stream;
    - ``pure``: its outcome is a function of the rule and its captures alone (no state
      touched, nothing logged), so a chain of such rules may be remembered (ChainMemo).
    """

    name: str
    aliases: tuple[str, ...] = ()
    check: ArgCheck | None = None
    stops: bool = False
    answers: bool = False
    offload: bool = False
    pure: bool = False


ACTION_TABLE: Final = (
    ActionSpec("sse", stops=True, offload=True, pure=True),
    ActionSpec("sseraw", stops=True, offload=True, pure=True),
    ActionSpec("continue", ("last",), stops=True, pure=True),
    ActionSpec("break", check=_break_status, stops=True, pure=True),
    ActionSpec("return", ("break-with-status",), _status, stops=True, answers=True, pure=True),
    ActionSpec("goto", check=_not_empty("a label or rule number")),
    ActionSpec("log"),
    ActionSpec("logvar", check=_name_value),
    ActionSpec("donotlog"),
    ActionSpec("addvar", check=_name_value),
    ActionSpec("addheader", check=_header),
    ActionSpec("delheader", ("remheader",), _not_empty("a header name")),
    ActionSpec("redirect", ("redirect-302",), _not_empty(), stops=True, answers=True, pure=True),
    ActionSpec(
        "redirect-permanent", ("redirect-301",), _not_empty(), stops=True, answers=True,
        pure=True,
    ),
    ActionSpec("rewrite", check=_not_empty()),
    ActionSpec("rewrite-last", check=_not_empty(), stops=True),
    ActionSpec("static", check=_not_empty(), stops=True, answers=True),
    ActionSpec("basicauth", check=_credentials, answers=True),
    ActionSpec("basicauth-next", check=_credentials, answers=True),
    ActionSpec("setmethod", check=_not_empty()),
    ActionSpec("seturi"),
    ActionSpec("setpathinfo"),
)

#: Canonical name -> spec; alias -> canonical name.
ACTIONS: Final = {spec.name: spec for spec in ACTION_TABLE}
ACTION_ALIASES: Final = {alias: spec.name for spec in ACTION_TABLE for alias in spec.aliases}
KNOWN_ACTIONS: Final = tuple(sorted((*ACTIONS, *ACTION_ALIASES)))

STOPPING_ACTIONS: Final = frozenset(s.name for s in ACTION_TABLE if s.stops)
ANSWERING_ACTIONS: Final = frozenset(s.name for s in ACTION_TABLE if s.answers)
OFFLOAD_ACTIONS: Final = frozenset(s.name for s in ACTION_TABLE if s.offload)
PURE_ACTIONS: Final = frozenset(s.name for s in ACTION_TABLE if s.pure)

#: uWSGI actions this gateway does not implement (a config using one is refused, by name).
UWSGI_ONLY_ACTIONS: Final = frozenset(
    {
        "disableheaders", "donotoffload", "clearheaders", "resetheaders", "send", "send-crnl",
        "signal", "chdir", "setapp", "setuser", "sethome", "setfile", "setscriptname",
        "setremoteaddr", "fixpathinfo", "setdocroot", "setscheme", "setprocname", "alarm",
        "setmodifier1", "setmodifier2", "harakiri", "flush", "fixcl", "forcecl", "static-next",
        "file", "file-next", "sendfile", "fastfile", "uwsgi", "proxyuwsgi", "http", "httpdumb",
        "proxyhttp", "httpconnect", "ldapauth", "cache", "cachestore", "cachevar", "memcached",
        "redis", "redis-continue", "redisstore", "rpc", "call", "rpcret", "rpcnext", "rpcraw",
        "rpcvar", "access", "expires", "hash", "metric", "gzip", "chunked", "template",
        "toupper", "tofile", "offload", "xslt", "ssi", "cgi", "xmldir", "gridfs", "symcall",
        "radius", "spnego", "+", "-", "*", "/",
    }
)
