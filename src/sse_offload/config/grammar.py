"""pyparsing grammars of routing values (uWSGI's route syntax) and the checks of their parts.

Only the *value* of a routing key is parsed here; the ini reader has already split lines.
The forms, split exactly where uWSGI splits them (no whitespace is skipped anywhere):

- ``route``, ``route-host``, ... : ``REGEX ACTION:ARG``
- ``route-if``, ``route-if-not`` : ``CONDITION:ARG ACTION:ARG``
- ``route-run``                  : ``ACTION:ARG``
- ``route-label``                : ``NAME``
- ``*-route-status``             : ``STATUS ACTION:ARG``

Every error becomes a :class:`RulesError` pointing at the offending column.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pyparsing as pp

from sse_offload.config.actions import (
    ACTION_ALIASES,
    ACTION_TABLE,
    ACTIONS,
    KNOWN_ACTIONS,
    UWSGI_ONLY_ACTIONS,
    error,
)
from sse_offload.config.model import Action, Condition, Diagnostic, Rule, RulesError, SourcePos

#: Maps an offset in a rule value to its position in the rules file.
Locator = Callable[[int], SourcePos]

#: Canonical condition names with their aliases (uWSGI's), and how many operands.
CONDITION_NAMES: dict[str, tuple[str, ...]] = {
    "equal": ("isequal", "eq", "=="),
    "startswith": (),
    "endswith": (),
    "contains": ("contain",),
    "regexp": ("re",),
    "ishigher": (">",),
    "ishigherequal": (">=",),
    "islower": ("<",),
    "islowerequal": ("<=",),
    "empty": (),
    "exists": (),
    "isfile": (),
    "isdir": (),
    "islink": (),
    "isexec": (),
    "ipv4in": (),
    "ipv6in": (),
}
CONDITIONS = tuple(CONDITION_NAMES)
CONDITION_ALIASES = {a: name for name, aliases in CONDITION_NAMES.items() for a in aliases}
KNOWN_CONDITIONS = tuple(sorted((*CONDITIONS, *CONDITION_ALIASES)))
#: Conditions that take ``A;B`` (without a ``;`` they are simply false, as in uWSGI).
TWO_OPERANDS = frozenset(
    {
        "equal", "startswith", "endswith", "contains", "regexp", "ishigher", "ishigherequal",
        "islower", "islowerequal", "ipv4in", "ipv6in",
    }
)
#: uWSGI conditions that need machinery this gateway does not have.
UWSGI_ONLY_CONDITIONS = {
    "lord": "it needs a uWSGI Legion",
    "incache": "it needs the uWSGI cache",
}


def _listing(names: dict[str, tuple[str, ...]]) -> str:
    """``a, b=alias, c``: canonical names in order with their aliases joined by ``=``."""
    return ", ".join("=".join((name, *aliases)) for name, aliases in sorted(names.items()))


@dataclass(frozen=True)
class Token:
    """A piece of a rule value and its offset in that value."""

    text: str
    loc: int


@dataclass(frozen=True)
class ActionSyntax:
    """``NAME:ARG`` before any checking."""

    name: Token
    arg: Token


@dataclass(frozen=True)
class RouteSyntax:
    """The parts of a routing value before any checking; ``head`` is the part before the
    action (regex, status or condition name), ``cond_arg`` the condition's argument."""

    head: Token | None
    action: ActionSyntax
    cond_arg: Token | None = None

    # Kept for callers of the first version, which named the head ``regex``.
    @property
    def regex(self) -> Token:
        assert self.head is not None
        return self.head

    @property
    def name(self) -> Token:
        return self.action.name

    @property
    def arg(self) -> Token:
        return self.action.arg


def _token(s: str, loc: int, toks: pp.ParseResults) -> Token:
    return Token(str(toks[0]), loc)


def _action(toks: pp.ParseResults) -> ActionSyntax:
    return ActionSyntax(toks[0], toks[1])


def _headed(toks: pp.ParseResults) -> RouteSyntax:
    return RouteSyntax(toks[0], toks[1])


def _conditional(toks: pp.ParseResults) -> RouteSyntax:
    return RouteSyntax(toks[0], toks[2], cond_arg=toks[1])


def _bare(toks: pp.ParseResults) -> RouteSyntax:
    return RouteSyntax(None, toks[0])


