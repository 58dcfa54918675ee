"""``/metrics`` and ``/stats`` under a real gunicorn with two workers.

A scrape reaches one worker; with prometheus-client's multiprocess mode (set up by the gunicorn
config) it must still count the runs every worker served, and a killed worker's live gauges
must leave the sum while its counters stay.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import httpx

from backend_ai.app.gunicorn_process import GunicornProcess
from tests.support.protocol import check_protocol
from tests.support.waiting import wait_until

from .conftest import DREAM, StartService, open_stream
from .test_gunicorn import metric

_FAST = {"ttft_ms": 5, "itl_ms": 1, "tokens": 3, "jitter": 0}


def _run_and_ask_who(server: GunicornProcess) -> tuple[int, int]:
    """One run on a new connection, then ``/stats`` on the same one: (worker pid, workers)."""
    assert server.url is not None
    with httpx.Client(timeout=30.0) as http:
        with open_stream(http, server, DREAM, {"dream": "x", "sim": _FAST}) as live:
            check_protocol(live.read_all())
        # Same keep-alive connection, so the same worker answers.
        stats = http.get(server.url + "stats")
    assert stats.status_code == 200
    return int(stats.headers["X-Backend-AI-Worker"]), int(stats.headers["X-Backend-AI-Workers"])


def _wait_for_workers(server: GunicornProcess, count: int) -> None:
    """gunicorn is ready when one worker answers; the others may still be loading the app."""
    assert server.url is not None

    def booted() -> bool:
        with httpx.Client(timeout=30.0) as http:
            return http.get(server.url + "stats").headers["X-Backend-AI-Workers"] == str(count)

    wait_until(booted, 30.0, f"{count} workers with the app loaded")


def _spread_runs(server: GunicornProcess, *, at_least: int, attempts: int = 80) -> Counter[int]:
    """Runs on new connections until each worker served ``at_least`` of them."""
    _wait_for_workers(server, 2)
    served: Counter[int] = Counter()
    for _ in range(attempts):
        pid, workers = _run_and_ask_who(server)
        assert workers == 2
        served[pid] += 1
        if len(served) == 2 and min(served.values()) >= at_least:
            return served
    raise AssertionError(f"the kernel never spread {attempts} connections over both: {served}")


def test_metrics_sum_the_runs_of_every_worker(
    start_service: StartService, http: httpx.Client
) -> None:
    server = start_service(workers=2)
    served = _spread_runs(server, at_least=2)
    assert set(served) == set(server.worker_pids)
    total = sum(served.values())
    # Whichever worker answers the scrape, it reports the runs of both.
    for _ in range(6):
        http.close()
        http = httpx.Client(timeout=30.0)
        assert metric(server, http, "backend_ai_runs_total", route="dream", outcome="ok") == total
        assert metric(server, http, "backend_ai_sections_total", route="dream", outcome="done") == (
            3 * total
        )
        assert metric(server, http, "backend_ai_workers") == 2
    http.close()


def test_a_killed_worker_leaves_the_live_sum_and_keeps_its_counts(
    start_service: StartService, http: httpx.Client
) -> None:
    server = start_service(workers=2)
    served = _spread_runs(server, at_least=1)
    total = sum(served.values())
    victim = server.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    # gunicorn replaces it; without child_exit's bookkeeping the dead one would still count.
    wait_until(lambda: len(server.worker_pids) == 3, 30.0, "a replacement worker booted")
    replacement = server.worker_pids[2]
    runs = 0
    for _ in range(80):  # until the replacement has loaded the app and served a run
        pid, workers = _run_and_ask_who(server)
        runs += 1
        if pid == replacement:
            break
    else:
        raise AssertionError("the replacement worker never served a run")
    # The replacement's gauge is in, the victim's is out: still two.
    assert workers == 2
    with httpx.Client(timeout=30.0) as fresh:
        assert metric(server, fresh, "backend_ai_workers") == 2
        # The victim's runs stay counted.
        assert metric(server, fresh, "backend_ai_runs_total", route="dream", outcome="ok") == (
            total + runs
        )
