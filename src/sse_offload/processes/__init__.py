"""The gateway's processes and the sockets and memory they share.

Everything here is about operating-system processes, not HTTP or Redis pub/sub: the service
tree (service.py, tap.py) puts these pieces together with the hub and the web side.

- :mod:`.children`: what every service that keeps one child process running shares (the
  child's output read as lines, how it ended said the same way, SIGTERM then SIGKILL).
- :mod:`.mules`: ``mule = SCRIPT`` helper processes, restarted with backoff.
- :mod:`.embedded_redis`: ``--redis embedded``, a private redis-server.
- :mod:`.listeners`: the listening sockets (SO_REUSEPORT groups, tuned for streams).
- :mod:`.pool`: ``--processes N``, the master's pool of workers sharing those sockets.
- :mod:`.worker`: one worker, run as ``python -m sse_offload.processes.worker``;
  :mod:`.worker_args` is how the master passes it what it resolved.
- :mod:`.lifeline`: a worker ends when its master is gone, however the master died.
- :mod:`.counts`: the workers' open stream counts in shared memory (``--max-clients``).

Nothing is imported here, so importing one module does not import the others.
"""
