"""``POST /compare/stream``: one prompt to up to nine models, one section per model (seed 001)."""

from __future__ import annotations

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import parse, preset_config, stream
from backend_ai.app.prompts import COMPARE_SECTION
from backend_ai.app.settings import MAX_COMPARE_MODELS
from backend_ai.app.validation import model_list, required_text

__all__ = ["bp"]

bp = Blueprint("compare", __name__, url_prefix="/compare")


@bp.post("/stream")
def compare_stream() -> Response:
    """``{"prompt": str, "models": [str, ...]}`` -> a section named after each model."""
    req = parse(("prompt", "models"))
    settings = req.state.settings
    prompt = required_text(req.body, "prompt", max_chars=settings.max_text_chars)
    models = model_list(
        req.body, "models", max_models=MAX_COMPARE_MODELS, allowed=settings.compare_models
    )
    user_text = COMPARE_SECTION.render(prompt=prompt)
    configs = [
        preset_config(req, COMPARE_SECTION, user_text, section=model, model=model)
        for model in models
    ]
    return stream(
        req, route="compare", configs=configs, input_data={"prompt": prompt, "models": models}
    )
