"""The routing engine: walk a chain of rules over a request's state, as uWSGI 2.0 does.

Actions are described by config/actions.py's table; their handlers are looked up in
:data:`HANDLERS`, which must name the same actions. A handler returns an outcome to stop the chain,
a :class:`Jump` (``goto``), or None to go on with the next rule (uWSGI's NEXT). uWSGI's
return codes map onto outcomes: CONTINUE is :class:`Continue`, BREAK is every other
outcome (:class:`Break` when nothing is answered). New actions are new table entries.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping, Sequence

from sse_offload.config.actions import ACTIONS, parse_break_status, reason_phrase
from sse_offload.config.model import Rule
from sse_offload.config.values import goto_target
from sse_offload.routing.conditions import ConditionError, evaluate
from sse_offload.routing.expand import Reads, c_atoi, translate
from sse_offload.routing.outcomes import (
    AuthRequired,
    Break,
    Continue,
    Jump,
    Offload,
    Outcome,
    PendingAuth,
    Redirect,
    Return,
    Static,
    auth_key,
    describe,
)
from sse_offload.routing.state import RequestState, TraceEntry, Verifier
from sse_offload.routing.static import static_action_target


class Step:
    """What an action handler gets: the rule that fired, its captures, the request state,
    the rule's position in ``rules`` (its chain), and where to record what it read."""

    __slots__ = ("captures", "index", "note", "reads", "rule", "rules", "state")

    def __init__(
        self,
        rule: Rule,
        captures: Sequence[str | None],
        state: RequestState,
        index: int = 0,
        rules: Sequence[Rule] = (),
        reads: Reads | None = None,
    ) -> None:
        self.rule = rule
        self.captures = captures
        self.state = state
        self.index = index
        self.rules = rules
        self.reads = reads
        self.note = ""

    @property
    def vars(self) -> Mapping[str, str]:
        """The request vars."""
        return self.state.vars

    @property
    def action_name(self) -> str:
        """The canonical name of the rule's action."""
        assert self.rule.action is not None
        return self.rule.action.name

    @property
    def arg(self) -> str:
        """The action's argument as written."""
        assert self.rule.action is not None
        return self.rule.action.arg

    def translate(self, template: str | None = None) -> tuple[str, bool]:
        """Expand the action argument (or ``template``); also say whether anything was."""
        return translate(
            self.arg if template is None else template,
            self.captures,
            self.state.vars,
            self.state,
            self.reads,
        )

    def error(self, message: str) -> None:
        """Log an action failure with the rule's position."""
        self.state.log("error", f"{self.rule.pos}: {message}")


StepResult = Outcome | Jump | None
ActionHandler = Callable[[Step], StepResult]


def _offload(step: Step) -> StepResult:
    arg, expanded = step.translate()
    return Offload(step.action_name, arg, expanded, step.rule)


def _continue(step: Step) -> StepResult:
    return Continue(step.rule)


def _break(step: Step) -> StepResult:
    # break's argument is not translated (uWSGI core/routing.c).
    return Break(parse_break_status(step.arg), step.rule)


def _return(step: Step) -> StepResult:
    # Not translated either; a status without a standard phrase is a plain BREAK in uWSGI.
    status = c_atoi(step.arg)
    if reason_phrase(status) is None:
        return Break(None, step.rule)
    return Return(status, step.rule)


def _goto(step: Step) -> StepResult:
    label = step.translate()[0]
    target = goto_target(label, [r.label for r in step.rules])
    if target is None:
        target = 0  # C atoi of a non-number: a jump backwards
    if target <= step.index:
        step.error(f'"goto" can only jump forward ({label!r} is rule {target}): BREAK')
        return Break(None, step.rule)
    return Jump(target)


def _log(step: Step) -> StepResult:
    message = step.translate()[0]
    step.state.log("info", message)
    step.note = f"logged {message!r}"
    return None


def _key_value(step: Step) -> tuple[str, str]:
    # The name is literal, the value translated (uWSGI core/routing.c addvar/logvar).
    key, _, template = step.arg.partition("=")
    return key, step.translate(template)[0]


def _logvar(step: Step) -> StepResult:
    key, value = _key_value(step)
    step.state.logvars[key] = value
    step.note = f"log var {key}={value!r}"
    return None


def _donotlog(step: Step) -> StepResult:
    step.state.donotlog = True
    return None


def _addvar(step: Step) -> StepResult:
    key, value = _key_value(step)
    step.state.vars[key] = value
    step.note = f"set {key}={value!r}"
    return None


