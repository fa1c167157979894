"""A WSGI app for the proxy's bulk-transfer tests, run under gunicorn."""

from urllib.parse import parse_qs

CHUNK = 1 << 16


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        total = 0
        stream = environ["wsgi.input"]
        while True:
            data = stream.read(CHUNK)
            if not data:
                break
            total += len(data)
        body = b"%d" % total
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/download":
        size = int(parse_qs(environ["QUERY_STRING"])["n"][0])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        block = b"x" * CHUNK

        def body():
            left = size
            while left > 0:
                yield block[: min(left, CHUNK)]
                left -= CHUNK

        return body()
    if path == "/headers":
        lines = "".join(
            f"{k}={v}\n" for k, v in sorted(environ.items())
            if k.startswith("HTTP_") or k == "REMOTE_PORT"
        )
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close"),
                                  ("X-Hop", "1"), ("Keep-Alive", "timeout=5")])
        return [lines.encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"bulk " + path.encode()]
