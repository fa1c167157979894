"""What one request carries through the chains: its vars and what the actions asked for.

uWSGI keeps this in its ``wsgi_request``: a var buffer the actions append to (the latest
value of a name wins on lookup, which a dict gives), queued header lines, log flags,
``REMOTE_USER``. The engine mutates a :class:`RequestState`; the front resource (or the
explainer) reads it back.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from sse_offload.config.model import Rule

#: ``${uwsgi[wid]}``: the gateway runs one worker per process, numbered from 1 as uWSGI does.
DEFAULT_WORKER_ID = 1

LogLevel = Literal["info", "warn", "error"]


class Verifier(Protocol):
    """Checks a user's password against an htpasswd file (see :mod:`sse_offload.auth`)."""

    def check(self, path: str, user: str, password: str, *, slow: bool) -> bool | None:
        """True/False, or None when the answer needs a slow hash and ``slow`` is False."""
        ...

    def take_problems(self) -> list[str]:
        """Problems met since the last call (an unreadable file), each to be logged once."""
        ...


@dataclass
class TraceEntry:
    """One rule the engine looked at, for ``sse-offload explain``.

    ``fired`` is None for a rule skipped without evaluation (a label, or a rule a ``goto``
    jumped over). ``reads`` are the vars the rule read, with their values. ``detail`` says
    why it fired or not, ``result`` what its action did.
    """

    chain: str
    index: int
    rule: Rule
    fired: bool | None
    reads: list[tuple[str, str]] = field(default_factory=list)
    detail: str = ""
    result: str = ""


@dataclass
class RequestState:
    """Per-request mutable state of the routing engine.

    - ``vars``: the request vars (CGI names, ``HTTP_*``), plus those added by ``addvar``,
      the app, ``collect-header``/``pull-header``; ``setmethod``/``seturi``/
      ``setpathinfo``/``rewrite`` change them; ``basicauth`` sets ``REMOTE_USER``.
    - ``add_headers``: ``(name, value)`` from ``addheader:``; ``del_headers``: lower-case
      names from ``delheader:``. Both apply to every response of the request.
    - ``logs``: ``(level, message)`` lines from ``log:`` and from actions that failed;
      ``logvars`` from ``logvar:``; ``donotlog`` from ``donotlog:``.
    - ``status``: the response status once known (``-status`` rules, ``${uwsgi[status]}``).
    - ``streaming``: the request is already an SSE stream (a final-chain offload is ignored).
    - ``trace``: when a list, every rule the engine considers is appended (explain).
    - ``verifier``: checks htpasswd passwords; ``slow_auth`` False makes a password that
      needs a slow hash suspend the chain (:class:`~sse_offload.routing.engine.PendingAuth`)
      instead of hashing in the caller's thread; ``auth_results`` holds answers computed
      since.
    """

    vars: dict[str, str]
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    del_headers: set[str] = field(default_factory=set)
    logs: list[tuple[LogLevel, str]] = field(default_factory=list)
    logvars: dict[str, str] = field(default_factory=dict)
    donotlog: bool = False
    status: int | None = None
    streaming: bool = False
    clock: Callable[[], float] = time.time
    start: float = -1.0
    worker_id: int = DEFAULT_WORKER_ID
    trace: list[TraceEntry] | None = None
    verifier: Verifier | None = None
    slow_auth: bool = True
    auth_results: dict[tuple[str, str, str], bool] = field(default_factory=dict)
    _uuid: str = ""

    def __post_init__(self) -> None:
        if self.start < 0:
            self.start = self.clock()

    @property
    def uuid(self) -> str:
        """``${uwsgi[uuid]}``: a random UUID, the same for the whole request."""
        if not self._uuid:
            self._uuid = str(uuid.uuid4())
        return self._uuid

    @property
    def pid(self) -> int:
        """``${uwsgi[pid]}``."""
        return os.getpid()

    def log(self, level: LogLevel, message: str) -> None:
        """Queue a log line for the caller to emit."""
        self.logs.append((level, message))

    def take_logs(self) -> list[tuple[LogLevel, str]]:
        """Return the queued log lines and forget them."""
        logs, self.logs = self.logs, []
        return logs
