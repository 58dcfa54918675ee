"""The proactive rate budget on page runs, end to end against the simulator's budget mode.

The simulator counts requests and tokens per window by arrival and answers with the
``x-ratelimit-*`` headers; its own records (arrival time, status, tokens counted) are the
judge. A short window keeps the tests quick; the arithmetic is the same as for a minute.
"""

from __future__ import annotations

from typing import Any

import openai

from backend_ai.app.services.parallel_streaming import (
    ParallelStreamManager,
    RunOptions,
    build_http_client,
)
from backend_ai.app.services.parallel_streaming.budget import LocalRateBudget

from .conftest import H2
from .helpers import API_KEY, section

WINDOW_S = 1.0
RPM = 4


def max_in_any_window(records: list[dict[str, Any]], window: float, key: str | None = None) -> int:
    """Most requests (or ``key`` totals) whose arrivals fall within one ``window``."""
    times = sorted((r["t_start"], (r[key] or 0) if key else 1) for r in records)
    best = 0
    for i, (start, _) in enumerate(times):
        total = sum(value for t, value in times[i:] if t < start + window)
        best = max(best, total)
    return best


def run_pages(manager: ParallelStreamManager, runs: int, per_run: int) -> list[Any]:
    events = []
    for run in range(runs):
        configs = [section(f"r{run}s{i}", tokens=3) for i in range(per_run)]
        events.extend(manager.stream(configs))
    return events


def completion_records(simulator: Any) -> list[dict[str, Any]]:
    return [r for r in simulator.stats()["requests"] if r["path"].endswith("/chat/completions")]


def test_with_the_budget_the_upstream_never_sees_more_than_it_and_never_says_429(
    make_client, executor, stats, simulator
):
    simulator.configure(budget={"rpm_per_key": RPM, "window_s": WINDOW_S})
    budget = LocalRateBudget(rpm=RPM, window_s=WINDOW_S)
    manager = ParallelStreamManager(
        make_client(), executor=executor, stats=stats, budget=budget, options=RunOptions()
    )
    run_pages(manager, runs=3, per_run=3)
    records = completion_records(simulator)
    assert len(records) == 9
    assert all(r["status"] == 200 for r in records), [r["status"] for r in records]
    assert max_in_any_window(records, WINDOW_S) <= RPM
    # The budget made the run wait: 9 starts at 4 per window need at least two windows.
    span = max(r["t_start"] for r in records) - min(r["t_start"] for r in records)
    assert span >= 2 * WINDOW_S * 0.95


def test_the_same_runs_without_the_budget_are_refused(make_client, executor, stats, simulator):
    simulator.configure(budget={"rpm_per_key": RPM, "window_s": WINDOW_S})
    manager = ParallelStreamManager(make_client(), executor=executor, stats=stats)
    run_pages(manager, runs=3, per_run=3)
    statuses = [r["status"] for r in completion_records(simulator)]
    assert statuses.count(429) >= 1


def test_limits_learned_from_the_headers_alone_stop_the_429s_after_the_first_window(
    make_client, executor, stats, simulator
):
    simulator.configure(budget={"rpm_per_key": RPM, "tpm_per_key": 2000, "window_s": WINDOW_S})
    budget = LocalRateBudget(window_s=WINDOW_S)  # nothing configured: the headers tell
    http_client = build_http_client(H2)
    http_client.event_hooks["response"].append(budget.response_hook())
    client = openai.OpenAI(api_key=API_KEY, base_url=simulator.base_url, http_client=http_client)
    manager = ParallelStreamManager(client, executor=executor, stats=stats, budget=budget)
    try:
        run_pages(manager, runs=4, per_run=3)
    finally:
        client.close()
        http_client.close()
    records = completion_records(simulator)
    first = min(r["t_start"] for r in records)
    late_refusals = [r for r in records if r["status"] == 429 and r["t_start"] > first + WINDOW_S]
    assert not late_refusals
    assert budget.snapshot()["rpm"] == RPM
    assert budget.snapshot()["tpm"] == 2000
