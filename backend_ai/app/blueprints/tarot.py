"""``POST /tarot/<spread>-stream``: a tarot reading as one stream on the same pooled client."""

from __future__ import annotations

import random

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, preset_config, stream
from backend_ai.app.prompts import TAROT_DECK, TAROT_SECTION, TAROT_SPREADS
from backend_ai.app.validation import RequestError, required_text

__all__ = ["bp", "draw"]

bp = Blueprint("tarot", __name__, url_prefix="/tarot")
_rng = random.SystemRandom()


def draw(positions: tuple[str, ...]) -> list[str]:
    """One card per position, without repeats, each upright or reversed."""
    cards = _rng.sample(TAROT_DECK, len(positions))
    return [
        f"{position}: {card}{' (reversed)' if _rng.random() < 0.5 else ''}"
        for position, card in zip(positions, cards, strict=True)
    ]


@bp.post("/<spread>-stream")
def reading_stream(spread: str) -> Response:
    """``{"question": str}`` -> one section, ``reading``; unknown spreads are a 404."""
    positions = TAROT_SPREADS.get(spread)
    if positions is None:
        raise RequestError(
            404,
            "unknown_spread",
            f"unknown tarot spread; available: {', '.join(TAROT_SPREADS)}",
        )
    req = parse(("question",))
    question = required_text(req.body, "question", max_chars=req.state.settings.max_text_chars)
    cards = draw(positions)
    prompt = TAROT_SECTION.render(spread=spread, cards="\n".join(cards), question=question)
    return stream(
        req,
        route="tarot",
        configs=[preset_config(req, TAROT_SECTION, prompt)],
        input_data={"question": question, "spread": spread, "cards": cards},
        reading={"spread": spread, "cards": cards},
    )
