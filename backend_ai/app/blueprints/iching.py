"""``POST /iching/reading-stream``: an I Ching reading in three parallel sections."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, preset_config, stream
from backend_ai.app.prompts import HEXAGRAMS, ICHING_SECTIONS
from backend_ai.app.validation import optional_int, required_text

__all__ = ["bp"]

bp = Blueprint("iching", __name__, url_prefix="/iching")


@bp.post("/reading-stream")
def reading_stream() -> Response:
    """``{"question": str, "hexagram"?: 1-64}`` -> ``hexagram``, ``interpretation``, ``guidance``.

    Without a hexagram, one is cast here (uniformly; the coin method's bias adds nothing to a
    demo of parallel streams).
    """
    req = parse(("question", "hexagram"))
    question = required_text(req.body, "question", max_chars=req.state.settings.max_text_chars)
    number = optional_int(req.body, "hexagram", minimum=1, maximum=len(HEXAGRAMS))
    if number is None:
        number = secrets.randbelow(len(HEXAGRAMS)) + 1
    values = {"question": question, "number": str(number), "name": HEXAGRAMS[number - 1]}
    configs = [preset_config(req, p, p.render(**values)) for p in ICHING_SECTIONS]
    return stream(
        req,
        route="iching",
        configs=configs,
        input_data={"question": question, "hexagram": number},
        reading={"hexagram": {"number": number, "name": HEXAGRAMS[number - 1]}},
    )
