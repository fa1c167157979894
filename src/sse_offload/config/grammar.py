"""pyparsing grammar of rule values: ``route = REGEX ACTION:ARG`` (seed-behaviour §3.3).

Only the *value* of a routing key is parsed here; the ini reader has already split lines.
Every error becomes a :class:`RulesError` pointing at the offending column.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pyparsing as pp

from sse_offload.config.model import Action, Diagnostic, Rule, RulesError, SourcePos

#: Maps an offset in a rule value to its position in the rules file.
Locator = Callable[[int], SourcePos]

#: Canonical names of the actions this version runs.
ACTIONS = ("sse", "sseraw", "continue", "break")
ACTION_ALIASES = {"last": "continue"}
KNOWN_ACTIONS = tuple(sorted((*ACTIONS, *ACTION_ALIASES)))
#: uWSGI actions of the complete language that this version does not run yet.
LATER_ACTIONS = frozenset(
    {
        "goto",
        "log",
        "logvar",
        "addvar",
        "addheader",
        "delheader",
        "remheader",
        "return",
        "break-with-status",
        "disableheaders",
        "donotlog",
        "donotoffload",
        "clearheaders",
        "resetheaders",
        "send",
        "send-crnl",
        "redirect",
        "redirect-302",
        "redirect-permanent",
        "redirect-301",
        "rewrite",
        "rewrite-last",
        "static",
        "file",
        "http",
    }
)

_STATUS_RE = re.compile(r"([0-9]+)(?: .*)?", re.DOTALL)


@dataclass(frozen=True)
class Token:
    """A piece of a rule value and its offset in that value."""

    text: str
    loc: int


@dataclass(frozen=True)
class RouteSyntax:
    """The three parts of a ``route`` value, before any checking."""

    regex: Token
    name: Token
    arg: Token


def _token(s: str, loc: int, toks: pp.ParseResults) -> Token:
    return Token(str(toks[0]), loc)


def _route(toks: pp.ParseResults) -> RouteSyntax:
    return RouteSyntax(toks[0], toks[1], toks[2])


REGEX = pp.Regex(r"[^ ]+").set_name("regex").set_parse_action(_token)
SPACE = pp.Literal(" ").set_name("a space and an action after the regex")
ACTION_NAME = pp.Regex(r"[^:\s]+").set_name("action name").set_parse_action(_token)
COLON = pp.Literal(":").set_name("':' after the action name")
ACTION_ARG = pp.Regex(r".*").set_name("action argument").set_parse_action(_token)
ACTION = (ACTION_NAME + pp.Suppress(COLON) + ACTION_ARG).set_name("action")
# The value is split exactly where uWSGI splits it: no whitespace is skipped anywhere.
ROUTE = (
    (REGEX + pp.Suppress(SPACE) + ACTION)
    .set_name("route")
    .set_parse_action(_route)
    .leave_whitespace()
    .parse_with_tabs()
)


def error(pos: SourcePos, message: str) -> RulesError:
    """Return a RulesError carrying one error diagnostic."""
    return RulesError([Diagnostic("error", pos, message)])


def _syntax_message(exc: pp.ParseBaseException) -> str:
    message = exc.msg[:1].lower() + exc.msg[1:]
    rest = exc.pstr[exc.loc :]
    if not rest:
        return message
    if rest[0].isspace():
        return f"{message}, found a space"
    return f"{message}, found {rest.split(maxsplit=1)[0][:20]!r}"


def parse_break_status(arg: str) -> int | None:
    """Return the status of a ``break:`` argument: None when empty; ValueError when invalid."""
    if not arg:
        return None
    match = _STATUS_RE.fullmatch(arg)
    if match is None or not 100 <= int(match.group(1)) <= 599:
        raise ValueError(arg)
    return int(match.group(1))


def make_action(name: Token, arg: Token, locate: Locator) -> Action:
    """Check an action name and argument; return the Action or raise RulesError."""
    canonical = ACTION_ALIASES.get(name.text, name.text)
    known = ", ".join(KNOWN_ACTIONS)
    if canonical not in ACTIONS:
        if name.text in LATER_ACTIONS:
            message = f"action {name.text!r} is not supported yet; known actions: {known}"
        else:
            message = f"unknown action {name.text!r}; known actions: {known}"
            close = difflib.get_close_matches(name.text, KNOWN_ACTIONS, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        raise error(locate(name.loc), message)
    if canonical == "break":
        try:
            parse_break_status(arg.text)
        except ValueError:
            raise error(
                locate(arg.loc),
                f"expected an HTTP status (100-599) or nothing after 'break:', not {arg.text!r}",
            ) from None
    return Action(canonical, arg.text, locate(name.loc))


def compile_regex(
    regex: Token, locate: Locator, notes: list[Diagnostic] | None = None
) -> re.Pattern[str]:
    """Compile a rule's regex with Python ``re``; raise RulesError pointing into it.

    Warnings ``re`` gives (FutureWarning on ``[[`` and the like) go to ``notes``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pattern = re.compile(regex.text)
        except re.error as exc:
            offset = regex.loc + (exc.pos or 0)
            raise error(locate(offset), f"invalid regex: {exc.msg}") from None
        except (OverflowError, RecursionError, ValueError) as exc:
            raise error(locate(regex.loc), f"invalid regex: {exc}") from None
    if notes is not None:
        for item in caught:
            notes.append(Diagnostic("warning", locate(regex.loc), f"regex: {item.message}"))
    return pattern


def parse_route(
    value: str,
    locate: Locator,
    *,
    chain: str = "request",
    subject: str = "PATH_INFO",
    notes: list[Diagnostic] | None = None,
) -> Rule:
    """Parse a ``route`` value (``REGEX ACTION:ARG``) into a Rule; raise RulesError if bad.

    Warnings (from compiling the regex) are appended to ``notes``.
    """
    try:
        syntax = ROUTE.parse_string(value, parse_all=True)[0]
    except pp.ParseBaseException as exc:
        raise error(locate(exc.loc), _syntax_message(exc)) from None
    assert isinstance(syntax, RouteSyntax)
    regex = compile_regex(syntax.regex, locate, notes)
    action = make_action(syntax.name, syntax.arg, locate)
    return Rule(chain, subject, regex, action, locate(0))
