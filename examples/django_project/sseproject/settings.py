"""A minimal Django project for the two SSE views of uwsgi-sse-offload's README: no database,
no templates."""

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "sseproject.urls"
WSGI_APPLICATION = "sseproject.wsgi.application"
INSTALLED_APPS: list[str] = []
# CommonMiddleware adds Content-Length (0 for the views' empty bodies): the gateway drops
# it from a stream's head, or clients would take the stream as finished.
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
