"""Remembering a chain's outcome: most gateways' chain is ``route = REGEX sse:$1``.

A chain of pure actions (config/actions.py says which) whose arguments name no ``${VAR}``
decides from a few vars alone; :class:`ChainMemo` then answers a new stream with a dict
lookup instead of a walk of the chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from sse_offload.config.actions import PURE_ACTIONS
from sse_offload.config.model import Rule
from sse_offload.routing.engine import run_chain
from sse_offload.routing.outcomes import Outcome
from sse_offload.routing.state import RequestState


def memo_subjects(rules: Sequence[Rule]) -> tuple[str, ...] | None:
    """The vars a chain's outcome depends on, when that is all it depends on: every rule a
    label, or a regex (or ``route-run``) rule with a pure action whose argument names no
    ``${VAR}``. None for any other chain (conditions, status rules, state-changing actions)."""
    subjects: set[str] = set()
    for rule in rules:
        action = rule.action
        if action is None:
            continue  # a label
        if rule.condition is not None or rule.status is not None or rule.negate:
            return None
        if action.name not in PURE_ACTIONS or "${" in action.arg:
            return None
        if rule.regex is not None:
            if rule.subject is None:
                return None
            subjects.add(rule.subject)
    return tuple(sorted(subjects))


class ChainMemo:
    """``run_chain`` for one chain, remembering outcomes when :func:`memo_subjects` says the
    outcome is a function of a few vars (most gateways: ``route = REGEX sse:$1``). A new
    stream then costs a dict lookup instead of a walk of the chain.

    Bounded: at ``size`` entries the memo starts again (URLs are client data). A subject
    value with ``${`` in it is never remembered: uWSGI expands a capture's ``${VAR}`` in the
    argument's second pass, which makes the outcome depend on other vars.
    """

    def __init__(self, rules: Sequence[Rule], size: int = 4096) -> None:
        self.rules = rules
        self.subjects = memo_subjects(rules)
        self.size = size
        self._outcomes: dict[tuple[str, ...], Outcome] = {}

    def run(self, state: RequestState) -> Outcome:
        subjects = self.subjects
        if subjects is None or state.trace is not None:
            return run_chain(self.rules, state)
        vars = state.vars
        key = tuple([vars.get(name, "") for name in subjects])
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = run_chain(self.rules, state)
            if not any("${" in value for value in key):
                if len(self._outcomes) >= self.size:
                    self._outcomes.clear()
                self._outcomes[key] = outcome
        return outcome
