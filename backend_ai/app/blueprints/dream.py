"""``POST /dream/interpret-stream``: a dream read in three parallel sections."""

from __future__ import annotations

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, stream_plan
from backend_ai.app.runs import ROUTE_FIELDS, dream_plan

__all__ = ["bp"]

bp = Blueprint("dream", __name__, url_prefix="/dream")


@bp.post("/interpret-stream")
def interpret_stream() -> Response:
    """``{"dream": str, "history"?: [...]}`` -> ``summary``, ``symbols``, ``recommendations``."""
    req = parse(ROUTE_FIELDS["dream"])
    return stream_plan(req, dream_plan(req))
