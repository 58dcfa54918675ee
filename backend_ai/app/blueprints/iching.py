"""``POST /iching/reading-stream``: an I Ching reading in three parallel sections."""

from __future__ import annotations

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, stream_plan
from backend_ai.app.runs import ROUTE_FIELDS, iching_plan

__all__ = ["bp"]

bp = Blueprint("iching", __name__, url_prefix="/iching")


@bp.post("/reading-stream")
def reading_stream() -> Response:
    """``{"question": str, "hexagram"?: 1-64}`` -> three sections (see ``runs.iching_plan``)."""
    req = parse(ROUTE_FIELDS["iching"])
    return stream_plan(req, iching_plan(req))
