"""Django responses: a run as ``StreamingHttpResponse`` of SSE frames, errors as JSON.

The frames come from the Flask service's own body generator (``backend_ai.app.streaming``):
the same events, metrics and end-of-run guarantees, whatever the framework. The run's
``start`` event is taken before the response is built, so an error the engine raises up front
(a bad config, a server shutting down) is still a JSON error and never a stream that starts
and then fails.
"""

from __future__ import annotations

import functools
import hmac
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse

from backend_ai.app.access import ACCESS_KEY
from backend_ai.app.extension import ServiceState
from backend_ai.app.runs import RunPlan
from backend_ai.app.streaming import SSE_HEADERS, open_run, sse_body
from backend_ai.app.validation import RequestError, check_json_mimetype, decode_json_object
from backend_ai.errors import ConfigError, LifecycleError
from backend_ai.integrations.django.service import get_service
from backend_ai.streaming import StreamConfig

__all__ = [
    "check_bearer_token",
    "error_response",
    "json_errors",
    "read_json_body",
    "stream_plan_response",
    "stream_response",
]


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JsonResponse:
    """``{"error": {"code", "message"}}`` with ``status``, as the Flask service answers."""
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def json_errors(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Decorate a view so refusals become JSON errors, as in the Flask service.

    ``RequestError`` keeps its status and code; a ``ConfigError`` (a ``StreamConfig`` or run
    option built from the request's values) is bad input, 422; a ``LifecycleError`` means the
    server is shutting down, 503.
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except RequestError as exc:
            return error_response(exc.status, exc.code, exc.message)
        except ConfigError as exc:
            return error_response(422, "invalid_value", str(exc))
        except LifecycleError:
            return error_response(
                503, "shutting_down", "the server is shutting down; retry shortly"
            )

    return wrapped


def read_json_body(request: HttpRequest, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, or ``RequestError`` (415, 413 or 400), read at most once.

    The size is checked against ``Content-Length`` before reading, and the read is bounded, so
    a large body is refused without being held in memory. Django under WSGI does not read
    chunked request bodies (it sees an empty one), which is then ``invalid_json``.
    """
    check_json_mimetype(request.content_type or "")
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        length = int(declared)
    except ValueError:
        raise RequestError(400, "bad_request", "the request is malformed") from None
    if length > max_bytes:
        raise RequestError(413, "payload_too_large", "the request body is too large")
    return decode_json_object(request.read(max_bytes + 1))


def check_bearer_token(request: HttpRequest, token: str | None) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (when one is set)."""
    if token is None:
        return
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode(), token.encode()
    ):
        raise RequestError(401, "unauthorized", "missing or wrong bearer token")


def stream_plan_response(
    plan: RunPlan,
    *,
    mode: str = "interleaved",
    service: ServiceState | None = None,
    received_at: float | None = None,
    request: HttpRequest | None = None,
) -> StreamingHttpResponse:
    """Open the run of ``plan`` and answer with its ``text/event-stream`` response.

    With ``request``, the run is left in its WSGI environ, where the access log
    (``backend_ai.integrations.django.wsgi``) reads how it went once the response is closed.
    """
    service = service or get_service()
    request_id = uuid.uuid4().hex
    run = open_run(
        service,
        route=plan.route,
        request_id=request_id,
        configs=plan.configs,
        mode=mode,
        input_data=plan.input_data,
        received_at=received_at if received_at is not None else time.perf_counter(),
        reading=plan.reading,
    )
    if request is not None:
        request.META[ACCESS_KEY] = run.recorder
    response = StreamingHttpResponse(sse_body(service, run), content_type="text/event-stream")
    for name, value in SSE_HEADERS.items():
        response[name] = value
    response["X-Request-Id"] = request_id
    return response


def stream_response(
    configs: Sequence[StreamConfig],
    *,
    route: str = "custom",
    mode: str = "interleaved",
    input_data: Mapping[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> StreamingHttpResponse:
    """A view's answer: ``configs`` streamed in parallel as SSE (``route`` labels metrics);
    ``request`` lets the access log report on the run."""
    plan = RunPlan(route, list(configs), dict(input_data or {}))
    return stream_plan_response(plan, mode=mode, request=request)
