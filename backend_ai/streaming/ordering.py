"""Ordering modes: which events go out now and which wait for their turn.

``interleaved`` passes everything through as it arrives. ``ordered`` keeps sections in config
order: the head section streams live, later sections are buffered and flushed the moment the
head ends, then the next one becomes the live head. ``as_completed`` sends each section whole,
in the order sections finish. Run-level events (no section) always pass straight through.
Buffers hold at most what the buffered sections produce, which ``max_tokens`` bounds.
"""

from __future__ import annotations

from collections.abc import Sequence

from backend_ai.streaming.config import Mode
from backend_ai.streaming.events import Event, SectionDone, SectionError

__all__ = ["Orderer", "make_orderer"]

_END_TYPES = (SectionDone, SectionError)


class Orderer:
    """Interleaved: the identity."""

    def push(self, event: Event) -> Sequence[Event]:
        return (event,)


class _Ordered(Orderer):
    def __init__(self, sections: Sequence[str]) -> None:
        self._order = list(sections)
        self._head = 0
        self._buffers: dict[str, list[Event]] = {name: [] for name in sections}
        self._ended: set[str] = set()

    def push(self, event: Event) -> Sequence[Event]:
        section = getattr(event, "section", None)
        if section is None:
            return (event,)
        ended = isinstance(event, _END_TYPES)
        if ended:
            self._ended.add(section)
        if self._head >= len(self._order) or section != self._order[self._head]:
            self._buffers[section].append(event)
            return ()
        if not ended:
            return (event,)
        out: list[Event] = [event]
        while self._head < len(self._order) - 1:
            self._head += 1
            name = self._order[self._head]
            out.extend(self._buffers.pop(name))
            if name not in self._ended:
                break
        else:
            self._head = len(self._order)
        return out


class _AsCompleted(Orderer):
    def __init__(self, sections: Sequence[str]) -> None:
        self._buffers: dict[str, list[Event]] = {name: [] for name in sections}

    def push(self, event: Event) -> Sequence[Event]:
        section = getattr(event, "section", None)
        if section is None:
            return (event,)
        buffer = self._buffers[section]
        buffer.append(event)
        if isinstance(event, _END_TYPES):
            del self._buffers[section]
            return buffer
        return ()


def make_orderer(mode: Mode, sections: Sequence[str]) -> Orderer:
    if mode is Mode.ORDERED:
        return _Ordered(sections)
    if mode is Mode.AS_COMPLETED:
        return _AsCompleted(sections)
    return Orderer()
