"""``POST /batch/stream``: one instruction applied to many items, results streamed as they finish.

Body: ``{"instruction": str, "items": [str | {"id": str, "text": str}, ...], "mode":
"as_completed" | "ordered", "on_error": "continue" | "retry" | "fail_fast"}`` (plus ``sim``
when the upstream is the simulator). Every item is checked before anything streams — their
number (``BACKEND_AI_BATCH_MAX_ITEMS``), their size (``BACKEND_AI_BATCH_MAX_ITEM_CHARS``),
unique ids — so a bad request is a 4xx JSON error, never a stream that fails half way.

The answer is SSE: ``batch_start``; an ``item`` event per item, whole, as it ends (``text``,
``finish_reason``, ``usage``, or ``error``); ``progress`` events (done, failed, in flight,
total, items per second, tokens) at most twice a second; and ``done`` last. A client that goes
away closes the run, which cancels every item still streaming upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response

from backend_ai.app.blueprints._common import StreamRequest, parse
from backend_ai.app.extension import ServiceState
from backend_ai.app.streaming import SSE_HEADERS
from backend_ai.app.validation import RequestError, required_text
from backend_ai.streaming import StreamConfig
from backend_ai.streaming.batch import (
    BatchDone,
    BatchItem,
    BatchMode,
    BatchOptions,
    BatchStarted,
    ErrorPolicy,
)
from backend_ai.streaming.config import PRESETS
from backend_ai.streaming.events import Event
from backend_ai.streaming.sse import encode_event

__all__ = ["bp"]

logger = logging.getLogger(__name__)

bp = Blueprint("batch", __name__, url_prefix="/batch")

#: Items of a batch use the small preset: many short answers.
_PRESET = "simple"
_SYSTEM = "Apply the user's instruction to the item that follows it. Answer with the result only."


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or value not in allowed:
        raise RequestError(
            422, "invalid_value", f"field '{name}' must be one of: {', '.join(allowed)}"
        )
    return value


def _items(req: StreamRequest, instruction: str) -> list[BatchItem]:
    settings = req.state.settings
    raw = req.body.get("items")
    if not isinstance(raw, list):
        raise RequestError(422, "invalid_type", "field 'items' must be a list")
    if not raw:
        raise RequestError(422, "empty_field", "field 'items' must not be empty")
    if len(raw) > settings.batch_max_items:
        raise RequestError(
            422,
            "too_many_items",
            f"field 'items' has {len(raw)} items; the maximum is {settings.batch_max_items}",
        )
    preset = PRESETS[_PRESET]
    sim = req.sim_for("item")
    items: list[BatchItem] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        item_id: Any
        text: Any
        if isinstance(entry, str):
            item_id, text = str(index), entry
        elif isinstance(entry, dict) and set(entry) <= {"id", "text"}:
            item_id, text = entry.get("id", str(index)), entry.get("text")
        else:
            raise RequestError(
                422, "invalid_item", f'items[{index}] must be a string or {{"id", "text"}}'
            )
        if not isinstance(item_id, str) or not item_id or len(item_id) > 200:
            raise RequestError(422, "invalid_item", f"items[{index}].id must be a short string")
        if item_id in seen:
            raise RequestError(422, "duplicate_id", f"items[{index}]: id {item_id!r} repeats")
        seen.add(item_id)
        if not isinstance(text, str) or not text.strip():
            raise RequestError(422, "invalid_item", f"items[{index}] must have non-empty text")
        if len(text) > settings.batch_max_item_chars:
            raise RequestError(
                422,
                "item_too_long",
                f"items[{index}] has {len(text)} characters; "
                f"the maximum is {settings.batch_max_item_chars}",
            )
        items.append(
            BatchItem(
                item_id,
                StreamConfig(
                    "item",
                    f"{instruction}\n\n{text.strip()}",
                    model=settings.models[_PRESET],
                    temperature=preset.temperature,
                    max_tokens=preset.max_tokens,
                    system_prompt=_SYSTEM,
                    extra_body={"sim": sim} if sim else None,
                ),
            )
        )
    return items


@bp.post("/stream")
def batch_stream() -> Response:
    req = parse(("instruction", "items", "on_error"), page_mode=False)
    state = req.state
    if "sim_sections" in req.body:
        raise RequestError(422, "unknown_field", "field 'sim_sections' is not used by batches")
    mode = _choice(req.body, "mode", tuple(m.value for m in BatchMode), BatchMode.AS_COMPLETED)
    on_error = _choice(req.body, "on_error", tuple(p.value for p in ErrorPolicy), ErrorPolicy.RETRY)
    instruction = required_text(req.body, "instruction", max_chars=state.settings.max_text_chars)
    items = _items(req, instruction)
    runner = state.batch
    assert runner is not None
    events = runner.run(items, options=_options(state, mode, on_error))
    try:
        started = next(events)  # before any upstream call: errors here are still JSON
    except BaseException:
        events.close()
        raise
    assert isinstance(started, BatchStarted)
    response = Response(_frames(state, started, events), mimetype="text/event-stream")
    response.headers.update(SSE_HEADERS)
    response.headers["X-Request-Id"] = started.request_id
    return response


def _options(state: ServiceState, mode: str, on_error: str) -> BatchOptions:
    runner = state.batch
    assert runner is not None
    return replace(runner.options, mode=BatchMode(mode), on_error=ErrorPolicy(on_error))


def _frames(
    state: ServiceState, started: Event, events: Generator[Event, None, None]
) -> Iterator[bytes]:
    metrics = state.metrics
    metrics.active_streams.inc()
    try:
        yield encode_event(started).encode()
        for event in events:
            yield encode_event(event).encode()
            if isinstance(event, BatchDone):
                return
    except Exception as exc:  # a bug in the run: log the type only, still end with ``done``
        request_id = getattr(started, "request_id", "")
        logger.error("batch %s failed: %s", request_id, type(exc).__name__)
        yield encode_event(
            BatchDone(
                request_id=request_id, done=0, failed=0, tokens=0, duration_ms=0.0, cancelled=True
            )
        ).encode()
    finally:
        # Also reached when the client went away: closing cancels what is still upstream.
        events.close()
        metrics.active_streams.dec()
