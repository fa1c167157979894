"""A WSGI app for tests: reports what it saw and does what the query asks."""

import json
import time
from urllib.parse import parse_qs

import uwsgi


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    path = environ["PATH_INFO"]
    if "var" in query:
        uwsgi.add_var("X-SSE-OFFLOAD", query["var"][0])
    if "crash" in query:
        raise RuntimeError("the app crashed")
    if "sleep" in query:
        time.sleep(float(query["sleep"][0]))
    if path == "/offload-with-length":
        uwsgi.add_var("X-SSE-OFFLOAD", query.get("channel", ["clock"])[0])
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"),
                                  ("Foo", "Bar")])
        return [b"hello"]
    if path == "/opt":
        body = json.dumps({
            "enable-threads": uwsgi.opt.get("enable-threads"),
            "threads": uwsgi.opt.get("threads", b"").decode(),
            "worker_id": uwsgi.worker_id(),
            "numproc": uwsgi.numproc,
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/env":
        seen = {k: v for k, v in environ.items() if isinstance(v, str)}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(seen).encode()]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"x" * 65536 for _ in range(int(query.get("n", ["16"])[0])))
    if path == "/status":
        start_response(query["s"][0], [("Content-Type", "text/plain")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain " + path.encode()]
