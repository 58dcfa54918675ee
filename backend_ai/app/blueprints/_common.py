"""What every streaming route does the same way: common fields, section configs, the response.

A streaming route validates its own fields, builds its ``StreamConfig`` list and hands it to
``stream``; everything that could still fail with a 4xx is checked before that call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Response, g, request

from backend_ai.app.extension import ServiceState, get_state
from backend_ai.app.prompts import SectionPrompt
from backend_ai.app.services.parallel_streaming import StreamConfig
from backend_ai.app.services.parallel_streaming.config import PRESETS
from backend_ai.app.streaming import open_run, sse_response
from backend_ai.app.validation import RequestError, check_fields, json_body, stream_mode

__all__ = ["COMMON_FIELDS", "StreamRequest", "parse", "preset_config", "stream"]

#: Fields every streaming route accepts besides its own.
COMMON_FIELDS = ("mode", "sim", "sim_sections")


class StreamRequest:
    """The validated common part of a streaming request."""

    def __init__(self, body: dict[str, Any], mode: str, state: ServiceState) -> None:
        self.body = body
        self.mode = mode
        self.state = state

    def sim_for(self, section: str) -> dict[str, Any] | None:
        """The simulator controls for one section: ``sim`` overlaid by ``sim_sections[section]``."""
        merged: dict[str, Any] = dict(self.body.get("sim") or {})
        merged.update((self.body.get("sim_sections") or {}).get(section) or {})
        return merged or None


def parse(fields: Sequence[str], *, page_mode: bool = True) -> StreamRequest:
    """The request's JSON body, checked for unknown fields, mode and simulator controls.

    ``page_mode=False``: the route checks ``mode`` itself (batches have modes of their own).
    """
    state = get_state()
    body = json_body(request)
    check_fields(body, (*fields, *COMMON_FIELDS))
    mode = stream_mode(body) if page_mode else ""
    if "sim" in body or "sim_sections" in body:
        if not state.settings.upstream_is_simulator:
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
    return StreamRequest(body, mode, state)


def preset_config(
    req: StreamRequest,
    prompt: SectionPrompt,
    user_text: str,
    *,
    section: str | None = None,
    model: str | None = None,
) -> StreamConfig:
    """A section sized by its prompt's preset, with the configured model for that preset."""
    preset = PRESETS[prompt.complexity]
    name = section or prompt.section
    sim = req.sim_for(name)
    return StreamConfig(
        name,
        user_text,
        model=model or req.state.settings.models[prompt.complexity],
        temperature=preset.temperature,
        max_tokens=preset.max_tokens,
        system_prompt=prompt.system,
        extra_body={"sim": sim} if sim else None,
    )


def stream(
    req: StreamRequest,
    *,
    route: str,
    configs: Sequence[StreamConfig],
    input_data: Mapping[str, Any],
) -> Response:
    """Open the run and answer with its SSE response."""
    names = {c.section_name for c in configs}
    unknown = sorted(set(req.body.get("sim_sections") or {}) - names)
    if unknown:
        raise RequestError(
            422,
            "unknown_section",
            f"'sim_sections' names no section of this route; sections: {', '.join(sorted(names))}",
        )
    request_id = uuid.uuid4().hex
    run = open_run(
        req.state,
        route=route,
        request_id=request_id,
        configs=configs,
        mode=req.mode,
        input_data=input_data,
        received_at=g.get("received_at", time.perf_counter()),
    )
    return sse_response(req.state, run)