def _exact(element: pp.ParserElement) -> pp.ParserElement:
    # The value is split exactly where uWSGI splits it: no whitespace is skipped anywhere.
    return element.leave_whitespace().parse_with_tabs()


REGEX = pp.Regex(r"[^ ]+").set_name("regex").set_parse_action(_token)
SPACE = pp.Literal(" ").set_name("a space and an action after the regex")
ACTION_NAME = pp.Regex(r"[^:\s]+").set_name("action name").set_parse_action(_token)
COLON = pp.Literal(":").set_name("':' after the action name")
ACTION_ARG = pp.Regex(r".*", re.DOTALL).set_name("action argument").set_parse_action(_token)
ACTION = (
    (ACTION_NAME + pp.Suppress(COLON) + ACTION_ARG).set_name("action").set_parse_action(_action)
)
ROUTE = _exact((REGEX + pp.Suppress(SPACE) + ACTION).set_name("route").set_parse_action(_headed))

CONDITION_NAME = pp.Regex(r"[^:\s]+").set_name("condition name").set_parse_action(_token)
CONDITION_COLON = pp.Literal(":").set_name("':' after the condition name")
CONDITION_ARG = pp.Regex(r"[^ ]*").set_name("condition argument").set_parse_action(_token)
CONDITION_SPACE = pp.Literal(" ").set_name("a space and an action after the condition")
ROUTE_IF = _exact(
    (
        CONDITION_NAME
        + pp.Suppress(CONDITION_COLON)
        + CONDITION_ARG
        + pp.Suppress(CONDITION_SPACE)
        + ACTION
    )
    .set_name("route-if")
    .set_parse_action(_conditional)
)

ROUTE_RUN = _exact(ACTION.copy().set_parse_action(_action, _bare))

STATUS_CODE = pp.Regex(r"[0-9]+").set_name("a status code").set_parse_action(_token)
STATUS_SPACE = pp.Literal(" ").set_name("a space and an action after the status")
ROUTE_STATUS = _exact(
    (STATUS_CODE + pp.Suppress(STATUS_SPACE) + ACTION)
    .set_name("route-status")
    .set_parse_action(_headed)
)


def _syntax_message(exc: pp.ParseBaseException) -> str:
    message = exc.msg[:1].lower() + exc.msg[1:]
    rest = exc.pstr[exc.loc :]
    if not rest:
        return message
    if rest[0].isspace():
        return f"{message}, found a space"
    return f"{message}, found {rest.split(maxsplit=1)[0][:20]!r}"


def _parse(element: pp.ParserElement, value: str, locate: Locator) -> RouteSyntax:
    try:
        syntax = element.parse_string(value, parse_all=True)[0]
    except pp.ParseBaseException as exc:
        raise error(locate(exc.loc), _syntax_message(exc)) from None
    assert isinstance(syntax, RouteSyntax)
    return syntax


