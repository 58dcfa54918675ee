"""Reading the service's SSE: a browser-like parser for engine output, whole bodies and live
responses for the service's.

``parse_sse`` reads text through httpx-sse's public ``EventSource``, the parsing of a real SSE
client, so a test of what the engine writes checks it against a parser that is not ours. The
service's own framing is simpler and stricter (every frame one ``data:`` line, or comment
lines): ``parse_frames`` and ``LiveStream`` read it and assert it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

__all__ = [
    "Frame",
    "LiveStream",
    "data_events",
    "iter_data_events",
    "parse_frames",
    "parse_sse",
    "parse_sse_body",
]


def parse_sse(pieces: Iterable[str]) -> list[ServerSentEvent]:
    """Every event a browser-like SSE client would dispatch from this text, fed piece by piece
    (each piece one read of a response body)."""
    response = httpx.Response(
        200,
        headers={"content-type": "text/event-stream; charset=utf-8"},
        content=(piece.encode() for piece in pieces),
    )
    return list(EventSource(response).iter_sse())


@dataclass(frozen=True)
class Frame:
    """One SSE message: a ``data`` event (``event`` set) or a comment (``comment`` set)."""

    event: dict[str, Any] | None = None
    comment: str | None = None
    at: float = 0.0  # perf_counter() when it was read (live streams only)

    @property
    def type(self) -> str:
        return "comment" if self.event is None else str(self.event["type"])


def _frame(block: str, at: float = 0.0) -> Frame | None:
    data: list[str] = []
    comment: str | None = None
    for line in block.split("\n"):
        if line.startswith(":"):
            comment = line[1:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line:
            raise AssertionError(f"unexpected SSE line {line!r}")
    if data:
        return Frame(event=json.loads("\n".join(data)), at=at)
    if comment is not None:
        return Frame(comment=comment, at=at)
    return None


def parse_frames(body: str) -> list[Frame]:
    """Every frame of a complete SSE body; asserts the body ends on a frame boundary."""
    assert body.endswith("\n\n") or not body, f"SSE body ends mid-frame: {body[-80:]!r}"
    frames = [_frame(block) for block in body.split("\n\n")]
    return [f for f in frames if f is not None]


def data_events(frames: list[Frame]) -> list[dict[str, Any]]:
    return [f.event for f in frames if f.event is not None]


def parse_sse_body(body: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``data`` events and the comments of a complete body; asserts the framing.

    Every frame must be exactly one ``data:`` line (the service's encoding) or comment lines,
    and the body must end on a frame boundary.
    """
    assert body.endswith("\n\n") or not body, f"body ends mid-frame: {body[-80:]!r}"
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    for block in body.split("\n\n")[:-1]:
        assert block, "an empty frame (three line breaks in a row)"
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            comments.extend(line[1:].strip() for line in lines)
            continue
        assert len(lines) == 1, f"a frame of several lines: {block[:120]!r}"
        assert "\r" not in block, f"a carriage return in a frame: {block[:120]!r}"
        assert lines[0].startswith("data: "), f"unexpected line {lines[0][:120]!r}"
        event = json.loads(lines[0][6:])
        assert isinstance(event, dict), event
        assert isinstance(event.get("type"), str), event
        events.append(event)
    return events, comments


@dataclass
class LiveStream:
    """A streaming response read over a real socket, frames timestamped as they arrive."""

    response: httpx.Response
    sent_at: float = 0.0
    frames: list[Frame] = field(default_factory=list)
    _buffer: str = ""

    def __iter__(self) -> Iterator[Frame]:
        for text in self.response.iter_text():
            now = time.perf_counter()
            self._buffer += text
            while "\n\n" in self._buffer:
                block, self._buffer = self._buffer.split("\n\n", 1)
                frame = _frame(block, now)
                if frame is not None:
                    self.frames.append(frame)
                    yield frame

    def read_all(self) -> list[Frame]:
        for _ in self:
            pass
        assert not self._buffer, f"stream ended mid-frame: {self._buffer[-80:]!r}"
        return self.frames


def iter_data_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The ``data`` events of a streaming response as they arrive (comments skipped)."""
    for frame in LiveStream(response):
        if frame.event is not None:
            yield frame.event
