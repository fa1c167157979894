"""What a regex's groups can capture, from Python's own regex parser: can a group be
empty, can it contain ``=``? The rules checker (lint.py) asks, to warn about channels that
may expand to nothing and about an ``=`` from a client that would select a kvlist.

It reads ``re._parser`` (a private module); when it is missing or changes shape, every
answer is the cautious one (the checker then warns rather than stays silent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_EQUAL = ord("=")


def _parse(pattern: re.Pattern[str]) -> object | None:
    try:
        from re import _parser  # type: ignore[attr-defined]

        parsed: object = _parser.parse(pattern.pattern, pattern.flags)
        return parsed
    except Exception:  # private API: any change makes the checks conservative
        return None


def _walk(items: object, optional: bool) -> Iterator[tuple[int, object, bool]]:
    """Yield (group number, subpattern, inside an optional part) for every group."""
    from re import _constants as c  # type: ignore[attr-defined]

    for op, av in items:  # type: ignore[attr-defined]
        if op is c.SUBPATTERN:
            group, _, _, sub = av
            if group is not None:
                yield group, sub, optional
            yield from _walk(sub, optional)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            low, _, sub = av
            yield from _walk(sub, optional or low == 0)
        elif op is c.BRANCH:
            for sub in av[1]:
                yield from _walk(sub, True)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            yield from _walk(av[1], True)
        elif op is c.GROUPREF_EXISTS:
            for sub in av[1:]:
                if sub is not None:
                    yield from _walk(sub, True)
        elif op is getattr(c, "ATOMIC_GROUP", None):
            yield from _walk(av, optional)


def group_may_be_empty(pattern: re.Pattern[str], group: int) -> bool:
    """Can ``$group`` of ``pattern`` expand to nothing (group empty or not taking part)?"""
    if group > pattern.groups:
        return True
    parsed = _parse(pattern)
    if parsed is None:
        return True
    try:
        if group == 0:
            return bool(parsed.getwidth()[0] == 0)  # type: ignore[attr-defined]
        for number, sub, optional in _walk(parsed, False):
            if number == group:
                return optional or sub.getwidth()[0] == 0  # type: ignore[attr-defined]
    except Exception:
        return True
    return True


def _may_match_equal(items: object) -> bool:
    from re import _constants as c  # type: ignore[attr-defined]

    safe_categories = {c.CATEGORY_DIGIT, c.CATEGORY_WORD, c.CATEGORY_SPACE}
    for op, av in items:  # type: ignore[attr-defined]
        if op is c.LITERAL:
            if av == _EQUAL:
                return True
        elif op is c.IN:
            for set_op, set_av in av:
                if set_op is c.NEGATE:
                    return True
                if set_op is c.LITERAL and set_av == _EQUAL:
                    return True
                if set_op is c.RANGE and set_av[0] <= _EQUAL <= set_av[1]:
                    return True
                if set_op is c.CATEGORY and set_av not in safe_categories:
                    return True
        elif op is c.SUBPATTERN:
            if _may_match_equal(av[3]):
                return True
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            if _may_match_equal(av[2]):
                return True
        elif op is c.BRANCH:
            if any(_may_match_equal(sub) for sub in av[1]):
                return True
        elif op is getattr(c, "ATOMIC_GROUP", None):
            if _may_match_equal(av):
                return True
        elif op not in (c.AT, c.ASSERT, c.ASSERT_NOT):
            return True  # ANY, NOT_LITERAL, back references, ...: assume it can
    return False


def group_may_contain_equal(pattern: re.Pattern[str], group: int) -> bool:
    """Can ``$group`` of ``pattern`` contain a ``=`` (and so select key=value mode)?"""
    parsed = _parse(pattern)
    if parsed is None or group > pattern.groups:
        return parsed is None
    try:
        if group == 0:
            return _may_match_equal(parsed)
        for number, sub, _ in _walk(parsed, False):
            if number == group:
                return _may_match_equal(sub)
    except Exception:
        return True
    return True


# --- the checks --------------------------------------------------------------------------
