"""The Django project's WSGI application, wrapped in the service's access log and send timeout.

``backend_ai.app.access.AccessLog`` is plain WSGI middleware, so a Django project gets what the
Flask service has by wrapping its application once, in its ``wsgi.py``::

    from backend_ai.integrations.django.wsgi import get_wsgi_application

    application = get_wsgi_application()

Every request then gets one access line (logger ``backend_ai.access``) when the server closes
its response, and, under gunicorn, a client that reads nothing for ``send_timeout_s`` is
dropped and its run cancelled. The integration's views leave their run in the request's WSGI
environ (Django's ``request.META``), so a stream's line carries the run's sections, first-chunk
latency and outcome; a view of the project's own that streams with ``stream_response`` passes
its ``request`` for the same.
"""

from __future__ import annotations

from django.core.wsgi import get_wsgi_application as django_wsgi_application

from backend_ai.app.access import AccessLog
from backend_ai.integrations.django.service import settings_from_django

__all__ = ["get_wsgi_application"]


def get_wsgi_application() -> AccessLog:
    """Django's WSGI application (``django.setup()`` included) inside ``AccessLog``, set from
    ``settings.BACKEND_AI`` (``send_timeout_s``, ``access_log``)."""
    application = django_wsgi_application()
    settings = settings_from_django()
    return AccessLog(
        application, send_timeout_s=settings.send_timeout_s, enabled=settings.access_log
    )
