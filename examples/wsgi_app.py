"""uwsgi-sse-offload's app-governed clock, in Python 3: the app decides which requests stream.

``/whattimeisit`` asks for the offload with ``uwsgi.add_var`` and returns no body: the
gateway's final rule (rules/wsgi_app.ini) turns the request into an SSE stream of the
``clock`` channel. ``/whattimeisit2`` sets its own head too: an offload from the final chain
keeps the app's status and headers (docs/architecture.md, difference 7). Anything else is a
plain page. Run it with ``twistd -n sse-offload --rules rules/wsgi_app.ini``.
"""

import uwsgi  # the gateway provides it while it hosts the app


def application(environ, start_response):
    """The WSGI callable."""
    path = environ["PATH_INFO"]
    if path == "/whattimeisit":
        # here the app may check a session, a permission...
        uwsgi.add_var("X-SSE-OFFLOAD", "clock")
        return []
    if path == "/whattimeisit2":
        uwsgi.add_var("X-SSE-OFFLOAD", "clock")
        start_response(
            "200 OK",
            [("Content-Type", "event/stream"), ("Cache-Control", "no-cache"), ("Foo", "Bar")],
        )
        return []
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello World\n"]
