"""Operational routes: ``/health``, ``/stats``, ``/metrics`` and ``/history``."""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

from flask import Blueprint, Response, jsonify, request

from backend_ai import __version__
from backend_ai.app.extension import get_state
from backend_ai.app.metrics import CONTENT_TYPE_LATEST
from backend_ai.app.prompts import TAROT_SPREADS
from backend_ai.app.settings import MAX_COMPARE_MODELS, SUGGESTED_COMPARE_MODELS
from backend_ai.app.validation import RequestError
from backend_ai.streaming import get_stream_performance_stats

__all__ = ["bp"]

logger = logging.getLogger(__name__)

bp = Blueprint("meta", __name__)

_MAX_HISTORY_LIMIT = 100


@bp.get("/health")
def health() -> tuple[Response, int]:
    """Liveness plus what the page needs to know; 503 while the server drains."""
    state = get_state()
    settings = state.settings
    draining = state.draining.is_set()
    body: dict[str, Any] = {
        "status": "draining" if draining else "ok",
        "version": __version__,
        "upstream": "simulator" if settings.upstream_is_simulator else "openai-compatible",
        "auth_required": settings.auth_token is not None,
        "history": settings.history_enabled,
        "max_text_chars": settings.max_text_chars,
        "models": dict(settings.models),
        "compare_models": list(settings.compare_models or SUGGESTED_COMPARE_MODELS),
        "compare_allow_list": bool(settings.compare_models),
        "max_compare_models": MAX_COMPARE_MODELS,
        "tarot_spreads": list(TAROT_SPREADS),
    }
    return jsonify(body), 503 if draining else 200


@bp.get("/stats")
def stats() -> Response:
    """The engine's per-section performance statistics of the process that answered.

    Per process, not summed: averages and percentiles do not add up across workers (``/metrics``
    is the sum). The headers say which worker answered and how many are alive, so a caller
    knows how much of the service the body describes.
    """
    response = jsonify(get_stream_performance_stats())
    response.headers["X-Backend-AI-Worker"] = str(os.getpid())
    response.headers["X-Backend-AI-Workers"] = str(get_state().metrics.live_workers())
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format."""
    return Response(get_state().metrics.render(), content_type=CONTENT_TYPE_LATEST)


@bp.get("/history")
def history() -> Response:
    """``?limit=N`` (1-100, default 20) most recent readings, newest first."""
    store = get_state().history
    if store is None:
        raise RequestError(404, "history_disabled", "history is disabled (BACKEND_AI_HISTORY_DB)")
    raw = request.args.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_HISTORY_LIMIT:
        raise RequestError(
            422, "invalid_value", f"limit must be an integer from 1 to {_MAX_HISTORY_LIMIT}"
        )
    try:
        readings = store.recent(limit)
    except sqlite3.Error as exc:
        logger.warning("reading the history failed: %s", type(exc).__name__)
        raise RequestError(503, "history_unavailable", "the history is unavailable") from None
    return jsonify({"readings": readings})
