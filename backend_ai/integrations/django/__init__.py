"""backend_ai for Django: parallel LLM streams as a ``StreamingHttpResponse`` of SSE frames.

Install with ``pip install 'backend-ai[django]'``. In the project's settings::

    BACKEND_AI = {"openai_api_key": "...", "openai_base_url": "...", "heartbeat_s": 15}

(any field of ``backend_ai.app.settings.Settings``, or a ``Settings`` itself), and either
include ``backend_ai.integrations.django.urls`` for the same routes as the Flask service, or
stream your own sections from a view::

    from backend_ai.integrations.django import json_errors, stream_response

    @json_errors
    def my_view(request):
        return stream_response([StreamConfig("summary", "..."), ...])

What the integration promises is the Flask service's: the ``start`` event is on the wire
before any upstream call, heartbeats go out while the upstream is silent, a client that goes
away cancels every upstream stream, and bad input is a 4xx JSON error before anything streams.
Cancellation rests on the WSGI contract: Django's ``StreamingHttpResponse`` registers the
body iterator's ``close`` among its resource closers, and ``HttpResponseBase.close()`` — which
gunicorn calls on the response in a ``finally`` once writing to a gone client fails — calls it;
that closes the run's generator, and the engine cancels its sections. A heartbeat is what
makes a silent stream write, so a client that leaves during a long silence is noticed within
one heartbeat interval.

The service (pooled HTTP client, executor, manager) is built on first use in each process —
after gunicorn forks — and closed by ``close_service()``, by the ``worker_exit`` hook of
``backend_ai.app.gunicorn_conf`` (which also drains open streams on SIGTERM: re-export it in
the project's ``gunicorn.conf.py``), and at interpreter exit.
"""

from backend_ai.integrations.django.responses import (
    error_response,
    json_errors,
    read_json_body,
    stream_plan_response,
    stream_response,
)
from backend_ai.integrations.django.service import (
    SETTINGS_NAME,
    close_service,
    get_service,
    settings_from_django,
)

__all__ = [
    "SETTINGS_NAME",
    "close_service",
    "error_response",
    "get_service",
    "json_errors",
    "read_json_body",
    "settings_from_django",
    "stream_plan_response",
    "stream_response",
]
