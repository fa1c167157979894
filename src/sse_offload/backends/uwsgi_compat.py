"""The ``uwsgi`` module an in-process app imports, as apps written for the uWSGI plugin do.

Only what apps written for uwsgi-sse-offload use: ``add_var`` (a request var the final
chain sees, for the calling request only), ``opt`` (the ini options; libraries detect uWSGI
through ``opt.get('enable-threads')``), ``worker_id()``, ``numproc``, ``version``.
It is put in ``sys.modules['uwsgi']`` when the gateway hosts an app, never installed on
disk, so a real uWSGI is never shadowed.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

from sse_offload import __version__
from sse_offload.routing.state import DEFAULT_WORKER_ID, RequestState

MODULE_NAME = "uwsgi"

_current = threading.local()


def bind(state: RequestState | None) -> None:
    """Make ``state`` the request the calling (app) thread serves; None when done."""
    _current.state = state


def current() -> RequestState | None:
    """The request the calling thread serves, if any."""
    state: RequestState | None = getattr(_current, "state", None)
    return state


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def add_var(key: str | bytes, value: str | bytes) -> bool:
    """Add a request var for the current request (the latest value wins); returns True.

    Raises ValueError outside a request, as uWSGI does when it cannot add the var.
    """
    state = current()
    if state is None:
        raise ValueError("unable to add request var: uwsgi.add_var called outside a request")
    state.vars[_text(key)] = _text(value)
    return True


def options_dict(entries: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``uwsgi.opt``: ini key -> bytes value, a list of them for a repeated key (as uWSGI).

    ``enable-threads`` is always True: the app runs in a thread pool.
    """
    opt: dict[str, Any] = {}
    for key, value in entries:
        raw = value.encode("utf-8", "surrogateescape")
        if key in opt:
            old = opt[key]
            opt[key] = [*old, raw] if isinstance(old, list) else [old, raw]
        else:
            opt[key] = raw
    opt["enable-threads"] = True
    return opt


#: This process's worker number (from 1) and the number of workers: a ``--processes``
#: worker sets them (worker.py) before it imports the app.
_worker = [DEFAULT_WORKER_ID, 1]


def set_worker(worker_id: int, numproc: int) -> None:
    _worker[:] = [worker_id, numproc]


def make_module(entries: Iterable[tuple[str, str]], worker_id: int | None = None) -> Any:
    """A fresh ``uwsgi`` module object for an app configured by ``entries``."""
    module: Any = types.ModuleType(MODULE_NAME, __doc__)
    module.add_var = add_var
    module.opt = options_dict(entries)
    wid = _worker[0] if worker_id is None else worker_id
    module.worker_id = lambda: wid
    module.numproc = _worker[1]
    module.version = f"sse-offload {__version__}".encode()
    module.SSE_OFFLOAD_GATEWAY = True
    return module


def install(entries: Iterable[tuple[str, str]], worker_id: int | None = None) -> bool:
    """Put the module in ``sys.modules``; False (nothing done) when a real uWSGI is there."""
    existing = sys.modules.get(MODULE_NAME)
    if existing is not None and not getattr(existing, "SSE_OFFLOAD_GATEWAY", False):
        return False
    sys.modules[MODULE_NAME] = make_module(entries, worker_id)
    return True
