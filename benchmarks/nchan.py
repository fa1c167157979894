#!/usr/bin/env python3
"""The same load against nchan, on the same machine: the reference the README's figures need.

    apt-get install nginx-light libnginx-mod-nchan    # Debian; not a project dependency
    python benchmarks/nchan.py [--clients 10000]

Starts a private redis-server and nginx with nchan (2 workers, Redis-backed channels, an
EventSource subscriber location and an HTTP publisher location), then measures with
benchmarks/loadclient.c what suite.py measures for the gateway: the time to connect
``--clients`` clients, and at 1,000 clients on one channel at each of ``--rates`` (10 and 20
msg/s unless told) the CPU nchan
(all its processes) spends per delivered event and the latency p50/p99. Messages go through
nchan's own publisher (nchan keeps its own Redis format), so its CPU includes taking them in,
as the gateway's includes reading them from Redis.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import Load, build_loadclient, cpu_seconds, free_port, wait_children, wait_port

MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
WORKERS = 2

CONFIG = """\
load_module {module};
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 18000; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 100000000;  # one publisher connection for the whole run
  client_body_temp_path {tmp}/body;
  upstream redis_server {{ nchan_redis_server redis://127.0.0.1:{redis}; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location ~ ^/s/(.*)$ {{
      nchan_subscriber eventsource;
      nchan_channel_id $1;
      nchan_redis_pass redis_server;
    }}
    location = /pub {{
      nchan_publisher;
      nchan_channel_id $arg_id;
      nchan_redis_pass redis_server;
    }}
  }}
}}
"""


def publish(pub: socket.socket, rate: float, seconds: float, size: int) -> None:
    """POST ``rate`` messages a second to nchan's publisher, each carrying its time (ns)."""
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        stamp = str(time.time_ns()).encode()
        body = stamp + b"x" * max(0, size - len(stamp))
        pub.sendall(b"POST /pub?id=bench HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n%b"
                    % (len(body), body))
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pub.setblocking(False)
        try:
            while pub.recv(1 << 16):
                pass
        except BlockingIOError:
            pass
        pub.setblocking(True)


def ready_for_subscribers(port: int, seconds: float = 10.0) -> None:
    """Wait until nchan answers a subscriber with 200: until its Redis connection is up it
    answers 503 (the gateway's benchmark likewise starts once the gateway has started)."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /s/warmup HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                return
        if time.monotonic() > deadline:
            raise RuntimeError("nchan did not accept a subscriber in time")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10000, help="clients of the connect test")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rates", default="10,20",
                    help="msg/s to 1,000 clients on one channel, e.g. 10,20,100,150")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not MODULE.exists():
        print("needs nginx and nchan: apt-get install nginx-light libnginx-mod-nchan")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="nchanbench"))
    binary = build_loadclient(tmp)
    redis_port, port = free_port(), free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp),
         # as suite.py gives the gateway's Redis
         "--client-output-buffer-limit", "pubsub", "256mb", "64mb", "60"],
        stdout=subprocess.DEVNULL,
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        CONFIG.format(module=MODULE, tmp=tmp, redis=redis_port, port=port, workers=WORKERS)
    )
    try:
        wait_port(redis_port)
        subprocess.run([nginx, "-c", str(conf)], check=True, stderr=subprocess.DEVNULL)
        wait_port(port)
        master = int((tmp / "nginx.pid").read_text())
        pids = [master, *wait_children(master, WORKERS, "nginx")]

        def cpu() -> float:
            return sum(cpu_seconds(p) for p in pids)

        ready_for_subscribers(port)
        c0 = cpu()
        idle = Load(binary, port, args.clients, "/s/idle", 1, 2)
        print(f"nchan: {args.clients:,} clients connected in {idle.connect_seconds:.2f} s "
              f"({(cpu() - c0) / args.clients * 1e6:.0f} µs of nchan CPU per connection)")
        idle.close()
        load = Load(binary, port, 1000, "/s/bench", 1, 2)
        time.sleep(1)
        pub = socket.create_connection(("127.0.0.1", port))
        for rate in (float(r) for r in args.rates.split(",")):
            load.report()
            c0 = cpu()
            publish(pub, rate, args.seconds, args.size)
            time.sleep(1)
            got, lat = load.report()
            used = cpu() - c0
            lat.sort()
            expected = int(rate * args.seconds) * 1000
            figures = (
                f", {used / got * 1e6:.1f} µs of nchan CPU per delivery, "
                f"p50 {lat[len(lat) // 2]:.1f} ms, p99 {lat[int(len(lat) * 0.99)]:.1f} ms"
                if got and lat else ""
            )
            print(f"nchan: 1,000 clients x {rate:g} msg/s: {got:,} of {expected:,} delivered"
                  + figures)
        load.close()
    except BaseException:
        log = tmp / "error.log"
        if log.exists():
            print("nginx error.log, last lines:", *log.read_text().splitlines()[-5:], sep="\n")
        raise
    finally:
        subprocess.run([nginx, "-c", str(conf), "-s", "stop"], stderr=subprocess.DEVNULL)
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
