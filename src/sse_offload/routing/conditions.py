"""The ``route-if`` conditions (uWSGI's), as a table of pure functions.

Two-operand conditions take ``A;B``: the raw argument is split at its first ``;`` and each
side is translated on its own (so a ``;`` inside a var's value never splits); without a
``;`` the condition is false. A condition that cannot be evaluated raises
:class:`ConditionError`, which ends the chain with BREAK whether or not it is negated
(uWSGI core/routing.c).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Callable, Sequence

from sse_offload.config.model import Condition
from sse_offload.routing.expand import Reads, c_atoi, translate, translate_vars
from sse_offload.routing.state import RequestState

#: uWSGI's operand limits for ``ipv4in``/``ipv6in``: longer text is an error, not false
#: (uWSGI core/routing.c sizes its buffers with INET_ADDRSTRLEN-like constants).
IPV4_ADDR_MAX = len("255.255.255.255")
IPV4_NET_LIMIT = IPV4_ADDR_MAX + 3
IPV6_ADDR_MAX = len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
IPV6_NET_LIMIT = IPV6_ADDR_MAX + 4
#: Patterns built from vars are compiled per request; this many stay compiled.
REGEX_CACHE_SIZE = 256

Captures = Sequence[str | None]
ConditionFn = Callable[[Condition, RequestState, Reads | None], bool]


class ConditionError(Exception):
    """A condition that could not be evaluated (the chain ends with BREAK)."""


def _one(cond: Condition, state: RequestState, reads: Reads | None) -> str:
    return translate(cond.arg, (), state.vars, state, reads)[0]


def _two(cond: Condition, state: RequestState, reads: Reads | None) -> tuple[str, str] | None:
    left, semicolon, right = cond.arg.partition(";")
    if not semicolon:
        return None
    a = translate(left, (), state.vars, state, reads)[0]
    b = translate(right, (), state.vars, state, reads)[0]
    return a, b


def _comparison(test: Callable[[str, str], bool]) -> ConditionFn:
    def condition(cond: Condition, state: RequestState, reads: Reads | None) -> bool:
        operands = _two(cond, state, reads)
        return operands is not None and test(*operands)

    return condition


def _numeric(test: Callable[[int, int], bool]) -> ConditionFn:
    return _comparison(lambda a, b: test(c_atoi(a), c_atoi(b)))


def _path(test: Callable[[str], bool]) -> ConditionFn:
    def condition(cond: Condition, state: RequestState, reads: Reads | None) -> bool:
        path = _one(cond, state, reads)
        if not path:
            return False
        try:
            return test(path)
        except (OSError, ValueError):  # a NUL byte, a name too long
            return False

    return condition


def _empty(cond: Condition, state: RequestState, reads: Reads | None) -> bool:
    return _one(cond, state, reads) == ""


def _ip_in(
    version: int, addr_max: int, net_limit: int, bits_max: int
) -> ConditionFn:
    address_class: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = (
        ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    )

    def condition(cond: Condition, state: RequestState, reads: Reads | None) -> bool:
        operands = _two(cond, state, reads)
        if operands is None:
            return False
        addr, net = operands
        if len(addr) > addr_max or len(net) >= net_limit:
            raise ConditionError(
                f"ipv{version}in: operand too long ({addr!r};{net!r}), as uWSGI: BREAK"
            )
        network, slash, bits_text = net.partition("/")
        bits = c_atoi(bits_text) if slash else bits_max
        if not 0 <= bits <= bits_max:
            return False
        try:
            a = int(address_class(addr))
            n = int(address_class(network))
        except ValueError:
            return False
        mask = ((1 << bits_max) - 1) ^ ((1 << (bits_max - bits)) - 1)
        return (a & mask) == (n & mask)

    return condition


@functools.lru_cache(maxsize=REGEX_CACHE_SIZE)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def regexp_match(
    cond: Condition, state: RequestState, reads: Reads | None
) -> re.Match[str] | None:
    """Evaluate ``regexp:A;REGEX``: the match of REGEX searched in A, or None."""
    left, semicolon, right = cond.arg.partition(";")
    if not semicolon:
        return None
    subject = translate(left, (), state.vars, state, reads)[0]
    pattern = cond.regex
    if pattern is None:
        try:
            pattern = _compile(translate_vars(right, state.vars, state, reads))
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise ConditionError(f"regexp: invalid pattern: {exc}") from None
    return pattern.search(subject)


def _regexp(cond: Condition, state: RequestState, reads: Reads | None) -> bool:
    return regexp_match(cond, state, reads) is not None


#: Condition name (canonical, as Condition.name) -> function.
CONDITIONS: dict[str, ConditionFn] = {
    "equal": _comparison(lambda a, b: a == b),
    "startswith": _comparison(lambda a, b: a.startswith(b)),
    "endswith": _comparison(lambda a, b: a.endswith(b)),
    # A plain substring test (docs/architecture.md, difference 16). uWSGI's scan does not
    # backtrack, so it says "aab" does not contain "ab", and an empty needle never matches.
    "contains": _comparison(lambda a, b: b in a),
    "regexp": _regexp,
    "ishigher": _numeric(lambda a, b: a > b),
    "ishigherequal": _numeric(lambda a, b: a >= b),
    "islower": _numeric(lambda a, b: a < b),
    "islowerequal": _numeric(lambda a, b: a <= b),
    "empty": _empty,
    "exists": _path(os.path.exists),
    "isfile": _path(os.path.isfile),
    "isdir": _path(os.path.isdir),
    "islink": _path(os.path.islink),
    "isexec": _path(lambda p: os.path.exists(p) and os.access(p, os.X_OK)),
    "ipv4in": _ip_in(4, IPV4_ADDR_MAX, IPV4_NET_LIMIT, 32),
    "ipv6in": _ip_in(6, IPV6_ADDR_MAX, IPV6_NET_LIMIT, 128),
}


def evaluate(
    cond: Condition, state: RequestState, reads: Reads | None = None
) -> tuple[bool, Captures]:
    """Evaluate ``cond``: (true?, captures for the action's ``$N``).

    Only ``regexp:`` has captures (``$0`` the whole match, ``$N`` its groups). Raises
    ConditionError when the condition cannot be evaluated.
    """
    if cond.name == "regexp":
        match = regexp_match(cond, state, reads)
        if match is None:
            return False, ()
        return True, (match.group(0), *match.groups())
    return CONDITIONS[cond.name](cond, state, reads), ()
