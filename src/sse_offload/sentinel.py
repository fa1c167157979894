"""Redis Sentinel: connecting to the master the sentinels name, and following failovers.

A ``redis-sentinel://`` address (redis_address.py) names sentinels and a master name, not
a server. ``redis_protocol.client_endpoint`` gives, for such an address, a
:class:`SentinelEndpoint`, so every connection the gateway makes to it (the hub's
subscriber, the Streams reader and control links, the publish endpoint's and the mirror's
links) finds the master the same way, and each owner keeps its own retry loop, backoff and
outage handling:

1. **Discovery.** The sentinels are asked in turn ``SENTINEL get-master-addr-by-name``; one
   that does not answer within SENTINEL_TIMEOUT, answers nil (it does not know the name) or
   answers nonsense is skipped. The first that answers, or the one that told of a switch,
   is asked first next time; one whose master turns out unusable is asked last. None
   answering: the connect fails, saying why for each sentinel, and the owner backs off as
   for any Redis that is down (sentinel_watch.Sentinels asks them).
2. **Verification.** On the connection to the master named, before the owner's protocol
   sees it, ``AUTH`` (the master's credentials) and ``ROLE``: a server that is not a master
   (a demoted master, or a sentinel whose view is behind) is refused. Then the connection
   is handed to the owner's protocol, which logs in and subscribes as it would anywhere.
3. **Failovers.** One :class:`SwitchWatcher` per address per process is subscribed to
   ``+switch-master`` on one sentinel (the next one when it loses it, with the hub's
   backoff). On a switch of our master every connection that is not to the new master is
   dropped, so its owner reconnects, finding the new master, at once rather than when a
   PING or TCP times out; a demoted master stays a master for seconds after the switch
   (until the sentinels reconfigure it), so without this the hub would stay subscribed to
   it. A switch the watcher missed (it was reconnecting) is caught when it subscribes
   again: it asks every sentinel, and drops what is not connected to the master of the
   newest configuration they report. A master that dies drops its connections itself; a
   connect that then finds nobody at the old address waits up to SWITCH_WAIT for the
   sentinels' switch before it fails.

What a failover loses is the owners' business, as for any outage: pub/sub messages
published meanwhile are gone (the stream layer sends its gap notice), Streams-mode readers
go on from their last id on the new master.
"""

from __future__ import annotations

from typing import Any, Final, cast

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorCore,
    IReactorTime,
)
from twisted.internet.interfaces import IStreamClientEndpoint as IEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .redis_address import RedisAddress
from .resp import RedisReplyError, RespClient
from .sentinel_watch import (
    PlainEndpoint,
    SentinelError,
    Sentinels,
    SwitchWatcher,
    Target,
    auth_command,
    show,
    why,
)
from .timers import cancel

log = Logger(namespace="sse_offload.sentinel")

#: AUTH and ROLE on the master named must be answered within this (the hub's PING timeout).
ROLE_TIMEOUT: Final = 5.0
#: A connect that finds the master named gone waits this long for the sentinels to switch.
#: An elected failover takes down-after-milliseconds (often 5 to 30 s) plus an election, so
#: this catches the switches of a fast configuration; a slower one is caught by the retry.
SWITCH_WAIT: Final = 5.0
#: The watcher outlives the address's last connection by this much: a switch drops every
#: connection, and their owners come back after the hub's first backoff (0.5 s).
WATCH_LINGER: Final = 2.0


class NotMaster(SentinelError):
    """The server the sentinels named is not (or no longer) a master."""


#: What makes the master named unusable, so that another answer or a switch may help.
_UNUSABLE: Final = (
    error.ConnectError, error.ConnectionLost, error.ConnectionDone, defer.TimeoutError, NotMaster
)


