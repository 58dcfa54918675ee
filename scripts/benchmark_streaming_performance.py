#!/usr/bin/env python
"""Side-by-side performance of backend_ai's engine and its peers, on one seeded simulator.

Every figure comes from one run of this script against one simulator child process with fixed,
seeded per-section profiles, so the comparisons are between things measured minutes apart on the
same machine; ratios are medians over ``--repeats`` repeats (each repeat runs every contender
once, in turn). What it measures:

1. fan-out: N = 1, 3, 6, 9 sections, sequential loop vs ParallelStreamManager vs the ideal (the
   slowest single section, measured alone in the same repeat); uneven sections (one slow,
   several fast) in ``interleaved`` and ``ordered`` modes;
2. first event and first content chunk through the engine vs the simulator's TTFT, and first
   byte / first chunk through the service under gunicorn (the load-test client);
3. CPU per chunk with chunks arriving in bursts (``scripts/peers/burst_upstream.py``) and via
   the simulator at ``itl_ms=0``: the engine for 1, 3, 9 sections, events and SSE frames,
   against the SDK's typed stream and its raw lines on the same client, and the peers;
4. HTTP/2 vs HTTP/1.1 pool: TCP connections and wall time for 9 sections; cancellation cost
   (generator closed -> every upstream stream seen disconnected by the simulator);
5. peers: sequential loop, LangChain ``RunnableParallel.stream``, asyncio ``AsyncOpenAI``
   fan-out: wall ÷ ideal, first chunk, CPU per chunk, and what one failing section does.

Output: markdown tables on stdout (and ``--markdown FILE``), everything as JSON (``--output``,
default ``docs/benchmarks/latest.json``; ``--quick`` defaults to ``docs/benchmarks/quick.json``)
and the chunk timeline picture (``--timeline``, default ``docs/timeline.png``; needs matplotlib;
``--quick`` draws it only when ``--timeline`` is given).

    python scripts/benchmark_streaming_performance.py            # full run, a few minutes
    python scripts/benchmark_streaming_performance.py --quick    # small profiles, < 1 minute

The parts live in the ``benchmark`` package beside this file (profiles, session, scenarios,
report, plot, machine, cli); this file is the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The benchmark, load_test and peers packages sit beside this file; tests.support (the
# percentile and process helpers shared with the tests) under the repository root.
SCRIPTS = Path(__file__).resolve().parent
for _path in (SCRIPTS, SCRIPTS.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from benchmark.cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
