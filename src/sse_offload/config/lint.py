"""Checks across rules that the grammar cannot make line by line.

Errors: a ``goto`` to a label its chain does not have. Warnings: a ``goto`` backwards (it
always ends the request), an ``sse`` channel that can expand to nothing without an
``empty:`` guard, a ``server=`` (or an ``=`` that selects one) taken from what the client
sends, a ``regexp:`` pattern built from client data, rules that can never run after one
that stops every request, actions that mean nothing in the final chain, htpasswd files and
``static:`` files that cannot be read.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence

from sse_offload.config.actions import ANSWERING_ACTIONS, OFFLOAD_ACTIONS, STOPPING_ACTIONS
from sse_offload.config.model import Config, Diagnostic, Rule
from sse_offload.config.regex_facts import group_may_be_empty, group_may_contain_equal
from sse_offload.config.values import LIST_KEYS, goto_target, parse_kvlist
from sse_offload.routing.expand import Part, template_parts

#: Request vars a client chooses: the request line and its headers (HTTP_*), as uWSGI
#: builds them.
CLIENT_VARS = frozenset(
    {
        "REQUEST_METHOD", "REQUEST_URI", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
        "SERVER_NAME", "CONTENT_LENGTH", "CONTENT_TYPE",
    }
)
_CLIENT_ROUTE_VARS = frozenset({"qs", "cookie"})
_DERIVED_ROUTE_VARS = frozenset({"base64", "hex", "upper", "lower", "mime"})
#: Labels listed in an error about a missing one (a big file can have hundreds).
_MAX_LISTED = 8
#: A regex that finds a match in all of these is taken to fire for every request.
_PROBES = ("", "/", "/whattimeisit?x=1", "a b", "\n", "\udcff", "/x/y/z.html")


def client_controlled(key: str) -> bool:
    """Does ``${key}`` expand to something the client chose?"""
    if key.startswith("HTTP_") or key in CLIENT_VARS:
        return True
    function, bracket, rest = key.partition("[")
    if bracket and key.endswith("]"):
        if function in _CLIENT_ROUTE_VARS:
            return True
        if function in _DERIVED_ROUTE_VARS:
            return client_controlled(rest[:-1])
    return False


def _warning(rule: Rule, message: str) -> Diagnostic:
    pos = rule.action.pos if rule.action is not None else rule.pos
    return Diagnostic("warning", pos, message)


def _capture_source(rule: Rule) -> re.Pattern[str] | None:
    """The regex whose groups feed ``$N`` in the rule's action, if any."""
    if rule.regex is not None:
        return rule.regex
    if rule.condition is not None and rule.condition.name == "regexp" and not rule.negate:
        return rule.condition.regex
    return None


def _channel_parts(arg: str) -> tuple[list[Part], bool] | None:
    """The parts the channel of an offload argument is made of (its first source:
    ``subscribe``, ``psubscribe``, ``ssubscribe`` or ``stream``), and whether it is the
    key=value form. None for a key=value list with none of them (always a 500)."""
    parts = template_parts(arg)
    if any(p.kind == "text" and "=" in p.value for p in parts):
        items = parse_kvlist(arg)
        source = next((items[key] for key in LIST_KEYS if key in items), None)
        if source is None:
            return None
        return template_parts(source), True
    return parts, False


def _may_be_empty(parts: list[Part], rule: Rule) -> bool:
    source = _capture_source(rule)
    for part in parts:
        if part.kind == "text" and part.value:
            return False
        if part.kind == "capture" and source is not None:
            if not group_may_be_empty(source, int(part.value)):
                return False
    return True


def _empty_guard_vars(rule: Rule) -> set[str] | None:
    """The vars an ``empty:`` condition on this rule tests, or None if it has none."""
    cond = rule.condition
    if cond is None or cond.name != "empty":
        return None
    return {p.value for p in template_parts(cond.arg) if p.kind == "var"}


def _always_set(earlier: Sequence[Rule]) -> set[str]:
    """Vars an unconditional ``addvar:`` sets to something never empty."""
    names = set()
    for rule in earlier:
        action = rule.action
        if action is None or action.name != "addvar" or rule.regex or rule.condition:
            continue
        if rule.status is not None:
            continue
        name, _, value = action.arg.partition("=")
        if any(p.kind == "text" and p.value for p in template_parts(value)):
            names.add(name)
    return names