class SentinelGroup(Sentinels):
    """The sentinels of one address in this process (:class:`Sentinels`), which master they
    name, the connections made to it (:class:`MasterConnection`) and the
    :class:`SwitchWatcher`.

    The watcher runs while a connection or a connect exists, and WATCH_LINGER after.
    """

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        plain: PlainEndpoint,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(reactor, address, plain, clock)
        self.master: Target | None = None  # as the sentinels last named it
        self.switches = 0  # +switch-master of our master seen, or missed ones found
        self.connections: dict[MasterConnection, Target] = {}
        self.watcher = SwitchWatcher(self)
        self._users = 0  # connections and connects
        self._linger: IDelayedCall | None = None
        self._switch_waiters: list[defer.Deferred[bool]] = []
        if IReactorCore.providedBy(reactor):
            # The reactor closes every connection when it stops: the watcher's loss then is
            # no news, so it goes first, quietly.
            reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def describe(self) -> dict[str, Any]:
        """What a status page shows: ``master`` (``host:port`` or None), the sentinels in
        the order they are asked, the one ``watching`` for switches, ``switches`` seen and
        open ``connections``."""
        return {
            "master": show(self.master) if self.master else None,
            "sentinels": [show(s) for s in self.sentinels],
            "watching": show(self.watcher.sentinel) if self.watcher.sentinel else None,
            "switches": self.switches,
            "connections": len(self.connections),
        }

    def stop(self) -> defer.Deferred[None]:
        """Stop the watcher now (it would stop WATCH_LINGER after the last connection)."""
        cancel(self._linger)
        self._linger = None
        return self.watcher.stop()

    def _use(self) -> None:
        self._users += 1
        cancel(self._linger)
        self._linger = None
        self.watcher.start()

    def _release(self) -> None:
        self._users -= 1
        if self._users == 0 and self._linger is None:
            self._linger = self.clock.callLater(WATCH_LINGER, self.stop)

    # --- connecting -------------------------------------------------------------------------
    async def connect(self, factory: IProtocolFactory) -> IProtocol:
        """A connection to the master, verified, with ``factory``'s protocol on it; raises
        SentinelError when none is found, or the one named cannot be used (saying why)."""
        self._use()
        try:
            failed: dict[Target, SentinelError] = {}  # since the last switch
            seen = self.switches
            while True:
                sentinel: Target | None
                target, sentinel = await self.resolve()
                if target in failed:
                    # Asked again, the sentinels name a master that failed us: a failover
                    # may be under way. Wait for their switch, and try the master it names.
                    if not await self._switch_after(seen) or self.master is None:
                        raise failed[target]
                    target, sentinel = self.master, None
                    failed.clear()
                seen = self.switches
                try:
                    return await self._connect_to(target, factory, seen)
                except _UNUSABLE as e:
                    named = f" (named by sentinel {show(sentinel)})" if sentinel else ""
                    failed[target] = SentinelError(f"master {show(target)}{named}: {why(e)}")
                if len(failed) > len(self.sentinels):  # more masters than sentinels: lies
                    raise failed[target]
                # A sentinel that named a master we cannot use is asked last next time: one
                # that lags behind a failover, or lies, must not hold the others up.
                if sentinel in self.sentinels and len(self.sentinels) > 1:
                    self.sentinels.remove(sentinel)
                    self.sentinels.append(sentinel)
        finally:
            self._release()

    async def _connect_to(self, target: Target, factory: IProtocolFactory, seen: int) -> IProtocol:
        checking = _MasterCheckFactory(self, factory, target, seen)
        endpoint = self._plain(self.reactor, RedisAddress("tcp", *target))
        conn = cast(MasterConnection, await endpoint.connect(checking))
        result: IProtocol = await conn.verified.addTimeout(ROLE_TIMEOUT, self.clock)
        return result

    def _switch_after(self, seen: int) -> defer.Deferred[bool]:
        """True once a switch comes after ``seen`` switches (at once if it came already);
        False after SWITCH_WAIT without one."""
        if self.switches != seen:
            return defer.succeed(True)
        d: defer.Deferred[bool] = defer.Deferred(self._switch_waiters.remove)
        self._switch_waiters.append(d)
        d.addTimeout(SWITCH_WAIT, self.clock, onTimeoutCancel=lambda *_: False)
        return d

    def connection_made(self, conn: MasterConnection, target: Target) -> None:
        """A verified connection to ``target`` is in use."""
        if target != self.master:
            log.info("{address}: the master is {master}", address=self, master=show(target))
            self.master = target
        self.connections[conn] = target
        self._use()

    def connection_gone(self, conn: MasterConnection) -> None:
        """``conn`` is closed (its owner's, a switch's or the server's doing)."""
        if self.connections.pop(conn, None) is not None:
            self._release()

    # --- failovers ----------------------------------------------------------------------------
    def switched(self, new: Target, why: str, told_by: Target | None = None) -> None:
        """The master is ``new`` now, as sentinel ``told_by`` says: drop every connection
        to another server (their owners reconnect, finding ``new``), and wake the connects
        that wait for a switch."""
        self.switches += 1
        self.master = new
        if told_by in self.sentinels:
            # Asked first from now on: it knows of the switch, while another may not yet
            # (sentinels pass a new configuration on every 2 s), and would name the old
            # master, which still says it is one.
            self.sentinels.remove(told_by)
            self.sentinels.insert(0, told_by)
        stale = [c for c, target in self.connections.items() if target != new]
        log.warn(
            "{address}: {why}: the master is {master}; dropping {count} connection(s) "
            "to other servers, to be made again to it",
            address=self, why=why, master=show(new), count=len(stale),
        )
        for conn in stale:
            conn.transport.abortConnection()
        waiters, self._switch_waiters = self._switch_waiters, []
        for d in waiters:
            d.callback(True)

    def reconcile(self) -> None:
        """Ask every sentinel which master is current, and treat the answer of the newest
        configuration, when it is not where the connections are, as a switch (one the
        watcher missed while it reconnected). Newest is the highest ``config-epoch``, as
        sentinels decide among themselves: a sentinel that lags behind a failover by a hello
        period must not send every connection back to the demoted master."""

        def check(newest: tuple[Target, Target] | None) -> None:
            if newest is None:
                return
            target, told_by = newest
            if any(t != target for t in self.connections.values()):
                self.switched(target, "the sentinels' newest configuration names it", told_by)

        def failed(failure: Failure) -> None:
            log.failure("{address}: reconciling", failure, address=self)

        defer.Deferred.fromCoroutine(self.newest_master()).addCallbacks(check, failed)