def _addheader(step: Step) -> StepResult:
    line = step.translate()[0]
    name, colon, value = line.partition(":")
    if not colon or not name or name != name.strip():
        step.error(f"addheader: {line!r} is not a 'Name: value' header line; not added")
        return None
    step.state.add_headers.append((name, value.lstrip(" \t")))
    step.note = f"add header {line!r}"
    return None


def _delheader(step: Step) -> StepResult:
    name = step.translate()[0]
    step.state.del_headers.add(name.lower())
    step.note = f"remove header {name!r}"
    return None


def _redirect(step: Step) -> StepResult:
    status = 301 if step.action_name == "redirect-permanent" else 302
    return Redirect(step.translate()[0], status, step.rule)


def _rewrite(step: Step) -> StepResult:
    # U:plugins/router_rewrite: PATH_INFO is the new path as written (not decoded); a
    # query in it goes before the request's own; REQUEST_URI is left alone.
    new = step.translate()[0]
    vars = step.state.vars
    path, question, query = new.partition("?")
    if question:
        old = vars.get("QUERY_STRING", "")
        vars["QUERY_STRING"] = f"{query}&{old}" if old else query
    vars["PATH_INFO"] = path
    step.note = f"PATH_INFO={path!r} QUERY_STRING={vars.get('QUERY_STRING', '')!r}"
    if step.action_name == "rewrite-last":
        return Continue(step.rule)
    return None  # rewrite: NEXT, the following rules see the new path


def _static(step: Step) -> StepResult:
    requested = step.translate()[0]
    return Static(static_action_target(step.arg, requested), requested, step.rule)


def _set_var(name: str) -> ActionHandler:
    def handler(step: Step) -> StepResult:
        value = step.translate()[0]
        step.state.vars[name] = value
        step.note = f"{name}={value!r}"
        return None

    return handler


