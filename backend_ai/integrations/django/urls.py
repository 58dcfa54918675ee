"""The Flask service's routes, for ``path("", include("backend_ai.integrations.django.urls"))``.

A project that wants JSON 404 and 500 pages too sets, in its root URLconf::

    handler404 = "backend_ai.integrations.django.views.not_found"
    handler500 = "backend_ai.integrations.django.views.server_error"
"""

from __future__ import annotations

from django.urls import path

from backend_ai.integrations.django import views

__all__ = ["urlpatterns"]

urlpatterns = [
    path("dream/interpret-stream", views.dream_interpret_stream, name="dream-interpret-stream"),
    path("iching/reading-stream", views.iching_reading_stream, name="iching-reading-stream"),
    path("tarot/<str:spread>-stream", views.tarot_reading_stream, name="tarot-reading-stream"),
    path("compare/stream", views.compare_stream, name="compare-stream"),
    path("health", views.health, name="health"),
]
