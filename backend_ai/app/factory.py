"""``create_app``: the Flask app factory — settings, the engine extension, blueprints, errors.

Every error leaves as ``{"error": {"code": ..., "message": ...}}``: Flask's HTML error pages
would be useless to the page's ``fetch`` and to API clients. Unexpected exceptions are logged
by type and endpoint only — no traceback (it carries file paths) unless DEBUG logging is on,
and never the request body or the API key — and answered with a generic 500.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from backend_ai.app.access import AccessLog
from backend_ai.app.blueprints import ALL as BLUEPRINTS
from backend_ai.app.extension import BackendAI, get_state
from backend_ai.app.settings import Settings
from backend_ai.app.validation import RequestError
from backend_ai.errors import ConfigError, LifecycleError
from backend_ai.streaming.upstream import redacted_traceback

__all__ = ["RECEIVED_AT_KEY", "create_app"]

logger = logging.getLogger(__name__)

#: WSGI environ key holding ``time.perf_counter()`` when the request reached the app.
RECEIVED_AT_KEY = "backend_ai.received_at"
#: Endpoints reachable without the bearer token when ``BACKEND_AI_AUTH_TOKEN`` is set.
_PUBLIC_ENDPOINTS = frozenset({"page.index", "static", "meta.health", "meta.metrics"})
_MESSAGES = {
    400: "the request is malformed",
    401: "missing or wrong bearer token",
    404: "no such route",
    405: "method not allowed on this route",
    413: "the request body is too large",
    415: "unsupported media type",
}
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


class _Stamp:
    """WSGI middleware noting when a request reached the app (for the first-byte metric)."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ[RECEIVED_AT_KEY] = time.perf_counter()
        return self.wsgi_app(environ, start_response)


def _settings(config: Settings | Mapping[str, Any] | None) -> Settings:
    if isinstance(config, Settings):
        return config
    settings = Settings.from_env()
    return settings.with_overrides(config) if config else settings


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """The service's Flask app.

    ``config`` is a ``Settings``, a mapping of ``Settings`` fields overriding the environment,
    or ``None`` to read everything from the environment.
    """
    settings = _settings(config)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.wsgi_app = AccessLog(  # type: ignore[method-assign]
        _Stamp(app.wsgi_app), send_timeout_s=settings.send_timeout_s, enabled=settings.access_log
    )
    BackendAI(app, settings)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    _register_hooks(app, settings)
    _register_error_handlers(app, secrets=(settings.openai_api_key, settings.auth_token))
    return app


def _register_hooks(app: Flask, settings: Settings) -> None:
    @app.before_request
    def stamp_and_authenticate() -> tuple[Response, int] | None:
        g.received_at = request.environ.get(RECEIVED_AT_KEY, time.perf_counter())
        token = settings.auth_token
        if token is None or request.method == "OPTIONS":
            return None
        if request.endpoint is None or request.endpoint in _PUBLIC_ENDPOINTS:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            supplied.strip().encode(), token.encode()
        ):
            return _error(401, "unauthorized", _MESSAGES[401])
        return None

    @app.after_request
    def count_and_cors(response: Response) -> Response:
        get_state(app).metrics.requests.labels(
            request.endpoint or "unmatched", str(response.status_code)
        ).inc()
        origin = request.headers.get("Origin")
        if origin and ("*" in settings.cors_origins or origin in settings.cors_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id"
            response.headers["Access-Control-Max-Age"] = "600"
            response.vary.add("Origin")
        return response


def _register_error_handlers(app: Flask, *, secrets: Iterable[str | None]) -> None:
    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> tuple[Response, int]:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(ConfigError)
    def config_error(exc: ConfigError) -> tuple[Response, int]:
        # Raised by StreamConfig/RunOptions built from a request's values: bad input, not a bug.
        return _error(422, "invalid_value", str(exc))

    @app.errorhandler(LifecycleError)
    def lifecycle_error(exc: LifecycleError) -> tuple[Response, int]:
        return _error(503, "shutting_down", "the server is shutting down; retry shortly")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        response = exc.get_response()
        response.data = jsonify(
            {
                "error": {
                    "code": _CODES.get(status, "http_error"),
                    "message": _MESSAGES.get(status, exc.name.lower()),
                }
            }
        ).get_data()
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> tuple[Response, int]:
        logger.error(
            "unhandled %s in %s %s",
            type(exc).__name__,
            request.method,
            request.endpoint or "unmatched",
        )
        if logger.isEnabledFor(logging.DEBUG):
            known = [secret for secret in secrets if secret]
            logger.debug("traceback: %s", redacted_traceback(exc, known))
        return _error(500, "internal", "internal server error")