def decode_basic(header: str) -> bytes | None:
    """The decoded credentials of an ``Authorization: Basic ...`` value, or None.

    The scheme is matched case-sensitively and the value must be longer than 7 characters,
    as uWSGI's router_basicauth does.
    """
    if len(header) <= 7 or not header.startswith("Basic "):
        return None
    try:
        return base64.b64decode(header[6:].strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _default_verifier() -> Verifier:
    # Imported on first use: passlib is only needed by configs that use htpasswd files.
    from sse_offload.auth import default_store

    return default_store()


def _basicauth(step: Step) -> StepResult:
    # U:plugins/router_basicauth: an authenticated request skips every later basicauth;
    # a missing or malformed Authorization always answers 401, even with basicauth-next,
    # which only lets wrong credentials through to the next rule.
    state = step.state
    if state.vars.get("REMOTE_USER"):
        step.note = "already authenticated"
        return None
    realm, _, spec = step.arg.partition(",")
    header = state.vars.get("HTTP_AUTHORIZATION", "")
    if step.reads is not None:
        step.reads.append(("HTTP_AUTHORIZATION", header))
    credentials = decode_basic(header) if spec else None
    if credentials is None:
        step.note = "no usable Basic credentials" if spec else f"'{realm},' lets nobody in"
        return AuthRequired(realm, step.rule)
    user: str | None = None
    if ":" in spec:
        expected = spec.encode("utf-8", "surrogateescape")
        if hmac.compare_digest(credentials, expected):
            user = spec.partition(":")[0]
    else:
        name_raw, colon, password_raw = credentials.partition(b":")
        if colon:
            name = name_raw.decode("utf-8", "surrogateescape")
            password = password_raw.decode("utf-8", "surrogateescape")
            verifier = state.verifier or _default_verifier()
            ok: bool | None = state.auth_results.get(auth_key(spec, name, password))
            if ok is None:
                ok = verifier.check(spec, name, password, slow=state.slow_auth)
                for problem in verifier.take_problems():
                    step.error(problem)
            if ok is None:
                return PendingAuth(step.index, step.rule, verifier, spec, name, password, state)
            if ok:
                user = name
    if user is not None:
        state.vars["REMOTE_USER"] = user
        step.note = f"authenticated REMOTE_USER={user!r}"
        return None
    if step.action_name == "basicauth-next":
        step.note = "wrong credentials (basicauth-next)"
        return None
    step.note = "wrong credentials"
    return AuthRequired(realm, step.rule)


#: Action name (canonical, as config/actions.py's table names it) -> handler.
HANDLERS: dict[str, ActionHandler] = {
    "sse": _offload,
    "sseraw": _offload,
    "continue": _continue,
    "break": _break,
    "return": _return,
    "goto": _goto,
    "log": _log,
    "logvar": _logvar,
    "donotlog": _donotlog,
    "addvar": _addvar,
    "addheader": _addheader,
    "delheader": _delheader,
    "redirect": _redirect,
    "redirect-permanent": _redirect,
    "rewrite": _rewrite,
    "rewrite-last": _rewrite,
    "static": _static,
    "basicauth": _basicauth,
    "basicauth-next": _basicauth,
    "setmethod": _set_var("REQUEST_METHOD"),
    "seturi": _set_var("REQUEST_URI"),
    "setpathinfo": _set_var("PATH_INFO"),
}
if set(HANDLERS) != set(ACTIONS):  # the table and the engine must name the same actions
    raise ImportError(
        f"actions without a handler: {sorted(set(ACTIONS) - set(HANDLERS))}; handlers "
        f"without an action: {sorted(set(HANDLERS) - set(ACTIONS))}"
    )


def _record(
    trace: list[TraceEntry],
    chain: str,
    index: int,
    rule: Rule,
    fired: bool | None,
    reads: Reads | None,
    detail: str,
    result: str = "",
) -> None:
    trace.append(TraceEntry(chain, index, rule, fired, reads or [], detail, result))


def _chain_name(rules: Sequence[Rule]) -> str:
    return rules[0].chain if rules else "request"


def run_chain(
    rules: Sequence[Rule],
    state: RequestState | Mapping[str, str],
    *,
    start: int = 0,
) -> Outcome:
    """Run ``rules`` in order against a request; return the outcome that stopped the chain.

    ``state`` is the request's :class:`RequestState` (mutated by the actions), or a plain
    mapping of request vars (a throw-away state is made from a copy). A rule fires when its
    regex is found in its subject var, its condition holds (or not, for ``-if-not``), its
    status equals the response status, or always (``route-run``); labels are skipped and
    ``goto`` skips forward. When no rule stops the chain the result is ``Continue(None)``.
    A condition that cannot be evaluated ends the chain with ``Break(None)``. ``start``
    resumes a chain stopped by :class:`PendingAuth`.
    """
    if not isinstance(state, RequestState):
        state = RequestState(dict(state))
    vars = state.vars
    trace = state.trace
    chain = _chain_name(rules) if trace is not None else ""
    target = -1
    for index in range(start, len(rules)):
        rule = rules[index]
        action = rule.action
        if action is None or index < target:
            if trace is not None:
                why = f"label {rule.label!r}" if action is None else "skipped by goto"
                _record(trace, chain, index, rule, None, None, why)
            continue
        reads: Reads | None = [] if trace is not None else None
        regex = rule.regex
        captures: Sequence[str | None]
        if regex is not None:
            subject = vars.get(rule.subject, "") if rule.subject else ""
            match = regex.search(subject)
            if reads is not None and rule.subject:
                reads.append((rule.subject, subject))
            if match is None:
                if trace is not None:
                    _record(trace, chain, index, rule, False, reads, "regex did not match")
                continue
            captures = (match.group(0), *match.groups())
            detail = f"regex matched {match.group(0)!r}" if trace is not None else ""
        elif rule.condition is not None:
            try:
                holds, captures = evaluate(rule.condition, state, reads)
            except ConditionError as exc:
                state.log("error", f"{rule.pos}: {exc}")
                if trace is not None:
                    _record(trace, chain, index, rule, True, reads, str(exc), "BREAK")
                return Break(None, rule)
            if holds == rule.negate:
                if trace is not None:
                    detail = f"condition is {'true' if holds else 'false'}"
                    _record(trace, chain, index, rule, False, reads, detail)
                continue
            if rule.negate:
                captures = ()
            detail = f"condition is {'true' if holds else 'false'}" if trace is not None else ""
        elif rule.status is not None:
            if reads is not None:
                reads.append(("status", str(state.status or 0)))
            if state.status != rule.status:
                if trace is not None:
                    _record(trace, chain, index, rule, False, reads, "status differs")
                continue
            captures = ()
            detail = "status matched"
        else:
            captures = ()
            detail = "always runs"
        step = Step(rule, captures, state, index, rules, reads)
        result = HANDLERS[action.name](step)
        if trace is not None:
            outcome_text = describe(result)
            if step.note:
                outcome_text = f"{step.note}; {outcome_text}"
            _record(trace, chain, index, rule, True, reads, detail, outcome_text)
        if result is None:
            continue
        if isinstance(result, Jump):
            target = result.position
            continue
        return result
    return Continue(None)