def _guarded(rule: Rule, parts: list[Part], earlier: Sequence[Rule]) -> bool:
    needed = {p.value for p in parts if p.kind == "var"}
    if not needed or any(p.kind == "capture" for p in parts):
        return False
    if needed & _always_set(earlier):
        return True
    tested = _empty_guard_vars(rule)
    if rule.negate and tested is not None and needed <= tested:
        return True
    for other in earlier:
        tested = _empty_guard_vars(other)
        stops = other.action is not None and other.action.name in STOPPING_ACTIONS
        if tested is not None and not other.negate and stops and needed <= tested:
            return True
    return False


def _check_offload(rule: Rule, earlier: Sequence[Rule], out: list[Diagnostic]) -> None:
    assert rule.action is not None
    arg = rule.action.arg
    written = str(rule.action)
    channel = _channel_parts(arg)
    if channel is None:
        out.append(
            _warning(
                rule,
                f"'{written}' has key=value items but no subscribe=: every request it "
                "routes gets 500 (the sse action needs a channel, a pattern or a stream key)",
            )
        )
        return
    parts, kv = channel
    if not parts:
        out.append(
            _warning(rule, f"'{written}' subscribes to the channel '' (its argument is empty)")
        )
    elif _may_be_empty(parts, rule) and not _guarded(rule, parts, earlier):
        names = [f"${{{p.value}}}" if p.kind == "var" else f"${p.value}" for p in parts]
        if any(p.kind == "capture" for p in parts):
            fix = "make its regex group match at least one character (e.g. '(.+)')"
        else:
            prefix = rule.key.split("route")[0]
            fix = f"guard it with '{prefix}route-if-not = empty:{''.join(names)}'"
        out.append(
            _warning(
                rule,
                f"the channel of '{written}' is empty when {', '.join(names)} is: it then "
                f"subscribes to the channel '' (as uWSGI); {fix}",
            )
        )
    source = _capture_source(rule)
    all_parts = template_parts(arg)
    if kv:
        server = parse_kvlist(arg).get("server")
        if server is not None:
            risky = [p for p in template_parts(server) if _client_part(p)]
            if risky:
                out.append(
                    _warning(
                        rule,
                        f"server= in '{written}' comes from what the client sends "
                        f"({_names(risky)}): the gateway refuses servers the configuration "
                        "does not name, but a client can still pick among them",
                    )
                )
        return
    risky = [
        p
        for p in all_parts
        if (p.kind == "var" and client_controlled(p.value))
        or (
            p.kind == "capture"
            and source is not None
            and group_may_contain_equal(source, int(p.value))
        )
    ]
    if risky:
        out.append(
            _warning(
                rule,
                f"'{written}' takes its argument from what the client sends "
                f"({_names(risky)}): a value with '=' switches to key=value mode and can "
                "name a server= (the gateway refuses servers the configuration does not name)",
            )
        )


def _client_part(part: Part) -> bool:
    return part.kind == "capture" or (part.kind == "var" and client_controlled(part.value))


def _names(parts: list[Part]) -> str:
    return ", ".join(f"${{{p.value}}}" if p.kind == "var" else f"${p.value}" for p in parts)


def _always_fires(rule: Rule) -> bool:
    if rule.action is None:
        return False
    if rule.regex is None and rule.condition is None and rule.status is None:
        return True
    if rule.regex is not None:
        regex = rule.regex
        return all(regex.search(probe) is not None for probe in _PROBES)
    return False


def _goto_target(rule: Rule, chain: Sequence[Rule]) -> int | None:
    """The literal target of a goto rule; None when it is built from vars."""
    assert rule.action is not None
    arg = rule.action.arg
    if "$" in arg:
        return None
    target = goto_target(arg, [other.label for other in chain])
    return -1 if target is None else target


