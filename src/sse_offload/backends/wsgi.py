"""The in-process WSGI host: the app runs in a thread pool of its own.

twisted.web's ``WSGIResource`` applies the app's head and finishes the request itself, with
no hook to hand the connection elsewhere (it calls ``request.finish()`` when the app's
iterable ends). The host subclasses the
private ``_WSGIResponse`` and intercepts ``_sendResponseHeaders``, which runs in the
reactor thread just before the first body write or at the end: there the front resource
runs the response side and either passes the response through or turns the request into a
stream, after which the app's writes go to a sink and its iteration stops. Twisted is
pinned below 27 in pyproject.toml for this; tests/test_wsgi.py covers it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import site
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from twisted.application import service
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web import wsgi
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from sse_offload.backends import uwsgi_compat
from sse_offload.routing import RequestState

if TYPE_CHECKING:
    from sse_offload.backends import AppHead

log = Logger()

#: Threads of the app's pool when ``threads`` is not given: Twisted's own WSGI default caps
#: its pool at 10 (twisted.python.threadpool.ThreadPool.max); an app blocked on I/O holds one.
DEFAULT_THREADS: Final = 10

WSGIApp = Callable[..., Iterable[bytes]]


class AppError(Exception):
    """The app could not be found or imported; the message says which and why."""


@dataclass(frozen=True)
class AppSpec:
    """Where the app is and how to prepare its process (uWSGI's Python plugin keys)."""

    wsgi_file: str | None = None
    module: str | None = None  # ``pkg.mod`` or ``pkg.mod:callable``
    callable_name: str = "application"
    chdir: str | None = None
    pythonpath: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # ``NAME=VALUE``
    home: str | None = None  # a virtualenv
    threads: int = DEFAULT_THREADS
    options: tuple[tuple[str, str], ...] = field(default=())  # for uwsgi.opt

    def describe(self) -> str:
        """The app as the configuration names it."""
        return self.wsgi_file or self.module or "?"


def _virtualenv_site(home: str) -> list[str]:
    lib = Path(home) / "lib"
    return sorted(str(p) for p in lib.glob("python3*/site-packages"))


def prepare_process(spec: AppSpec) -> None:
    """Apply ``chdir``, ``env``, ``home``/``virtualenv`` and ``pythonpath`` as uWSGI does."""
    if spec.chdir:
        try:
            os.chdir(spec.chdir)
        except OSError as e:
            raise AppError(f"chdir {spec.chdir}: {e.strerror}") from None
    for item in spec.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise AppError(f"env: expected NAME=VALUE, got {item!r}")
        os.environ[name] = value
    if spec.home:
        found = _virtualenv_site(spec.home)
        if not found:
            raise AppError(f"home/virtualenv {spec.home}: no lib/python3*/site-packages in it")
        for path in found:
            site.addsitedir(path)
    # uWSGI puts "." on the path; then each pythonpath entry in front.
    for path in [os.getcwd(), *reversed(spec.pythonpath)]:
        if path not in sys.path:
            sys.path.insert(0, path)


def load_app(spec: AppSpec) -> WSGIApp:
    """Prepare the process, install the ``uwsgi`` module and import the app callable."""
    prepare_process(spec)
    if not uwsgi_compat.install(spec.options):
        log.warn("a real uwsgi module is loaded: uwsgi.add_var will not reach the gateway")
    name = spec.callable_name
    if spec.wsgi_file:
        path = Path(spec.wsgi_file).resolve()
        if not path.is_file():
            raise AppError(f"wsgi-file {spec.wsgi_file}: no such file")
        module_name = "uwsgi_file_" + re.sub(r"\W", "_", str(path.with_suffix("")))
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:
            raise AppError(f"wsgi-file {spec.wsgi_file}: {type(e).__name__}: {e}") from e
    elif spec.module:
        module_path, _, attr = spec.module.partition(":")
        name = attr or name
        try:
            module = importlib.import_module(module_path)
        except Exception as e:
            raise AppError(f"module {module_path}: {type(e).__name__}: {e}") from e
    else:
        raise AppError("no app: give wsgi-file or module")
    app = getattr(module, name, None)
    if not callable(app):
        raise AppError(f"{spec.describe()}: no callable named {name!r}")
    return app


class _Sink:
    """Where an offloaded app's writes go: nowhere."""

    code = 200

    def __init__(self) -> None:
        self.responseHeaders = Headers()

    def write(self, data: bytes) -> None:
        """Discard app body bytes."""

    def finish(self) -> None:
        """The app is done; the real request lives on as a stream."""

    def loseConnection(self) -> None:
        """The app failed after the head: the stream is not the app's to close."""

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        """Ignored."""


def _wsgi_string(text: str) -> str:
    # PEP 3333: environ values are bytes decoded as latin-1.
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


#: Request vars given to the app as the rules left them (setpathinfo, rewrite, basicauth).
_OVERLAID: Final = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "REMOTE_USER")


