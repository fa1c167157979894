"""The routing engine: walk a chain of rules over the request vars (seed-behaviour §3.5).

Actions are looked up in :data:`ACTIONS`; a handler returns an outcome to stop the chain
or None to go on with the next rule (uWSGI's NEXT). New actions are new table entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sse_offload.config.grammar import parse_break_status
from sse_offload.config.model import Rule
from sse_offload.routing.expand import translate


@dataclass(frozen=True)
class Offload:
    """Turn the request into an SSE stream: ``mode`` sse|sseraw, ``arg`` already expanded.

    ``expanded`` is True when the argument's template had ``$N`` or ``${...}`` in it,
    i.e. when request or app data may have shaped it.
    """

    mode: str
    arg: str
    expanded: bool
    rule: Rule


@dataclass(frozen=True)
class Break:
    """End the request: answer with ``status`` (header only), or close silently if None."""

    status: int | None
    rule: Rule


@dataclass(frozen=True)
class Continue:
    """Go on with the request (static file, app or upstream); ``rule`` is None at chain end."""

    rule: Rule | None


Outcome = Offload | Break | Continue


@dataclass(frozen=True)
class Step:
    """What an action handler gets: the rule that fired, its captures and the vars."""

    rule: Rule
    captures: Sequence[str | None]
    vars: Mapping[str, str]

    def translate(self) -> tuple[str, bool]:
        """Expand the action argument; also say whether anything was substituted."""
        return translate(self.rule.action.arg, self.captures, self.vars)


ActionHandler = Callable[[Step], Outcome | None]


def _offload(step: Step) -> Outcome:
    arg, expanded = step.translate()
    return Offload(step.rule.action.name, arg, expanded, step.rule)


def _continue(step: Step) -> Outcome:
    return Continue(step.rule)


def _break(step: Step) -> Outcome:
    # break's argument is not translated (U:core/routing.c).
    return Break(parse_break_status(step.rule.action.arg), step.rule)


#: Action name (canonical, as Action.name) -> handler.
ACTIONS: dict[str, ActionHandler] = {
    "sse": _offload,
    "sseraw": _offload,
    "continue": _continue,
    "break": _break,
}


def _captures(rule: Rule, vars: Mapping[str, str]) -> Sequence[str | None] | None:
    """Return the rule's captures if it fires, else None."""
    if rule.condition is not None:
        raise NotImplementedError("route-if conditions are not supported yet")
    if rule.regex is None:
        return ()
    match = rule.regex.search(vars.get(rule.subject, "") if rule.subject else "")
    if match is None:
        return None
    return (match.group(0), *match.groups())


def run_chain(rules: Sequence[Rule], vars: Mapping[str, str]) -> Outcome:
    """Run ``rules`` in order against the request ``vars``; return the first outcome.

    A regex rule fires when its regex is found in its subject var; ``sse``/``sseraw``
    give Offload, ``continue``/``last`` Continue(rule), ``break`` Break; when no rule
    stops the chain the result is Continue(None).
    """
    for rule in rules:
        captures = _captures(rule, vars)
        if captures is None:
            continue
        outcome = ACTIONS[rule.action.name](Step(rule, captures, vars))
        if outcome is not None:
            return outcome
    return Continue(None)
