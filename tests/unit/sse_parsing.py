"""A real SSE client parser (httpx-sse's decoders) for checking what the engine puts on the wire."""

from __future__ import annotations

from collections.abc import Iterable

from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from httpx_sse._models import ServerSentEvent

__all__ = ["parse_sse"]


def parse_sse(pieces: Iterable[str]) -> list[ServerSentEvent]:
    """Every event a browser-like SSE client would dispatch from this text, fed piece by piece."""
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        for line in lines.decode(piece):
            event = decoder.decode(line)
            if event is not None:
                events.append(event)
    for line in lines.flush():
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events
