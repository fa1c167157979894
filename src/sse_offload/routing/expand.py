"""Translation of action arguments: ``$N`` captures, then ``${VAR}``, in uWSGI's order.

Both passes copy uWSGI's scanners (uWSGI core/regexp.c ``uwsgi_regexp_apply_ovec``,
uWSGI core/routing.c ``uwsgi_routing_translate``), quirks included: ``$`` and the character
after it are consumed as a pair, so ``$$1`` stays ``$$1``.

Route vars (``${fn[ARG]}``) are the functions of :data:`ROUTE_VARS`.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import mimetypes
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sse_offload.config.values import C_SPACE, c_atoi
from sse_offload.routing.state import RequestState

#: A route var ``${fn[ARG]}``: called with ARG, the request vars and the request's state
#: (None when expanding outside a request, as the unit tests and the checker do).
RouteVar = Callable[[str, Mapping[str, str], RequestState | None], str]

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _first_item(text: str, separator: str, name: str, strip: str) -> str:
    for item in text.split(separator):
        key, equal, value = item.strip(strip).partition("=")
        # An empty value counts as missing, and the search goes on (uWSGI core/querystring.c).
        if equal and key == name and value:
            return value
    return ""


def qs_var(name: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${qs[name]}``: the first non-empty ``name=value`` of QUERY_STRING, not URL-decoded."""
    return _first_item(vars.get("QUERY_STRING", ""), "&", name, "")


