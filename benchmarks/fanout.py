#!/usr/bin/env python3
"""Fan-out benchmark: N SSE clients on one channel, a publisher at fixed rates.

Starts its own redis-server and ``twistd -n sse-offload`` (as a user runs it), connects the
clients from several load processes (raw sockets, HTTP/1.1, minimal parsing), publishes
``<publish time in ns>`` padded to --size bytes at each rate, and reports per rate: delivered
events/s, loss, latency p50/p99/max (publish -> client read), the gateway's CPU and RSS, and
the load processes' CPU (so a saturated load client is visible).

    python benchmarks/fanout.py --clients 1000 --rates 100,500,1000 --seconds 5

Writes a markdown table to stdout (and --out FILE).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENT = re.compile(rb"data: (\d+)x*\n\n")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def proc_cpu(pid: int) -> float:
    """User+system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


# --- load process ---------------------------------------------------------------------------
def load_worker(port: int, n: int, path: str, conn, sample_every: int) -> None:
    """Open n streams, report when all heads arrived, then count events until told to stop."""
    sel = selectors.DefaultSelector()
    socks = []
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, [b"", False])
    heads = 0
    while heads < n:
        for key, _ in sel.select(30):
            data = key.fileobj.recv(65536)
            state = key.data
            if not state[1]:
                state[0] += data
                if b"\r\n\r\n" in state[0]:
                    state[1] = True
                    state[0] = b""
                    heads += 1
    conn.send("ready")
    counts = 0
    latencies: list[int] = []
    seen = 0
    running = True
    while running:
        if conn.poll():
            msg = conn.recv()
            if msg == "stop":
                running = False
                continue
            if msg == "report":
                conn.send((counts, latencies))
                counts, latencies = 0, []
                continue
        for key, _ in sel.select(0.05):
            data = key.fileobj.recv(262144)
            if not data:
                sel.unregister(key.fileobj)
                continue
            now = time.time_ns()
            buf = key.data[0] + data
            last = 0
            for m in EVENT.finditer(buf):
                counts += 1
                seen += 1
                if seen % sample_every == 0:
                    latencies.append(now - int(m.group(1)))
                last = m.end()
            key.data[0] = buf[last:][-4096:]
    for s in socks:
        s.close()
    conn.send(proc_cpu(os.getpid()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rates", default="10,100,500,1000", help="messages/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--workers", type=int, default=2, help="load processes")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ssebench"))
    redis_port, gw_port = free_port(), free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    rules = tmp / "bench.ini"
    rules.write_text("[uwsgi]\nroute = ^/s/(.*)$ sse:$1\n")
    twistd = Path(sys.executable).with_name("twistd")
    gw = subprocess.Popen(
        [str(twistd if twistd.exists() else "twistd"), "-n", "--pidfile=", "--logfile",
         str(tmp / "gw.log"), "sse-offload", "--rules", str(rules), "--listen",
         f"tcp:{gw_port}:interface=127.0.0.1:backlog=4096", "--redis",
         f"127.0.0.1:{redis_port}", "--keepalive", "0"],
    )
    rows = []
    try:
        wait_port(redis_port)
        wait_port(gw_port)
        time.sleep(0.5)
        rss0 = proc_rss_kib(gw.pid)
        per = [args.clients // args.workers + (i < args.clients % args.workers)
               for i in range(args.workers)]
        sample_every = max(1, args.clients // 200)
        pipes, procs = [], []
        t0 = time.monotonic()
        for n in per:
            parent, child = mp.Pipe()
            p = mp.Process(target=load_worker, args=(gw_port, n, "/s/bench", child, sample_every))
            p.start()
            pipes.append(parent)
            procs.append(p)
        for pipe in pipes:
            assert pipe.recv() == "ready"
        connect_s = time.monotonic() - t0
        pub = socket.create_connection(("127.0.0.1", redis_port))
        pub.sendall(resp(b"PUBSUB", b"NUMSUB", b"bench"))
        pub.recv(100)
        time.sleep(0.5)
        rss1 = proc_rss_kib(gw.pid)
        print(f"# {args.clients} clients connected in {connect_s:.2f}s; gateway RSS "
              f"{rss0/1024:.1f} -> {rss1/1024:.1f} MiB "
              f"({(rss1 - rss0) * 1024 / args.clients:.0f} B/connection)", file=sys.stderr)
        for rate in [int(r) for r in args.rates.split(",")]:
            total = int(rate * args.seconds)
            cpu0 = proc_cpu(gw.pid)
            start = time.monotonic()
            for i in range(total):
                target = start + i / rate
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                ts = str(time.time_ns()).encode()
                payload = ts + b"x" * max(0, args.size - len(ts))
                pub.sendall(resp(b"PUBLISH", b"bench", payload))
            pub_elapsed = time.monotonic() - start
            time.sleep(1.0)  # drain
            elapsed = time.monotonic() - start
            cpu = proc_cpu(gw.pid) - cpu0
            got, lat = 0, []
            for pipe in pipes:
                pipe.send("report")
                c, ls = pipe.recv()
                got += c
                lat += ls
            # drain PUBLISH replies
            pub.setblocking(False)
            try:
                while pub.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            pub.setblocking(True)
            expected = total * args.clients
            lat_ms = sorted(x / 1e6 for x in lat) or [float("nan")]
            rows.append({
                "rate": rate,
                "achieved": total / pub_elapsed,
                "delivered": got / pub_elapsed,
                "loss": 1 - got / expected if expected else 0.0,
                "p50": statistics.median(lat_ms),
                "p99": lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))],
                "max": lat_ms[-1],
                "cpu": cpu / elapsed,
                "rss": proc_rss_kib(gw.pid) / 1024,
            })
        load_cpu = 0.0
        for pipe in pipes:
            pipe.send("stop")
            load_cpu += pipe.recv()
        for p in procs:
            p.join()
    finally:
        gw.terminate()
        gw.wait()
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        f"Fan-out, {args.clients} clients on one channel, {args.size} B payloads, "
        f"{args.seconds:.0f} s per rate, HTTP/1.1; connect all: {connect_s:.2f} s; idle RSS "
        f"{(rss1 - rss0) * 1024 / args.clients:.0f} B/connection; load processes' CPU "
        f"{load_cpu:.1f} s in all.",
        "",
        "| msg/s offered | msg/s published | events/s delivered | loss | p50 ms | p99 ms | max ms "
        "| gateway CPU | gateway RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rate']} | {r['achieved']:.0f} | {r['delivered']:.0f} | {r['loss']:.2%} | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['cpu']:.0%} | {r['rss']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
