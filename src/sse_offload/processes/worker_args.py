"""What the master resolved, as a worker's arguments: the app, the upstream and the limits.

The master of ``--processes N`` writes them (:func:`spec_argv`) and every worker reads them
back (:func:`read_spec`), so every worker, a restarted one too, runs what the master was
started with, whatever the rules file says by then. Here rather than in worker.py so the
master's pool does not import the worker's program (and, through it, the whole gateway).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from ..backends.upstream import UpstreamSpec
from ..backends.wsgi import AppSpec
from ..options import Limits

_Spec = TypeVar("_Spec")


def spec_argv(
    app: AppSpec | None, upstream: UpstreamSpec | None, limits: Limits | None = None
) -> list[str]:
    """``--app``, ``--upstream`` and ``--limits`` arguments (JSON) for what is given.

    ``--max-clients`` is the whole gateway's: the workers share their counts (counts.py).
    """
    out = []
    for flag, spec in (("--app", app), ("--upstream", upstream), ("--limits", limits)):
        if spec is not None:
            out += [flag, json.dumps(dataclasses.asdict(spec))]
    return out


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def read_spec(kind: type[_Spec], text: str | None) -> _Spec | None:
    """The ``kind`` dataclass :func:`spec_argv` wrote as ``text`` (JSON lists back to
    tuples, as the frozen dataclasses hold them); None for None."""
    if text is None:
        return None
    return kind(**{k: _tuples(v) for k, v in json.loads(text).items()})
