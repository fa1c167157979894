"""What the master resolved, as a worker's arguments: the app, the upstream, the limits and
the stream access (``--subscribe-key``, ``--cors-origins``).

The master of ``--processes N`` writes them (:func:`spec_argv`) and every worker reads them
back (:func:`read_spec`), so every worker, a restarted one too, runs what the master was
started with, whatever the rules file says by then. Here rather than in worker.py so the
master's pool does not import the worker's program (and, through it, the whole gateway).

The subscribe key goes in the worker's environment, not its arguments: any user of the
machine can read a process's command line (``ps``), while its environment is readable by
its owner only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from ..backends.upstream import UpstreamSpec
from ..backends.wsgi import AppSpec
from ..options import Limits, StreamAccess

#: The environment variable a worker reads ``--subscribe-key``'s text from (and removes).
SUBSCRIBE_KEY_ENV: Final = "SSE_OFFLOAD_SUBSCRIBE_KEY"

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


def access_argv(access: StreamAccess) -> list[str]:
    """``--cors-origins`` for a worker, when the master has it (the key: :func:`access_env`)."""
    return ["--cors-origins", access.cors_text] if access.cors_text else []


def access_env(access: StreamAccess) -> dict[str, str]:
    """The worker's environment entries for ``access``: the subscribe key's text."""
    return {SUBSCRIBE_KEY_ENV: access.key_text} if access.key_text else {}


def read_access(cors_text: str | None, environ: Mapping[str, str]) -> StreamAccess:
    """The stream access :func:`access_argv` and :func:`access_env` passed; the key's text
    is left in ``environ`` (the caller removes it). ConfigurationError for a bad one."""
    return StreamAccess.parse(environ.get(SUBSCRIBE_KEY_ENV), cors_text)
