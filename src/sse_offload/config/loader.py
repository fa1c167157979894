"""Load a rules file into a :class:`Config`, reporting every error of the file at once.

Keys read elsewhere (``http-socket``, ``listen``, ``redis``, ``keepalive``, ``processes``,
``rules``), no-op keys (``plugin(s)``, ``offload-thread(s)``: the gateway always offloads)
and common uWSGI options that mean nothing here are kept in ``Config.entries`` without a
warning. Any other unknown key is kept too, with a warning when it is one edit away from a
key we know (a typo such as ``final-rout-if`` would otherwise be silently ignored, as uWSGI does).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sse_offload.config.actions import error
from sse_offload.config.grammar import (
    parse_route,
    parse_route_if,
    parse_route_label,
    parse_route_run,
    parse_route_status,
)
from sse_offload.config.ini import IniLine, read_ini, split_section
from sse_offload.config.model import (
    AddHeader,
    Config,
    Diagnostic,
    HeaderVar,
    MuleSpec,
    Rule,
    RulesError,
    SourcePos,
    StaticMap,
)

#: Chain of each routing-key prefix, as uWSGI names them.
CHAIN_PREFIXES = {"": "request", "response-": "response", "final-": "final", "error-": "error"}
#: Subject var of each regexp routing key, as uWSGI matches them.
SUBJECTS = {
    "route": "PATH_INFO",
    "route-host": "HTTP_HOST",
    "route-uri": "REQUEST_URI",
    "route-qs": "QUERY_STRING",
    "route-remote-addr": "REMOTE_ADDR",
    "route-user-agent": "HTTP_USER_AGENT",
    "route-remote-user": "REMOTE_USER",
    "route-referer": "HTTP_REFERER",
}
_FORMS = (*SUBJECTS, "route-if", "route-if-not", "route-run", "route-label", "route-status")


def _routing_keys() -> dict[str, tuple[str, str]]:
    keys = {}
    for prefix, chain in CHAIN_PREFIXES.items():
        for form in _FORMS:
            if form == "route-status" and chain == "request":
                continue  # uWSGI has no status rules in the request chain
            keys[prefix + form] = (chain, form)
    return keys


#: Every routing key: key -> (chain, form).
ROUTING_KEYS = _routing_keys()

#: Keys of the complete product that this version does not implement yet.
LATER_KEYS = frozenset(
    {
        "workers",
        "static-map2",
        "check-static",
        "attach-daemon",
        "http11-socket",
    }
)
#: Keys that put an app behind the gateway (in-process or upstream).
APP_KEYS = ("wsgi-file", "wsgi", "module", "proxy")
#: Keys read by the service (every long option is an ini key of the same name) or
#: accepted and ignored (docs/architecture.md, differences 11-12).
SERVICE_KEYS = frozenset(
    {
        "http-socket", "listen", "redis", "keepalive", "rules", "processes", "plugin",
        "plugins", "offload-threads", "offload-thread",
        # the app (in-process WSGI) and the upstream proxy
        *APP_KEYS, "callable", "threads", "chdir", "env", "pythonpath", "home", "virtualenv",
        "proxy-connect-timeout", "proxy-head-timeout", "trusted-proxy",
        # limits and the admin listener
        "admin", "drain", "max-paused", "max-queued", "max-message-size", "redis-outage-limit",
        "max-clients", "max-clients-per-ip", "header-timeout", "max-channel-length",
        # resume for PUBLISH publishers (mirror.py); publishing over HTTP; stream access
        "mirror", "publish", "publish-key", "subscribe-key", "cors-origins",
    }
)
#: Common uWSGI options that mean nothing to this gateway: kept silently, as uWSGI keeps
#: unknown keys, and never taken for a typo of one of ours.
UWSGI_KEYS = frozenset(
    {
        "master", "socket", "http", "https", "uwsgi-socket", "shared-socket",
        "buffer-size", "socket-timeout", "harakiri", "vacuum", "die-on-term", "uid", "gid",
        "pidfile", "daemonize", "logto", "log-format", "disable-logging", "memory-report",
        "max-requests", "reload-mercy", "enable-threads", "lazy-apps", "single-interpreter",
        "need-app", "need-plugin", "need-plugins", "strict",
        "stats", "listen-queue", "cheaper", "thunder-lock", "router-list",
        "routers-list", "static-safe", "static-index", "mimefile", "ini", "include",
        "post-buffering", "limit-as", "reload-on-rss", "touch-reload", "py-autoreload",
        "manage-script-name", "mount", "async", "ugreen", "gevent", "static-expires",
        "attach-daemon2", "smart-attach-daemon", "hook-pre-app", "exec-asap",
        "exec-pre-app", "spooler", "cron", "unique-cron", "mule-msg-size", "farm",
    }
)

#: Keys whose rules read responses, which come only from the gateway until an app exists.
_RESPONSE_SIDE = ("response-route", "final-route", "collect-header", "pull-header",
                  "response-header-collect")
RESPONSE_SIDE_NOTE = (
    "response-side rules (response-route*, final-route*, collect-header, pull-header) only "
    "see the responses the gateway makes itself (404, static files, break/return/redirect, "
    "401, streams) until an app is configured (wsgi-file, module, wsgi, proxy or --wsgi/--proxy)"
)


@dataclass
class _Builder:
    chains: dict[str, list[Rule]] = field(
        default_factory=lambda: {chain: [] for chain in CHAIN_PREFIXES.values()}
    )
    static_maps: list[StaticMap] = field(default_factory=list)
    mules: list[MuleSpec] = field(default_factory=list)
    header_vars: list[HeaderVar] = field(default_factory=list)
    add_headers: list[AddHeader] = field(default_factory=list)
    del_headers: set[str] = field(default_factory=set)
    warnings: list[Diagnostic] = field(default_factory=list)
    noted_response_side: bool = False


def _routing_rule(builder: _Builder, line: IniLine, chain: str, form: str) -> None:
    value, locate, key = line.entry.value, line.locate, line.entry.key
    notes = builder.warnings
    rule: Rule
    if form in SUBJECTS:
        rule = parse_route(
            value, locate, chain=chain, subject=SUBJECTS[form], notes=notes, key=key
        )
    elif form in ("route-if", "route-if-not"):
        rule = parse_route_if(
            value, locate, chain=chain, negate=form == "route-if-not", notes=notes, key=key
        )
    elif form == "route-run":
        rule = parse_route_run(value, locate, chain=chain, notes=notes, key=key)
    elif form == "route-label":
        rule = parse_route_label(value, locate, chain=chain, key=key)
    else:
        rule = parse_route_status(value, locate, chain=chain, notes=notes, key=key)
    builder.chains[chain].append(rule)


def _static_map(builder: _Builder, line: IniLine) -> None:
    mount, equal, path = line.entry.value.partition("=")
    if not equal:
        raise error(line.locate(0), "expected MOUNT=PATH after 'static-map =' (no '=' found)")
    builder.static_maps.append(StaticMap(mount, path, line.entry.pos))


def _mule(builder: _Builder, line: IniLine) -> None:
    # An empty `mule =` is a signal-only mule in uWSGI: nothing to run here.
    if line.entry.value:
        builder.mules.append(MuleSpec(line.entry.value, line.entry.pos))


def _header_var(builder: _Builder, line: IniLine) -> None:
    header, space, var = line.entry.value.partition(" ")
    key = line.entry.key
    if not space or not header or not var:
        raise error(
            line.locate(len(header) if space else len(line.entry.value)),
            f"expected 'Header-Name VAR' after '{key} =' (a space between them)",
        )
    pull = key == "pull-header"
    builder.header_vars.append(HeaderVar(header, var, pull, line.entry.pos))


def _add_header(builder: _Builder, line: IniLine) -> None:
    name, colon, value = line.entry.value.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise error(line.locate(0), "expected 'Name: value' after 'add-header ='")
    builder.add_headers.append(AddHeader(name, value.strip(" \t"), line.entry.pos))


def _del_header(builder: _Builder, line: IniLine) -> None:
    if not line.entry.value:
        raise error(line.locate(0), f"expected a header name after '{line.entry.key} ='")
    builder.del_headers.add(line.entry.value.lower())


_HANDLERS: dict[str, Callable[[_Builder, IniLine], None]] = {
    "static-map": _static_map,
    "mule": _mule,
    "collect-header": _header_var,
    "response-header-collect": _header_var,
    "pull-header": _header_var,
    "add-header": _add_header,
    "del-header": _del_header,
    "rem-header": _del_header,
}

#: Every key this gateway knows the meaning of (for the near-miss warning).
KNOWN_KEYS = frozenset({*ROUTING_KEYS, *_HANDLERS, *LATER_KEYS, *SERVICE_KEYS, *UWSGI_KEYS})
#: Mistakes common enough to deserve their own message.
_SPECIAL_KEYS = {
    "route-status": "the request chain has no status: use response-route-status or "
    "final-route-status",
}


def one_edit_apart(a: str, b: str) -> bool:
    """True when ``a`` becomes ``b`` by one insertion, deletion, substitution or swap."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        i = diff[0]
        return len(diff) == 2 and diff[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def _near_miss(key: str) -> str | None:
    for known in sorted(KNOWN_KEYS):
        if one_edit_apart(key, known):
            return known
    return None


def _order(diagnostic: Diagnostic) -> tuple[int, int]:
    pos = diagnostic.pos
    return (pos.line, pos.col) if pos is not None else (0, 0)


def _unknown_key(builder: _Builder, line: IniLine) -> None:
    key = line.entry.key
    if key in LATER_KEYS:
        message = f"{key!r} is not supported yet; ignored"
    elif key in _SPECIAL_KEYS:
        message = f"unknown key {key!r}: {_SPECIAL_KEYS[key]}; ignored"
    else:
        close = _near_miss(key)
        if close is None:
            return
        message = f"unknown key {key!r}, kept and ignored; did you mean {close!r}?"
    builder.warnings.append(Diagnostic("warning", line.key_pos(), message))


def parse_rules_text(
    text: str,
    filename: str,
    environ: Mapping[str, str] | None = None,
    section: str = "uwsgi",
) -> Config:
    """Parse rules-file ``text`` (named ``filename`` in messages and for ``%d``/``%n``).

    ``environ`` feeds ``$(NAME)``; it defaults to the process environment. ``section`` is
    the ini section read. Returns the Config, or raises RulesError carrying every error of
    the file.
    """
    # Imported here: lint reads the routing package, which imports this package.
    from sse_offload.config.lint import lint

    errors: list[Diagnostic] = []
    lines, warnings = read_ini(
        text, filename, os.environ if environ is None else environ, section, errors
    )
    builder = _Builder(warnings=warnings)
    for line in lines:
        key = line.entry.key
        routing = ROUTING_KEYS.get(key)
        handler = _HANDLERS.get(key)
        try:
            if routing is not None:
                _routing_rule(builder, line, *routing)
                if routing[0] == "error":
                    builder.warnings.append(
                        Diagnostic(
                            "warning",
                            line.key_pos(),
                            f"{key!r}: the error chain is not supported; parsed and ignored",
                        )
                    )
            elif handler is not None:
                handler(builder, line)
            elif key not in SERVICE_KEYS and key not in UWSGI_KEYS:
                _unknown_key(builder, line)
        except RulesError as exc:
            errors.extend(exc.diagnostics)
        if key.startswith(_RESPONSE_SIDE) and not builder.noted_response_side:
            builder.noted_response_side = True
            if not any(other.entry.key in APP_KEYS for other in lines):
                builder.warnings.append(Diagnostic("note", line.key_pos(), RESPONSE_SIDE_NOTE))
    config = Config(
        path=filename,
        entries=tuple(line.entry for line in lines),
        request_rules=tuple(builder.chains["request"]),
        static_maps=tuple(builder.static_maps),
        mules=tuple(builder.mules),
        warnings=(),
        response_rules=tuple(builder.chains["response"]),
        final_rules=tuple(builder.chains["final"]),
        error_rules=tuple(builder.chains["error"]),
        header_vars=tuple(builder.header_vars),
        add_headers=tuple(builder.add_headers),
        del_headers=frozenset(builder.del_headers),
    )
    lint_errors, lint_warnings = lint(config)
    errors.extend(lint_errors)
    builder.warnings.extend(lint_warnings)
    builder.warnings.sort(key=_order)
    if errors:
        errors.sort(key=_order)
        raise RulesError(errors, builder.warnings)
    return dataclasses.replace(config, warnings=tuple(builder.warnings))


def load_rules(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the rules file at ``path``; see :func:`parse_rules_text`.

    ``file.ini:section`` reads section ``section`` instead of ``[uwsgi]`` (when no file has
    that exact name). An unreadable file raises RulesError too (its diagnostic has line 0).
    """
    filename, section = split_section(path)
    try:
        with open(filename, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RulesError(
            [
                Diagnostic(
                    "error", SourcePos(filename, 0, 0, ""), f"cannot read rules file: {reason}"
                )
            ]
        ) from None
    return parse_rules_text(data.decode("utf-8", "surrogateescape"), filename, environ, section)
