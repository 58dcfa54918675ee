"""The timeline picture's data: when each chunk of three sections reached the consumer, through a
sequential loop and through the engine; drawn by ``benchmark.plot`` when matplotlib is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peers.engine import EnginePeer
from peers.harness import run_once, sim_sections
from peers.sequential import SequentialLoop

from ..plot import HAVE_MATPLOTLIB, plot_timeline
from ..session import Bench, ms

__all__ = ["DREAM", "timeline"]

DREAM = ("summary", "symbols", "recommendations")


def timeline(bench: Bench, path: Path) -> dict[str, Any]:
    p = bench.profile
    sections = sim_sections(3, p.section, names=DREAM, tag="timeline")
    sequential = bench.peer(SequentialLoop(bench.url))
    engine = bench.peer(EnginePeer(bench.url))
    bench.warm(sequential, engine)
    runs = {
        "sequential loop": run_once(sequential, sections, keep_times=True),
        "ParallelStreamManager": run_once(engine, sections, keep_times=True),
    }
    data = {
        label: {
            name: {
                "requested_ms": ms(s.started - r.trace.t0) if s.started is not None else None,
                "chunk_ms": [ms(t - r.trace.t0) for t in s.times],
            }
            for name, s in r.trace.sections.items()
        }
        for label, r in runs.items()
    }
    walls = {label: ms(r.wall_s) for label, r in runs.items()}
    if HAVE_MATPLOTLIB:
        plot_timeline(data, walls, p.section, path)
    return {"profile": p.section, "wall_ms": walls, "sections": data}
