"""Translation of action arguments: ``$N`` captures, then ``${VAR}`` (seed-behaviour §3.6).

Both passes copy uWSGI's scanners (U:core/regexp.c ``uwsgi_regexp_apply_ovec``,
U:core/routing.c ``uwsgi_routing_translate``), quirks included: ``$`` and the character
after it are consumed as a pair, so ``$$1`` stays ``$$1``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

#: A route var ``${fn[ARG]}``: called with ARG and the request vars.
RouteVar = Callable[[str, Mapping[str, str]], str]

_C_SPACE = " \t\n\v\f\r"


def _first_item(text: str, separator: str, name: str, strip: str) -> str:
    for item in text.split(separator):
        key, equal, value = item.strip(strip).partition("=")
        # An empty value counts as missing, and the search goes on (U:core/querystring.c).
        if equal and key == name and value:
            return value
    return ""


def qs_var(name: str, vars: Mapping[str, str]) -> str:
    """``${qs[name]}``: the first non-empty ``name=value`` of QUERY_STRING, not URL-decoded."""
    return _first_item(vars.get("QUERY_STRING", ""), "&", name, "")


def cookie_var(name: str, vars: Mapping[str, str]) -> str:
    """``${cookie[name]}``: the first non-empty value of cookie ``name`` in HTTP_COOKIE."""
    return _first_item(vars.get("HTTP_COOKIE", ""), ";", name, _C_SPACE)


#: The registered route vars; the complete language adds more here.
ROUTE_VARS: dict[str, RouteVar] = {"qs": qs_var, "cookie": cookie_var}


def _lookup(key: str, vars: Mapping[str, str]) -> str:
    bracket = key.find("[")
    if bracket >= 0 and key.endswith("]"):
        function = ROUTE_VARS.get(key[:bracket])
        if function is not None:
            return function(key[bracket + 1 : -1], vars)
    return vars.get(key, "")


def _captures_pass(template: str, captures: Sequence[str | None]) -> tuple[str, bool]:
    out: list[str] = []
    replaced = False
    i = 0
    while i < len(template):
        char = template[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        if i + 1 == len(template):
            break  # a lone '$' at the very end is dropped
        follower = template[i + 1]
        if "0" <= follower <= "9":
            group = int(follower)
            out.append((captures[group] if group < len(captures) else None) or "")
            replaced = True
        else:
            out.append(char + follower)
        i += 2
    return "".join(out), replaced


def _vars_pass(text: str, vars: Mapping[str, str]) -> tuple[str, bool]:
    out: list[str] = []
    replaced = False
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
        elif i + 1 == len(text):
            out.append(char)
            i += 1
        elif text[i + 1] != "{":
            out.append(text[i : i + 2])
            i += 2
        else:
            end = text.find("}", i + 2)
            if end < 0:
                out.append(text[i:])  # unterminated: kept as written
                break
            out.append(_lookup(text[i + 2 : end], vars))
            replaced = True
            i = end + 1
    return "".join(out), replaced


def translate(
    template: str, captures: Sequence[str | None], vars: Mapping[str, str]
) -> tuple[str, bool]:
    """Expand ``template`` like :func:`expand`; also say whether anything was substituted."""
    pass1, replaced1 = _captures_pass(template, captures)
    pass2, replaced2 = _vars_pass(pass1, vars)
    return pass2, replaced1 or replaced2


def expand(template: str, captures: Sequence[str | None], vars: Mapping[str, str]) -> str:
    """Expand an action argument.

    ``captures[0]`` is the whole regex match, ``captures[N]`` group N (None when it did not
    take part). Pass 1 replaces ``$0``..``$9`` (missing -> ""); pass 2 replaces
    ``${NAME}`` with the request var (missing -> "") or ``${fn[ARG]}`` with a route var.
    Never raises.
    """
    return translate(template, captures, vars)[0]
