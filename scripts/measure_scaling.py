#!/usr/bin/env python
"""Several ``backend-ai serve`` instances against one rate-limited upstream: with the budget
shared through Redis, and without it, in one run (the A/B of docs/SCALING.md).

One simulator enforces a budget of ``--rpm`` requests per ``--window-s`` for the API key every
instance uses (every section asks for one model, whose window that is on the service's side),
counted over a moving window by arrival, as the provider does. ``--instances``
servers (each ``--workers`` gunicorn workers, each on its own port) are loaded by ``--clients``
threads that post dream readings (three sections each) round-robin over the instances, each on
a new connection so the runs spread over every worker, for ``--windows`` windows. Phases:

* ``redis``: every server has ``BACKEND_AI_REDIS_URL`` (one ``redis-server`` started here);
* ``local``: the same servers without it — each worker budgets alone;
* ``redis-killed`` (``--kill-redis``): as ``redis``, with Redis killed halfway through.

Figures come from the simulator's own records (every request that arrived, 429s included):
the most requests that arrived within any one window, 429s in total and after the first
window, and from the clients: runs, runs that ended with ``done`` with no chunk lost or
repeated, section errors. The exit status is 1 when the ``redis`` phase let more than the
budget into a window, saw a 429 after the first window, or a stream of any phase did not end
with ``done``.

    python scripts/measure_scaling.py                 # the full run: 60/min, three minutes a phase
    python scripts/measure_scaling.py --smoke         # CI: a 4 s window
    python scripts/measure_scaling.py --json out.json --kill-redis
    python scripts/measure_scaling.py --call-cost 5000   # time of one shared-budget admission
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_test_streaming import Result, StreamChecker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend_ai.app.child_process import die_with_parent
from backend_ai.app.redis_process import RedisProcess
from backend_ai.app.settings import PRESET_NAMES, Settings
from backend_ai.simulator import SimulatorProcess
from backend_ai.streaming.budget import LocalRateBudget, TokenEstimate
from backend_ai.streaming.redis_budget import RedisRateBudget
from tests.support.process import free_port

API_KEY = "sk-scaling-run"
DREAM = "/dream/interpret-stream"
MODEL = "gpt-4o-mini"
#: A short completion: the run is about how many requests start, not how long they stream.
SECTION_SIM = {"ttft_ms": 30, "itl_ms": 5, "tokens": 8, "jitter": 0}


@dataclass
class Phase:
    name: str
    redis: bool
    duration_s: float
    runs: int = 0
    runs_ok: int = 0
    runs_without_done: int = 0
    section_errors: dict[str, int] = field(default_factory=dict)
    arrivals: int = 0
    admitted: int = 0
    refused_429: int = 0
    refused_429_after_first_window: int = 0
    max_in_any_window: int = 0
    per_window: list[int] = field(default_factory=list)
    redis_fallbacks: int = 0


def max_in_any_window(times: list[float], window_s: float) -> int:
    """The most arrivals within any ``window_s`` (every window, not only aligned ones)."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


class Serve:
    """One ``backend-ai serve`` child on its own port, stopped gracefully (SIGTERM)."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend_ai.cli", "serve", f"--port={self.port}",
             f"--workers={workers}", "--threads=16", "--log-level=warning"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip

    def wait_ready(self, workers: int, timeout: float = 90.0) -> None:
        """Until every worker has loaded the app (``/stats`` counts the live ones)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {self.proc.returncode}; see {self._log.name}"
                )
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                answer = httpx.get(self.url + "/stats", timeout=2.0)
                if int(answer.headers["X-Backend-AI-Workers"]) >= workers:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"serve on port {self.port} not ready in {timeout:g} s")

    def metric(self, name: str) -> float:
        """A sample's value summed over its labels (and, multiprocess, over the workers)."""
        text = httpx.get(self.url + "/metrics", timeout=10.0).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def servers(
    count: int, workers: int, env: dict[str, str], logs: Path, name: str
) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    try:
        for i in range(count):
            started.append(Serve(env, workers, logs / f"{name}-serve-{i}.log"))
        for server in started:
            server.wait_ready(workers)
        yield started
    finally:
        for server in started:
            server.stop()


