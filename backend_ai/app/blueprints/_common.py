"""What every streaming route does the same way in Flask: the request, the response.

A streaming route parses the request here, lets ``backend_ai.app.runs`` (shared with the Django
integration) validate its own fields and build its ``StreamConfig`` list, and hands the plan
to ``stream_plan``; everything that could still fail with a 4xx is checked before that call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Response, g, request

from backend_ai.app import runs
from backend_ai.app.access import ACCESS_KEY
from backend_ai.app.extension import ServiceState, get_state
from backend_ai.app.runs import (
    COMMON_FIELDS,
    RunPlan,
    check_sim_sections,
    preset_config,
    stream_request,
)
from backend_ai.app.streaming import open_run, sse_response
from backend_ai.app.validation import json_body
from backend_ai.streaming import StreamConfig

__all__ = [
    "COMMON_FIELDS",
    "StreamRequest",
    "parse",
    "preset_config",
    "stream",
    "stream_plan",
]


class StreamRequest(runs.StreamRequest):
    """The validated common part of a streaming request, with the app's service state."""

    def __init__(self, body: dict[str, Any], mode: str, state: ServiceState) -> None:
        super().__init__(body, mode, state.settings)
        self.state = state


def parse(fields: Sequence[str], *, page_mode: bool = True) -> StreamRequest:
    """The request's JSON body, checked for unknown fields, mode and simulator controls.

    ``page_mode=False``: the route checks ``mode`` itself (batches have modes of their own).
    """
    state = get_state()
    checked = stream_request(json_body(request), fields, state.settings, page_mode=page_mode)
    return StreamRequest(checked.body, checked.mode, state)


def stream(
    req: StreamRequest,
    *,
    route: str,
    configs: Sequence[StreamConfig],
    input_data: Mapping[str, Any],
    reading: Mapping[str, Any] | None = None,
) -> Response:
    """Open the run and answer with its SSE response.

    ``reading``: what the server drew or cast for this reading (tarot cards, a hexagram), sent
    as the app-level ``reading`` event ahead of the run's frames so the page can show it at once.
    """
    check_sim_sections(req, configs)
    request_id = uuid.uuid4().hex
    run = open_run(
        req.state,
        route=route,
        request_id=request_id,
        configs=configs,
        mode=req.mode,
        input_data=input_data,
        received_at=g.get("received_at", time.perf_counter()),
        reading=reading,
    )
    # The access line (written when the server closes the response) reports on the run.
    request.environ[ACCESS_KEY] = run.recorder
    return sse_response(req.state, run)


def stream_plan(req: StreamRequest, plan: RunPlan) -> Response:
    """Open the run a route planned (``backend_ai.app.runs``) and answer with its response."""
    return stream(
        req,
        route=plan.route,
        configs=plan.configs,
        input_data=plan.input_data,
        reading=plan.reading,
    )
