"""One benchmark session: a simulator, the contenders it opened, the problems it saw.

Every scenario (``benchmark.scenarios``) is a function of a ``Bench``: it opens the peers it
needs through ``Bench.peer`` (closed with the session), checks every run with
``Bench.complete`` and returns its figures as a JSON-ready dict. The small helpers below round
and combine those figures the same way everywhere.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from peers.base import Peer, Section
from peers.harness import RunResult, check_complete, median, run_once, sim_sections

from backend_ai.simulator import SimulatorProcess

from .profiles import Profile

__all__ = ["Bench", "closing", "first_chunk_of", "medians", "ms", "rounded"]

HAVE_LANGCHAIN = importlib.util.find_spec("langchain_openai") is not None

P = TypeVar("P", bound=Peer)


class Bench:
    """One benchmark session: a simulator, the contenders, the results."""

    def __init__(self, sim: SimulatorProcess, profile: Profile, *, langchain: bool) -> None:
        self.sim = sim
        self.profile = profile
        self.url = sim.base_url
        self.langchain = langchain and HAVE_LANGCHAIN
        self.problems: list[str] = []
        self._peers: list[Peer] = []

    def peer(self, peer: P) -> P:
        """Keep ``peer`` open for the session; ``close`` closes it."""
        self._peers.append(peer)
        return peer

    def close(self) -> None:
        for peer in self._peers:
            peer.close()

    def complete(self, result: RunResult, sections: Sequence[Section]) -> RunResult:
        """Record (not raise) any loss: a benchmark figure from a broken run is reported."""
        self.problems.extend(check_complete(result, sections))
        return result

    def warm(self, *peers: Peer) -> None:
        """One untimed run each: imports, connections and lazy SDK resources come first."""
        sections = sim_sections(2, {**self.profile.fast, "jitter": 0}, tag="warmup")
        for peer in peers:
            run_once(peer, sections)

    def record(self, tag: str) -> dict[str, Any] | None:
        """The simulator's record of the request tagged ``tag``, if it has one."""
        for record in self.sim.stats()["requests"]:
            if record.get("tag") == tag:
                return dict(record)
        return None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def first_chunk_of(result: RunResult, name: str) -> float | None:
    """Seconds from the run's start to section ``name``'s first chunk."""
    first = result.trace.sections[name].first_chunk
    return None if first is None else first - result.trace.t0


def medians(rows: Iterable[dict[str, float | None]]) -> dict[str, float | None]:
    """Each key's median over the repeats' rows."""
    rows = list(rows)
    keys = rows[0].keys() if rows else ()
    return {key: rounded(median(row[key] for row in rows), 4) for key in keys}


@contextlib.contextmanager
def closing(peer: P) -> Iterator[P]:
    try:
        yield peer
    finally:
        peer.close()