def cookie_var(name: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${cookie[name]}``: the first non-empty value of cookie ``name`` in HTTP_COOKIE."""
    return _first_item(vars.get("HTTP_COOKIE", ""), ";", name, C_SPACE)


def _now(state: RequestState | None) -> float:
    return state.clock() if state is not None else time.time()


def time_var(arg: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${time[unix]}`` epoch seconds, ``${time[micros]}`` epoch microseconds."""
    now = _now(state)
    if arg == "unix":
        return str(int(now))
    if arg == "micros":
        return str(round(now * 1_000_000))
    return ""


def httptime_var(arg: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${httptime[N]}``: the RFC 1123 date of now + N seconds (``${httptime[]}``: now)."""
    return email.utils.formatdate(int(_now(state)) + c_atoi(arg), usegmt=True)


def uwsgi_var(arg: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${uwsgi[uuid|status|rtime|sor|pid|wid]}``; anything else is empty.

    ``status`` is 0 until the response status is known, as in uWSGI; ``rtime`` is the
    microseconds since the request started; ``sor`` the start in epoch microseconds.
    """
    if state is None:
        state = RequestState({})
    if arg == "uuid":
        return state.uuid
    if arg == "status":
        return str(state.status or 0)
    if arg == "rtime":
        return str(max(round((state.clock() - state.start) * 1_000_000), 0))
    if arg == "sor":
        return str(round(state.start * 1_000_000))
    if arg == "pid":
        return str(state.pid)
    if arg == "wid":
        return str(state.worker_id)
    return ""


def mime_var(name: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${mime[VAR]}``: the MIME type of VAR's value, guessed from its file extension."""
    guessed, _ = mimetypes.guess_type(vars.get(name, ""), strict=False)
    return guessed or ""


def base64_var(name: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${base64[VAR]}``: VAR's value (its UTF-8 bytes) in standard base64."""
    return base64.b64encode(_bytes(vars.get(name, ""))).decode("ascii")


def hex_var(name: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${hex[VAR]}``: VAR's value (its UTF-8 bytes) as lower-case hex."""
    return binascii.hexlify(_bytes(vars.get(name, ""))).decode("ascii")


def upper_var(name: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${upper[VAR]}``: VAR's value with ASCII letters upper-cased (C ``toupper``)."""
    return vars.get(name, "").translate(_ASCII_UPPER)


def lower_var(name: str, vars: Mapping[str, str], state: RequestState | None = None) -> str:
    """``${lower[VAR]}``: VAR's value with ASCII letters lower-cased (C ``tolower``)."""
    return vars.get(name, "").translate(_ASCII_LOWER)


#: The registered route vars.
ROUTE_VARS: dict[str, RouteVar] = {
    "qs": qs_var,
    "cookie": cookie_var,
    "time": time_var,
    "httptime": httptime_var,
    "uwsgi": uwsgi_var,
    "mime": mime_var,
    "base64": base64_var,
    "hex": hex_var,
    "upper": upper_var,
    "lower": lower_var,
}

Reads = list[tuple[str, str]]


def lookup(
    key: str, vars: Mapping[str, str], state: RequestState | None = None
) -> str:
    """The value ``${key}`` expands to: a route var ``fn[ARG]`` or a plain var ("" if unset)."""
    bracket = key.find("[")
    if bracket >= 0 and key.endswith("]"):
        function = ROUTE_VARS.get(key[:bracket])
        if function is not None:
            return function(key[bracket + 1 : -1], vars, state)
    return vars.get(key, "")


def _captures_pass(template: str, captures: Sequence[str | None]) -> tuple[str, bool]:
    dollar = template.find("$")
    if dollar < 0:
        return template, False
    out: list[str] = []
    replaced = False
    last = 0
    end = len(template)
    while dollar >= 0:
        out.append(template[last:dollar])
        if dollar + 1 == end:
            last = end  # a lone '$' at the very end is dropped
            break
        follower = template[dollar + 1]
        if "0" <= follower <= "9":
            group = ord(follower) - 48
            out.append((captures[group] if group < len(captures) else None) or "")
            replaced = True
        else:
            out.append(template[dollar : dollar + 2])
        last = dollar + 2
        dollar = template.find("$", last)
    out.append(template[last:])
    return "".join(out), replaced


def _vars_pass(
    text: str,
    vars: Mapping[str, str],
    state: RequestState | None = None,
    reads: Reads | None = None,
) -> tuple[str, bool]:
    dollar = text.find("$")
    if dollar < 0:
        return text, False
    out: list[str] = []
    replaced = False
    last = 0
    end = len(text)
    while dollar >= 0:
        out.append(text[last:dollar])
        if dollar + 1 == end:
            out.append("$")
            last = end
            break
        if text[dollar + 1] != "{":
            out.append(text[dollar : dollar + 2])
            last = dollar + 2
        else:
            close = text.find("}", dollar + 2)
            if close < 0:
                out.append(text[dollar:])  # unterminated: kept as written
                last = end
                break
            key = text[dollar + 2 : close]
            value = lookup(key, vars, state)
            if reads is not None:
                reads.append((key, value))
            out.append(value)
            replaced = True
            last = close + 1
        dollar = text.find("$", last)
    out.append(text[last:])
    return "".join(out), replaced


_LITERAL, _ONE_VAR, _GENERAL = 0, 1, 2


@functools.lru_cache(maxsize=4096)
def _plan(template: str) -> tuple[int, str, bool]:
    """How to expand ``template``: (kind, the var of a lone ``${VAR}``, needs pass 1)."""
    if "$" not in template:
        return _LITERAL, "", False
    if (
        template.startswith("${")
        and template.endswith("}")
        and template.count("$") == 1
        and template.find("}") == len(template) - 1
    ):
        return _ONE_VAR, template[2:-1], False
    # Pass 1 changes nothing unless there is a "$<digit>" or a final lone "$" (and "$$"
    # pairs are consumed two by two, so scan as pass 1 does).
    needs = False
    i = template.find("$")
    while i >= 0:
        if i + 1 == len(template) or "0" <= template[i + 1] <= "9":
            needs = True
            break
        i = template.find("$", i + 2)
    return _GENERAL, "", needs


def translate(
    template: str,
    captures: Sequence[str | None],
    vars: Mapping[str, str],
    state: RequestState | None = None,
    reads: Reads | None = None,
) -> tuple[str, bool]:
    """Expand ``template`` like :func:`expand`; also say whether anything was substituted.

    ``reads``, when given, gets every ``${...}`` looked up, with its value.
    """
    kind, key, needs_captures = _plan(template)
    if kind == _LITERAL:
        return template, False
    if kind == _ONE_VAR:
        value = lookup(key, vars, state)
        if reads is not None:
            reads.append((key, value))
        return value, True
    if needs_captures:
        pass1, replaced1 = _captures_pass(template, captures)
    else:
        pass1, replaced1 = template, False
    pass2, replaced2 = _vars_pass(pass1, vars, state, reads)
    return pass2, replaced1 or replaced2


def translate_vars(
    template: str,
    vars: Mapping[str, str],
    state: RequestState | None = None,
    reads: Reads | None = None,
) -> str:
    """Only the ``${...}`` pass: for a ``regexp:`` pattern, whose ``$`` anchors must survive.

    uWSGI runs both passes there too, which drops a pattern's final ``$`` (a lone ``$`` at
    the end) and empties ``$1``; we deliberately keep the pattern as written.
    """
    if "${" not in template:
        return template
    return _vars_pass(template, vars, state, reads)[0]


def expand(template: str, captures: Sequence[str | None], vars: Mapping[str, str]) -> str:
    """Expand an action argument.

    ``captures[0]`` is the whole regex match, ``captures[N]`` group N (None when it did not
    take part). Pass 1 replaces ``$0``..``$9`` (missing -> ""); pass 2 replaces
    ``${NAME}`` with the request var (missing -> "") or ``${fn[ARG]}`` with a route var.
    Never raises.
    """
    return translate(template, captures, vars)[0]


# --- static analysis of a template (for the checker) -----------------------------------


@dataclass(frozen=True)
class Part:
    """A piece of an unexpanded template: literal ``text``, a ``capture`` or a ``var``."""

    kind: Literal["text", "capture", "var"]
    value: str


def template_parts(template: str) -> list[Part]:
    """Split ``template`` the way :func:`translate` reads it (captures, then vars)."""
    parts: list[Part] = []
    text: list[str] = []

    def flush() -> None:
        if text:
            parts.append(Part("text", "".join(text)))
            text.clear()

    i = 0
    while i < len(template):
        char = template[i]
        if char != "$" or i + 1 == len(template):
            if char != "$":
                text.append(char)
            i += 1
            continue
        follower = template[i + 1]
        if "0" <= follower <= "9":
            flush()
            parts.append(Part("capture", follower))
            i += 2
        elif follower == "{" and (end := template.find("}", i + 2)) >= 0:
            flush()
            parts.append(Part("var", template[i + 2 : end]))
            i = end + 1
        else:
            text.append(char + follower)
            i += 2
    flush()
    return parts