class MasterConnection(protocol.Protocol):
    """A connection to the master named: AUTH and ROLE first, then the owner's protocol
    (``verified`` fires with it), to which every later byte and the loss are passed on.

    Its transport is the owner's protocol's too, so the owner closes it as any other.
    """

    transport: Any  # a TCP transport once connected

    def __init__(
        self,
        group: SentinelGroup,
        factory: IProtocolFactory,
        addr: Any,
        target: Target,
        seen: int,
    ) -> None:
        self.group, self.factory, self.addr = group, factory, addr
        self.target, self.seen = target, seen
        self.inner: IProtocol | None = None
        self.client = RespClient()
        self.verified: defer.Deferred[IProtocol] = defer.Deferred(
            lambda _: self.transport.abortConnection()
        )

    def connectionMade(self) -> None:
        self.client.makeConnection(self.transport)
        check = defer.Deferred.fromCoroutine(self._check())
        check.addCallbacks(self._passed, self._failed)

    async def _check(self) -> None:
        a = self.group.address
        where = f"master {show(self.target)}"
        if a.password is not None:
            try:
                await self.client.command(*auth_command(a.username, a.password))
            except RedisReplyError as e:
                raise SentinelError(f"{where} refused AUTH: {e}") from None
        try:
            role = await self.client.command(b"ROLE")
        except RedisReplyError as e:
            raise SentinelError(f"{where}: {e}") from None
        if not (isinstance(role, list) and role and role[0] == b"master"):
            said = role[0].decode("ascii", "replace") if isinstance(role, list) and role else role
            raise NotMaster(f"{where} is a {said}, not a master (the sentinels are behind)")
        if self.group.switches != self.seen and self.group.master != self.target:
            raise NotMaster(f"{where}: the sentinels switched to {show(self.group.master)}")

    def _passed(self, _: None) -> None:
        if self.verified.called:  # cancelled meanwhile
            return
        inner = self.factory.buildProtocol(self.addr)
        if inner is None:
            self.transport.abortConnection()
            self.verified.errback(SentinelError("the connection's owner refused it"))
            return
        self.inner = inner
        self.group.connection_made(self, self.target)
        inner.makeConnection(self.transport)
        self.verified.callback(inner)

    def _failed(self, failure: Failure) -> None:
        self.transport.abortConnection()
        if not self.verified.called:
            self.verified.errback(failure)

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
        else:
            self.client.dataReceived(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.group.connection_gone(self)
        if self.inner is not None:
            self.inner.connectionLost(reason)
        else:
            self.client.connectionLost(reason)


class _MasterCheckFactory(protocol.Factory):
    noisy = False

    def __init__(
        self, group: SentinelGroup, factory: IProtocolFactory, target: Target, seen: int
    ) -> None:
        self.group, self.factory, self.target, self.seen = group, factory, target, seen

    def buildProtocol(self, addr: Any) -> MasterConnection:
        return MasterConnection(self.group, self.factory, addr, self.target, self.seen)


@implementer(IEndpoint)
class SentinelEndpoint:
    """The endpoint of a Sentinel address: connects to the master the sentinels name
    (module docstring). Its Deferred fails with SentinelError, naming every sentinel and
    what it said, when no usable master is found."""

    def __init__(self, group: SentinelGroup) -> None:
        self.group = group

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """IStreamClientEndpoint.connect: a Deferred of ``protocolFactory``'s protocol on a
        verified connection to the master; cancelling it abandons the attempt."""
        return defer.Deferred.fromCoroutine(self.group.connect(protocolFactory))


_GROUPS: dict[tuple[int, tuple[object, ...]], SentinelGroup] = {}


def sentinel_endpoint(reactor: Any, address: RedisAddress, plain: PlainEndpoint) -> IEndpoint:
    """The endpoint of a Sentinel ``address`` (module docstring); ``plain`` makes the
    endpoint of a plain ``host:port`` (redis_protocol.client_endpoint). Every endpoint of
    one address in a process shares one :class:`SentinelGroup`."""
    key = (id(reactor), address.key)
    group = _GROUPS.get(key)
    if group is None:
        group = _GROUPS[key] = SentinelGroup(reactor, address, plain)
    return SentinelEndpoint(group)


def groups() -> list[SentinelGroup]:
    """The Sentinel addresses this process has connected to (kept for its lifetime: a
    configuration names a few)."""
    return list(_GROUPS.values())


def describe(address: RedisAddress) -> dict[str, Any] | None:
    """:meth:`SentinelGroup.describe` of ``address``, or None if never connected to."""
    for group in _GROUPS.values():
        if group.address.key == address.key:
            return group.describe()
    return None


def sentinel_state(address: RedisAddress) -> dict[str, Any]:
    """What a connection's ``describe()`` adds for a Sentinel address: ``{"sentinel":
    {"master": ..., ...}}`` once the process has connected to it, else nothing."""
    state = describe(address) if address.kind == "sentinel" else None
    return {} if state is None else {"sentinel": state}
