#!/usr/bin/env python3
"""The benchmark suite: one command, a markdown table of what the gateway does under load.

    python benchmarks/suite.py [--processes 2] [--quick] [--out results.md]

It starts its own redis-server and ``twistd -n sse-offload`` (as a user runs it), drives SSE
clients from C load processes (benchmarks/loadclient.c, compiled on the fly with ``cc``:
epoll, raw sockets, a few µs of CPU per event so the load client is not what is measured)
and a publisher that puts its publish time (ns) in every payload. Scenarios:

- idle: 10,000 clients connect; time to connect all (every client must get a 200 head, and
  then a message published to them all); memory per idle connection (PSS of every gateway
  process plus Redis, kernel socket memory excluded);
- light: 1,000 clients on one channel at 10 msg/s: gateway CPU per delivered event;
- fan-out: 1,000 clients on one channel at rising rates until loss or p99 > 1 s;
- channels: 1,000 channels with one client each, 1,000 msg/s spread over them;
- streams: 1,000 clients of one Redis Stream (``sse:stream=``, XADD publisher) at rising
  rates, beside fan-out's pub/sub figures;
- replay: 10,000 entries replayed to one client that resumes from the first id;
- cluster: 1,000 clients of one sharded channel (``sse:ssubscribe=``, SPUBLISH publisher)
  through a 3-master Redis Cluster (``--redis redis-cluster://...``) at 100 msg/s, beside
  fan-out's single-Redis figures.

Every row reports delivered events/s, loss, latency p50/p99/max (publish -> client read),
gateway CPU, and the load processes' CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def wait_children(pid: int, count: int, what: str, seconds: float = 30.0) -> list[int]:
    """Wait until process ``pid`` has ``count`` children and return them: a master's port
    answers once it listens, before its workers run, and a CPU figure taken earlier would
    miss them."""
    deadline = time.monotonic() + seconds
    while len(found := children(pid)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start {count} workers")
        time.sleep(0.05)
    return found


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def call(port: int, *args: bytes) -> bytes:
    """One command to the Redis on ``port``; its raw reply (enough to look for a word)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(resp(*args))
        return c.recv(1 << 20)


def redis7() -> tuple[str, str]:
    """redis-server and redis-cli of Redis 7 or later (sharded pub/sub), from PATH or the
    system's; SystemExit if there are none."""
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        server, cli = Path(directory) / "redis-server", Path(directory) / "redis-cli"
        if server.exists() and cli.exists():
            out = subprocess.run([str(server), "--version"], capture_output=True, text=True)
            if " v=" in out.stdout and int(out.stdout.split(" v=")[1].split(".")[0]) >= 7:
                return str(server), str(cli)
    raise SystemExit("the cluster scenario needs redis-server 7 or later")


