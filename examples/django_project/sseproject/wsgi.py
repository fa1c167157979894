"""WSGI entry point: ``module = sseproject.wsgi`` in-process, or ``gunicorn sseproject.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sseproject.settings")

application = get_wsgi_application()
