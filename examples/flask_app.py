"""A Flask app governing SSE by response headers (works in-process or behind ``--proxy``).

``/events/<channel>`` answers with ``Content-Type: event/stream`` and names the channel in
``X-SSE-Channel``; rules/flask.ini collects the first and pulls the second, so the client
never sees the channel header. A real app checks the user's right to the channel first.

In-process:   twistd -n sse-offload --rules rules/flask.ini --redis embedded
Behind a proxy: gunicorn --bind 127.0.0.1:8000 --chdir examples flask_app:app
              twistd -n sse-offload --rules rules/flask.ini --proxy http://127.0.0.1:8000
"""

from flask import Flask, Response, abort

app = Flask(__name__)
#: The name the gateway's ``module = flask_app:app`` or gunicorn's ``flask_app:app`` finds.
application = app

ALLOWED = {"clock", "news"}


@app.route("/")
def index() -> str:
    """A plain page."""
    return "Hello from Flask\n"


@app.route("/events/<channel>")
def events(channel: str) -> Response:
    """Ask the gateway to stream ``channel``."""
    if channel not in ALLOWED:
        abort(404)
    response = Response("", content_type="event/stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-SSE-Channel"] = channel
    return response
