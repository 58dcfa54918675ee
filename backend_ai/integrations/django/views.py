"""The Flask service's streaming routes as Django views: same paths, same bodies, same answers.

Each view reads the JSON body, lets ``backend_ai.app.runs`` (shared with the Flask blueprints)
check it and plan the run, and answers with the run's SSE response. Views are CSRF-exempt:
they are a JSON API, called by ``fetch`` with a JSON body, not by HTML forms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from backend_ai import __version__
from backend_ai.app.runs import (
    ROUTE_FIELDS,
    RunPlan,
    StreamRequest,
    check_sim_sections,
    compare_plan,
    dream_plan,
    iching_plan,
    stream_request,
    tarot_plan,
    tarot_positions,
)
from backend_ai.integrations.django.responses import (
    check_bearer_token,
    error_response,
    json_errors,
    read_json_body,
    stream_plan_response,
)
from backend_ai.integrations.django.service import get_service

__all__ = [
    "compare_stream",
    "dream_interpret_stream",
    "health",
    "iching_reading_stream",
    "not_found",
    "server_error",
    "tarot_reading_stream",
]


def _streaming_view(route: str, planner: Callable[..., RunPlan]) -> Callable[..., HttpResponseBase]:
    fields = ROUTE_FIELDS[route]

    @csrf_exempt
    @json_errors
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponseBase:
        received_at = time.perf_counter()
        if request.method != "POST":
            return error_response(
                405, "method_not_allowed", "method not allowed on this route", {"Allow": "POST"}
            )
        service = get_service()
        settings = service.settings
        check_bearer_token(request, settings.auth_token)
        if "spread" in kwargs:
            tarot_positions(kwargs["spread"])  # an unknown spread is a 404 before the body
        body = read_json_body(request, settings.max_content_length)
        req: StreamRequest = stream_request(body, fields, settings)
        plan = planner(req, **kwargs)
        check_sim_sections(req, plan.configs)
        return stream_plan_response(
            plan, mode=req.mode, service=service, received_at=received_at, request=request
        )

    view.__name__ = view.__qualname__ = f"{route}_view"
    return view


dream_interpret_stream = _streaming_view("dream", dream_plan)
iching_reading_stream = _streaming_view("iching", iching_plan)
tarot_reading_stream = _streaming_view("tarot", tarot_plan)
compare_stream = _streaming_view("compare", compare_plan)


def health(request: HttpRequest) -> JsonResponse:
    """Liveness, and what the upstream is; 503 while the process drains."""
    service = get_service()
    draining = service.draining.is_set()
    settings = service.settings
    return JsonResponse(
        {
            "status": "draining" if draining else "ok",
            "version": __version__,
            "framework": "django",
            "upstream": "simulator" if settings.upstream_is_simulator else "openai-compatible",
        },
        status=503 if draining else 200,
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """``handler404``: a JSON 404 instead of Django's HTML page."""
    return error_response(404, "not_found", "no such route")


def server_error(request: HttpRequest) -> JsonResponse:
    """``handler500``: a generic JSON 500; details stay in the server log."""
    return error_response(500, "internal", "internal server error")
