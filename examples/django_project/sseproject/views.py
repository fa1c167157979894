"""The two Django views of uwsgi-sse-offload's README.

``sse_view`` asks for the offload with ``uwsgi.add_var``: it needs the app hosted in-process
(``module = sseproject.wsgi``, rules/django_inprocess.ini). ``sse_channel_view`` names the
channel in a response header and works in-process or behind ``--proxy`` (rules/django.ini).
"""

from django.http import HttpResponse

try:
    import uwsgi  # the gateway's, while it hosts the app
except ImportError:  # under gunicorn or runserver
    uwsgi = None


def index(request):
    return HttpResponse("Hello from Django\n", content_type="text/plain")


def sse_view(request, foobar):
    response = HttpResponse('', content_type='event/stream')
    response['Cache-Control'] = 'no-cache'
    uwsgi.add_var('X-SSE-OFFLOAD', 'clock')
    return response


def sse_channel_view(request, foobar):
    response = HttpResponse('', content_type='event/stream')
    response['Cache-Control'] = 'no-cache'
    response['X-SSE-Channel'] = 'foobar'
    return response
