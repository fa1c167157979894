"""``sse-offload explain``: walk the chains for one request, as the gateway would.

Nothing here decides anything: the request vars come from :func:`cgi_vars`, the chains
run in :func:`run_chain` / :func:`respond`, and what the gateway answers, serves or streams
comes from answers.py (:func:`gateway_answer`, :func:`static_target`, :func:`stream_target`),
exactly the calls the front resource makes. This module only prints the engine's trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sse_offload.answers import (
    BAD_TARGET,
    CLUSTER_STREAMS,
    LONG_CHANNEL,
    NO_CHANNEL,
    REFUSED_SERVER,
    SSE_HEADERS,
    gateway_answer,
    static_target,
    stream_target,
)
from sse_offload.config.model import Config, Rule, SourcePos
from sse_offload.redis_address import AddressError, parse_address
from sse_offload.routing import (
    Break,
    Continue,
    Offload,
    Outcome,
    RequestState,
    SseTarget,
    Static,
    cgi_vars,
    describe,
    respond,
    run_chain,
)
from sse_offload.routing.state import TraceEntry

#: Keys that configure an app (the app-integration issue runs them); explain then assumes
#: the request reaches an app, as it will.
APP_KEYS = ("wsgi-file", "wsgi", "module", "proxy")


class ExplainError(ValueError):
    """A request line or header the explainer cannot use."""


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` -> (name, value); ExplainError if there is no colon."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ExplainError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def parse_var(text: str) -> tuple[str, str]:
    """``'NAME=VALUE'`` -> (name, value); ExplainError if there is no ``=``."""
    name, equal, value = text.partition("=")
    if not equal or not name:
        raise ExplainError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_request_line(text: str) -> tuple[str, str, str]:
    """``'GET /path?q=1'`` (or just ``/path``, or with ``HTTP/1.0``) -> method, uri, proto."""
    parts = text.split()
    if len(parts) == 1 and parts[0].startswith("/"):
        parts = ["GET", *parts]
    if len(parts) == 2:
        parts.append("HTTP/1.1")
    if len(parts) != 3 or not parts[1].startswith("/"):
        raise ExplainError(f"expected 'METHOD /path[?query] [HTTP/1.x]', got {text!r}")
    return parts[0], parts[1], parts[2]


@dataclass
class Explanation:
    """The printed lines and the decision, for tests and callers."""

    lines: list[str] = field(default_factory=list)
    outcome: str = ""
    offload: Offload | None = None
    offload_chain: str = ""

    def say(self, line: str = "") -> None:
        self.lines.append(line)


def _where(rule: Rule) -> SourcePos:
    """Where the action that decided is written."""
    return rule.action.pos if rule.action is not None else rule.pos


def _show(value: str) -> str:
    return repr(value)


def _trace(
    out: Explanation, title: str, rules: Sequence[object], entries: list[TraceEntry]
) -> None:
    out.say(f"{title}:")
    if not rules:
        out.say("  (no rules)")
        return
    for entry in entries:
        rule = entry.rule
        out.say(f"  {rule.pos.file}:{rule.pos.line}  [{entry.index}] {rule.describe()}")
        if entry.reads:
            unique = dict.fromkeys(entry.reads)
            reads = ", ".join(f"{name}={_show(value)}" for name, value in unique)
            out.say(f"      read {reads}")
        if entry.fired is None:
            out.say(f"      skipped: {entry.detail}")
        elif entry.fired:
            out.say(f"      fired ({entry.detail}): {entry.result}")
        else:
            out.say(f"      not fired: {entry.detail}")
    if not entries:
        out.say("  (not reached)")


def _literal_servers(config: Config) -> set[tuple[object, ...]]:
    keys = set()
    for text in config.literal_servers():
        try:
            keys.add(parse_address(text).key)
        except AddressError:
            pass
    return keys


def _target(config: Config, offload: Offload) -> str:
    # The --redis address is not known here: a server= that is not written in the rules is
    # refused unless it is that address.
    target, address = stream_target(offload, None, _literal_servers(config))
    if address == NO_CHANNEL:
        return f"{offload.mode} with no subscribe=: the gateway answers 500"
    if isinstance(address, str) and address.startswith(BAD_TARGET):
        return f"{offload.mode} refused ({address}): the gateway answers 400"
    if address == LONG_CHANNEL:
        return f"{offload.mode} with a channel name over the limit: the gateway answers 400"
    if address == CLUSTER_STREAMS:
        return f"{offload.mode} refused ({address}): the gateway answers 500"
    if address is None:
        where = "the default Redis"
    elif address == REFUSED_SERVER:
        where = (
            f"server {target.server!r}, which the configuration does not name: "
            "refused with 403 unless it is the --redis address"
        )
    elif isinstance(address, str):
        where = f"server {target.server!r}, not a valid address ({address}): answered with 500"
    else:
        where = f"server {target.server!r}"
    return f"{offload.mode} stream of {_sources(target)} on {where}"


def _sources(target: SseTarget) -> str:
    """What a stream listens to, as ``explain`` says it."""
    def named(kind: str, names: tuple[str, ...]) -> str:
        plural = "s" if len(names) > 1 else ""
        return f"{kind}{plural} " + ", ".join(_show(n) for n in names)

    parts = []
    if target.channels:
        parts.append(named("channel", target.channels))
    if target.patterns:
        parts.append(named("pattern", target.patterns))
    if target.sharded:
        parts.append(named("sharded channel", target.sharded))
    if target.streams:
        resume = "Redis Streams mode: ids, resumes from Last-Event-ID"
        if target.history:
            resume += f", {target.history} past entries for a new client"
        parts.append(f"{named('Redis Stream', target.streams)} ({resume})")
    if target.envelope:
        parts.append("payloads as JSON envelopes")
    if target.auth == "jwt":
        parts.append("auth=jwt: a token must grant every name (401 without one, 403 beyond)")
    return "; ".join(parts)


def _gateway_answer(outcome: Outcome) -> tuple[int, list[tuple[str, str]]] | None:
    """Status and headers of a response the gateway makes for a request-chain outcome."""
    answer = gateway_answer(outcome)
    if answer is not None:
        return answer.status, list(answer.headers)
    if isinstance(outcome, Static):
        return 200, []
    return None


def explain(
    config: Config,
    request_line: str,
    headers: Sequence[str] = (),
    response_headers: Sequence[str] = (),
    app_vars: Sequence[str] = (),
    status: int | None = None,
    remote_addr: str = "127.0.0.1",
) -> Explanation:
    """Explain what the gateway does with one request; ExplainError for bad input."""
    method, uri, protocol = parse_request_line(request_line)
    request_headers = [parse_header(h) for h in headers]
    if not any(name.lower() == "host" for name, _ in request_headers):
        request_headers.insert(0, ("Host", "localhost"))
    host = next(value for name, value in request_headers if name.lower() == "host")
    server_name, _, port = host.partition(":")
    vars = cgi_vars(
        method.encode("utf-8", "surrogateescape"),
        uri.encode("utf-8", "surrogateescape"),
        protocol.encode("ascii", "replace"),
        [(n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
         for n, v in request_headers],
        remote_addr=remote_addr,
        remote_port="50000",
        server_name=server_name,
        server_port=port or "80",
    )
    answers = [parse_header(h) for h in response_headers]
    added = [parse_var(v) for v in app_vars]
    out = Explanation()
    out.say(f"request: {method} {uri} {protocol}")
    out.say(
        f"  PATH_INFO={_show(vars['PATH_INFO'])} QUERY_STRING={_show(vars['QUERY_STRING'])}"
        f" REMOTE_ADDR={_show(remote_addr)}"
    )
    trace: list[TraceEntry] = []
    state = RequestState(vars, trace=trace)
    outcome = run_chain(config.request_rules, state)
    _trace(out, "request chain", config.request_rules, trace)
    out.say(f"  => {describe(outcome)}")
    for level, message in state.take_logs():
        out.say(f"  log ({level}): {message}")

    if isinstance(outcome, Offload):
        state.streaming = True
        out.offload, out.offload_chain = outcome, "request"
        out.outcome = (
            f"offload from the request chain ({_where(outcome.rule)}): "
            f"{_target(config, outcome)}; the head is 200 with text/event-stream"
        )
        _response_side(out, config, state, 200, list(SSE_HEADERS), made_by="the stream")
    elif isinstance(outcome, Break) and outcome.status is None:
        out.outcome = "the connection is closed without a response (break:)"
        trace.clear()
        run_chain(config.final_rules, state)
        _trace(out, "final chain", config.final_rules, trace)
    elif (answer := _gateway_answer(outcome)) is not None:
        assert outcome.rule is not None  # only Continue(None) has no rule
        out.outcome = f"{describe(outcome)} (request chain, {_where(outcome.rule)})"
        _response_side(out, config, state, answer[0], answer[1], made_by="the gateway")
    else:
        assert isinstance(outcome, Continue)
        _after_request_chain(out, config, state, answers, added, status)
    out.say(f"outcome: {out.outcome}")
    return out


def _after_request_chain(
    out: Explanation,
    config: Config,
    state: RequestState,
    answers: list[tuple[str, str]],
    added: list[tuple[str, str]],
    status: int | None,
) -> None:
    served = static_target(config, state.vars)
    if served is not None:
        mapping, target = served
        out.say(f"static-map ({mapping.pos}): serves {target}")
        out.outcome = f"serve the file {target} (static-map, {mapping.pos})"
        _response_side(out, config, state, 200, [], made_by="the gateway")
        return
    simulated = bool(answers or added or status is not None)
    app = next((k for k in APP_KEYS if config.option(k) is not None), None)
    if not simulated and app is None:
        out.say("no rule answered, no static-map serves it, and no app is configured")
        out.outcome = "404 Not Found (made by the gateway)"
        _response_side(
            out, config, state, 404, [("Content-Type", "text/plain; charset=utf-8")],
            made_by="the gateway",
        )
        return
    why = f"{app} = {config.option(app)}" if app else "simulated with --status/--var"
    code = 200 if status is None else status
    out.say(f"app ({why}): answers {code}")
    for name, value in added:
        state.vars[name] = value
        out.say(f"  app var {name}={_show(value)}")
    for name, value in answers:
        out.say(f"  app header {name}: {value}")
    _response_side(out, config, state, code, answers, made_by="the app")


def _response_side(
    out: Explanation,
    config: Config,
    state: RequestState,
    status: int,
    headers: list[tuple[str, str]],
    made_by: str,
) -> None:
    trace: list[TraceEntry] = []
    state.trace = trace
    before = dict(state.vars)
    decision = respond(config, state, status, headers)
    for name, value in state.vars.items():
        if before.get(name) != value:
            out.say(f"  header var {name}={_show(value)} (collect-header/pull-header)")
    _trace(out, "response chain", config.response_rules,
           [t for t in trace if t.chain == "response"])
    out.say(f"  => {describe(decision.response)}")
    _trace(out, "final chain", config.final_rules, [t for t in trace if t.chain == "final"])
    out.say(f"  => {describe(decision.final)}")
    for level, message in state.take_logs():
        out.say(f"  log ({level}): {message}")
    shown = ", ".join(f"{n}: {v}" for n, v in decision.headers) or "(none)"
    out.say(f"response head: {decision.status} {shown}")
    offload = decision.offload
    if offload is None:
        ignored = [o for o in (decision.response, decision.final) if isinstance(o, Offload)]
        if ignored and out.offload is not None:
            out.say(f"  {ignored[0].rule.action} ignored: the request is already a stream")
        if not out.outcome:
            out.outcome = f"pass the response of {made_by} through ({status})"
        return
    chain = "response" if decision.replace_headers else "final"
    if made_by != "the app":
        out.say(f"  {offload.rule.action} ignored: {made_by} made this response, not an app")
        if not out.outcome:
            out.outcome = f"pass the response of {made_by} through ({status})"
        return
    out.offload, out.offload_chain = offload, chain
    heads = (
        "the default SSE head replaces the app's headers"
        if decision.replace_headers
        else "the app's status and headers are kept (Content-Type becomes text/event-stream"
        " in sse mode); the app's body is discarded"
    )
    out.outcome = (
        f"offload from the {chain} chain ({_where(offload.rule)}): "
        f"{_target(config, offload)}; {heads}"
    )
