"""One worker of ``--processes N``: a gateway on listening sockets inherited from the master.

Run by the master as ``python -m sse_offload.processes.worker --rules FILE --redis ADDR
--fd 3:INET ...``; not meant to be started by hand. It logs to stdout, which the master reads
and relays.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from ..backends.upstream import UpstreamSpec
from ..backends.wsgi import AppSpec
from ..config import RulesError, load_rules
from .lifeline import MasterWatch
from .worker_args import SUBSCRIBE_KEY_ENV, read_access, read_spec

log = Logger()

_FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}

#: The admin socket is the master's to read: nobody else's business (it is in a private
#: directory anyway).
ADMIN_SOCKET_MODE = 0o600


def _fd(value: str) -> tuple[int, socket.AddressFamily]:
    number, _, family = value.partition(":")
    return int(number), _FAMILIES[family]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker until SIGTERM or its master's end; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sse_offload.processes.worker")
    parser.add_argument("--rules", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--keepalive", type=float, required=True)
    parser.add_argument("--implicit-default", action="store_true")
    parser.add_argument("--fd", type=_fd, action="append", default=[])
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limits", default=None)
    parser.add_argument("--counts", type=int, default=None)  # fd of the shared counts
    parser.add_argument("--admin-socket", default=None)
    parser.add_argument("--app", default=None)
    parser.add_argument("--upstream", default=None)
    parser.add_argument("--cors-origins", default=None)
    # The master's pid: the worker ends when it is gone (lifeline.py). Absent: never ends so.
    parser.add_argument("--master-pid", type=int, default=None)
    args = parser.parse_args(argv)

    # The master relays these lines into its own log, with its own timestamps.
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stdout, timeFormat=None)], redirectStandardIO=False
    )
    try:
        config = load_rules(args.rules)
    except RulesError as e:
        sys.stderr.write(f"{e}\n")
        return 1

    from twisted.internet import reactor
    from twisted.internet.interfaces import IReactorSocket, IReactorUNIX
    from twisted.internet.protocol import ServerFactory

    ports: list[Any] = []  # the listening ports, for the master watch to release
    if args.master_pid is not None and not MasterWatch(args.master_pid, reactor, ports).arm():
        sys.stderr.write(f"the master (pid {args.master_pid}) is gone: not starting\n")
        return 1

    from ..backends.wsgi import AppError
    from ..options import Limits
    from ..redis_address import parse_address
    from ..service import ConfigurationError, build_backend, build_gateway

    try:
        limits = read_spec(Limits, args.limits) or Limits()
        access = read_access(args.cors_origins, os.environ)
        os.environ.pop(SUBSCRIBE_KEY_ENV, None)  # not the app's business
        from ..backends import uwsgi_compat

        uwsgi_compat.set_worker(args.index + 1, args.workers)  # uwsgi.worker_id(), numproc
        backend = build_backend(
            read_spec(AppSpec, args.app), read_spec(UpstreamSpec, args.upstream), reactor
        )
        parts = build_gateway(
            config, parse_address(args.redis), args.keepalive, reactor, args.implicit_default,
            backend, limits, access,
        )
    except (ConfigurationError, AppError) as e:
        sys.stderr.write(f"{e}\n")
        return 1
    parts.gateway.worker_id = args.index + 1  # ${uwsgi[wid]}
    if args.counts is not None:
        from .counts import SharedCounts

        parts.gateway.counts = SharedCounts(args.counts, args.index)
        parts.gateway.counts.set(0)  # a restarted worker's slot starts again from nothing
        os.close(args.counts)  # the mapping keeps the block
    if backend is not None:
        backend.startService()  # before the listeners: its pool runs before a request comes
    if args.admin_socket:
        from ..admin import admin_site

        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.admin_socket)  # left by the worker this one replaces
        from ..status_site import add_status

        admin_web = admin_site(parts.hub, access_log=False)
        add_status(admin_web, parts.gateway, reactor)
        admin: ServerFactory[Any] = admin_web
        IReactorUNIX(reactor).listenUNIX(args.admin_socket, admin, mode=ADMIN_SOCKET_MODE)
    # Twisted's reactor interfaces type their factory argument as a factory of its default
    # protocol type, which Site (a factory of HTTP channels) is not under an invariant
    # generic: the same object, typed as any factory.
    site: ServerFactory[Any] = parts.site
    for fd, family in args.fd:
        ports.append(IReactorSocket(reactor).adoptStreamPort(fd, family, site))
        os.close(fd)  # adoptStreamPort duplicated it
    parts.streams.startService()

    from ..service import install_reload_handler, reload_rules

    install_reload_handler(lambda: reload_rules(args.rules, parts.gateway))
    reactor.addSystemEventTrigger("before", "shutdown", parts.streams.stopService)
    if backend is not None:  # after the hub's, as the single-process service tree does
        reactor.addSystemEventTrigger("before", "shutdown", backend.stopService)
    log.info("worker {index} (pid {pid}) serving", index=args.index, pid=os.getpid())
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
