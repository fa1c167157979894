"""The ``sse-offload`` console script: tools for the people who write rule files.

    sse-offload check [--strict] FILE...
    sse-offload explain FILE 'GET /path?q=1' [-H 'Name: value']... [--var NAME=VALUE]...
                        [--status N] [--response-header 'Name: value']...

The gateway itself runs under twistd: ``twistd -n sse-offload --rules FILE``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from . import __version__
from .config import Diagnostic, RulesError, load_rules


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def check(paths: Sequence[str], strict: bool = False, out: TextIO | None = None) -> int:
    """Check rule files; print every error, warning and note; return the exit status.

    1 when a file has an error (or, with ``strict``, a warning), else 0.
    """
    stream = out if out is not None else sys.stdout
    status = 0
    for path in paths:
        errors: tuple[Diagnostic, ...] = ()
        try:
            config = load_rules(path)
            warnings = config.warnings
        except RulesError as exc:
            errors, warnings = exc.diagnostics, exc.warnings
        for diagnostic in sorted((*errors, *warnings), key=_order):
            stream.write(diagnostic.format() + "\n")
        count_warnings = sum(1 for w in warnings if w.severity == "warning")
        if errors or (strict and count_warnings):
            status = 1
        summary = [_plural(len(errors), "error"), _plural(count_warnings, "warning")]
        verdict = "FAILED" if errors or (strict and count_warnings) else "ok"
        stream.write(f"{path}: {verdict} ({', '.join(summary)})\n")
    return status


def _order(diagnostic: Diagnostic) -> tuple[int, int]:
    pos = diagnostic.pos
    return (pos.line, pos.col) if pos is not None else (0, 0)


def explain_command(args: argparse.Namespace, out: TextIO) -> int:
    """Run ``explain`` for parsed arguments; return the exit status."""
    from .explain import ExplainError, explain

    try:
        config = load_rules(args.file)
    except RulesError as exc:
        out.write(str(exc) + "\n")
        return 1
    try:
        result = explain(
            config,
            args.request,
            headers=args.header,
            response_headers=args.response_header,
            app_vars=args.var,
            status=args.status,
            remote_addr=args.remote_addr,
        )
    except ExplainError as exc:
        out.write(f"sse-offload explain: {exc}\n")
        return 2
    out.write("\n".join(result.lines) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sse-offload",
        description="Server-Sent Events gateway. Run it with: twistd -n sse-offload --rules FILE",
    )
    parser.add_argument("--version", action="version", version=f"sse-offload {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check_parser = commands.add_parser(
        "check",
        help="check rule files and print every error and warning",
        description="Parse and validate rule files. Prints every error, warning and note "
        "(file:line:col, the line and a caret). Exit status 1 on any error, 0 otherwise.",
    )
    check_parser.add_argument("files", nargs="+", metavar="FILE")
    check_parser.add_argument(
        "--strict", action="store_true", help="warnings fail the check too (exit status 1)"
    )

    explain_parser = commands.add_parser(
        "explain",
        help="show what the gateway does with one request",
        description="Walk the chains for one request as the gateway would, printing each "
        "rule considered, whether it fired, the vars it read, and the outcome.",
    )
    explain_parser.add_argument("file", metavar="FILE")
    explain_parser.add_argument("request", metavar="REQUEST", help="e.g. 'GET /path?q=1'")
    explain_parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="'Name: value'",
        help="a request header (repeatable)",
    )
    explain_parser.add_argument(
        "--response-header", action="append", default=[], metavar="'Name: value'",
        help="a header of the app's response (repeatable)",
    )
    explain_parser.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE",
        help="a var the app adds (uwsgi.add_var), seen by the response and final chains",
    )
    explain_parser.add_argument(
        "--status", type=int, metavar="N", help="the status of the app's response"
    )
    explain_parser.add_argument(
        "--remote-addr", default="127.0.0.1", metavar="ADDR", help="the client's address"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.files, args.strict)
    if args.command == "explain":
        return explain_command(args, sys.stdout)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
