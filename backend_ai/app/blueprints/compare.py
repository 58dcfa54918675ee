"""``POST /compare/stream``: one prompt to up to nine models, one section per model."""

from __future__ import annotations

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, stream_plan
from backend_ai.app.runs import ROUTE_FIELDS, compare_plan

__all__ = ["bp"]

bp = Blueprint("compare", __name__, url_prefix="/compare")


@bp.post("/stream")
def compare_stream() -> Response:
    """``{"prompt": str, "models": [str, ...], "history"?: [...]}`` -> a section per model."""
    req = parse(ROUTE_FIELDS["compare"])
    return stream_plan(req, compare_plan(req))
