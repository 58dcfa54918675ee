"""The benchmark's command line: ``scripts/benchmark_streaming_performance.py`` calls ``main``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend_ai.simulator import run_simulator

from .machine import load_snapshot, load_usage, machine
from .profiles import PROFILES, Profile
from .report import markdown
from .scenarios import SCENARIOS, timeline
from .session import Bench

__all__ = ["DESCRIPTION", "build_parser", "main"]

DESCRIPTION = (
    "Side-by-side performance of backend_ai's engine and its peers, on one seeded simulator."
)
ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmark_streaming_performance.py", description=DESCRIPTION
    )
    parser.add_argument("--quick", action="store_true", help="small profiles, under a minute")
    parser.add_argument("--repeats", type=int, help="repeats per figure (default: per profile)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*SCENARIOS, "timeline"],
        help="run only these parts (repeatable)",
    )
    parser.add_argument("--output", type=Path, help="JSON results file")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--timeline", type=Path, help="timeline PNG (default docs/timeline.png)")
    parser.add_argument("--no-langchain", action="store_true", help="leave the LangChain peer out")
    parser.add_argument("--no-write", action="store_true", help="print only; write no file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    profile = PROFILES["quick" if args.quick else "full"]
    if args.repeats:
        profile = Profile(**{**profile.__dict__, "repeats": args.repeats})
    output = (
        args.output or ROOT / "docs" / "benchmarks" / f"{'quick' if args.quick else 'latest'}.json"
    )
    timeline_path = args.timeline or ROOT / "docs" / "timeline.png"
    # --quick draws no picture unless asked to: docs/timeline.png is the full run's.
    default_parts = [*SCENARIOS] if args.quick and not args.timeline else [*SCENARIOS, "timeline"]
    parts = args.only or default_parts

    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join(
            ["python", "scripts/benchmark_streaming_performance.py", *(argv or sys.argv[1:])]
        ),
        "profile": profile.name,
        "repeats": profile.repeats,
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with run_simulator(profile="fast", jitter=0) as sim:
        bench = Bench(sim, profile, langchain=not args.no_langchain)
        load0 = load_snapshot(sim.pid)
        try:
            for part in parts:
                t0 = time.perf_counter()
                if part == "timeline":
                    if args.no_write:
                        continue
                    results["timeline"] = timeline(bench, timeline_path)
                else:
                    results[part] = SCENARIOS[part](bench)
                print(f"# {part}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        finally:
            bench.close()
        results["machine_load"] = load_usage(load0, load_snapshot(sim.pid))
    results["problems"] = bench.problems
    results["duration_s"] = round(time.perf_counter() - started, 1)

    table = markdown(results)
    print(table)
    load = results.get("machine_load", {})
    print(
        f"# machine: {load.get('machine_percent')}% of one core busy on average, of which "
        f"this process {load.get('self_percent')}%, the simulator {load.get('simulator_percent')}%,"
        f" others {load.get('others_percent')}%",
        file=sys.stderr,
    )
    if bench.problems:
        print("PROBLEMS (lost, duplicated or failed sections):", file=sys.stderr)
        for problem in bench.problems:
            print("  " + problem, file=sys.stderr)
    if not args.no_write:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1, default=str) + "\n")
        if args.markdown:
            args.markdown.write_text(table + "\n")
    print(f"# total {results['duration_s']} s", file=sys.stderr)
    return 1 if bench.problems else 0
