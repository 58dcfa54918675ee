"""What every peer shares: the section spec, the consumer-side trace, the peer interface."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Peer", "Section", "SectionTrace", "Trace", "section_configs"]

API_KEY = "sk-benchmark-not-a-real-key"


@dataclass(frozen=True)
class Section:
    """One completion of a run, with the simulator controls that fix its timing."""

    name: str
    prompt: str
    sim: Mapping[str, Any]
    model: str = "sim-model"

    @property
    def max_tokens(self) -> int:
        # Never the limit: the simulator's ``tokens`` decides the length.
        return max(16, int(self.sim.get("tokens", 60)) * 2)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]


def section_configs(sections: Sequence[Section]) -> list[Any]:
    """The engine's ``StreamConfig`` for each section (imported late: peers load alone)."""
    from backend_ai.streaming import StreamConfig

    return [
        StreamConfig(
            s.name,
            s.prompt,
            model=s.model,
            temperature=0.7,
            max_tokens=s.max_tokens,
            extra_body={"sim": dict(s.sim)},
        )
        for s in sections
    ]


@dataclass
class SectionTrace:
    """What the consumer saw of one section; times are ``perf_counter`` seconds."""

    started: float | None = None
    ended: float | None = None
    first_chunk: float | None = None
    last_chunk: float | None = None
    chunks: int = 0
    chars: int = 0
    error: str | None = None
    #: Arrival time of every chunk, kept only when the trace was asked to (timelines).
    times: list[float] = field(default_factory=list)


class Trace:
    """Records one run from the consumer's side: kept cheap, it runs once per chunk.

    ``chunk`` is the only per-chunk call; every peer pays the same for it, so it cancels out of
    comparisons (its own cost is measured by the benchmark script and reported).
    """

    def __init__(self, names: Sequence[str], *, keep_times: bool = False) -> None:
        self.sections: dict[str, SectionTrace] = {name: SectionTrace() for name in names}
        self.keep_times = keep_times
        self.t0 = time.perf_counter()
        self.t0_wall = time.time()
        self.t_end: float | None = None
        self.first_event: float | None = None
        self.aborted: str | None = None
        self.chunks = 0

    # -- the consumer calls these ----------------------------------------------------------
    def event(self) -> None:
        """Any event reached the consumer (used for time to first event)."""
        if self.first_event is None:
            self.first_event = time.perf_counter()

    def section_started(self, name: str) -> None:
        self.sections[name].started = time.perf_counter()

    def chunk(self, name: str, content: str) -> None:
        now = time.perf_counter()
        section = self.sections[name]
        if section.first_chunk is None:
            section.first_chunk = now
        section.last_chunk = now
        section.chunks += 1
        section.chars += len(content)
        self.chunks += 1
        if self.keep_times:
            section.times.append(now)

    def section_ended(self, name: str, error: str | None = None) -> None:
        section = self.sections[name]
        section.ended = time.perf_counter()
        section.error = error

    def finish(self, aborted: str | None = None) -> None:
        self.t_end = time.perf_counter()
        self.aborted = aborted

    # -- derived figures --------------------------------------------------------------------
    @property
    def wall_s(self) -> float:
        assert self.t_end is not None, "trace not finished"
        return self.t_end - self.t0

    @property
    def first_chunk_s(self) -> float | None:
        firsts = [s.first_chunk for s in self.sections.values() if s.first_chunk is not None]
        return min(firsts) - self.t0 if firsts else None

    def section_walls(self) -> dict[str, float]:
        """Each section's own duration, from its request to its end (sequential peers)."""
        walls = {}
        for name, s in self.sections.items():
            end = s.ended if s.ended is not None else s.last_chunk
            if s.started is not None and end is not None:
                walls[name] = end - s.started
        return walls

    def completed(self) -> list[str]:
        return [
            name
            for name, s in self.sections.items()
            if s.error is None and s.ended is not None and self.aborted is None
        ]


class Peer:
    """A contender: ``open`` once, then ``prepare`` (untimed) and ``run`` (timed) per run."""

    name = "peer"
    #: One line for tables: what the peer is, as a user would name it.
    label = "peer"

    def __init__(self, base_url: str, api_key: str = API_KEY) -> None:
        self.base_url = base_url
        self.api_key = api_key

    def prepare(self, sections: Sequence[Section]) -> Any:
        return list(sections)

    def run(self, prepared: Any, trace: Trace) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release clients and loops; safe to call twice."""

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
