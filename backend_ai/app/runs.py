"""What each streaming route runs, free of any web framework.

A route takes a decoded JSON body, checks it and turns it into a ``RunPlan``: the sections to
stream and what to remember of the request. The Flask blueprints and the Django integration
both call these functions, so the two services accept exactly the same bodies, refuse exactly
the same ones with the same ``RequestError``, and send the same prompts upstream. Everything
that can still fail with a 4xx is checked here, before any byte is streamed.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend_ai.app.prompts import (
    COMPARE_SECTION,
    DREAM_SECTIONS,
    HEXAGRAMS,
    ICHING_SECTIONS,
    TAROT_DECK,
    TAROT_SECTION,
    TAROT_SPREADS,
    SectionPrompt,
)
from backend_ai.app.settings import MAX_COMPARE_MODELS, Settings
from backend_ai.app.validation import (
    RequestError,
    check_fields,
    history_turns,
    model_list,
    optional_int,
    required_text,
    sim_controls,
    stream_mode,
)
from backend_ai.streaming.config import PRESETS, StreamConfig

__all__ = [
    "COMMON_FIELDS",
    "ROUTE_FIELDS",
    "RunPlan",
    "StreamRequest",
    "check_sim_sections",
    "compare_plan",
    "draw",
    "dream_plan",
    "iching_plan",
    "preset_config",
    "stream_request",
    "tarot_plan",
    "tarot_positions",
]

#: Fields every streaming route accepts besides its own.
COMMON_FIELDS = ("mode", "sim", "sim_sections")

#: Each route's own fields (``history``: earlier turns of a conversation, where a follow-up
#: question makes sense).
ROUTE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "dream": ("dream", "history"),
    "iching": ("question", "hexagram"),
    "tarot": ("question",),
    "compare": ("prompt", "models", "history"),
}

_rng = random.SystemRandom()


@dataclass
class StreamRequest:
    """The validated common part of a streaming request."""

    body: dict[str, Any]
    mode: str
    settings: Settings

    def sim_for(self, section: str) -> dict[str, Any] | None:
        """The simulator controls for one section: ``sim`` overlaid by ``sim_sections[section]``."""
        merged: dict[str, Any] = dict(self.body.get("sim") or {})
        merged.update((self.body.get("sim_sections") or {}).get(section) or {})
        return merged or None


@dataclass(frozen=True)
class RunPlan:
    """What one request streams: the route's name, its sections, and the input to remember.

    ``reading``: what the server drew or cast for this request (tarot cards, a hexagram), sent
    as the app-level ``reading`` event ahead of the run's frames so a page can show it at once;
    None sends none.
    """

    route: str
    configs: list[StreamConfig]
    input_data: dict[str, Any] = field(default_factory=dict)
    reading: dict[str, Any] | None = None


def stream_request(
    body: dict[str, Any], fields: Sequence[str], settings: Settings, *, page_mode: bool = True
) -> StreamRequest:
    """Check the body for unknown fields, the mode and the simulator controls
    (``page_mode=False``: the caller checks ``mode`` itself)."""
    check_fields(body, (*fields, *COMMON_FIELDS))
    mode = stream_mode(body) if page_mode else ""
    if "sim" in body or "sim_sections" in body:
        if not settings.upstream_is_simulator:
            raise RequestError(
                422,
                "unknown_field",
                "fields 'sim' and 'sim_sections' are only accepted when the upstream is the "
                "simulator",
            )
        sim = body.get("sim")
        if sim is not None and not isinstance(sim, dict):
            raise RequestError(422, "invalid_type", "field 'sim' must be a JSON object")
        per_section = body.get("sim_sections")
        if per_section is not None and (
            not isinstance(per_section, dict)
            or not all(isinstance(v, dict) for v in per_section.values())
        ):
            raise RequestError(
                422,
                "invalid_type",
                "field 'sim_sections' must map section names to JSON objects",
            )
        defaults = settings.sim_defaults
        merged = sim_controls(sim, field="sim", defaults=defaults)
        for controls in (per_section or {}).values():
            sim_controls({**merged, **controls}, field="sim_sections", defaults=defaults)
    return StreamRequest(body, mode, settings)


def preset_config(
    req: StreamRequest,
    prompt: SectionPrompt,
    user_text: str,
    *,
    section: str | None = None,
    model: str | None = None,
    history: Sequence[Mapping[str, str]] = (),
) -> StreamConfig:
    """A section sized by its prompt's preset, with the configured model for that preset.

    With ``history``, the section is a conversation: the prompt's system message, the earlier
    turns, then ``user_text`` as the newest user turn.
    """
    preset = PRESETS[prompt.complexity]
    name = section or prompt.section
    sim = req.sim_for(name)
    model = model or req.settings.models[prompt.complexity]
    extra_body = {"sim": sim} if sim else None
    if history:
        conversation = [
            {"role": "system", "content": prompt.system},
            *({"role": t["role"], "content": t["content"]} for t in history),
            {"role": "user", "content": user_text},
        ]
        return StreamConfig(
            name,
            model=model,
            temperature=preset.temperature,
            max_tokens=preset.max_tokens,
            extra_body=extra_body,
            conversation=conversation,
        )
    return StreamConfig(
        name,
        user_text,
        model=model,
        temperature=preset.temperature,
        max_tokens=preset.max_tokens,
        system_prompt=prompt.system,
        extra_body=extra_body,
    )


def check_sim_sections(req: StreamRequest, configs: Sequence[StreamConfig]) -> None:
    """``sim_sections`` may only name sections the route really has."""
    names = {c.section_name for c in configs}
    unknown = sorted(set(req.body.get("sim_sections") or {}) - names)
    if unknown:
        raise RequestError(
            422,
            "unknown_section",
            f"'sim_sections' names no section of this route; sections: {', '.join(sorted(names))}",
        )


def _history(req: StreamRequest) -> list[dict[str, str]]:
    return history_turns(req.body, "history", max_chars=req.settings.max_text_chars)


def dream_plan(req: StreamRequest) -> RunPlan:
    """``{"dream": str, "history"?: [...]}`` -> ``summary``, ``symbols``, ``recommendations``."""
    dream = required_text(req.body, "dream", max_chars=req.settings.max_text_chars)
    history = _history(req)
    configs = [
        preset_config(req, p, p.render(dream=dream), history=history) for p in DREAM_SECTIONS
    ]
    input_data: dict[str, Any] = {"dream": dream}
    if history:
        input_data["history"] = history
    return RunPlan("dream", configs, input_data)


def iching_plan(req: StreamRequest) -> RunPlan:
    """``{"question": str, "hexagram"?: 1-64}`` -> ``hexagram``, ``interpretation``, ``guidance``.

    Without a hexagram, one is cast here (uniformly; the coin method's bias adds nothing to a
    demo of parallel streams).
    """
    question = required_text(req.body, "question", max_chars=req.settings.max_text_chars)
    number = optional_int(req.body, "hexagram", minimum=1, maximum=len(HEXAGRAMS))
    if number is None:
        number = secrets.randbelow(len(HEXAGRAMS)) + 1
    values = {"question": question, "number": str(number), "name": HEXAGRAMS[number - 1]}
    configs = [preset_config(req, p, p.render(**values)) for p in ICHING_SECTIONS]
    return RunPlan(
        "iching",
        configs,
        {"question": question, "hexagram": number},
        reading={"hexagram": {"number": number, "name": HEXAGRAMS[number - 1]}},
    )


def draw(positions: tuple[str, ...]) -> list[str]:
    """One card per position, without repeats, each upright or reversed."""
    cards = _rng.sample(TAROT_DECK, len(positions))
    return [
        f"{position}: {card}{' (reversed)' if _rng.random() < 0.5 else ''}"
        for position, card in zip(positions, cards, strict=True)
    ]


def tarot_positions(spread: str) -> tuple[str, ...]:
    """The positions of a spread; an unknown spread is a 404."""
    positions = TAROT_SPREADS.get(spread)
    if positions is None:
        raise RequestError(
            404,
            "unknown_spread",
            f"unknown tarot spread; available: {', '.join(TAROT_SPREADS)}",
        )
    return positions


def tarot_plan(req: StreamRequest, spread: str) -> RunPlan:
    """``{"question": str}`` -> one section, ``reading``."""
    positions = tarot_positions(spread)
    question = required_text(req.body, "question", max_chars=req.settings.max_text_chars)
    cards = draw(positions)
    prompt = TAROT_SECTION.render(spread=spread, cards="\n".join(cards), question=question)
    return RunPlan(
        "tarot",
        [preset_config(req, TAROT_SECTION, prompt)],
        {"question": question, "spread": spread, "cards": cards},
        reading={"spread": spread, "cards": cards},
    )


def compare_plan(req: StreamRequest) -> RunPlan:
    """``{"prompt": str, "models": [str, ...], "history"?: [...]}`` -> a section per model."""
    settings = req.settings
    prompt = required_text(req.body, "prompt", max_chars=settings.max_text_chars)
    models = model_list(
        req.body, "models", max_models=MAX_COMPARE_MODELS, allowed=settings.compare_models
    )
    history = _history(req)
    user_text = COMPARE_SECTION.render(prompt=prompt)
    configs = [
        preset_config(req, COMPARE_SECTION, user_text, section=model, model=model, history=history)
        for model in models
    ]
    input_data: dict[str, Any] = {"prompt": prompt, "models": models}
    if history:
        input_data["history"] = history
    return RunPlan("compare", configs, input_data)
