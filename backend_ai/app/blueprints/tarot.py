"""``POST /tarot/<spread>-stream``: a tarot reading as one stream on the same pooled client."""

from __future__ import annotations

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, stream_plan
from backend_ai.app.runs import ROUTE_FIELDS, draw, tarot_plan, tarot_positions

__all__ = ["bp", "draw"]

bp = Blueprint("tarot", __name__, url_prefix="/tarot")


@bp.post("/<spread>-stream")
def reading_stream(spread: str) -> Response:
    """``{"question": str}`` -> one section, ``reading``; unknown spreads are a 404."""
    tarot_positions(spread)  # an unknown spread is a 404 before the body is looked at
    req = parse(ROUTE_FIELDS["tarot"])
    return stream_plan(req, tarot_plan(req, spread))
