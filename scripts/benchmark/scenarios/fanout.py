"""Fan-out: N sections through a sequential loop and through the engine, against the ideal.

The ideal is the slowest single section, measured alone in the same repeat (the sequential
loop runs each section by itself). The uneven run puts one slow section before several fast
ones, in ``interleaved`` and ``ordered`` modes: how soon the fast sections reach the consumer.
"""

from __future__ import annotations

from typing import Any

from peers.base import Peer, Section
from peers.engine import EnginePeer
from peers.harness import run_once, sim_sections
from peers.sequential import SequentialLoop

from ..session import Bench, first_chunk_of, medians

__all__ = ["fanout"]


def fanout(bench: Bench) -> dict[str, Any]:
    p = bench.profile
    sequential = bench.peer(SequentialLoop(bench.url))
    engine = bench.peer(EnginePeer(bench.url))
    bench.warm(sequential, engine)
    rows = []
    for n in p.fanout_ns:
        sections = sim_sections(n, p.section, tag=f"fanout{n}")
        reps = []
        for _ in range(p.repeats):
            seq = bench.complete(run_once(sequential, sections), sections)
            par = bench.complete(run_once(engine, sections), sections)
            ideal = max(seq.trace.section_walls().values())
            reps.append(
                {
                    "sequential_s": seq.wall_s,
                    "parallel_s": par.wall_s,
                    "ideal_s": ideal,
                    "parallel_over_ideal": par.wall_s / ideal,
                    "sequential_over_parallel": seq.wall_s / par.wall_s,
                    "parallel_first_chunk_s": par.trace.first_chunk_s,
                    "sequential_first_chunk_s": seq.trace.first_chunk_s,
                    "parallel_cpu_us_per_chunk": par.cpu_us_per_chunk,
                    "sequential_cpu_us_per_chunk": seq.cpu_us_per_chunk,
                }
            )
        rows.append({"n": n, **medians(reps), "repeats": len(reps)})
    uneven = _uneven(bench, sequential)
    return {"profile": p.section, "rows": rows, "uneven": uneven}


def _uneven(bench: Bench, sequential: Peer) -> dict[str, Any]:
    p = bench.profile
    n = 1 + p.uneven_fast
    base = sim_sections(n, p.fast, tag="uneven")
    slow_controls = {**p.slow, "seed": base[0].sim["seed"], "tag": "uneven:slow"}
    sections = [
        Section("slow", base[0].prompt, slow_controls),
        *(Section(f"fast-{i}", s.prompt, s.sim) for i, s in enumerate(base[1:], 1)),
    ]
    engines = {
        mode: bench.peer(EnginePeer(bench.url, mode=mode)) for mode in ("interleaved", "ordered")
    }
    bench.warm(*engines.values())
    out: dict[str, Any] = {"slow": p.slow, "fast": p.fast, "fast_sections": p.uneven_fast}
    reps: dict[str, list[dict[str, float | None]]] = {mode: [] for mode in engines}
    for _ in range(p.repeats):
        seq = bench.complete(run_once(sequential, sections), sections)
        ideal = max(seq.trace.section_walls().values())
        for mode, engine in engines.items():
            par = bench.complete(run_once(engine, sections), sections)
            fast = [par.trace.sections[s.name] for s in sections[1:]]
            reps[mode].append(
                {
                    "wall_s": par.wall_s,
                    "ideal_s": ideal,
                    "parallel_over_ideal": par.wall_s / ideal,
                    "sequential_over_parallel": seq.wall_s / par.wall_s,
                    "first_chunk_s": par.trace.first_chunk_s,
                    "slow_first_chunk_s": first_chunk_of(par, "slow"),
                    "fast_first_chunk_s": min(
                        f.first_chunk - par.trace.t0 for f in fast if f.first_chunk
                    ),
                    "fast_all_delivered_s": max(
                        f.last_chunk - par.trace.t0 for f in fast if f.last_chunk
                    ),
                }
            )
    for mode, values in reps.items():
        out[mode] = medians(values)
    return out
