"""The Flask service's streaming routes at the same paths, plus JSON 404 and 500 pages."""

from django.urls import include, path

urlpatterns = [path("", include("backend_ai.integrations.django.urls"))]

handler404 = "backend_ai.integrations.django.views.not_found"
handler500 = "backend_ai.integrations.django.views.server_error"