def _one_run(url: str, results: list[Result]) -> None:
    result = Result()
    checker = StreamChecker(result, time.perf_counter())
    body = {"dream": "a lighthouse full of clocks", "sim": SECTION_SIM}
    # No keep-alive: each run on a new connection, so the kernel spreads them over the workers.
    limits = httpx.Limits(max_keepalive_connections=0)
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0), limits=limits) as client,
            client.stream("POST", url + DREAM, json=body) as response,
        ):
            result.status = response.status_code
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}"
            else:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        checker.event(json.loads(line[5:]))
    except httpx.HTTPError as exc:
        result.error = type(exc).__name__
    results.append(result)


def run_phase(
    name: str,
    simulator: SimulatorProcess,
    *,
    redis_server: RedisProcess | None,
    kill_redis: bool,
    args: argparse.Namespace,
    logs: Path,
) -> Phase:
    duration = args.windows * args.window_s
    phase = Phase(name=name, redis=redis_server is not None, duration_s=duration)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BACKEND_AI_"))}
    env.update(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=simulator.base_url,
        BACKEND_AI_UPSTREAM_SIMULATOR="1",
        BACKEND_AI_HTTP_HTTP2_PRIOR_KNOWLEDGE="1",
        BACKEND_AI_HISTORY_DB="off",
        BACKEND_AI_RPM=str(args.rpm),
        BACKEND_AI_BUDGET_WINDOW_S=str(args.window_s),
        BACKEND_AI_BUDGET_MARGIN_S=str(args.margin_s),
        # The service budgets each model on its own, as the provider limits them, while the
        # simulator's window is per API key: one model for every section makes the two agree.
        **{f"BACKEND_AI_MODEL_{preset.upper()}": MODEL for preset in PRESET_NAMES},
    )
    if redis_server is not None:
        env["BACKEND_AI_REDIS_URL"] = redis_server.url
    with servers(args.instances, args.workers, env, logs, name) as started:
        simulator.reset()  # fresh window and records for this phase
        results: list[Result] = []
        stop = threading.Event()

        def client(i: int) -> None:
            turn = i
            while not stop.is_set():
                _one_run(started[turn % len(started)].url, results)
                turn += 1

        t0 = time.time()
        threads = [
            threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        if kill_redis and redis_server is not None:
            time.sleep(duration / 2)
            redis_server.kill()
            time.sleep(duration / 2)
        else:
            time.sleep(duration)
        stop.set()
        for thread in threads:  # runs in flight finish (they may wait for the budget)
            thread.join(args.window_s * 3 + 120)
        if redis_server is not None:
            phase.redis_fallbacks = round(
                sum(s.metric("backend_ai_budget_redis_fallbacks_total") for s in started)
            )
    records = [r for r in simulator.stats()["requests"] if r["path"].endswith("/chat/completions")]
    times = [r["t_start"] for r in records]
    phase.runs = len(results)
    phase.runs_ok = sum(r.ok for r in results)
    phase.runs_without_done = sum(not r.done for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.section_errors)
    phase.section_errors = dict(errors)
    phase.arrivals = len(records)
    phase.admitted = sum(r["status"] == 200 for r in records)
    phase.refused_429 = sum(r["status"] == 429 for r in records)
    first = min(times, default=t0)
    phase.refused_429_after_first_window = sum(
        r["status"] == 429 and r["t_start"] >= first + args.window_s for r in records
    )
    phase.max_in_any_window = max_in_any_window(times, args.window_s)
    windows = int((max(times, default=first) - first) // args.window_s) + 1 if times else 0
    phase.per_window = [
        sum(first + w * args.window_s <= t < first + (w + 1) * args.window_s for t in times)
        for w in range(windows)
    ]
    return phase


def verdict(phase: Phase, rpm: int) -> list[str]:
    """What is wrong with a phase (empty: nothing)."""
    problems = []
    if phase.runs_without_done:
        problems.append(f"{phase.runs_without_done} streams did not end with done")
    if phase.name == "redis":
        if phase.max_in_any_window > rpm:
            problems.append(f"{phase.max_in_any_window} requests in one window > budget {rpm}")
        if phase.refused_429_after_first_window:
            problems.append(f"{phase.refused_429_after_first_window} 429s after the first window")
    return problems


def call_cost(calls: int) -> dict[str, float]:
    """Wall and CPU time of one admission by ``RedisRateBudget`` against ``LocalRateBudget``
    (a loopback Redis started here; no limit is reached, so every call admits)."""
    estimate = TokenEstimate(prompt_tokens=50, completion_tokens=200, prompt_chars=200)
    figures: dict[str, float] = {}
    with RedisProcess() as server:
        shared = RedisRateBudget(server.url, upstream="http://cost.test/v1", rpm=10**9)
        for name, budget in (("local", LocalRateBudget(rpm=10**9)), ("redis", shared)):
            budget.try_acquire(estimate)  # warm: the script is loaded, the connection open
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                budget.try_acquire(estimate)
            figures[f"{name}_wall_us"] = (time.perf_counter() - wall) / calls * 1e6
            figures[f"{name}_cpu_us"] = (time.process_time() - cpu) / calls * 1e6
        shared.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=60, help="the upstream's budget per window")
    parser.add_argument("--window-s", type=float, default=60.0, help="its window (default 60)")
    parser.add_argument(
        "--margin-s", type=float, help="BACKEND_AI_BUDGET_MARGIN_S (default: the service's)"
    )
    parser.add_argument("--windows", type=int, default=3, help="windows per phase (default 3)")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--kill-redis", action="store_true", help="add the Redis-killed phase")
    parser.add_argument("--phases", default="redis,local", help="comma-separated phase names")
    parser.add_argument("--smoke", action="store_true", help="CI: 12 per 4 s window, 3 windows")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--logs", type=Path, help="servers' logs here (default: a temp dir)")
    parser.add_argument(
        "--call-cost", type=int, metavar="N", help="only time N admissions, local vs Redis"
    )
    args = parser.parse_args(argv)
    if args.call_cost:
        figures = call_cost(args.call_cost)
        print(", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
        return 0
    if args.margin_s is None:
        args.margin_s = Settings().budget.margin_s
    if args.smoke:
        args.rpm, args.window_s, args.windows, args.clients = 12, 4.0, 3, 6
    phases = [p for p in args.phases.split(",") if p]
    if args.kill_redis and "redis-killed" not in phases:
        phases.append("redis-killed")
    logs = args.logs or Path(os.environ.get("TMPDIR", "/tmp")) / f"scaling-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    budget = {"rpm_per_key": args.rpm, "window_s": args.window_s}
    results: list[Phase] = []
    with SimulatorProcess(profile="fast", budget=budget) as simulator:
        for name in phases:
            redis_server = RedisProcess().start() if name.startswith("redis") else None
            try:
                results.append(
                    run_phase(
                        name,
                        simulator,
                        redis_server=redis_server,
                        kill_redis=name == "redis-killed",
                        args=args,
                        logs=logs,
                    )
                )
            finally:
                if redis_server is not None:
                    redis_server.stop()
    setup = {
        k: getattr(args, k)
        for k in ("rpm", "window_s", "margin_s", "windows", "instances", "workers")
    }
    setup["clients"] = args.clients
    print(
        f"budget {args.rpm} requests per {args.window_s:g} s (margin {args.margin_s:g} s); "
        f"{args.instances} instances x "
        f"{args.workers} workers; {args.clients} clients; {args.windows} windows a phase"
    )
    header = f"{'phase':<13}{'max/window':>11}{'arrived':>9}{'429':>6}{'429 late':>10}"
    print(header + f"{'runs':>7}{'done':>7}{'ok':>6}{'fallbacks':>11}  per window")
    problems: list[str] = []
    for p in results:
        print(
            f"{p.name:<13}{p.max_in_any_window:>11}{p.arrivals:>9}{p.refused_429:>6}"
            f"{p.refused_429_after_first_window:>10}{p.runs:>7}{p.runs - p.runs_without_done:>7}"
            f"{p.runs_ok:>6}{p.redis_fallbacks:>11}  {p.per_window}"
        )
        problems += [f"{p.name}: {problem}" for problem in verdict(p, args.rpm)]
    if args.json:
        args.json.write_text(
            json.dumps({"setup": setup, "phases": [asdict(p) for p in results]}, indent=2)
        )
    for problem in problems:
        print("FAIL", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
