"""What a chain decides: the outcomes of the routing engine, as plain values.

The engine (engine.py) returns one of these for a chain; the front applies it, the explainer
describes it (:func:`describe`). uWSGI's return codes map onto them: CONTINUE is
:class:`Continue`, BREAK every other outcome (:class:`Break` when nothing is answered).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sse_offload.config.actions import reason_phrase
from sse_offload.config.model import Rule
from sse_offload.routing.state import RequestState, Verifier


def auth_key(path: str, user: str, password: str) -> tuple[str, str, str]:
    """How a request's state remembers a checked password: never the password itself."""
    return path, user, hashlib.sha256(password.encode("utf-8", "surrogateescape")).hexdigest()


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


@dataclass(frozen=True)
class Return:
    """Answer ``status`` with its reason phrase as a text/plain body (``return:``)."""

    status: int
    rule: Rule

    @property
    def reason(self) -> str:
        """The standard reason phrase, which is also the body."""
        return reason_phrase(self.status) or ""


@dataclass(frozen=True)
class Redirect:
    """Answer ``status`` (302 or 301) with ``Location: location``."""

    location: str
    status: int
    rule: Rule


@dataclass(frozen=True)
class Static:
    """Serve the file ``path`` (``static:``); None when ``requested`` is missing, not a
    regular file, or outside where the rule may serve from (the answer is then 404)."""

    path: str | None
    requested: str
    rule: Rule


@dataclass(frozen=True)
class AuthRequired:
    """Answer 401 with ``WWW-Authenticate: Basic realm="REALM"`` (``basicauth:``)."""

    realm: str
    rule: Rule


@dataclass(frozen=True)
class PendingAuth:
    """The chain stopped at ``basicauth`` rule ``index``: a password needs a slow hash.

    Only returned when the state's ``slow_auth`` is False. The caller runs :meth:`verify`
    off its event loop, then resumes with ``run_chain(rules, state, start=index)``.
    """

    index: int
    rule: Rule
    verifier: Verifier
    path: str
    user: str
    password: str
    state: RequestState

    def verify(self) -> bool:
        """Check the password (slowly) and remember the answer in the request's state."""
        ok = bool(self.verifier.check(self.path, self.user, self.password, slow=True))
        self.state.auth_results[auth_key(self.path, self.user, self.password)] = ok
        return ok


@dataclass(frozen=True)
class Jump:
    """``goto``: skip to rule ``position`` of the chain (never returned by run_chain)."""

    position: int


Outcome = Offload | Break | Continue | Return | Redirect | Static | AuthRequired | PendingAuth


def describe(outcome: Outcome | Jump | None) -> str:
    """A short human description of what an action's result does (for explain)."""
    if outcome is None:
        return "next rule"
    if isinstance(outcome, Jump):
        return f"jump to rule {outcome.position}"
    if isinstance(outcome, Offload):
        return f"offload {outcome.mode}:{outcome.arg}"
    if isinstance(outcome, Break):
        if outcome.status is None:
            return "break: close the connection without a response"
        return f"break: answer {outcome.status} (no body)"
    if isinstance(outcome, Continue):
        if outcome.rule is None:
            return "end of the chain: go on with the request"
        return "stop the chain and go on with the request"
    if isinstance(outcome, Return):
        return f"answer {outcome.status} {outcome.reason}"
    if isinstance(outcome, Redirect):
        return f"redirect {outcome.status} to {outcome.location}"
    if isinstance(outcome, Static):
        if outcome.path is None:
            return f"static file {outcome.requested!r}: refused or not a file, answer 404"
        return f"serve the file {outcome.path}"
    if isinstance(outcome, AuthRequired):
        return f"answer 401, realm {outcome.realm!r}"
    return f"verify the password of {outcome.user!r} off the event loop, then resume"