def _check_gotos(
    chain: Sequence[Rule], errors: list[Diagnostic], warnings: list[Diagnostic]
) -> None:
    labels = [r.label for r in chain if r.label is not None]
    for index, rule in enumerate(chain):
        if rule.action is None or rule.action.name != "goto":
            continue
        target = _goto_target(rule, chain)
        if target is None:
            continue
        arg = rule.action.arg
        if target < 0:
            known = ", ".join(repr(label) for label in labels[:_MAX_LISTED]) or "none"
            if len(labels) > _MAX_LISTED:
                known += f", and {len(labels) - _MAX_LISTED} more"
            message = (
                f"goto: no label {arg!r} in the {rule.chain} chain (labels: {known}), and it "
                "is not a rule number"
            )
            close = difflib.get_close_matches(arg, labels, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            errors.append(Diagnostic("error", rule.action.pos, message))
        elif target <= index:
            warnings.append(
                _warning(
                    rule,
                    f"goto can only jump forward: '{rule.action}' (to rule {target}, this is "
                    f"rule {index}) ends every request it runs for with BREAK, as in uWSGI",
                )
            )


def _check_unreachable(chain: Sequence[Rule], warnings: list[Diagnostic]) -> None:
    for index, rule in enumerate(chain):
        if not _always_fires(rule):
            continue
        assert rule.action is not None
        if rule.action.name not in STOPPING_ACTIONS:
            continue
        targets: list[int] = []
        for earlier in chain[:index]:
            if earlier.action is not None and earlier.action.name == "goto":
                target = _goto_target(earlier, chain)
                if target is None:
                    return  # a computed goto may land anywhere
                if target > index:
                    targets.append(target)
        stop = min(targets) if targets else len(chain)
        dead = [r for r in chain[index + 1 : stop] if r.action is not None]
        if dead:
            first = dead[0]
            more = f" and the {len(dead) - 1} after it" if len(dead) > 1 else ""
            verb = "offloads" if rule.action.name in OFFLOAD_ACTIONS else "stops"
            warnings.append(
                Diagnostic(
                    "warning",
                    first.pos,
                    f"this rule{more} can never run: the rule at line {rule.pos.line} "
                    f"('{rule.describe()}') {verb} every request of the {rule.chain} chain",
                )
            )
        return


def _check_rule(rule: Rule, warnings: list[Diagnostic]) -> None:
    action = rule.action
    if action is None:
        return
    if rule.chain == "final" and action.name in ANSWERING_ACTIONS:
        warnings.append(
            _warning(
                rule,
                f"'{action.written or action.name}:' cannot answer in the final chain: the "
                "response has been sent by then; it only stops the chain",
            )
        )
    if action.name in ("basicauth", "basicauth-next"):
        spec = action.arg.partition(",")[2]
        if spec and ":" not in spec and not os.access(spec, os.R_OK):
            warnings.append(
                _warning(
                    rule,
                    f"cannot read the htpasswd file {spec!r}: every request with credentials "
                    "is refused until it can be read",
                )
            )
    if action.name == "static" and "$" not in action.arg and not os.path.isfile(action.arg):
        warnings.append(
            _warning(rule, f"static: {action.arg!r} is not a file (requests get 404)")
        )
    cond = rule.condition
    if cond is not None and cond.name == "regexp" and cond.regex is None:
        pattern = cond.arg.partition(";")[2]
        risky = [p for p in template_parts(pattern) if p.kind == "var"]
        risky = [p for p in risky if client_controlled(p.value)]
        if risky:
            warnings.append(
                Diagnostic(
                    "warning",
                    cond.pos,
                    f"the regexp pattern is built from what the client sends ({_names(risky)}):"
                    " a client can make it slow or invalid (an invalid one ends the chain "
                    "with BREAK)",
                )
            )


def lint(config: Config) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Return (errors, warnings) found across the rules of ``config``."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    for name in ("request", "response", "final", "error"):
        chain = config.chain(name)
        _check_gotos(chain, errors, warnings)
        _check_unreachable(chain, warnings)
        for index, rule in enumerate(chain):
            _check_rule(rule, warnings)
            if rule.action is not None and rule.action.name in OFFLOAD_ACTIONS:
                _check_offload(rule, chain[:index], warnings)
    return errors, warnings
