"""Reading the service's SSE responses in tests: whole bodies, and live over a real socket."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["Frame", "LiveStream", "check_protocol", "data_events", "parse_frames"]


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


def check_protocol(frames: list[Frame]) -> dict[str, str]:
    """Assert the protocol of docs/PROTOCOL.md on a complete run; the text of each section."""
    evs = data_events(frames)
    # The app-level ``reading`` event (tarot, I Ching) may come before the engine's frames.
    if evs and evs[0]["type"] == "reading":
        assert evs[0]["request_id"] == evs[1]["request_id"], evs[:2]
        evs = evs[1:]
    assert evs, "no events"
    assert evs[0]["type"] == "start", evs[0]
    assert evs[-1]["type"] == "done", evs[-1]
    assert [e["type"] for e in evs].count("start") == 1
    assert [e["type"] for e in evs].count("done") == 1
    sections = evs[0]["sections"]
    texts = {name: "" for name in sections}
    seqs = {name: 0 for name in sections}
    reasoning_seqs = {name: 0 for name in sections}
    ended: dict[str, str] = {}
    for event in evs[1:-1]:
        kind = event["type"]
        if kind == "rate_limit":
            continue
        name = event["section"]
        assert name in texts, f"event for unknown section {name!r}"
        assert name not in ended, f"event after the end of {name!r}: {event}"
        if kind == "chunk":
            assert event["seq"] == seqs[name], f"{name}: seq {event['seq']}, expected {seqs[name]}"
            seqs[name] += 1
            texts[name] += event["content"]
        elif kind == "reasoning":  # a reasoning model's thinking: numbered apart, not text
            assert event["seq"] == reasoning_seqs[name], f"{name}: reasoning seq {event['seq']}"
            reasoning_seqs[name] += 1
        elif kind == "section_done":
            assert event["chunks"] == seqs[name]
            assert event["chars"] == len(texts[name])
            ended[name] = "done"
        elif kind == "error":
            assert event["chunks"] == seqs[name]
            ended[name] = "error"
        else:
            assert kind == "section_start", event
    assert set(ended) == set(sections), f"sections without an end: {set(sections) - set(ended)}"
    done = evs[-1]
    assert sorted(done["completed"]) == sorted(n for n, s in ended.items() if s == "done")
    assert sorted(done["failed"]) == sorted(n for n, s in ended.items() if s == "error")
    return texts


@dataclass
class LiveStream:
    """A streaming POST over a real socket, frames timestamped as they arrive."""

    response: httpx.Response
    sent_at: float
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