class Cluster:
    """A Redis Cluster of ``masters`` nodes, no replicas, on free ports in ``tmp``."""

    def __init__(self, tmp: Path, masters: int = 3) -> None:
        server, cli = redis7()
        self.ports = [free_port() for _ in range(masters)]
        self.procs = []
        for port in self.ports:
            directory = tmp / f"node{port}"
            directory.mkdir()
            self.procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(directory), "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()),
                 "--client-output-buffer-limit", "pubsub", "256mb", "64mb", "60"],
                stdout=subprocess.DEVNULL,
            ))
        for port in self.ports:
            wait_port(port)
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while not all(b"cluster_state:ok" in call(p, b"CLUSTER", b"INFO") for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    @property
    def address(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def owner(self, channel: bytes) -> int:
        """The port of the master that serves ``channel``'s slot (asked with SPUBLISH:
        a MOVED names the owner)."""
        for port in self.ports:
            reply = call(port, b"SPUBLISH", channel, b"")
            if not reply.startswith(b"-MOVED"):
                return port
        raise RuntimeError(f"no master serves {channel!r}")

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait()


def build_loadclient(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("the benchmarks need a C compiler (apt-get install gcc)")
    out = tmp / "loadclient"
    subprocess.run([cc, "-O2", "-o", str(out), str(HERE / "loadclient.c")], check=True)
    return out


class Load:
    """C load processes holding ``n`` streams."""

    def __init__(self, binary: Path, port: int, n: int, path: str, channels: int, workers: int):
        sample_every = max(1, n // 500)
        self.procs = []
        t0 = time.monotonic()
        offset = 0
        for i in range(workers):
            share = n // workers + (i < n % workers)
            self.procs.append(subprocess.Popen(
                [str(binary), "127.0.0.1", str(port), str(share), path, str(channels),
                 str(sample_every), str(offset)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            ))
            offset += share
        bad = 0
        for p in self.procs:
            line = p.stdout.readline()
            assert line.startswith("ready"), line
            bad += int(line.split()[2])
        self.connect_seconds = time.monotonic() - t0
        if bad:
            self.close()
            raise RuntimeError(f"{bad:,} of {n:,} clients got no 200 response head")

    def wait_events(self, n: int, seconds: float = 30.0) -> int:
        """Wait until ``n`` events have arrived in all (counting from the last report);
        returns the number that arrived."""
        got, deadline = 0, time.monotonic() + seconds
        while got < n and time.monotonic() < deadline:
            got += self.report()[0]
            if got < n:
                time.sleep(0.05)
        return got

    def report(self) -> tuple[int, list[float]]:
        count, lat = 0, []
        for p in self.procs:
            p.stdin.write("r\n")
            p.stdin.flush()
        for p in self.procs:
            _, c, m = p.stdout.readline().split()
            count += int(c)
            lat += [int(p.stdout.readline()) / 1e6 for _ in range(int(m))]
        return count, lat

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.write("q\n")
                p.stdin.flush()
            except BrokenPipeError:
                pass
        for p in self.procs:
            p.wait(timeout=10)


@dataclass
class Row:
    scenario: str
    clients: int
    rate: float  # messages published per second
    delivered: float
    loss: float
    p50: float
    p99: float
    max: float
    gw_cpu: float  # cores
    load_cpu: float  # cores
    us_per_event: float

    def progress(self) -> str:
        """One readable line for the progress log, printed as each row is measured."""
        return (
            f"{self.scenario}: {self.clients:,} clients x {self.rate:,.0f} msg/s: "
            f"{self.delivered:,.0f} deliveries/s, loss {self.loss:.2%}, "
            f"p50/p99/max {self.p50:.1f}/{self.p99:.1f}/{self.max:.1f} ms, "
            f"gateway CPU {self.gw_cpu:.0%} ({self.us_per_event:.1f} µs/delivery), "
            f"load CPU {self.load_cpu:.0%}"
        )

    __str__ = progress  # print(row) gives the readable line too, never the dataclass repr

    def table_row(self) -> str:
        """The row of the markdown table the suite ends with (columns: :data:`TABLE_HEAD`)."""
        return (
            f"| {self.scenario} | {self.clients:,} | {self.rate:,.0f} | {self.delivered:,.0f} | "
            f"{self.loss:.2%} | {self.p50:.1f} | {self.p99:.1f} | {self.max:.1f} | "
            f"{self.gw_cpu:.0%} | {self.us_per_event:.1f} | {self.load_cpu:.0%} |"
        )


TABLE_HEAD = [
    "| scenario | clients | msg/s | deliveries/s | loss | p50 ms | p99 ms | max ms "
    "| gateway CPU | µs CPU/delivery | load CPU |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


class Bench:
    """A redis-server (or, with ``cluster``, a Redis Cluster) and a gateway over it."""

    def __init__(self, args: argparse.Namespace, cluster: bool = False) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="ssebench"))
        self.loadclient = build_loadclient(self.tmp)
        self.redis_port, self.port = free_port(), free_port()
        self.cluster: Cluster | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        #: Publishes with this command (SPUBLISH for sharded channels), counts subscribers
        #: with this PUBSUB subcommand.
        self.publish_command, self.numsub_command = b"PUBLISH", b"NUMSUB"
        try:
            if cluster:
                self.cluster = Cluster(self.tmp)
            else:
                self.redis = subprocess.Popen(
                    [shutil.which("redis-server") or "redis-server", "--port",
                     str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                     "no", "--dir", str(self.tmp),
                     "--client-output-buffer-limit", "pubsub", "256mb", "64mb", "60"],
                    stdout=subprocess.DEVNULL,
                )
            self._start_gateway(args)
        except BaseException:
            self.close()  # a gateway that did not start must not leave redis-server behind
            raise

    def shard(self, channel: bytes) -> None:
        """Publish ``channel`` with SPUBLISH at its master (the cluster scenario)."""
        assert self.cluster is not None
        self.redis_port = self.cluster.owner(channel)
        self.publish_command, self.numsub_command = b"SPUBLISH", b"SHARDNUMSUB"
        self.pub.close()
        self.pub = socket.create_connection(("127.0.0.1", self.redis_port))
        self.pub.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _start_gateway(self, args: argparse.Namespace) -> None:
        if self.cluster is not None:
            self.redis_port = self.cluster.ports[0]
            redis = self.cluster.address
            rules_text = "[uwsgi]\nroute = ^/k/(.*)$ sse:ssubscribe=$1\n"
        else:
            redis = f"127.0.0.1:{self.redis_port}"
            rules_text = "[uwsgi]\nroute = ^/s/(.*)$ sse:$1\nroute = ^/x/(.*)$ sse:stream=$1\n"
        wait_port(self.redis_port)
        rules = self.tmp / "bench.ini"
        rules.write_text(rules_text)
        twistd = Path(sys.executable).with_name("twistd")
        self.gateway = subprocess.Popen(
            [str(twistd if twistd.exists() else "twistd"), "-n", "--pidfile=", "--logfile",
             str(self.tmp / "gw.log"), "sse-offload", "--rules", str(rules),
             "--listen", f"tcp:{self.port}:interface=127.0.0.1",
             "--redis", redis, "--keepalive", "0",
             "--processes", str(args.processes)],
        )
        wait_port(self.port)
        if args.processes > 1:
            wait_children(self.gateway.pid, args.processes, "the gateway")
        time.sleep(1.0)
        self.pub = socket.create_connection(("127.0.0.1", self.redis_port))
        self.pub.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def gateway_pids(self) -> list[int]:
        return [self.gateway.pid, *children(self.gateway.pid)]

    def gateway_cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.gateway_pids() if Path(f"/proc/{p}").exists())

    def memory_kib(self) -> int:
        pids = [
            p for p in self.gateway_pids() if "redis" not in Path(f"/proc/{p}/comm").read_text()
        ]
        return sum(pss_kib(p) for p in pids) + (pss_kib(self.redis.pid) if self.redis else 0)

    def numsub_total(self, channels: list[bytes]) -> int:
        c = socket.create_connection(("127.0.0.1", self.redis_port))
        c.sendall(resp(b"PUBSUB", self.numsub_command, *channels))
        data = b""
        # *2N, then per channel: $len, name, :count
        while data.count(b"\r\n") < 1 + 3 * len(channels):
            data += c.recv(1 << 20)
        c.close()
        lines = data.split(b"\r\n")
        return sum(int(lines[i][1:]) for i in range(3, 1 + 3 * len(channels), 3))

    def wait_subscribed(self, channels: list[bytes], each: int = 1) -> None:
        """Wait until ``each`` subscriptions per channel (one per gateway process that holds
        a client of it) are in Redis."""
        deadline = time.monotonic() + 30
        while self.numsub_total(channels) < len(channels) * each:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not subscribe in time")
            time.sleep(0.1)
        time.sleep(0.3)

    def publish(self, channels: list[bytes], rate: float, seconds: float,
                xadd: bool = False) -> float:
        """Publish at ``rate`` msg/s round-robin over ``channels`` (``xadd``: append to
        Redis Streams of those names); returns the achieved rate."""
        total = int(rate * seconds)
        size = self.args.size
        start = time.monotonic()
        batch_every = max(1, int(rate / 2000))  # pace in small bursts above 2,000 msg/s
        out = []
        for i in range(total):
            ts = str(time.time_ns()).encode()
            payload = ts + b"x" * max(0, size - len(ts))
            name = channels[i % len(channels)]
            out.append(resp(b"XADD", name, b"*", b"data", payload) if xadd
                       else resp(self.publish_command, name, payload))
            if len(out) >= batch_every:
                self.pub.sendall(b"".join(out))
                out = []
                delay = start + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        if out:
            self.pub.sendall(b"".join(out))
        elapsed = time.monotonic() - start
        self._drain_replies()
        return total / elapsed

    def _drain_replies(self) -> None:
        self.pub.setblocking(False)
        try:
            while self.pub.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
        self.pub.setblocking(True)

    def run_rate(self, name: str, load: Load, clients: int, channels: list[bytes], rate: float,
                 per_message: int, xadd: bool = False) -> Row:
        seconds = self.args.seconds
        load.report()  # reset counters
        cpu0, lcpu0, t0 = self.gateway_cpu(), load.cpu(), time.monotonic()
        achieved = self.publish(channels, rate, seconds, xadd)
        time.sleep(1.0)  # let the tail arrive
        elapsed = time.monotonic() - t0
        got, lat = load.report()
        self._drain_replies()
        gw_cpu = (self.gateway_cpu() - cpu0) / elapsed
        load_cpu = (load.cpu() - lcpu0) / elapsed
        expected = int(rate * seconds) * per_message
        lat.sort()
        pick = (lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]) if lat else (lambda q: 0.0)
        return Row(
            name, clients, achieved, got / (elapsed - 1.0), max(0.0, 1 - got / expected),
            statistics.median(lat) if lat else 0.0, pick(0.99), lat[-1] if lat else 0.0,
            gw_cpu, load_cpu, (gw_cpu * elapsed) / got * 1e6 if got else 0.0,
        )

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.terminate()
            try:
                self.gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait()
        if self.cluster is not None:
            self.cluster.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=1, help="gateway processes")
    ap.add_argument("--load-workers", type=int, default=2, help="C load processes")
    ap.add_argument("--seconds", type=float, default=5.0, help="per rate")
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--idle-clients", type=int, default=10000)
    ap.add_argument("--rates", default="20,50,100,150,200,300,1000",
                    help="fan-out rates, msg/s, to 1,000 clients")
    ap.add_argument("--quick", action="store_true", help="small figures, for a smoke run")
    ap.add_argument("--only", action="append",
                    choices=["idle", "light", "fanout", "channels", "streams", "replay",
                             "cluster"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.idle_clients, args.seconds, args.rates = 1000, 2.0, "20,100"
    only = set(args.only or ["idle", "light", "fanout", "channels", "streams", "replay",
                             "cluster"])
    lines = [
        f"Gateway `--processes {args.processes}`, {args.size}-byte payloads, {args.seconds:.0f} s "
        f"per row, HTTP/1.1 clients from {args.load_workers} C load processes, "
        f"{os.cpu_count()} cores shared by everything.",
        "",
    ]
    rows: list[Row] = []

    if "idle" in only:
        b = Bench(args)
        try:
            mem0, cpu0 = b.memory_kib(), b.gateway_cpu()
            load = Load(b.loadclient, b.port, args.idle_clients, "/s/idle", 1, args.load_workers)
            connect_cpu = b.gateway_cpu() - cpu0
            b.wait_subscribed([b"idle"], args.processes)  # every process holds some clients
            time.sleep(1.0)
            mem1 = b.memory_kib()
            # Connected means streaming: one message must reach every client.
            load.report()
            b.publish([b"idle"], 1.0, 1.0)
            got = load.wait_events(args.idle_clients)
            if got != args.idle_clients:
                raise RuntimeError(f"a message reached {got:,} of {args.idle_clients:,} clients")
            lines += [
                f"**Idle**: {args.idle_clients:,} clients connected in "
                f"{load.connect_seconds:.2f} s ({connect_cpu / args.idle_clients * 1e6:.0f} µs "
                f"of gateway CPU per connection); memory per idle connection "
                f"{(mem1 - mem0) * 1024 / args.idle_clients:,.0f} B (PSS of the gateway "
                f"processes and Redis: {mem0 / 1024:.1f} -> {mem1 / 1024:.1f} MiB); every "
                f"client got a 200 head and then a message published to them all.",
                "",
            ]
            load.close()
        finally:
            b.close()

    def scenario(name: str, clients: int, nchannels: int, rates: list[float],
                 xadd: bool = False, cluster: bool = False) -> None:
        b = Bench(args, cluster)
        try:
            prefix = "/x/" if xadd else "/k/" if cluster else "/s/"
            path = prefix + ("c%d" if nchannels > 1 else "bench")
            chans = [b"c%d" % i for i in range(nchannels)] if nchannels > 1 else [b"bench"]
            if cluster:
                b.shard(chans[0])  # one sharded channel: SPUBLISH at its master
            load = Load(b.loadclient, b.port, clients, path, nchannels, args.load_workers)
            if xadd:
                time.sleep(2.0)  # every process's reader is in XREAD by then
            else:
                b.wait_subscribed(chans)
            per_message = clients // nchannels
            for rate in rates:
                row = b.run_rate(name, load, clients, chans, rate, per_message, xadd)
                rows.append(row)
                print(row.progress(), file=sys.stderr, flush=True)
                if name == "fan-out" and (row.loss > 0.001 or row.p99 > 1000):
                    break  # saturated
            load.close()
        finally:
            b.close()

    if "light" in only:
        scenario("light", 1000, 1, [10])
    if "fanout" in only:
        scenario("fan-out", 1000, 1, [float(r) for r in args.rates.split(",")])
    if "channels" in only:
        scenario("channels", 1000, 1000, [1000])
    if "streams" in only:
        rates = [float(r) for r in args.rates.split(",") if float(r) <= 300]
        scenario("streams", 1000, 1, rates, xadd=True)
    if "cluster" in only:
        scenario("cluster (sharded)", 1000, 1, [100.0], cluster=True)
    if "replay" in only:
        b = Bench(args)
        try:
            seconds = replay(b, 10_000)
            lines += [f"**Replay**: 10,000 entries of a Redis Stream replayed to one client "
                      f"(Last-Event-ID of the first) in {seconds:.2f} s, head to last event.", ""]
            print(f"replay: 10,000 entries in {seconds:.2f} s", file=sys.stderr, flush=True)
        finally:
            b.close()

    if rows:
        lines += TABLE_HEAD + [r.table_row() for r in rows]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


def replay(b: Bench, count: int) -> float:
    """Append ``count`` entries, then time one client resuming from the first of them."""
    pipe = b"".join(resp(b"XADD", b"replay", b"*", b"data", b"%d" % i + b"x" * 90)
                    for i in range(count))
    b.pub.sendall(resp(b"XADD", b"replay", b"0-1", b"data", b"first") + pipe)
    time.sleep(1.0)
    b._drain_replies()
    c = socket.create_connection(("127.0.0.1", b.port))
    t0 = time.monotonic()
    c.sendall(b"GET /x/replay HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0-1\r\n\r\n")
    data = b""
    while data.count(b"\nid: ") < count:
        chunk = c.recv(1 << 20)
        if not chunk:
            raise RuntimeError(f"replay ended early: {data.count(b'id: ')} events")
        data += chunk
    seconds = time.monotonic() - t0
    c.close()
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