def _suggest(message: str, word: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def make_action(
    name: Token, arg: Token, locate: Locator, notes: list[Diagnostic] | None = None
) -> Action:
    """Check an action name and argument; return the Action or raise RulesError."""
    canonical = ACTION_ALIASES.get(name.text, name.text)
    spec = ACTIONS.get(canonical)
    if spec is None:
        listing = _listing({s.name: s.aliases for s in ACTION_TABLE})
        if name.text in UWSGI_ONLY_ACTIONS:
            message = (
                f"action {name.text!r} is a uWSGI action this gateway does not implement; "
                f"known actions: {listing}"
            )
        else:
            message = _suggest(
                f"unknown action {name.text!r}; known actions: {listing}", name.text, KNOWN_ACTIONS
            )
        raise error(locate(name.loc), message)
    if spec.check is not None:
        spec.check(name.text, arg.text, locate(arg.loc), notes)
    return Action(canonical, arg.text, locate(name.loc), name.text)


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


def make_condition(
    name: Token, arg: Token, locate: Locator, notes: list[Diagnostic] | None = None
) -> Condition:
    """Check a condition name and argument; return the Condition or raise RulesError."""
    canonical = CONDITION_ALIASES.get(name.text, name.text)
    if canonical not in CONDITION_NAMES:
        listing = _listing(CONDITION_NAMES)
        why = UWSGI_ONLY_CONDITIONS.get(name.text)
        if why is not None:
            message = (
                f"condition {name.text!r} is not supported: {why}; known conditions: {listing}"
            )
        else:
            message = _suggest(
                f"unknown condition {name.text!r}; known conditions: {listing}",
                name.text,
                KNOWN_CONDITIONS,
            )
        raise error(locate(name.loc), message)
    regex = None
    if canonical in TWO_OPERANDS and ";" not in arg.text:
        if notes is not None:
            notes.append(
                Diagnostic(
                    "warning",
                    locate(arg.loc),
                    f"'{name.text}:' compares two operands written A;B: without a ';' it is "
                    "always false (as in uWSGI)",
                )
            )
    elif canonical == "regexp":
        cut = arg.text.index(";") + 1
        pattern = arg.text[cut:]
        if "${" not in pattern:
            regex = compile_regex(Token(pattern, arg.loc + cut), locate, notes)
    return Condition(canonical, arg.text, locate(name.loc), regex, name.text)


def parse_route(
    value: str,
    locate: Locator,
    *,
    chain: str = "request",
    subject: str = "PATH_INFO",
    notes: list[Diagnostic] | None = None,
    key: str = "route",
) -> Rule:
    """Parse a ``route`` value (``REGEX ACTION:ARG``) into a Rule; raise RulesError if bad.

    Warnings (from compiling the regex) are appended to ``notes``.
    """
    syntax = _parse(ROUTE, value, locate)
    assert syntax.head is not None
    regex = compile_regex(syntax.head, locate, notes)
    action = make_action(syntax.name, syntax.arg, locate, notes)
    return Rule(chain, subject, regex, action, locate(0), key=key)


def parse_route_if(
    value: str,
    locate: Locator,
    *,
    chain: str = "request",
    negate: bool = False,
    notes: list[Diagnostic] | None = None,
    key: str = "route-if",
) -> Rule:
    """Parse a ``route-if``/``route-if-not`` value (``COND:ARG ACTION:ARG``) into a Rule."""
    syntax = _parse(ROUTE_IF, value, locate)
    assert syntax.head is not None and syntax.cond_arg is not None
    errors: list[Diagnostic] = []
    condition: Condition | None = None
    action: Action | None = None
    # Both halves are checked, so a line with a bad condition and a bad action says both.
    try:
        condition = make_condition(syntax.head, syntax.cond_arg, locate, notes)
    except RulesError as exc:
        errors.extend(exc.diagnostics)
    try:
        action = make_action(syntax.name, syntax.arg, locate, notes)
    except RulesError as exc:
        errors.extend(exc.diagnostics)
    if errors:
        raise RulesError(errors)
    assert condition is not None
    return Rule(
        chain, None, None, action, locate(0), condition=condition, negate=negate, key=key
    )


def parse_route_run(
    value: str,
    locate: Locator,
    *,
    chain: str = "request",
    notes: list[Diagnostic] | None = None,
    key: str = "route-run",
) -> Rule:
    """Parse a ``route-run`` value (``ACTION:ARG``, always run) into a Rule."""
    syntax = _parse(ROUTE_RUN, value, locate)
    action = make_action(syntax.name, syntax.arg, locate, notes)
    return Rule(chain, None, None, action, locate(0), key=key)


def parse_route_label(
    value: str, locate: Locator, *, chain: str = "request", key: str = "route-label"
) -> Rule:
    """Parse a ``route-label`` value (the label's name) into a label Rule."""
    if not value:
        raise error(locate(0), f"expected a label name after '{key} ='")
    return Rule(chain, None, None, None, locate(0), label=value, key=key)


def parse_route_status(
    value: str,
    locate: Locator,
    *,
    chain: str = "final",
    notes: list[Diagnostic] | None = None,
    key: str = "final-route-status",
) -> Rule:
    """Parse a ``*-route-status`` value (``STATUS ACTION:ARG``) into a Rule."""
    syntax = _parse(ROUTE_STATUS, value, locate)
    assert syntax.head is not None
    status = int(syntax.head.text)
    if not 100 <= status <= 599:
        raise error(
            locate(syntax.head.loc), f"expected an HTTP status (100-599), not {syntax.head.text!r}"
        )
    action = make_action(syntax.name, syntax.arg, locate, notes)
    return Rule(chain, None, None, action, locate(0), status=status, key=key)
