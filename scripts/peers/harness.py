"""Running a peer once and reading the figures off its trace: wall, CPU, first chunk.

CPU is ``time.process_time()`` around the timed part: every thread of *this* process (the
consumer, the engine's section workers, LangChain's executor threads, the asyncio loop) and
nothing of the simulator, which runs in its own process.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peers.base import Peer, Section, Trace

# The percentile is shared with the tests and the other scripts (``tests/support``).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.stats import percentile

__all__ = [
    "RunResult",
    "check_complete",
    "median",
    "percentile",
    "run_once",
    "sim_sections",
    "trace_overhead_us",
]


@dataclass
class RunResult:
    peer: str
    trace: Trace
    cpu_s: float

    @property
    def wall_s(self) -> float:
        return self.trace.wall_s

    @property
    def chunks(self) -> int:
        return self.trace.chunks

    @property
    def cpu_us_per_chunk(self) -> float | None:
        return self.cpu_s * 1e6 / self.chunks if self.chunks else None

    @property
    def aborted(self) -> str | None:
        return self.trace.aborted


def run_once(peer: Peer, sections: Sequence[Section], *, keep_times: bool = False) -> RunResult:
    """Prepare (untimed), then run and time one run of ``sections`` through ``peer``."""
    prepared = peer.prepare(sections)
    trace = Trace([s.name for s in sections], keep_times=keep_times)
    aborted = None
    cpu0 = time.process_time()
    trace.t0 = time.perf_counter()
    trace.t0_wall = time.time()
    try:
        peer.run(prepared, trace)
    except Exception as exc:  # a peer whose library raises: the run is aborted, not the bench
        aborted = f"{type(exc).__name__}: {exc}"
    cpu = time.process_time() - cpu0
    trace.finish(aborted)
    return RunResult(peer=peer.name, trace=trace, cpu_s=cpu)


def check_complete(result: RunResult, sections: Sequence[Section]) -> list[str]:
    """Problems with a run that should have delivered every section whole (empty: none)."""
    problems = []
    if result.aborted:
        problems.append(f"{result.peer}: aborted: {result.aborted}")
    for section in sections:
        seen = result.trace.sections[section.name]
        expected = section.sim.get("tokens")
        if seen.error:
            problems.append(f"{result.peer}/{section.name}: error {seen.error}")
        elif expected is not None and seen.chunks != expected:
            problems.append(f"{result.peer}/{section.name}: {seen.chunks} chunks, want {expected}")
    return problems


def sim_sections(
    n: int,
    sim: dict[str, Any],
    *,
    prefix: str = "section",
    names: Sequence[str] | None = None,
    tag: str = "bench",
    seed: int = 1000,
    overrides: dict[int, dict[str, Any]] | None = None,
) -> list[Section]:
    """``n`` sections with the same controls, each with its own seed (so its own jitter)."""
    sections = []
    for i in range(n):
        name = names[i] if names is not None else f"{prefix}-{i + 1}"
        controls = {**sim, "seed": seed + i, "tag": f"{tag}:{name}"}
        if overrides and i in overrides:
            controls.update(overrides[i])
        sections.append(Section(name, f"Benchmark prompt for {name}.", controls))
    return sections


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def trace_overhead_us(calls: int = 200_000) -> float:
    """CPU µs of one ``Trace.chunk`` call: what every peer's figure includes for recording."""
    trace = Trace(["x"])
    chunk = trace.chunk
    cpu0 = time.process_time()
    for _ in range(calls):
        chunk("x", "tok")
    return (time.process_time() - cpu0) * 1e6 / calls


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0
