"""``POST /dream/interpret-stream``: a dream read in three parallel sections."""

from __future__ import annotations

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, preset_config, stream
from backend_ai.app.prompts import DREAM_SECTIONS
from backend_ai.app.validation import required_text

__all__ = ["bp"]

bp = Blueprint("dream", __name__, url_prefix="/dream")


@bp.post("/interpret-stream")
def interpret_stream() -> Response:
    """``{"dream": str}`` -> sections ``summary``, ``symbols``, ``recommendations``."""
    req = parse(("dream",))
    dream = required_text(req.body, "dream", max_chars=req.state.settings.max_text_chars)
    configs = [preset_config(req, p, p.render(dream=dream)) for p in DREAM_SECTIONS]
    return stream(req, route="dream", configs=configs, input_data={"dream": dream})
