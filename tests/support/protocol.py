"""The stream-protocol checker of docs/PROTOCOL.md, shared by the tests, the load test and the
soak test.

``ProtocolChecker`` follows one stream event by event and records what is wrong instead of
raising, so a load or soak run can count violations across thousands of streams and a client
that hangs up mid-stream can still be checked up to that point. ``check_stream`` runs it over
a complete stream and raises ``AssertionError`` listing every problem, for tests.

What it checks: an optional app-level ``reading`` event first (tarot, I Ching), with the run's
``request_id``; then ``start`` first and once, ``done`` last and once, both with the same
``request_id``; per section ``section_start`` at most once and before its chunks, chunks
numbered 0, 1, 2, ... (a gap is a loss, a repeat a duplicate), ``reasoning`` events numbered
apart from the text, exactly one end (``section_done`` or ``error``) that agrees with the
chunks and characters received, nothing after a section's end or after ``done``; ``done``'s
``completed`` and ``failed`` lists agree with how the sections ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .sse import Frame, data_events

__all__ = ["ProtocolChecker", "SectionOutcome", "check_protocol", "check_stream"]


@dataclass
class SectionOutcome:
    """What one section of a stream delivered and how it ended."""

    parts: list[str] = field(default_factory=list, repr=False)
    chunks: int = 0
    chars: int = 0
    reasoning: int = 0
    started: bool = False
    end: str | None = None  # "done" or "error"
    code: str | None = None
    message: str | None = None
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ProtocolChecker:
    """Follows one stream's events; collects protocol violations instead of raising."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.sections: dict[str, SectionOutcome] = {}
        self.reading: dict[str, Any] | None = None
        self.chunks = self.lost = self.duplicated = self.events_after_done = 0
        self.done = False

    def _problem(self, message: str) -> None:
        self.problems.append(message)

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not self.events and self.reading is None and kind == "reading":
            self.reading = event  # app-level, before the engine's frames
            return
        if self.done:
            self.events_after_done += 1
            self._problem(f"{kind!r} after done")
        if not self.events and kind != "start":
            self._problem(f"first event is {kind!r}")
        self.events.append(event)
        if kind == "start":
            if len(self.events) > 1:
                self._problem("a second start")
                return
            if self.reading is not None and self.reading.get("request_id") != event.get(
                "request_id"
            ):
                self._problem(f"reading and start disagree on request_id: {self.reading}")
            if not isinstance(event.get("sections"), list | tuple):
                self._problem(f"start without a list of sections: {event}")
            self.sections = {name: SectionOutcome() for name in event.get("sections", ())}
            return
        if kind == "done":
            if self.done:
                self._problem("a second done")
            self.done = True
            return
        if kind == "rate_limit":
            if not set(event.get("sections", ())) <= set(self.sections):
                self._problem(f"rate_limit for unknown sections: {event}")
            if not event.get("wait_ms", -1) >= 0:
                self._problem(f"rate_limit without a wait: {event}")
            return
        name = event.get("section", "")
        out = self.sections.get(name)
        if out is None:  # reported, then followed like the others so loss is still counted
            self._problem(f"event for an unknown section: {event}")
            out = self.sections[name] = SectionOutcome()
        if out.end is not None:
            self._problem(f"event after the end of {name!r}: {event}")
        if kind == "section_start":
            if out.started:
                self._problem(f"second section_start for {name!r}")
            if out.chunks:
                self._problem(f"section_start after chunks of {name!r}")
            out.started = True
        elif kind == "chunk":
            self.chunks += 1
            if not out.started:
                self._problem(f"chunk before section_start of {name!r}")
            seq, content = event.get("seq"), event.get("content")
            if not isinstance(content, str) or not isinstance(seq, int):
                self._problem(f"chunk without an integer seq and text content: {event}")
                return
            if seq < out.chunks:
                self.duplicated += 1
                self._problem(f"{name}: seq {seq} again, expected {out.chunks}")
                return
            if seq > out.chunks:
                self.lost += seq - out.chunks
                self._problem(f"{name}: seq {seq}, expected {out.chunks}")
            out.chunks = seq + 1
            out.parts.append(content)
            out.chars += len(content)
        elif kind == "reasoning":  # a reasoning model's thinking: numbered apart, not text
            if event.get("seq") != out.reasoning:
                self._problem(f"{name}: reasoning seq {event.get('seq')}, expected {out.reasoning}")
            out.reasoning += 1
        elif kind in ("section_done", "error"):
            declared = event.get("chunks")
            if declared != out.chunks:
                if isinstance(declared, int) and declared > out.chunks:
                    self.lost += declared - out.chunks  # sent by the server, never received
                self._problem(f"{name}: {kind} says {declared} chunks, got {out.chunks}")
            if kind == "section_done":
                if event.get("chars") != out.chars:
                    self._problem(f"{name}: section_done says {event.get('chars')} chars")
                if "finish_reason" not in event:
                    self._problem(f"{name}: section_done without finish_reason")
                out.end, out.finish_reason = "done", event.get("finish_reason")
            else:
                code, message = event.get("code"), event.get("message")
                if not isinstance(code, str) or not isinstance(message, str):
                    self._problem(f"{name}: error without a code and message: {event}")
                out.end, out.code, out.message = "error", code, message
        else:
            self._problem(f"unknown event type {kind!r}")

    def finish(self) -> list[str]:
        """Checks that need the whole stream; returns the problems they found."""
        before = len(self.problems)
        if not self.events:
            self._problem("no events")
        elif self.events[-1].get("type") != "done":
            self._problem(f"the stream did not end with done: {self.events[-1]}")
        else:
            start, done = self.events[0], self.events[-1]
            if done.get("request_id") != start.get("request_id"):
                self._problem("start and done disagree on request_id")
            ended = {name: out.end for name, out in self.sections.items()}
            open_sections = sorted(name for name, end in ended.items() if end is None)
            if open_sections:
                self._problem(f"sections without an end: {open_sections}")
            completed = sorted(name for name, end in ended.items() if end == "done")
            failed = sorted(name for name, end in ended.items() if end == "error")
            if sorted(done.get("completed", ())) != completed:
                self._problem(f"done.completed {done.get('completed')}, sections {completed}")
            if sorted(done.get("failed", ())) != failed:
                self._problem(f"done.failed {done.get('failed')}, sections {failed}")
        return self.problems[before:]


def check_stream(events: list[dict[str, Any]]) -> dict[str, SectionOutcome]:
    """Assert the protocol on a complete stream; each section's outcome."""
    checker = ProtocolChecker()
    for event in events:
        checker.feed(event)
    checker.finish()
    assert not checker.problems, "protocol violations:\n  " + "\n  ".join(checker.problems)
    return checker.sections


def check_protocol(frames: Iterable[Frame]) -> dict[str, str]:
    """Assert the protocol on a complete run read as SSE frames; the text of each section."""
    outcomes = check_stream(data_events(list(frames)))
    return {name: out.text for name, out in outcomes.items()}
