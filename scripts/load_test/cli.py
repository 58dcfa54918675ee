"""The load test's command line: ``scripts/load_test_streaming.py`` calls ``main``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from backend_ai.app import gunicorn_conf

from .client import ROUTES
from .processes import SPAWN_PROFILE, Spawned, engine_path, spawn
from .report import capacity, format_summary, format_sweep
from .sweep import Level, broken, run_level

__all__ = ["DESCRIPTION", "build_parser", "main"]

DESCRIPTION = (
    "Load test: many real SSE clients at once against the streaming service, every chunk checked."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="load_test_streaming.py", description=DESCRIPTION)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--route", choices=sorted(ROUTES), default="dream")
    parser.add_argument(
        "--payload", help="JSON object merged over the route's default payload (e.g. sim controls)"
    )
    parser.add_argument("--concurrent", type=int, default=10, help="simultaneous streams")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, help="requests in total (default 5 × concurrent)")
    amount.add_argument("--duration", type=float, help="seconds to keep issuing requests")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request limit, s")
    parser.add_argument("--no-keepalive", action="store_true", help="a new connection per request")
    parser.add_argument(
        "--ramp-s",
        type=float,
        default=0.0,
        help="spread the clients' first requests evenly over this many seconds (default 0: all "
        "at once; clients whose requests last equally long then stay in step)",
    )
    parser.add_argument(
        "--upstream-ttft-ms",
        type=float,
        help="upstream TTFT, to report first chunk overhead (set by --spawn)",
    )
    parser.add_argument("--spawn", action="store_true", help="start simulator + server, then stop")
    parser.add_argument("--server", choices=("backend", "asgi-peer"), default="backend")
    parser.add_argument("--workers", type=int, default=2, help="--spawn: server worker processes")
    parser.add_argument(
        "--asgi-server",
        choices=("auto", "uvicorn", "hypercorn"),
        default="auto",
        help="--server asgi-peer: which ASGI server (auto: uvicorn if installed)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=gunicorn_conf.threads,
        help="--spawn: gunicorn threads per worker (default: the shipped configuration's)",
    )
    parser.add_argument(
        "--sim", help=f"--spawn: JSON simulator profile over {json.dumps(SPAWN_PROFILE)}"
    )
    parser.add_argument(
        "--sweep",
        help="comma-separated --concurrent levels run one after another on the same server "
        "(e.g. 5,10,20,50); prints a table and the capacity",
    )
    parser.add_argument(
        "--capacity-ms",
        type=float,
        default=50.0,
        help="--sweep: p99 first-chunk overhead limit for the capacity (default 50)",
    )
    parser.add_argument("--server-log", type=Path, help="--spawn: keep the server's log here")
    parser.add_argument(
        "--upstream-http1",
        action="store_true",
        help="--spawn: the server's upstream pool speaks HTTP/1.1 instead of HTTP/2",
    )
    parser.add_argument(
        "--upstream",
        choices=("simulator", "paced"),
        default="simulator",
        help="--spawn: the hypercorn simulator, or the lean paced upstream (far less CPU per "
        "chunk, so the server is what is measured)",
    )
    parser.add_argument("--upstream-cpu", type=int, help="--spawn: pin the upstream to this core")
    parser.add_argument(
        "--engine-tree",
        type=Path,
        help="--spawn: run the server on the backend_ai package in this directory (A/B runs)",
    )
    parser.add_argument("--json", type=Path, help="write the summary as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.concurrent < 1:
        parser.error("--concurrent must be at least 1")
    if args.ramp_s < 0:
        parser.error("--ramp-s must not be negative")

    path, payload = ROUTES[args.route]
    payload = dict(payload)
    if args.payload:
        payload.update(json.loads(args.payload))
    requests = args.requests
    if requests is None and args.duration is None:
        requests = 5 * args.concurrent

    levels = [int(v) for v in args.sweep.split(",")] if args.sweep else [args.concurrent]
    # A sweep without a set amount gives each level five requests per user.
    per_user = args.sweep and args.requests is None and args.duration is None
    summaries = []
    with contextlib.ExitStack() as stack:
        url, ttft = args.url, args.upstream_ttft_ms
        spawned: Spawned | None = None
        if args.spawn:
            spawned = stack.enter_context(
                spawn(
                    server=args.server,
                    workers=args.workers,
                    threads=args.threads,
                    profile=json.loads(args.sim) if args.sim else None,
                    asgi_server=args.asgi_server,
                    log_file=args.server_log,
                    upstream_http1=args.upstream_http1,
                    upstream=args.upstream,
                    upstream_cpu=args.upstream_cpu,
                    engine_tree=args.engine_tree,
                )
            )
            url, ttft = spawned.url, spawned.upstream_ttft_ms
            print(f"# spawned {args.server} at {url}", file=sys.stderr)
        for concurrent in levels:
            level = Level(
                url=url,
                path=path,
                payload=payload,
                requests=5 * concurrent if per_user else requests,
                duration=args.duration,
                timeout=args.timeout,
                keepalive=not args.no_keepalive,
                ramp_s=args.ramp_s,
                progress=not args.quiet,
                upstream_ttft_ms=ttft,
            )
            summary = run_level(level, concurrent, spawned)
            summary.update(
                route=args.route,
                url=url,
                server=args.server if args.spawn else None,
                ramp_s=args.ramp_s,
            )
            if spawned is not None:
                summary.update(_spawn_setup(args, spawned))
            print(format_summary(summary), flush=True)
            summaries.append(summary)
    result: dict[str, Any] = summaries[0] if not args.sweep else {"levels": summaries}
    if args.sweep:
        result["capacity"] = capacity(summaries, args.capacity_ms)
        print(format_sweep(summaries, args.capacity_ms))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 1 if broken(summaries) else 0


def _spawn_setup(args: argparse.Namespace, spawned: Spawned) -> dict[str, Any]:
    """What ``--spawn`` ran, recorded with each level: the upstream and the server."""
    upstream = spawned.simulator.stats(records=False)
    upstream.pop("disconnects", None)
    setup: dict[str, Any] = {
        "upstream": upstream,
        "upstream_profile": {**SPAWN_PROFILE, **json.loads(args.sim or "{}")},
        "server_settings": {"workers": args.workers, "threads": args.threads},
        "upstream_kind": args.upstream,
        "upstream_cpu": args.upstream_cpu,
    }
    if args.server == "backend":
        setup["engine_path"] = engine_path(args.engine_tree)
    return setup
