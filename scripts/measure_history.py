#!/usr/bin/env python
"""Throughput and CPU of the reading-history writer (``backend_ai.app.history``).

Two ways readings reach the writer:

* ``backlog``: ``--readings`` readings queued at once (a burst of streams ending together, or
  the queue that built up behind a slow disk), then ``flush``: how long the disk work takes;
* ``one at a time``: each reading submitted and flushed before the next, as a lightly loaded
  server writes them: the writer's cost per reading when nothing can be shared.

Each reading is dream-sized: three sections of about a kilobyte of text. CPU is this process's
(the writer thread and the submitting loop), per reading; ``commits`` is the number of SQLite
transactions (absent on a tree whose writer does not count them). The database lives in
``--dir`` (default: a temporary directory), so the disk under test is the one it is on.

    python scripts/measure_history.py
    python scripts/measure_history.py --readings 5000 --dir /var/tmp
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend_ai.app.history import HistoryRecord, HistoryStore, SavedSection


def _reading(n: int) -> HistoryRecord:
    text = f"reading {n}: " + "the river of glass carries a lantern downstream. " * 20
    return HistoryRecord(
        request_id=f"req-{n}",
        route="dream",
        created_at=time.time(),
        duration_ms=2400.0,
        cancelled=False,
        input={"dream": f"I was flying over a city of glass ({n})"},
        sections={
            name: SavedSection(text=text, status="done", model="gpt-4o-mini", ttft_ms=120.0)
            for name in ("summary", "symbols", "recommendations")
        },
    )


def _measure(directory: str, readings: int, *, backlog: bool) -> dict[str, Any]:
    path = os.path.join(tempfile.mkdtemp(dir=directory), "history.sqlite3")
    store = HistoryStore(path, queue_size=readings + 1, max_rows=100_000)
    try:
        store.submit(_reading(-1))  # the file, its schema and the writer exist before timing
        if not store.flush(30.0):
            raise RuntimeError("the writer did not start")
        commits_before = getattr(store, "commits", None)
        items = [_reading(n) for n in range(readings)]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if backlog:
            for item in items:
                store.submit(item)
            store.flush(600.0)
        else:
            for item in items:
                store.submit(item)
                store.flush(60.0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        commits = getattr(store, "commits", None)
        return {
            "mode": "backlog" if backlog else "one at a time",
            "readings": readings,
            "wall_s": round(wall, 3),
            "readings_per_s": round(readings / wall),
            "cpu_us_per_reading": round(cpu * 1e6 / readings, 1),
            "commits": None if commits is None else commits - (commits_before or 0),
            "failed": store.failed,
            "dropped": store.dropped,
        }
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where the database goes (default: a temporary directory)")
    args = parser.parse_args(argv)
    for backlog in (True, False):
        rows = [_measure(args.dir, args.readings, backlog=backlog) for _ in range(args.repeats)]
        best = min(rows, key=lambda row: row["wall_s"])
        print(json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