class GatewayWSGIResponse(wsgi._WSGIResponse):
    """A ``_WSGIResponse`` whose head goes through the gateway's response side."""

    def __init__(
        self,
        reactor: Any,
        threadpool: ThreadPool,
        application: WSGIApp,
        request: Request,
        state: RequestState,
        front: AppHead,
    ) -> None:
        super().__init__(reactor, threadpool, application, request)
        self.state = state
        self.front = front
        for name in _OVERLAID:
            value = state.vars.get(name)
            if value is not None:
                self.environ[name] = _wsgi_string(value)
        # uWSGI gives every request var to the app, addvar: ones included.
        for name, value in state.vars.items():
            self.environ.setdefault(name, _wsgi_string(value))

    def run(self) -> None:
        """Run the app with ``uwsgi.add_var`` bound to this request."""
        uwsgi_compat.bind(self.state)
        try:
            super().run()
        finally:
            uwsgi_compat.bind(None)

    def write(self, data: bytes | str) -> None:
        """The WSGI write callable; str bodies (the seed README's) are sent as UTF-8."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        super().write(data)

    def _sendResponseHeaders(self) -> None:
        # Reactor thread: the app's head is final. status is None when the app returned
        # without calling start_response (the seed README's clock.py, variant A).
        headers: list[tuple[str, str]] | None = None
        code, reason = 0, None
        status: str | None = getattr(self, "status", None)  # unset until start_response
        if status is not None:
            code_text, _, phrase = status.partition(" ")
            code, reason = int(code_text), phrase.encode("latin-1")
            headers = [
                (name, value.encode("latin-1").decode("utf-8", "surrogateescape"))
                for name, value in self.headers
                if name.lower() not in ("server", "date")
            ]
        try:
            verdict = self.front.app_head(self.request, self.state, code, reason, headers)
        except Exception:
            log.failure("the response side of {uri}", uri=self.request.uri)
            request = self.request
            if not request.finished and not request._disconnected:
                request.setResponseCode(500)
                request.responseHeaders = Headers({b"content-length": [b"0"]})
                request.write(b"")
                request.finish()
            verdict = "done"
        if verdict != "pass":
            self.request = _Sink()
            self._requestFinished = True  # stops the app's iteration


class WSGIBackend(service.Service):
    """Hosts ``app`` in a dedicated thread pool, started and stopped with the service.

    Not the reactor's pool: that one also resolves host names (Redis, the upstream).
    """

    def __init__(self, app: WSGIApp, threads: int, reactor: Any, name: str = "app") -> None:
        self.app = app
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=max(1, threads), name="sse-offload-wsgi")
        self.setName(name)

    def startService(self) -> None:
        service.Service.startService(self)
        self.pool.start()

    def stopService(self) -> None:
        service.Service.stopService(self)
        self.pool.stop()

    def serve(self, request: Request, state: RequestState, front: AppHead) -> None:
        """Run the app for ``request`` in the pool."""
        GatewayWSGIResponse(self.reactor, self.pool, self.app, request, state, front).start()
