"""Server-Sent-Events encoding: events in, text frames out.

Every frame is ``data: <one JSON object>`` followed by a blank line. JSON escapes every line
break (and ``ensure_ascii`` escapes every non-ASCII character), so model output containing
``\\n\\ndata: `` or ``\\r`` can never end a frame or inject an event. ``format_sse`` is the general
encoder for arbitrary text: it splits data on ``\\r\\n``, ``\\r`` and ``\\n`` as the SSE spec does
and strips line breaks from ``event`` and ``id``. Heartbeats are comments (``: ping``), which
clients ignore.
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring_ascii

from backend_ai.streaming.events import ContentChunk, Event, Heartbeat

__all__ = ["HEARTBEAT_FRAME", "encode_comment", "encode_event", "format_sse"]

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_encode_json = json.JSONEncoder(separators=(",", ":")).encode

HEARTBEAT_FRAME = ": ping\n\n"


def format_sse(
    data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None
) -> str:
    """One SSE message; multi-line ``data`` becomes several ``data:`` lines."""
    lines = []
    if event is not None:
        lines.append(f"event: {_LINE_BREAKS.sub(' ', event)}")
    if id is not None:
        lines.append(f"id: {_LINE_BREAKS.sub(' ', id)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    lines.extend(f"data: {line}" for line in _LINE_BREAKS.split(data))
    return "\n".join(lines) + "\n\n"


def encode_comment(text: str) -> str:
    """An SSE comment; every line of ``text`` becomes its own comment line."""
    return "".join(f": {line}\n" for line in _LINE_BREAKS.split(text)) + "\n"


def encode_event(event: Event) -> str:
    """The SSE frame of one event. Chunks take a fast path: they are most of the traffic."""
    if type(event) is ContentChunk:
        return (
            f'data: {{"type":"chunk","section":{encode_basestring_ascii(event.section)},'
            f'"seq":{event.seq},"content":{encode_basestring_ascii(event.content)}}}\n\n'
        )
    if type(event) is Heartbeat:
        return HEARTBEAT_FRAME
    return f"data: {_encode_json(event.payload())}\n\n"
