"""Load a rules file into a :class:`Config`, reporting every error of the file at once.

Keys read elsewhere (``http-socket``, ``listen``, ``redis``, ``keepalive``, ``rules``) and
no-op keys (``plugin(s)``, ``offload-thread(s)``, DESIGN §4.11) are kept in
``Config.entries`` like any unknown key, without a warning.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sse_offload.config.grammar import error, parse_route
from sse_offload.config.ini import IniLine, read_ini
from sse_offload.config.model import (
    Config,
    Diagnostic,
    MuleSpec,
    Rule,
    RulesError,
    SourcePos,
    StaticMap,
)

#: Keys of the complete language that this version does not implement yet.
LATER_KEYS = frozenset(
    {
        "route-if",
        "route-if-not",
        "route-run",
        "route-label",
        "route-host",
        "route-uri",
        "route-qs",
        "route-remote-addr",
        "route-user-agent",
        "route-remote-user",
        "route-referer",
        "collect-header",
        "response-header-collect",
        "pull-header",
        "add-header",
        "del-header",
        "rem-header",
        "wsgi-file",
        "wsgi",
        "module",
        "callable",
        "processes",
        "workers",
        "threads",
        "static-map2",
        "check-static",
        "attach-daemon",
        "http11-socket",
    }
)
LATER_PREFIXES = ("final-route", "response-route", "error-route")


@dataclass
class _Builder:
    rules: list[Rule] = field(default_factory=list)
    static_maps: list[StaticMap] = field(default_factory=list)
    mules: list[MuleSpec] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)


def _route(builder: _Builder, line: IniLine) -> None:
    builder.rules.append(parse_route(line.entry.value, line.locate, notes=builder.warnings))


def _static_map(builder: _Builder, line: IniLine) -> None:
    mount, equal, path = line.entry.value.partition("=")
    if not equal:
        raise error(line.locate(0), "expected MOUNT=PATH after 'static-map =' (no '=' found)")
    builder.static_maps.append(StaticMap(mount, path, line.entry.pos))


def _mule(builder: _Builder, line: IniLine) -> None:
    # An empty `mule =` is a signal-only mule in uWSGI: nothing to run here.
    if line.entry.value:
        builder.mules.append(MuleSpec(line.entry.value, line.entry.pos))


def _order(diagnostic: Diagnostic) -> tuple[int, int]:
    pos = diagnostic.pos
    return (pos.line, pos.col) if pos is not None else (0, 0)


_HANDLERS: dict[str, Callable[[_Builder, IniLine], None]] = {
    "route": _route,
    "static-map": _static_map,
    "mule": _mule,
}


def parse_rules_text(text: str, filename: str, environ: Mapping[str, str] | None = None) -> Config:
    """Parse rules-file ``text`` (named ``filename`` in messages and for ``%d``/``%n``).

    ``environ`` feeds ``$(NAME)``; it defaults to the process environment. Returns the
    Config, or raises RulesError carrying every error of the file.
    """
    lines, warnings = read_ini(text, filename, os.environ if environ is None else environ)
    builder = _Builder(warnings=warnings)
    errors: list[Diagnostic] = []
    for line in lines:
        key = line.entry.key
        handler = _HANDLERS.get(key)
        if handler is not None:
            try:
                handler(builder, line)
            except RulesError as exc:
                errors.extend(exc.diagnostics)
        elif key in LATER_KEYS or key.startswith(LATER_PREFIXES):
            builder.warnings.append(
                Diagnostic("warning", line.key_pos(), f"{key!r} is not supported yet; ignored")
            )
    builder.warnings.sort(key=_order)
    if errors:
        raise RulesError(errors, builder.warnings)
    return Config(
        path=filename,
        entries=tuple(line.entry for line in lines),
        request_rules=tuple(builder.rules),
        static_maps=tuple(builder.static_maps),
        mules=tuple(builder.mules),
        warnings=tuple(builder.warnings),
    )


def load_rules(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the rules file at ``path``; see :func:`parse_rules_text`.

    An unreadable file raises RulesError too (its diagnostic has line 0).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RulesError(
            [Diagnostic("error", SourcePos(path, 0, 0, ""), f"cannot read rules file: {reason}")]
        ) from None
    return parse_rules_text(data.decode("utf-8", "surrogateescape"), path, environ)
